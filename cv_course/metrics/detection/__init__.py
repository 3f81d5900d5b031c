"""Detection metrics: precision-recall, average precision, COCO mAP.

* ``ap.py``: precision and recall of one class at one IoU threshold, and AP by
  the three interpolations (COCO 101-point, VOC07 11-point, VOC all-points);
* ``matching.py``: the greedy matching of detections to ground truths;
* ``regions.py``: IoU and area for boxes and masks (the only per-type code);
* ``coco.py``: ``COCOeval.evaluate`` + ``accumulate`` on tensors -> precision[T, R, K, A, M];
* ``mean_ap.py``: COCO's twelve summary numbers, torchmetrics-style inputs and keys.
"""

from .ap import PrecisionRecall, average_precision, coco_linspace, precision_recall
from .coco import AREA_RANGES, CocoEvaluation, evaluate
from .matching import greedy_match, greedy_match_loop
from .mean_ap import MeanAveragePrecision, mean_average_precision, summarize
from .regions import box_iou_crowd, mask_iou_crowd

__all__ = [
    "AREA_RANGES",
    "CocoEvaluation",
    "MeanAveragePrecision",
    "PrecisionRecall",
    "average_precision",
    "box_iou_crowd",
    "coco_linspace",
    "evaluate",
    "greedy_match",
    "greedy_match_loop",
    "mask_iou_crowd",
    "mean_average_precision",
    "precision_recall",
    "summarize",
]

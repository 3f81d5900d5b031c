"""Mean average precision (mAP) and recall (mAR), COCO's twelve summary numbers.

``map`` is the AP averaged over classes *and* IoU thresholds 0.5:0.05:0.95
(COCO's primary metric); ``map_50`` is the PASCAL-style AP at IoU 0.5; ``mar_m``
is the recall with at most m detections per image, averaged the same way.
The numbers equal ``COCOeval.summarize()``'s ``stats[0:12]`` on the same data,
and the inputs follow torchmetrics' ``MeanAveragePrecision``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .coco import CocoEvaluation, evaluate
from .inputs import check_image, check_lists
from .regions import region_type


def _mean_defined(x: Tensor) -> Tensor:
    """Mean of the entries that are not -1 (COCO's "undefined"); -1 if there are none."""
    defined = x > -1
    if not bool(defined.any()):
        return torch.tensor(-1.0, dtype=torch.float64, device=x.device)
    return x[defined].mean()


def _mean_defined_per_class(x: Tensor) -> Tensor:
    """Tensor[..., K] -> Tensor[K]: per class, the mean of the entries that are not -1, or -1."""
    defined = x > -1
    total = torch.where(defined, x, 0.0).flatten(0, -2).sum(0)  # [K]
    count = defined.flatten(0, -2).sum(0)  # [K]
    return torch.where(count > 0, total / count.clamp(min=1), -1.0)


def summarize(result: CocoEvaluation, class_metrics: bool = False) -> dict[str, Tensor]:
    """COCO's summary of a :func:`evaluate` result, keyed as torchmetrics keys it.

    Returns:
        dict[str, Tensor[]]: ``map``, ``map_50``, ``map_75``, ``map_small``, ``map_medium``,
        ``map_large``, ``mar_{m}`` for each maximum number of detections m, ``mar_small``,
        ``mar_medium``, ``mar_large`` (float64, -1 where undefined); all but ``mar_{m}`` use the
        largest m (COCO's ``summarize`` hard-codes 100 for ``map``). With ``class_metrics``
        also ``map_per_class`` and ``mar_{max m}_per_class`` (Tensor[K]) and ``classes`` (Tensor[K]).
    """
    p, r = result.precision, result.recall  # [T, R, K, A, M], [T, K, A, M]
    area = {name: a for a, name in enumerate(result.area_ranges)}
    last = len(result.max_detections) - 1  # COCO's maxDets[2], 100 by default

    def at_iou(x: Tensor, iou: float) -> Tensor:
        t = (result.iou_thresholds == iou).nonzero().flatten()  # COCO: exact equality, as it looks it up
        return x[t]

    out = {"map": _mean_defined(p[..., area["all"], last]),
           "map_50": _mean_defined(at_iou(p, 0.5)[..., area["all"], last]),
           "map_75": _mean_defined(at_iou(p, 0.75)[..., area["all"], last])}
    for name in ("small", "medium", "large"):
        out[f"map_{name}"] = _mean_defined(p[..., area[name], last])
    for m, max_det in enumerate(result.max_detections):
        out[f"mar_{max_det}"] = _mean_defined(r[..., area["all"], m])
    for name in ("small", "medium", "large"):
        out[f"mar_{name}"] = _mean_defined(r[..., area[name], last])
    if class_metrics:
        out["map_per_class"] = _mean_defined_per_class(p[..., area["all"], last].flatten(0, 1))  # [T*R, K]
        out[f"mar_{result.max_detections[-1]}_per_class"] = _mean_defined_per_class(r[..., area["all"], last])
        out["classes"] = result.classes
    return out


def mean_average_precision(predictions: list[dict], targets: list[dict], iou_type: str = "bbox",
                           iou_thresholds=None, rec_thresholds=None,
                           max_detection_thresholds=(1, 10, 100),
                           class_metrics: bool = False) -> dict[str, Tensor]:
    """COCO mean average precision and recall of detections (Lin et al., ECCV 2014).

    Args:
        predictions (list[dict]): one dict per image: ``boxes`` (Tensor[N, 4], (x1, y1, x2, y2)
            in pixels; or ``masks`` Tensor[N, H, W] bool for ``iou_type="segm"``),
            ``scores`` (Tensor[N]), ``labels`` (Tensor[N] int).
        targets (list[dict]): one dict per image: ``boxes`` (Tensor[K, 4]) or ``masks``
            (Tensor[K, H, W] bool), ``labels`` (Tensor[K] int), optional ``iscrowd``
            (Tensor[K], 1 for a crowd region: detections in it are neither right nor wrong)
            and ``area`` (Tensor[K], default box or mask area; picks small/medium/large).
        iou_type (str): ``"bbox"`` or ``"segm"``.
        iou_thresholds (list[float], optional): default 0.5, 0.55, ..., 0.95.
        rec_thresholds (list[float], optional): default 0, 0.01, ..., 1.
        max_detection_thresholds (tuple[int, ...]): default (1, 10, 100).
        class_metrics (bool): also return AP and AR per class.
    Returns:
        dict[str, Tensor[]]: see :func:`summarize`; 0-dim float64 tensors, -1 where undefined
        (e.g. ``map_small`` when no ground truth is small), as ``COCOeval``.
    """
    result = evaluate(predictions, targets, iou_type, iou_thresholds, rec_thresholds,
                      max_detection_thresholds)
    return summarize(result, class_metrics)


class MeanAveragePrecision:
    """COCO mAP accumulated over batches, for a validation loop.

    ``update(preds, targets)`` stores one batch (lists of dicts as
    :func:`mean_average_precision` takes them); ``compute()`` scores everything
    stored so far; ``evaluate()`` returns the full precision table
    (:class:`CocoEvaluation`, e.g. to draw precision-recall curves); ``reset()``
    forgets. AP is not a mean over batches, so the detections must be kept.
    """

    def __init__(self, iou_type: str = "bbox", iou_thresholds=None, rec_thresholds=None,
                 max_detection_thresholds=(1, 10, 100), class_metrics: bool = False):
        self.region = region_type(iou_type)
        self.iou_type = iou_type
        self.iou_thresholds = iou_thresholds
        self.rec_thresholds = rec_thresholds
        self.max_detection_thresholds = max_detection_thresholds
        self.class_metrics = class_metrics
        self.reset()

    def reset(self) -> None:
        self.predictions: list[dict] = []
        self.targets: list[dict] = []

    def update(self, preds: list[dict], targets: list[dict]) -> None:
        check_lists(preds, targets)
        for i, (p, t) in enumerate(zip(preds, targets)):
            check_image(p, t, i, self.region)  # fail at the batch that is wrong, not at compute()
        keep_p = (self.region.key, "scores", "labels")
        keep_t = (self.region.key, "labels", "iscrowd", "area")
        self.predictions += [{k: p[k].detach() for k in keep_p} for p in preds]
        self.targets += [{k: t[k].detach() for k in keep_t if t.get(k) is not None} for t in targets]

    def evaluate(self) -> CocoEvaluation:
        return evaluate(self.predictions, self.targets, self.iou_type, self.iou_thresholds,
                        self.rec_thresholds, self.max_detection_thresholds)

    def compute(self) -> dict[str, Tensor]:
        return summarize(self.evaluate(), self.class_metrics)

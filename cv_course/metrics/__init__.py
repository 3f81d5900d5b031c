"""Evaluation metrics. Segmentation: confusion matrix, pixel accuracy, IoU per
class, mean IoU (labels in, not logits; see ``segmentation.py``). Detection:
precision-recall, average precision, COCO mAP (see ``detection/``)."""

from .segmentation import (
    MeanIoU,
    confusion_matrix,
    iou_from_confusion,
    mean_iou,
    per_class_iou,
    pixel_accuracy,
)

__all__ = [
    "MeanIoU",
    "confusion_matrix",
    "iou_from_confusion",
    "mean_iou",
    "per_class_iou",
    "pixel_accuracy",
]

# Detection (issue 9, section 3).
from .detection import (
    MeanAveragePrecision,
    average_precision,
    mean_average_precision,
    precision_recall,
)

__all__ += [
    "MeanAveragePrecision",
    "average_precision",
    "mean_average_precision",
    "precision_recall",
]

# Panoptic segmentation (issue 12, section 2).
from .panoptic import PanopticQuality, panoptic_quality  # noqa: E402

__all__ += ["PanopticQuality", "panoptic_quality"]

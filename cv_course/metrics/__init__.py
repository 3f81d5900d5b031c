"""Evaluation metrics. Segmentation: confusion matrix, pixel accuracy, IoU per
class, mean IoU (labels in, not logits; see ``segmentation.py``)."""

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

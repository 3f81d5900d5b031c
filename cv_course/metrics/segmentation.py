"""Semantic-segmentation metrics: confusion matrix, pixel accuracy, IoU per class, mean IoU.

Everything is read off one confusion matrix ``M`` (rows: true class, columns:
predicted class, as ``sklearn.metrics.confusion_matrix``):

* pixel accuracy = ``trace(M) / sum(M)``;
* IoU of class c  = ``M[c, c] / (row_c + col_c - M[c, c])`` = TP / (TP + FP + FN);
* mean IoU        = mean of the IoUs over the classes present in the prediction
  or the target (the metric of PASCAL VOC and of Long et al., CVPR 2015).

The functions take *labels* (``Tensor[H, W]`` or ``Tensor[N, H, W]`` of class
indices), not logits: call ``logits.argmax(dim=1)`` first. :class:`MeanIoU`
accumulates over a whole dataset and does accept logits, for the training loop.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_labels(pred: Tensor, target: Tensor) -> None:
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer class labels, got {t.dtype}; "
                             "for logits [N, C, H, W] pass logits.argmax(dim=1)")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got "
                         f"{list(pred.shape)} and {list(target.shape)}")


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int,
                     ignore_index: int | None = None) -> Tensor:
    """Count pixels by (true class, predicted class).

    Args:
        pred (Tensor[...], int): predicted class of each pixel, e.g. [H, W] or [N, H, W].
        target (Tensor[...], int): true class of each pixel, same shape.
        num_classes (int): C; labels must be in ``[0, C)``.
        ignore_index (int, optional): pixels whose *target* is this label are not counted.
    Returns:
        Tensor[C, C] (int64): ``M[t, p]`` = number of pixels of class t predicted as p;
        ``M.sum()`` = number of counted pixels. All zeros for empty input.
    """
    _check_labels(pred, target)
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    bad = (target < 0) | (target >= num_classes) | (pred < 0) | (pred >= num_classes)
    if bool(bad.any()):
        raise ValueError(f"labels must be in [0, {num_classes}) (or ignore_index in the target)")
    # One bin per (t, p) pair: bincount does the whole count in one vectorized pass.
    flat = target * num_classes + pred  # [P]
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _counted(cm: Tensor) -> Tensor:
    total = cm.sum()
    if int(total) == 0:
        raise ValueError("no pixels to score: the input is empty or every pixel is ignored")
    return total


def pixel_accuracy(pred: Tensor, target: Tensor, ignore_index: int | None = None) -> Tensor:
    """Fraction of counted pixels whose predicted label equals the target.

    Args:
        pred, target (Tensor[...], int): labels of the same shape.
        ignore_index (int, optional): target label that is not counted.
    Returns:
        Tensor[] (float32): accuracy in [0, 1].
    Raises:
        ValueError: if no pixel is counted (empty input or all ignored).
    """
    _check_labels(pred, target)
    if ignore_index is None:
        keep = torch.ones_like(target, dtype=torch.bool)
    else:
        keep = target != ignore_index
    n = keep.sum()
    if int(n) == 0:
        raise ValueError("no pixels to score: the input is empty or every pixel is ignored")
    return ((pred == target) & keep).sum().float() / n


def iou_from_confusion(cm: Tensor) -> Tensor:
    """IoU of every class from a confusion matrix ``Tensor[C, C]`` (rows: target).

    Returns:
        Tensor[C] (float64): ``TP / (TP + FP + FN)``; NaN for a class that appears in
        neither the prediction nor the target (its IoU is 0/0, undefined).
    """
    cm = cm.double()
    tp = cm.diagonal()  # [C]
    union = cm.sum(0) + cm.sum(1) - tp  # [C]: predicted as c, or truly c
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def per_class_iou(pred: Tensor, target: Tensor, num_classes: int,
                  ignore_index: int | None = None) -> Tensor:
    """Intersection over union of every class.

    Args: as :func:`confusion_matrix`.
    Returns:
        Tensor[C] (float64): IoU per class, NaN for a class absent from both
        ``pred`` and ``target`` (after removing ignored pixels).
    """
    cm = confusion_matrix(pred, target, num_classes, ignore_index)
    _counted(cm)
    return iou_from_confusion(cm)


def mean_iou(pred: Tensor, target: Tensor, num_classes: int,
             ignore_index: int | None = None) -> Tensor:
    """Mean IoU over the classes present in ``pred`` or ``target``.

    Pixels whose target is ``ignore_index`` do not count; a class that appears in
    neither (so its IoU is undefined) is left out of the mean rather than counted
    as 0 or 1.

    Args: as :func:`confusion_matrix`.
    Returns:
        Tensor[] (float64): mean IoU in [0, 1].
    Raises:
        ValueError: if no pixel is counted (empty input or all ignored).
    """
    return per_class_iou(pred, target, num_classes, ignore_index).nanmean()


class MeanIoU:
    """Mean IoU accumulated over a dataset, for :func:`cv_course.train.evaluate`.

    Summing the confusion matrices of all batches and taking the IoU once gives the
    dataset-level mIoU of the benchmarks, which is *not* the mean of per-batch mIoUs.

    ``update(output, target)`` takes logits ``Tensor[N, C, H, W]`` (argmax is taken
    over dim 1) or labels ``Tensor[N, H, W]``; ``compute()`` returns a float.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, output: Tensor, target: Tensor) -> None:
        pred = output.argmax(dim=1) if output.dim() == target.dim() + 1 else output
        cm = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.confusion = self.confusion.to(cm.device) + cm

    def compute(self) -> float:
        _counted(self.confusion)
        return float(iou_from_confusion(self.confusion).nanmean())

    def __call__(self, output: Tensor, target: Tensor) -> float:
        """mIoU of one batch alone (does not touch the accumulated state)."""
        pred = output.argmax(dim=1) if output.dim() == target.dim() + 1 else output
        return float(mean_iou(pred, target, self.num_classes, self.ignore_index))

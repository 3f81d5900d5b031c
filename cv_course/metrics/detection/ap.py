"""Precision, recall and average precision (AP) of one class at one IoU threshold.

Sort the detections of a class by decreasing score. After the k-th one,

* precision = true positives so far / k   (how many retrieved items are relevant),
* recall    = true positives so far / number of ground truths   (how many relevant items are retrieved).

AP summarizes the precision-recall curve by the area under it, after replacing
each precision by the best precision at an equal or higher recall (the
"interpolated" curve, which never rises with recall). Three conventions:

* ``"voc07"``: mean of the interpolated precision at recall 0, 0.1, ..., 1
  (11 points; Everingham et al., "The PASCAL VOC Challenge", IJCV 2010);
* ``"voc"``: the exact area under the interpolated curve (VOC 2010 onwards);
* ``"coco"``: mean at recall 0, 0.01, ..., 1 (101 points; Lin et al., "Microsoft
  COCO", ECCV 2014; this is what ``pycocotools`` reports).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ...ops._checks import check_boxes
from ...ops.boxes import box_iou
from .matching import greedy_match
from .regions import pad_ious

AP_METHODS = ("coco", "voc07", "voc")


def coco_linspace(start: float, stop: float, step: float, device=None) -> Tensor:
    """Evenly spaced values from ``start`` to ``stop``, exactly as ``pycocotools`` builds them.

    COCO calls ``np.linspace(start, stop, round((stop - start) / step) + 1)`` in
    float64; ``torch.linspace`` rounds some values differently (in the last bit),
    which can flip an ``IoU >= threshold`` decision. This repeats numpy's arithmetic.

    Returns:
        Tensor[N] (float64): e.g. ``coco_linspace(0.5, 0.95, 0.05)`` -> 0.5, 0.55, ..., 0.95.
    """
    num = int(round((stop - start) / step)) + 1
    step = (stop - start) / max(num - 1, 1)
    values = torch.arange(num, dtype=torch.float64, device=device) * step + start
    values[-1] = stop
    return values


class PrecisionRecall(NamedTuple):
    """One point per detection, most confident first: all Tensor[D] (float64)."""

    precision: Tensor
    recall: Tensor
    scores: Tensor


def _as_list(x, name: str) -> list:
    if isinstance(x, Tensor):
        return [x]
    if not isinstance(x, (list, tuple)):
        raise TypeError(f"{name} must be a Tensor (one image) or a list of Tensors (one per image)")
    return list(x)


def precision_recall(pred_boxes, pred_scores, gt_boxes, iou_threshold: float = 0.5) -> PrecisionRecall:
    """Precision and recall of one class after each detection, most confident first.

    Matching is COCO's greedy rule (see ``matching.py``): in each image, detections
    in order of score take the unmatched ground truth they overlap best, if its IoU
    is at least ``iou_threshold``; one match per ground truth, so duplicates are
    false positives. Equal scores keep the input order (images in list order).

    Args:
        pred_boxes (list[Tensor[N_i, 4]]): (x1, y1, x2, y2) detections of the class, per image
            (a single Tensor means one image).
        pred_scores (list[Tensor[N_i]]): their confidence scores.
        gt_boxes (list[Tensor[K_i, 4]]): (x1, y1, x2, y2) ground truths of the class, per image.
        iou_threshold (float): minimum IoU of a true positive.
    Returns:
        PrecisionRecall: ``precision``, ``recall`` and ``scores``, each Tensor[D] (float64) with
        D = total number of detections, sorted by decreasing score. ``recall`` is 0 when
        there is no ground truth (AP is then undefined; COCO reports -1).
    """
    pred_boxes = _as_list(pred_boxes, "pred_boxes")
    pred_scores = _as_list(pred_scores, "pred_scores")
    gt_boxes = _as_list(gt_boxes, "gt_boxes")
    if not len(pred_boxes) == len(pred_scores) == len(gt_boxes):
        raise ValueError(f"need one entry per image in each list, got {len(pred_boxes)} pred_boxes, "
                         f"{len(pred_scores)} pred_scores and {len(gt_boxes)} gt_boxes")
    ious, scores = [], []
    for i, (boxes, s, gt) in enumerate(zip(pred_boxes, pred_scores, gt_boxes)):
        check_boxes(boxes, f"pred_boxes[{i}]", ordered=True)
        check_boxes(gt, f"gt_boxes[{i}]", ordered=True)
        if not isinstance(s, Tensor) or s.shape != boxes.shape[:1]:
            raise ValueError(f"pred_scores[{i}] must be a Tensor[{boxes.shape[0]}], one score per box")
        s, order = torch.sort(s.double(), descending=True, stable=True)  # [N_i]
        ious.append(box_iou(boxes[order].double(), gt.double()))  # [N_i, K_i]
        scores.append(s)
    if not scores:  # no image: empty curves
        empty = torch.zeros(0, dtype=torch.float64)
        return PrecisionRecall(empty, empty, empty)
    iou = pad_ious(ious)  # [I, D, G]
    I, _, G = iou.shape
    no_ignore = torch.zeros(I, 1, G, dtype=torch.bool, device=iou.device)
    thr = torch.tensor([float(iou_threshold)], dtype=torch.float64, device=iou.device)
    matched, _ = greedy_match(iou, thr, no_ignore, no_ignore[:, 0])  # [I, D, 1, 1]
    tp = torch.cat([matched[i, : len(s), 0, 0] for i, s in enumerate(scores)])  # [D], image by image
    score, order = torch.sort(torch.cat(scores), descending=True, stable=True)  # [D]
    tp = tp[order].double().cumsum(0)  # [D] true positives so far
    rank = torch.arange(1, tp.numel() + 1, dtype=torch.float64, device=tp.device)  # [D]
    num_gt = sum(g.shape[0] for g in gt_boxes)
    return PrecisionRecall(tp / rank, tp / max(num_gt, 1), score)


def _check_curve(precision: Tensor, recall: Tensor) -> None:
    for name, t in (("precision", precision), ("recall", recall)):
        if not isinstance(t, Tensor) or t.dim() != 1 or not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point Tensor[D]")
    if precision.shape != recall.shape:
        raise ValueError(f"precision and recall must have the same length, got "
                         f"{precision.shape[0]} and {recall.shape[0]}")
    if recall.numel() > 1 and bool((recall[1:] < recall[:-1]).any()):
        raise ValueError("recall must not decrease: pass the points sorted by decreasing score, "
                         "as precision_recall returns them")


def interpolate(precision: Tensor, recall: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """Best precision at a recall of at least each point: ``max(precision[recall >= r])``, 0 if none.

    Args:
        precision, recall (Tensor[..., D]): curves, recall non-decreasing along the last dimension.
        points (Tensor[..., R]): recall levels (same leading dimensions).
    Returns:
        value (Tensor[..., R]): interpolated precision, as COCO's ``accumulate`` reads it off.
        first (Tensor[..., R]): index of the first point with recall >= r (D if none).
    """
    D = precision.shape[-1]
    first = torch.searchsorted(recall.contiguous(), points.contiguous(), side="left")  # [..., R]
    if D == 0:
        return torch.zeros(points.shape, dtype=precision.dtype, device=precision.device), first
    # The interpolated curve: running maximum from the right (never rises with recall).
    envelope = precision.flip(-1).cummax(-1).values.flip(-1)  # [..., D]
    value = envelope.gather(-1, first.clamp(max=D - 1))  # [..., R]
    return torch.where(first < D, value, 0.0), first  # a recall never reached: 0


def average_precision(precision: Tensor, recall: Tensor, method: str = "coco") -> Tensor:
    """Area under the interpolated precision-recall curve of one class.

    Args:
        precision (Tensor[D]): precision after each detection, most confident first.
        recall (Tensor[D]): recall after each detection (non-decreasing).
        method (str): ``"coco"`` (101 recall points), ``"voc07"`` (11 points) or
            ``"voc"`` (all points, the exact area), see the module docstring.
    Returns:
        Tensor[] : AP in [0, 1]; 0 for an empty curve.
    """
    _check_curve(precision, recall)
    if method not in AP_METHODS:
        raise ValueError(f"method must be one of {AP_METHODS}, got {method!r}")
    if method == "voc":
        # Pad so the curve starts at recall 0 and ends at recall 1 (precision 0 there),
        # then add up rectangles: recall step times the interpolated precision.
        zero, one = recall.new_zeros(1), recall.new_ones(1)
        r = torch.cat([zero, recall, one])  # [D + 2]
        p = torch.cat([zero, precision, zero])  # [D + 2]
        envelope = p.flip(0).cummax(0).values.flip(0)  # [D + 2]
        return ((r[1:] - r[:-1]) * envelope[1:]).sum()
    if method == "coco":
        points = coco_linspace(0.0, 1.0, 0.01, device=recall.device).to(recall.dtype)  # [101]
    else:
        # i / 10 exactly, as the VOC devkit's 0:0.1:1 in MATLAB (np.arange(0, 1.1, 0.1)
        # would give 0.30000000000000004, missing a recall of exactly 0.3).
        points = torch.arange(11, dtype=torch.float64, device=recall.device).div(10).to(recall.dtype)
    return interpolate(precision, recall, points)[0].mean()

"""COCO evaluation (``COCOeval.evaluate`` + ``accumulate``) on tensors.

For every class k, area range a ("all", "small", "medium", "large"), maximum
number of detections per image m and IoU threshold t, COCO builds one
precision-recall curve and samples its interpolated precision at R recall levels:
the result is ``precision[T, R, K, A, M]``, with ``recall[T, K, A, M]`` the final
recall of each curve. -1 marks a (class, area range) without ground truth.

The steps, each over all images at once:

1. per image: sort detections by score within each class, keep the ``max(m)``
   best, and compute the IoU with the ground truths (``regions.py``: the only
   step that depends on boxes vs. masks);
2. greedy matching for all (image, area range, threshold) (``matching.py``);
3. per class: one sort of all its detections by score, cumulative true and
   false positives, and the interpolated precision at the recall levels.

Conventions copied from ``pycocotools`` so that the numbers agree: thresholds
built in float64 (:func:`coco_linspace`), stable sorts (equal scores keep image
then input order), area bounds inclusive at both ends, crowd regions ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from .ap import coco_linspace, interpolated_precision
from .inputs import check_image, check_lists
from .matching import greedy_match, pad_ious
from .regions import region_type

# COCO's area ranges in pixels**2: [low, high], both ends included.
AREA_RANGES = {"all": (0.0, 1e5**2), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2),
               "large": (96.0**2, 1e5**2)}


@dataclass
class CocoEvaluation:
    """What ``COCOeval.accumulate()`` leaves in ``eval``, with the labels of its axes."""

    precision: Tensor  # [T, R, K, A, M] interpolated precision at each recall level, -1: no ground truth
    recall: Tensor  # [T, K, A, M] recall after all detections, -1: no ground truth
    scores: Tensor  # [T, R, K, A, M] score of the detection where each recall level is reached
    iou_thresholds: Tensor  # [T]
    rec_thresholds: Tensor  # [R]
    classes: Tensor  # [K] labels, sorted
    area_ranges: tuple[str, ...]  # [A] names, keys of AREA_RANGES
    max_detections: tuple[int, ...]  # [M] detections per image and class, increasing


def _thresholds(values, default: Tensor, name: str, device) -> Tensor:
    if values is None:
        return default.to(device)
    t = torch.as_tensor(values, dtype=torch.float64).to(device).reshape(-1)
    if t.numel() == 0 or bool(((t < 0) | (t > 1)).any()):
        raise ValueError(f"{name} must be a non-empty list of values in [0, 1], got {values!r}")
    return t


def _first_device(predictions, targets, key):
    for d in list(predictions) + list(targets):
        if isinstance(d, dict) and isinstance(d.get(key), Tensor):
            return d[key].device
    return torch.device("cpu")


def _prepare_image(pred, target, region, max_det: int):
    """Sort, truncate and score one image: returns its detections and ground truths."""
    regions, scores, labels = pred[region.key], pred["scores"].double(), pred["labels"].long()
    order = torch.sort(scores, descending=True, stable=True).indices  # [N] by score...
    order = order[torch.sort(labels[order], stable=True).indices]  # ...within each class
    labels = labels[order]
    # Rank within the class = position minus the position where the class starts.
    position = torch.arange(labels.numel(), device=labels.device)  # [N]
    start = torch.ones_like(labels, dtype=torch.bool)
    start[1:] = labels[1:] != labels[:-1]  # [N]
    rank = position - torch.where(start, position, 0).cummax(0).values  # [N]
    keep = rank < max_det  # COCO scores at most max_det detections per image and class
    order, labels, rank = order[keep], labels[keep], rank[keep]
    kept = regions[order]
    gt_labels = target["labels"].long()
    crowd = target.get("iscrowd")
    crowd = torch.zeros_like(gt_labels, dtype=torch.bool) if crowd is None else crowd.bool()
    area = target.get("area")
    gt_area = region.area(target[region.key]) if area is None else area.double()
    iou = region.iou(kept, target[region.key], crowd)  # [D, G]
    iou = iou.masked_fill(labels[:, None] != gt_labels[None, :], -1.0)  # other classes never match
    dets = (scores[order], labels, rank, region.area(kept))
    return iou, dets, (gt_labels, crowd, gt_area)


def evaluate(predictions: list[dict], targets: list[dict], iou_type: str = "bbox",
             iou_thresholds=None, rec_thresholds=None,
             max_detection_thresholds=(1, 10, 100)) -> CocoEvaluation:
    """COCO evaluation of detections: the precision-recall table of every class.

    Args:
        predictions (list[dict]): per image, ``boxes`` (Tensor[N, 4], (x1, y1, x2, y2))
            or ``masks`` (Tensor[N, H, W] bool) for ``iou_type="segm"``, ``scores``
            (Tensor[N]) and ``labels`` (Tensor[N] int).
        targets (list[dict]): per image, ``boxes`` or ``masks`` (Tensor[K, ...]),
            ``labels`` (Tensor[K] int), optional ``iscrowd`` (Tensor[K] 0/1) and ``area``
            (Tensor[K], default: box or mask area).
        iou_type (str): ``"bbox"`` or ``"segm"``.
        iou_thresholds (list[float], optional): default 0.5, 0.55, ..., 0.95.
        rec_thresholds (list[float], optional): default 0, 0.01, ..., 1.
        max_detection_thresholds (tuple[int, ...]): detections per image scored, default (1, 10, 100).
    Returns:
        CocoEvaluation: ``precision`` Tensor[T, R, K, A, M] (as ``COCOeval.eval['precision']``),
        ``recall`` Tensor[T, K, A, M], ``scores``, and the axis labels.
    """
    region = region_type(iou_type)
    check_lists(predictions, targets)
    for i, (p, t) in enumerate(zip(predictions, targets)):
        check_image(p, t, i, region)
    max_dets = tuple(sorted(int(m) for m in max_detection_thresholds))
    if not max_dets or max_dets[0] < 1:
        raise ValueError(f"max_detection_thresholds must be positive ints, got {max_detection_thresholds!r}")
    device = _first_device(predictions, targets, region.key)
    iou_thr = _thresholds(iou_thresholds, coco_linspace(0.5, 0.95, 0.05), "iou_thresholds", device)
    rec_thr = _thresholds(rec_thresholds, coco_linspace(0.0, 1.0, 0.01), "rec_thresholds", device)

    images = [_prepare_image(p, t, region, max_dets[-1]) for p, t in zip(predictions, targets)]
    ious = [im[0].to(device) for im in images]
    det = [torch.cat([im[1][j].to(device) for im in images]) for j in range(4)]
    score, label, rank, det_area = det  # [N] each, image by image
    gts = [[im[2][j].to(device) for im in images] for j in range(3)]
    gt_label, crowd, gt_area = (pad_sequence(g, batch_first=True) for g in gts)  # [I, G] each
    gt_real = pad_sequence([torch.ones_like(c) for c in gts[1]], batch_first=True)  # [I, G]
    classes = torch.unique(torch.cat([label, gt_label[gt_real]]))  # [K], sorted

    low, high = (torch.tensor(b, dtype=torch.float64, device=device) for b in zip(*AREA_RANGES.values()))
    outside = lambda area: (area[..., None] < low) | (area[..., None] > high)  # noqa: E731  [..., A]
    gt_ignore = (crowd[..., None] | outside(gt_area) | ~gt_real[..., None]).transpose(1, 2)  # [I, A, G]

    iou = pad_ious(ious) if ious else torch.zeros(0, 0, 0, dtype=torch.float64, device=device)
    matched, matched_ignored = greedy_match(iou, iou_thr, gt_ignore, crowd)  # [I, A, T, D] each
    num_dets = torch.tensor([m.shape[0] for m in ious], device=device)
    real = torch.arange(iou.shape[1], device=device) < num_dets[:, None]  # [I, D]
    matched = matched.permute(0, 3, 1, 2)[real]  # [N, A, T]
    matched_ignored = matched_ignored.permute(0, 3, 1, 2)[real]  # [N, A, T]
    # Unmatched detections outside the area range are ignored too, not false positives.
    ignored = matched_ignored | (~matched & outside(det_area)[:, :, None])  # [N, A, T]
    tp, fp = matched & ~ignored, ~matched & ~ignored  # [N, A, T]

    counted = ~gt_ignore.transpose(1, 2)[gt_real]  # [G_total, A]
    k_of_gt = torch.searchsorted(classes, gt_label[gt_real])
    num_gt = torch.zeros(len(classes), len(AREA_RANGES), dtype=torch.float64, device=device)
    num_gt.index_add_(0, k_of_gt, counted.double())  # [K, A] ground truths that count

    return _accumulate(score, torch.searchsorted(classes, label), rank, tp, fp, num_gt,
                       classes, iou_thr, rec_thr, max_dets)


def _accumulate(score, k_of_det, rank, tp, fp, num_gt, classes, iou_thr, rec_thr, max_dets):
    """Precision-recall curves per (class, area range, max detections, threshold)."""
    T, R, K, A, M = len(iou_thr), len(rec_thr), len(classes), num_gt.shape[1], len(max_dets)
    device = score.device
    precision = torch.full((T, R, K, A, M), -1.0, dtype=torch.float64, device=device)
    recall = torch.full((T, K, A, M), -1.0, dtype=torch.float64, device=device)
    scores = torch.full((T, R, K, A, M), -1.0, dtype=torch.float64, device=device)
    # All detections sorted by (class, decreasing score); the sorts are stable, so equal
    # scores stay in image order, then in score order within the image, as in COCO.
    order = torch.sort(score, descending=True, stable=True).indices
    order = order[torch.sort(k_of_det[order], stable=True).indices]  # [N]
    ends = torch.bincount(k_of_det, minlength=K).cumsum(0).tolist()  # [K] end of each class
    levels = rec_thr.expand(A, T, R)  # [A, T, R]
    for k in range(K):  # each class has its own curves; everything inside is batched
        ok = num_gt[k] > 0  # [A]
        in_class = order[(ends[k - 1] if k else 0): ends[k]]
        for m, max_det in enumerate(max_dets):
            idx = in_class[rank[in_class] < max_det]  # [n] detections scored with this cap
            n = idx.numel()
            tp_sum = tp[idx].permute(1, 2, 0).double().cumsum(-1)  # [A, T, n]
            fp_sum = fp[idx].permute(1, 2, 0).double().cumsum(-1)  # [A, T, n]
            rc = tp_sum / num_gt[k].clamp(min=1)[:, None, None]  # [A, T, n]
            seen = tp_sum + fp_sum  # 0 while only ignored detections have been seen
            pr = torch.where(seen > 0, tp_sum / seen.clamp(min=1), torch.zeros_like(seen))
            q = interpolated_precision(pr, rc, levels)  # [A, T, R]
            first = torch.searchsorted(rc.contiguous(), levels.contiguous(), side="left")  # [A, T, R]
            if n:
                at = score[idx][first.clamp(max=n - 1)]  # [A, T, R]
                ss = torch.where(first < n, at, torch.zeros_like(at))
                last = rc[..., -1]  # [A, T]
            else:
                ss, last = torch.zeros_like(q), torch.zeros(A, T, dtype=torch.float64, device=device)
            precision[:, :, k, :, m] = torch.where(ok[:, None, None], q, -1.0).permute(1, 2, 0)
            scores[:, :, k, :, m] = torch.where(ok[:, None, None], ss, -1.0).permute(1, 2, 0)
            recall[:, k, :, m] = torch.where(ok[:, None], last, -1.0).T
    return CocoEvaluation(precision, recall, scores, iou_thr, rec_thr, classes,
                          tuple(AREA_RANGES), tuple(max_dets))

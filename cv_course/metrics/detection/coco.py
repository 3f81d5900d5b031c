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

from .ap import coco_linspace, interpolate
from .inputs import check_image, check_lists, check_values
from .matching import greedy_match
from .regions import region_type, stack_padded

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


def _sort_and_cap(score: Tensor, label: Tensor, real: Tensor, max_det: int):
    """Order each image's detections by class, then by decreasing score, and keep the
    ``max_det`` best of each class (as COCO does per image and class).

    Args: score, label, real (Tensor[I, N]): padded detections (``real`` marks the non-padding).
    Returns:
        index (Tensor[I, D]): positions in N of the kept detections, kept ones first.
        kept (Tensor[I, D], bool): which entries of ``index`` are real.
        rank (Tensor[I, D]): rank of each kept detection within its image and class.
    """
    I, N = score.shape
    order = torch.sort(score, dim=1, descending=True, stable=True).indices  # [I, N] by score...
    group = torch.where(real, label, label.max() + 1 if N else 0).gather(1, order)  # padding last
    by_class = torch.sort(group, dim=1, stable=True)  # ...within each class (stable: ties keep order)
    order, group = order.gather(1, by_class.indices), by_class.values  # [I, N]
    position = torch.arange(N, device=score.device).expand(I, N)  # [I, N]
    start = torch.ones_like(group, dtype=torch.bool)
    start[:, 1:] = group[:, 1:] != group[:, :-1]  # [I, N] first detection of each class
    rank = position - torch.where(start, position, 0).cummax(1).values  # [I, N]
    keep = (rank < max_det) & real.gather(1, order)  # [I, N]
    front = torch.sort((~keep).byte(), dim=1, stable=True).indices  # [I, N] kept ones first
    D = int(keep.sum(1).max()) if I and N else 0
    front = front[:, :D]
    return order.gather(1, front), keep.gather(1, front), rank.gather(1, front)


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
    if not predictions:  # no image: every class is absent, every number undefined
        none = torch.zeros(0, dtype=torch.long, device=device)
        flags = torch.zeros(0, len(AREA_RANGES), len(iou_thr), dtype=torch.bool, device=device)
        return _accumulate(none.double(), none, none, flags, flags, none.double().reshape(0, len(AREA_RANGES)),
                           none, iou_thr, rec_thr, max_dets)

    # Everything per image becomes one padded Tensor[I, N] (detections) or [I, G] (ground truths).
    score = stack_padded([p["scores"] for p in predictions], torch.float64).to(device)  # [I, N]
    label = stack_padded([p["labels"] for p in predictions], torch.long).to(device)  # [I, N]
    gt_label = stack_padded([t["labels"] for t in targets], torch.long).to(device)  # [I, G]
    # Optional fields: an image without one lends its labels as a placeholder, masked out here.
    given = {key: torch.tensor([t.get(key) is not None for t in targets], device=device)[:, None]
             for key in ("iscrowd", "area")}  # [I, 1] each
    crowd, area = (stack_padded([t[key] if t.get(key) is not None else t["labels"] for t in targets],
                                dtype).to(device).where(given[key], 0)
                   for key, dtype in (("iscrowd", torch.float64), ("area", torch.float64)))  # [I, G] each
    check_values(score, crowd, area)
    crowd = crowd.bool()
    I, N, G = score.shape[0], score.shape[1], gt_label.shape[1]
    n_det = torch.tensor([len(p["labels"]) for p in predictions], device=device)  # [I]
    n_gt = torch.tensor([len(t["labels"]) for t in targets], device=device)  # [I]
    real_det = torch.arange(N, device=device) < n_det[:, None]  # [I, N] not padding
    real_gt = torch.arange(G, device=device) < n_gt[:, None]  # [I, G]

    # 1. The per-type part: IoU of every (detection, ground truth) pair, and areas.
    iou, det_area, gt_area = region.geometry([p[region.key].to(device) for p in predictions],
                                             [t[region.key].to(device) for t in targets], crowd)
    gt_area = torch.where(given["area"], area, gt_area)  # COCO uses the annotation's area if given

    # 2. Sort by class and score, keep max(max_dets) per image and class, match.
    index, kept, rank = _sort_and_cap(score, label, real_det, max_dets[-1])  # [I, D] each
    D = index.shape[1]
    label, score, det_area = label.gather(1, index), score.gather(1, index), det_area.gather(1, index)
    iou = iou.gather(1, index[:, :, None].expand(I, D, G))  # [I, D, G]
    never = (label[:, :, None] != gt_label[:, None, :]) | ~kept[:, :, None] | ~real_gt[:, None, :]
    iou = iou.masked_fill(never, -1.0)  # other classes and padding never match
    low, high = (torch.tensor(b, dtype=torch.float64, device=device) for b in zip(*AREA_RANGES.values()))
    outside = lambda a: (a[..., None] < low) | (a[..., None] > high)  # noqa: E731  [..., A]
    gt_ignore = (crowd[..., None] | outside(gt_area) | ~real_gt[..., None]).transpose(1, 2)  # [I, A, G]
    matched, matched_ignored = greedy_match(iou, iou_thr, gt_ignore, crowd)  # [I, D, A, T] each

    # 3. True / false positives of every detection, then the curves per class.
    where = kept.flatten().nonzero().flatten()  # [N'] the kept detections, image by image
    pick = lambda x: x.flatten(0, 1).index_select(0, where)  # noqa: E731  [I, D, ...] -> [N', ...]
    matched, matched_ignored = pick(matched), pick(matched_ignored)  # [N', A, T]
    score, label, rank, det_area = pick(score), pick(label), pick(rank), pick(det_area)  # [N']
    # Unmatched detections outside the area range are ignored too, not false positives.
    ignored = matched_ignored | (~matched & outside(det_area)[:, :, None])  # [N', A, T]
    tp = matched & ~ignored  # [N', A, T]; false positives are ~matched & ~ignored
    classes = torch.unique(torch.cat([label, gt_label[real_gt]]))  # [K], sorted
    counted = ~gt_ignore.transpose(1, 2)[real_gt]  # [G', A] ground truths that count
    num_gt = torch.zeros(len(classes), len(AREA_RANGES), dtype=torch.float64, device=device)
    num_gt.index_add_(0, torch.searchsorted(classes, gt_label[real_gt]), counted.double())  # [K, A]
    return _accumulate(score, torch.searchsorted(classes, label), rank, tp, ~ignored,
                       num_gt, classes, iou_thr, rec_thr, max_dets)


def _true_positives(tp: Tensor, counted: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Where the true positives of each curve are.

    Args:
        tp (Tensor[C, n], bool): true positives of C curves over n detections sorted by score.
        counted (Tensor[C, n], bool): detections that count (true or false positive, not ignored).
    Returns:
        count (Tensor[C]): number of true positives of each curve.
        position (Tensor[C, P]): index in n of each curve's p-th true positive (0 after count).
        seen (Tensor[C, P]): detections counted up to and including it (0 after count).
    """
    C, n = tp.shape
    count = tp.sum(1)  # [C]
    P = max(int(count.max()) if C and n else 0, 1)
    row, col = tp.nonzero(as_tuple=True)  # row by row, each row's true positives in order
    p = torch.arange(row.numel(), device=tp.device) - (count.cumsum(0) - count)[row]  # [nnz]
    position = torch.zeros(C, P, dtype=torch.long, device=tp.device)
    seen = torch.zeros(C, P, dtype=torch.long, device=tp.device)
    position[row, p] = col
    seen[row, p] = counted.cumsum(1, dtype=torch.int32)[row, col].long()
    return count, position, seen


def _accumulate(score, k_of_det, rank, tp, counted, num_gt, classes, iou_thr, rec_thr, max_dets):
    """Precision-recall curves per (class, area range, max detections, threshold).

    Args: per detection, ``score``, class index ``k_of_det``, ``rank`` within its image and
    class (all Tensor[N]), ``tp`` and ``counted`` (not ignored) (Tensor[N, A, T] bool);
    ``num_gt`` (Tensor[K, A]) ground truths that count.

    Precision falls at every false positive and rises only at a true positive, and recall
    grows only there: the p-th true positive, after ``seen`` counted detections, is the point
    (recall p / num_gt, precision p / seen), and the interpolated precision at any recall
    level is the best of these points at or beyond it. So only the true positives of each
    curve are computed on, not every detection (COCO's ``accumulate`` walks them all).
    """
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
    tp, counted = tp.reshape(-1, A * T), counted.reshape(-1, A * T)  # [N, C], one column per curve (a, t)
    levels = rec_thr.expand(A * T, R).contiguous()  # [C, R]
    for k in range(K):  # each class has its own curves; everything inside is batched
        gt_count = num_gt[k].repeat_interleave(T)  # [C]
        undefined = (gt_count == 0)[:, None]  # [C, 1] no ground truth in this area range
        in_class = order[(ends[k - 1] if k else 0): ends[k]]
        for m, max_det in enumerate(max_dets):
            idx = in_class[rank[in_class] < max_det]  # [n] detections scored with this cap
            n = idx.numel()
            rows = lambda x: x.index_select(0, idx).T.contiguous()  # noqa: E731  [N, C] -> [C, n]
            count, position, seen = _true_positives(rows(tp), rows(counted))  # [C], [C, P], [C, P]
            p = torch.arange(1, position.shape[1] + 1, dtype=torch.float64, device=device)  # [P]
            real = p <= count[:, None]  # [C, P]
            rc = torch.where(real, p / gt_count.clamp(min=1)[:, None], float("inf"))  # [C, P]
            pr = torch.where(real, p / seen.clamp(min=1), 0.0)  # [C, P]
            q, first = interpolate(pr, rc, levels)  # [C, R]: index of the true positive reached
            # The detection where each level is reached (COCO: the first one for level 0).
            at = torch.where(first < count[:, None], position.gather(1, first.clamp(max=p.numel() - 1)), n)
            at = torch.where(levels <= 0, 0, at)  # [C, R]
            ss = torch.where(at < n, score[idx][at.clamp(max=max(n - 1, 0))] if n else 0.0, 0.0)
            rec = count / gt_count.clamp(min=1)  # [C]
            precision[:, :, k, :, m] = q.masked_fill(undefined, -1.0).reshape(A, T, R).permute(1, 2, 0)
            scores[:, :, k, :, m] = ss.masked_fill(undefined, -1.0).reshape(A, T, R).permute(1, 2, 0)
            recall[:, k, :, m] = rec.masked_fill(undefined[:, 0], -1.0).reshape(A, T).T
    return CocoEvaluation(precision, recall, scores, iou_thr, rec_thr, classes,
                          tuple(AREA_RANGES), tuple(max_dets))

"""From matched detections to COCO's precision table (``COCOeval.accumulate``).

For one class, sort all its detections (over all images) by decreasing score. A
curve (one per area range a and IoU threshold t) then walks down that list: a
true positive raises recall by 1 / (ground truths that count) and a false
positive lowers precision; ignored detections change nothing.

Precision rises only at a true positive, and recall grows only there: the p-th
true positive, reached after ``seen`` counted detections, is the point
(recall p / num_gt, precision p / seen), and the interpolated precision at a
recall level r is the best precision of these points with recall >= r. So the
arithmetic here runs over each curve's true positives only, not over every
detection as COCO's loop does; the result is the same table.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .ap import interpolate


def true_positive_points(tp: Tensor, counted: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Where the true positives of each curve are.

    Args:
        tp (Tensor[C, n], bool): true positives of C curves over n detections sorted by score.
        counted (Tensor[C, n], bool): detections that count (true or false positive, not ignored).
    Returns:
        count (Tensor[C]): number of true positives of each curve.
        position (Tensor[C, P]): index in n of each curve's p-th true positive (0 beyond count).
        seen (Tensor[C, P]): detections counted up to and including it (0 beyond count).
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


def class_curves(tp: Tensor, counted: Tensor, score: Tensor, num_gt: Tensor,
                 levels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Interpolated precision, final recall and scores of C curves of one class.

    Args:
        tp, counted (Tensor[C, n], bool): per curve, the detections that are true positives,
            and those that count at all, sorted by decreasing score.
        score (Tensor[n]): the detections' scores.
        num_gt (Tensor[C]): ground truths that count, per curve.
        levels (Tensor[C, R]): recall levels.
    Returns:
        precision (Tensor[C, R]), recall (Tensor[C]), scores (Tensor[C, R]): as COCO's
        ``precision``, ``recall`` and ``scores`` (before marking undefined curves -1).
    """
    n = score.numel()
    count, position, seen = true_positive_points(tp, counted)  # [C], [C, P], [C, P]
    p = torch.arange(1, position.shape[1] + 1, dtype=torch.float64, device=score.device)  # [P]
    real = p <= count[:, None]  # [C, P]
    recall = torch.where(real, p / num_gt.clamp(min=1)[:, None], float("inf"))  # [C, P]
    precision = torch.where(real, p / seen.clamp(min=1), 0.0)  # [C, P]
    value, first = interpolate(precision, recall, levels)  # [C, R] each, first: which true positive
    # The detection at which each level is reached (COCO reads level 0 at the first detection).
    at = position.gather(1, first.clamp(max=p.numel() - 1))  # [C, R]
    at = torch.where(levels <= 0, 0, torch.where(first < count[:, None], at, n))  # [C, R], n: never
    scores = score[at.clamp(max=n - 1)] if n else torch.zeros_like(value)  # [C, R]
    return value, count / num_gt.clamp(min=1), torch.where(at < n, scores, 0.0)


def accumulate(score: Tensor, k_of_det: Tensor, rank: Tensor, tp: Tensor, counted: Tensor,
               num_gt: Tensor, rec_thr: Tensor, max_dets: tuple[int, ...]):
    """COCO's tables from per-detection outcomes.

    Args:
        score, k_of_det, rank (Tensor[N]): each detection's score, class index and rank
            within its image and class.
        tp, counted (Tensor[N, A, T], bool): true positive / counted (not ignored), per
            area range and IoU threshold.
        num_gt (Tensor[K, A]): ground truths that count, per class and area range.
        rec_thr (Tensor[R]): recall levels.
        max_dets (tuple[int, ...]): M caps on detections per image and class, increasing.
    Returns:
        precision (Tensor[T, R, K, A, M]), recall (Tensor[T, K, A, M]), scores (Tensor[T, R, K, A, M]):
        -1 for a (class, area range) without ground truth.
    """
    N, A, T = tp.shape
    K, R, M = num_gt.shape[0], rec_thr.numel(), len(max_dets)
    precision = score.new_full((T, R, K, A, M), -1.0, dtype=torch.float64)
    recall = score.new_full((T, K, A, M), -1.0, dtype=torch.float64)
    scores = score.new_full((T, R, K, A, M), -1.0, dtype=torch.float64)
    # All detections sorted by (class, decreasing score); the sorts are stable, so equal
    # scores stay in image order, then in score order within the image, as in COCO.
    order = torch.sort(score, descending=True, stable=True).indices  # [N]
    order = order[torch.sort(k_of_det[order], stable=True).indices]  # [N]
    ends = torch.bincount(k_of_det, minlength=K).cumsum(0).tolist()  # [K] end of each class
    tp, counted = tp.reshape(N, A * T), counted.reshape(N, A * T)  # [N, C], a curve per (a, t)
    levels = rec_thr.expand(A * T, R).contiguous()  # [C, R]
    for k in range(K):  # each class has its own curves; everything inside is batched
        gt_count = num_gt[k].repeat_interleave(T)  # [C]
        undefined = (gt_count == 0)[:, None]  # [C, 1] no ground truth in this area range
        in_class = order[(ends[k - 1] if k else 0): ends[k]]  # [n_k]
        for m, max_det in enumerate(max_dets):
            idx = in_class[rank[in_class] < max_det]  # [n] the detections this cap scores
            rows = lambda x: x.index_select(0, idx).T.contiguous()  # noqa: E731  [N, C] -> [C, n]
            q, rc, ss = class_curves(rows(tp), rows(counted), score[idx], gt_count, levels)
            precision[:, :, k, :, m] = q.masked_fill(undefined, -1.0).reshape(A, T, R).permute(1, 2, 0)
            scores[:, :, k, :, m] = ss.masked_fill(undefined, -1.0).reshape(A, T, R).permute(1, 2, 0)
            recall[:, k, :, m] = rc.masked_fill(undefined[:, 0], -1.0).reshape(A, T).T
    return precision, recall, scores

"""Greedy matching of detections to ground truths, as COCO does it (``COCOeval.evaluateImg``).

Within one image and class, detections are visited from the most to the least
confident. Each takes the *still unmatched* ground truth it overlaps best, if that
IoU reaches the threshold; a detection that finds none is a false positive, so a
second detection of an already matched object (a duplicate) is a false positive.
Two COCO refinements:

* *ignored* ground truths (crowd regions, or objects outside the area range being
  scored) are tried only when no counted one is available; a detection matched to
  one is ignored, neither true nor false positive;
* a crowd region may be matched by any number of detections.

PASCAL VOC differs in one detail: a detection takes the ground truth it overlaps
best among *all* of them, and is a duplicate if that one is already taken.

Two versions live here. :func:`greedy_match_loop` is COCO's loop, for one image,
one area range and one threshold. :func:`greedy_match` is the same rule for all
images, area ranges and thresholds at once: the step over detections stays
sequential (each detection sees what the previous ones took), everything else is
one tensor operation per step.
"""

from __future__ import annotations

import torch
from torch import Tensor

# COCO lowers a threshold of 1.0 a hair, so that a perfect overlap still matches.
MAX_THRESHOLD = 1 - 1e-10


def greedy_match_loop(iou: Tensor, threshold: float, gt_ignore: Tensor,
                      gt_crowd: Tensor) -> tuple[Tensor, Tensor]:
    """COCO's matching loop for one image, one area range and one threshold.

    Args:
        iou (Tensor[D, G]): IoU of each detection (sorted by decreasing score) with each ground truth.
        threshold (float): minimum IoU of a match.
        gt_ignore (Tensor[G], bool): ground truths that do not count (crowd, or outside the area range).
        gt_crowd (Tensor[G], bool): crowd regions, which may be matched many times.
    Returns:
        matched (Tensor[D], bool): the detection matched a ground truth.
        matched_ignored (Tensor[D], bool): ... and that ground truth is ignored.
    """
    iou_rows, ignore, crowd = iou.tolist(), gt_ignore.tolist(), gt_crowd.tolist()
    D, G = iou.shape
    order = sorted(range(G), key=lambda g: ignore[g])  # counted ground truths first (stable)
    taken, matched, matched_ignored = [False] * G, [False] * D, [False] * D
    for d in range(D):  # sequential: each detection sees what the previous ones took
        best, m = min(threshold, MAX_THRESHOLD), -1
        for g in order:
            if taken[g] and not crowd[g]:
                continue
            if m > -1 and not ignore[m] and ignore[g]:
                break  # a counted match beats any ignored one
            if iou_rows[d][g] < best:
                continue
            best, m = iou_rows[d][g], g  # on equal IoU the later ground truth wins
        if m > -1:
            taken[m], matched[d], matched_ignored[d] = True, True, ignore[m]
    return torch.tensor(matched, dtype=torch.bool), torch.tensor(matched_ignored, dtype=torch.bool)


def greedy_match(iou: Tensor, thresholds: Tensor, gt_ignore: Tensor,
                 gt_crowd: Tensor) -> tuple[Tensor, Tensor]:
    """COCO's matching for I images, A area ranges and T thresholds at once.

    Equal to :func:`greedy_match_loop` run for every (image, area range, threshold).

    Args:
        iou (Tensor[I, D, G]): IoU of detection d with ground truth g of image i;
            detections sorted by decreasing score within each image; any value below
            every threshold (e.g. -1) for pairs that must never match (padding, or a
            detection and a ground truth of different classes).
        thresholds (Tensor[T]): IoU thresholds.
        gt_ignore (Tensor[I, A, G], bool): ground truths that do not count in area range a.
        gt_crowd (Tensor[I, G], bool): crowd regions.
    Returns:
        matched (Tensor[I, D, A, T], bool): detection d matched a ground truth.
        matched_ignored (Tensor[I, D, A, T], bool): ... and that ground truth is ignored.
    """
    I, D, G = iou.shape
    A, T = gt_ignore.shape[1], thresholds.shape[0]
    matched = torch.zeros(I, D, A, T, dtype=torch.bool, device=iou.device)
    matched_ignored = torch.zeros_like(matched)
    if D == 0 or G == 0 or T == 0:
        return matched, matched_ignored
    thr = thresholds.to(iou).clamp(max=MAX_THRESHOLD)  # [T]

    # Most detections overlap nothing enough to match at any threshold: they are
    # false positives whatever happens. Only the candidates enter the sequential
    # loop, moved to the front of each image (order kept), and images are sorted
    # by their number of candidates, so step d works on a prefix of the images.
    candidate = (iou >= thr.min()).any(-1)  # [I, D]
    slot = torch.sort((~candidate).byte(), dim=1, stable=True).indices  # [I, D], candidates first
    count = candidate.sum(1)  # [I]
    count, image = torch.sort(count, descending=True, stable=True)  # [I], [I]
    counts = count.tolist()  # one host sync; the loop bounds below need plain ints
    Dc = counts[0] if counts else 0
    slot = slot[image, :Dc]  # [I, Dc]
    # G is reversed once here, so that argmax (which returns the first of equal values)
    # picks the *last* ground truth of equal IoU, as COCO's loop does.
    iou_c = iou[image].gather(1, slot[:, :, None].expand(I, Dc, G)).flip(-1)  # [I, Dc, G]
    ignore = gt_ignore[image][:, :, None, :].flip(-1)  # [I, A, 1, G]
    crowd = gt_crowd[image][:, None, None, :].flip(-1)  # [I, 1, 1, G]

    taken = torch.zeros(I, A, T, G, dtype=torch.bool, device=iou.device)
    hit_c = torch.zeros(Dc, I, A, T, dtype=torch.bool, device=iou.device)
    hit_ignored_c = torch.zeros_like(hit_c)
    gt_index = torch.arange(G, device=iou.device)
    n = I
    for d in range(Dc):  # sequential over detections, vectorized over images, ranges, thresholds
        while counts[n - 1] <= d:
            n -= 1  # images with fewer than d + 1 candidates are done
        iou_d = iou_c[:n, d][:, None, None, :]  # [n, 1, 1, G]
        free = (iou_d >= thr[:, None]) & (crowd[:n] | ~taken[:n])  # [n, A, T, G]
        counted = free & ~ignore[:n]  # [n, A, T, G]
        has_counted = counted.any(-1)  # [n, A, T]: if so, ignored ground truths are not tried
        usable = torch.where(has_counted[..., None], counted, free)  # [n, A, T, G]
        best = torch.where(usable, iou_d, -1.0).argmax(-1)  # [n, A, T]
        hit = has_counted | free.any(-1)  # [n, A, T]
        taken[:n] |= (gt_index == best[..., None]) & hit[..., None]  # [n, A, T, G]
        hit_c[d, :n] = hit
        hit_ignored_c[d, :n] = hit & ~has_counted

    # Back to the caller's images and detection positions.
    index = slot[:, :, None, None].expand(I, Dc, A, T)  # [I, Dc, A, T]
    matched[image] = matched[image].scatter(1, index, hit_c.transpose(0, 1))
    matched_ignored[image] = matched_ignored[image].scatter(1, index, hit_ignored_c.transpose(0, 1))
    return matched, matched_ignored


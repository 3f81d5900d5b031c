"""Non-maximum suppression: greedy NMS, class-aware NMS and Soft-NMS.

Greedy NMS is the post-processing step of every detector in the course (R-CNN,
Faster R-CNN, YOLO, SSD, RetinaNet). Soft-NMS: Bodla et al., "Soft-NMS --
Improving Object Detection With One Line of Code", ICCV 2017.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_boxes, check_same_length, check_tensor


def _pairwise_iou(a: Tensor, area_a: Tensor, b: Tensor, area_b: Tensor) -> Tensor:
    """IoU of every (a, b) pair, Tensor[K, M], with precomputed areas.

    Written as ``inter / (area_a + area_b - inter)``, the same arithmetic as
    torchvision's kernel, so that ties at the threshold break the same way.
    Two zero-area boxes give 0/0 = NaN here, and ``NaN > threshold`` is False:
    such boxes never suppress each other, exactly as in torchvision.
    """
    lt = torch.max(a[:, None, :2], b[None, :, :2])  # [K, M, 2]
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])  # [K, M, 2]
    wh = (rb - lt).clamp(min=0)  # [K, M, 2]
    inter = wh[..., 0] * wh[..., 1]  # [K, M]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _greedy_within(suppresses: Tensor) -> Tensor:
    """Resolve greedy NMS inside one block of boxes sorted by score.

    ``suppresses[i, j]`` (Tensor[B, B] bool, only i < j set) says box i would
    suppress box j. Box j is kept iff no *kept* box before it suppresses it.
    Starting from "everything kept" and applying that rule to all boxes at once
    until nothing changes reaches the greedy answer: the rule has exactly one
    fixed point, and each pass fixes at least one more level of the chain
    (Zheng et al., "Cluster-NMS", 2020). Usually 2-4 passes.
    """
    keep = torch.ones(suppresses.shape[0], dtype=torch.bool, device=suppresses.device)
    while True:  # sequential by nature: each pass depends on the previous one
        new = ~(suppresses & keep[:, None]).any(dim=0)  # [B]
        if torch.equal(new, keep):
            return keep
        keep = new


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    Repeatedly keep the highest-scoring remaining box and discard every
    remaining box whose IoU with it is greater than ``iou_threshold``.

    Args:
        boxes (Tensor[N, 4]): (x1, y1, x2, y2) boxes with x1 <= x2, y1 <= y2.
        scores (Tensor[N]): one score per box.
        iou_threshold (float): discard boxes with IoU > iou_threshold.
    Returns:
        Tensor[K] (int64): indices of the kept boxes, in decreasing score order
        (equal scores: lower index first, as torchvision).
    Raises:
        ValueError: on a wrong shape, mismatched lengths or x2 < x1.
    """
    check_boxes(boxes, ordered=True)
    check_tensor(scores, "scores")
    if scores.dim() != 1:
        raise ValueError(f"scores must have shape [N], got {list(scores.shape)}")
    check_same_length(boxes, scores, "boxes", "scores")
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)

    order = scores.argsort(descending=True, stable=True)  # [N]
    b = boxes[order]  # [N, 4], best first
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # [N]

    # Two exact strategies with different costs. Probe the best-scoring boxes:
    # if most of them survive, the scene is sparse and nearly every box will be
    # kept, so compare only boxes that overlap at all (sweep and prune);
    # otherwise suppression removes boxes quickly and blocks are cheaper.
    probe = min(n, 64)
    iou = _pairwise_iou(b[:probe], area[:probe], b[:probe], area[:probe])  # [P, P]
    keep_probe = _greedy_within((iou > iou_threshold).triu(diagonal=1))  # [P]
    if 2 * int(keep_probe.sum()) > probe:
        return order[_nms_sparse(b, area, iou_threshold)]
    return order[_nms_blocks(b, area, iou_threshold, keep_probe)]


def _nms_blocks(b: Tensor, area: Tensor, iou_threshold: float, keep_first: Tensor) -> Tensor:
    """Greedy NMS on score-sorted boxes, a block at a time; kept positions.
    ``keep_first`` is the already-resolved first block (the probe)."""
    # Inside a block the greedy order is resolved with a small IoU matrix; the
    # block's kept boxes then suppress everything after it at once, and the
    # suppressed boxes are dropped, so crowded scenes finish in a few steps.
    rest = torch.arange(b.shape[0], device=b.device)  # undecided, in score order
    kept = []
    block = keep_first.numel()
    while rest.numel() > 0:  # sequential: each block depends on what was kept before
        blk, rest = rest[:block], rest[block:]
        if kept:
            iou = _pairwise_iou(b[blk], area[blk], b[blk], area[blk])  # [B, B]
            kb = blk[_greedy_within((iou > iou_threshold).triu(diagonal=1))]  # [Kb]
        else:
            kb = blk[keep_first]
        kept.append(kb)
        if rest.numel() > 0 and kb.numel() > 0:
            iou = _pairwise_iou(b[kb], area[kb], b[rest], area[rest])  # [Kb, R]
            rest = rest[~(iou > iou_threshold).any(dim=0)]
        # Mostly kept: bigger blocks; mostly suppressed: smaller ones; and a
        # short remainder in one go rather than in several small steps.
        block = min(block * 2, 1024) if 2 * kb.numel() > blk.numel() else max(block // 2, 32)
        if rest.numel() <= 4 * block:
            block = rest.numel()
    return torch.cat(kept)


def _overlapping_pairs(b: Tensor) -> tuple[Tensor, Tensor]:
    """All pairs (i, j), i != j, of boxes whose x-ranges overlap, without
    looking at the others ("sweep and prune"): after sorting by x1, the boxes
    that start inside box i's x-range are a contiguous run found by binary search.

    Returns:
        (Tensor[E], Tensor[E]) int64: each overlapping pair once, in either order.
    """
    n = b.shape[0]
    x_order = b[:, 0].argsort()  # [N]
    x1, x2 = b[x_order, 0].contiguous(), b[x_order, 2].contiguous()
    end = torch.searchsorted(x1, x2, side="left")  # [N]: boxes at [pos + 1, end) start inside
    counts = (end - torch.arange(1, n + 1, device=b.device)).clamp(min=0)  # [N]
    first = torch.repeat_interleave(torch.arange(n, device=b.device), counts)  # [E]
    offset = torch.arange(first.numel(), device=b.device) - (counts.cumsum(0) - counts)[first]
    return x_order[first], x_order[first + 1 + offset]


def _nms_sparse(b: Tensor, area: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS on score-sorted boxes via the graph of suppressing pairs;
    kept positions. Cost grows with the number of overlapping pairs, not N^2."""
    i, j = _overlapping_pairs(b)
    lt = torch.max(b[i, :2], b[j, :2])  # [E, 2]
    rb = torch.min(b[i, 2:], b[j, 2:])  # [E, 2]
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]  # [E]
    hit = inter / (area[i] + area[j] - inter) > iou_threshold  # [E]
    # b is sorted by score, so the lower position of a pair is the one that suppresses.
    src, dst = torch.minimum(i[hit], j[hit]), torch.maximum(i[hit], j[hit])
    # Same fixed point as _greedy_within, on the edges instead of a dense matrix.
    keep = torch.ones(b.shape[0], dtype=torch.bool, device=b.device)
    while True:  # sequential by nature; a few passes unless boxes form long chains
        suppressed = torch.zeros_like(keep)
        suppressed[dst[keep[src]]] = True
        if torch.equal(~suppressed, keep):
            return keep.nonzero().flatten()
        keep = ~suppressed


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware NMS: boxes suppress each other only when ``idxs`` match.

    Shifts each category's boxes by a different offset so that boxes of
    different categories can never overlap, then runs one NMS.

    Args:
        boxes (Tensor[N, 4]): (x1, y1, x2, y2) boxes with x1 <= x2, y1 <= y2.
        scores (Tensor[N]): one score per box.
        idxs (Tensor[N], int): category of each box.
        iou_threshold (float): discard boxes with IoU > iou_threshold.
    Returns:
        Tensor[K] (int64): indices of the kept boxes, in decreasing score order.
    """
    check_boxes(boxes, ordered=True)
    check_tensor(idxs, "idxs")
    check_tensor(scores, "scores")
    if idxs.dim() != 1 or idxs.is_floating_point():
        raise ValueError(f"idxs must be an integer Tensor[N], got {idxs.dtype} {list(idxs.shape)}")
    check_same_length(boxes, idxs, "boxes", "idxs")
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    # Offset larger than any coordinate span, so shifted categories are disjoint.
    span = boxes.max() - boxes.min() + 1
    shifted = boxes - boxes.min() + (idxs.to(boxes) * span)[:, None]  # [N, 4]
    return nms(shifted, scores, iou_threshold)


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    method: str = "gaussian",
    iou_threshold: float = 0.3,
) -> tuple[Tensor, Tensor]:
    """Soft-NMS: decay the scores of overlapping boxes instead of removing them.

    After picking the best remaining box M, every remaining box b gets
    ``score *= exp(-IoU(M, b)^2 / sigma)`` (``method="gaussian"``) or
    ``score *= 1 - IoU(M, b)`` when IoU > ``iou_threshold`` (``method="linear"``).
    Boxes whose score falls below ``score_threshold`` are dropped.

    Args:
        boxes (Tensor[N, 4]): (x1, y1, x2, y2) boxes with x1 <= x2, y1 <= y2.
        scores (Tensor[N]): one score per box (not modified).
        sigma (float): width of the Gaussian decay.
        score_threshold (float): drop boxes whose decayed score is below this.
        method (str): ``"gaussian"`` or ``"linear"``.
        iou_threshold (float): overlap above which the linear decay applies.
    Returns:
        (Tensor[K] int64, Tensor[K]): indices of the kept boxes in the order they
        were picked, and their decayed scores (non-increasing).
    """
    check_boxes(boxes, ordered=True)
    check_tensor(scores, "scores")
    if scores.dim() != 1:
        raise ValueError(f"scores must have shape [N], got {list(scores.shape)}")
    check_same_length(boxes, scores, "boxes", "scores")
    if method not in ("gaussian", "linear"):
        raise ValueError(f"method must be 'gaussian' or 'linear', got {method!r}")
    if method == "gaussian" and sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # [N]
    live = scores.clone()  # decayed scores; the caller's tensor is untouched
    alive = live >= score_threshold  # [N]
    picked, picked_scores = [], []
    # Sequential by nature: each pick changes the scores the next pick sees.
    while bool(alive.any()):
        m = torch.where(alive, live, torch.full_like(live, -float("inf"))).argmax()
        picked.append(m)
        picked_scores.append(live[m])
        alive[m] = False
        iou = _pairwise_iou(boxes[m][None], area[m][None], boxes, area)[0]  # [N]
        iou = torch.nan_to_num(iou, nan=0.0)
        if method == "gaussian":
            decay = torch.exp(-(iou * iou) / sigma)
        else:
            decay = torch.where(iou > iou_threshold, 1 - iou, torch.ones_like(iou))
        live = torch.where(alive, live * decay, live)
        alive &= live >= score_threshold
    if not picked:
        return (torch.empty(0, dtype=torch.int64, device=boxes.device),
                torch.empty(0, dtype=scores.dtype, device=scores.device))
    return torch.stack(picked), torch.stack(picked_scores)

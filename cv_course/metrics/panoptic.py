"""Panoptic quality: PQ = SQ x RQ (Kirillov et al., "Panoptic Segmentation", CVPR 2019, sec. 4).

A panoptic output is a set of non-overlapping *segments*, each a (category,
instance) pair. A predicted and a ground-truth segment of the same category
*match* when their IoU is above 0.5; at that threshold a segment can match at
most one other (two segments both over half of a third would have to overlap),
so no assignment problem needs solving. Per category, with TP the matched pairs,
FP the unmatched predictions and FN the unmatched ground truth::

    PQ = sum_{(p, g) in TP} IoU(p, g) / (|TP| + |FP| / 2 + |FN| / 2)
       = [sum IoU / |TP|]  x  [|TP| / (|TP| + |FP| / 2 + |FN| / 2)]
       =        SQ         x                 RQ

SQ is the mean IoU of the matches (segmentation quality), RQ an F1 score
(recognition quality). PQ, SQ and RQ are averaged over the categories that occur
(TP + FP + FN > 0), overall and separately for things and stuff.

Maps follow torchmetrics' ``PanopticQuality``: ``Tensor[B, H, W, 2]`` holding
(category id, instance id) per pixel; stuff has one segment per category and
image (its instance ids are ignored). Void, as in the paper and its reference
code (``panopticapi``): ground-truth pixels of a category outside ``things`` and
``stuffs`` are void; they are removed from every predicted segment before IoU,
and an unmatched prediction that is more than half void is not a false positive.
Predicted pixels of unknown categories (allowed with
``allow_unknown_preds_category=True``) are void predictions: they belong to no
segment and simply are not predictions. (torchmetrics 1.9 also removes them from
the ground-truth segment's area, which lets a model abstain for free; we follow
``panopticapi``, and the two agree when predictions have no void.)

All segment-pair intersections come from one joint histogram: each pixel gets a
(predicted segment, ground-truth segment) code, and ``torch.unique`` with counts
returns every overlapping pair and its intersection at once, for the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PanopticStats:
    """Per-category sums over images: categories [C] (things sorted, then stuff sorted)."""

    categories: Tensor  # [C] int64 category ids
    iou_sum: Tensor  # [C] float64, sum of the IoU of the matched pairs
    tp: Tensor  # [C] int64 matched pairs
    fp: Tensor  # [C] int64 unmatched predicted segments (not mostly void)
    fn: Tensor  # [C] int64 unmatched ground-truth segments

    def __add__(self, other: "PanopticStats") -> "PanopticStats":
        return PanopticStats(self.categories, self.iou_sum + other.iou_sum, self.tp + other.tp,
                             self.fp + other.fp, self.fn + other.fn)


def _parse_categories(things, stuffs) -> tuple[list[int], list[int]]:
    things, stuffs = sorted(set(int(t) for t in things)), sorted(set(int(s) for s in stuffs))
    if set(things) & set(stuffs):
        raise ValueError(f"things and stuffs must be disjoint, both contain "
                         f"{sorted(set(things) & set(stuffs))}")
    if not things and not stuffs:
        raise ValueError("at least one of things and stuffs must be non-empty")
    return things, stuffs


def _check_maps(preds: Tensor, target: Tensor) -> None:
    for name, m in (("preds", preds), ("target", target)):
        if not isinstance(m, Tensor) or m.dim() != 4 or m.shape[-1] != 2:
            shape = list(m.shape) if isinstance(m, Tensor) else type(m).__name__
            raise ValueError(f"{name} must be a Tensor[B, H, W, 2] of (category id, instance id) "
                             f"per pixel, got {shape}; add a batch dimension with [None]")
        if m.is_floating_point() or m.is_complex():
            raise ValueError(f"{name} must hold integer ids, got {m.dtype}")
    if preds.shape != target.shape:
        raise ValueError(f"preds and target must have the same shape, got {list(preds.shape)} "
                         f"and {list(target.shape)}")


def _segments(maps: Tensor, known: Tensor, order: Tensor, is_stuff: Tensor):
    """Give every pixel a segment index; segments are (image, category, instance).

    Returns (segment index per pixel [B * H * W], category index per segment [S]
    (C = void), pixel count per segment [S]).
    """
    B = maps.shape[0]
    C = known.numel()
    cat = maps[..., 0].reshape(B, -1).long().contiguous()  # [B, N]
    inst = maps[..., 1].reshape(B, -1).long()  # [B, N]
    pos = torch.searchsorted(known, cat).clamp(max=C - 1)
    cidx = torch.where(known[pos] == cat, order[pos], C)  # [B, N] category index, C = void
    inst = torch.where((cidx == C) | is_stuff[cidx.clamp(max=C - 1)], 0, inst)
    inst = inst - inst.min() if inst.numel() else inst  # ids may be negative; only equality counts
    span = int(inst.max()) + 1 if inst.numel() else 1
    if B * (C + 1) * span >= 2**62:
        raise ValueError(f"instance ids span {span} values: too many to index segments in int64")
    image = torch.arange(B, device=maps.device)[:, None]
    key = (image * (C + 1) + cidx) * span + inst  # [B, N] unique per (image, category, instance)
    seg_key, seg, area = torch.unique(key.reshape(-1), return_inverse=True, return_counts=True)
    return seg, seg_key // span % (C + 1), area


def panoptic_stats(preds: Tensor, target: Tensor, things, stuffs,
                   allow_unknown_preds_category: bool = False) -> PanopticStats:
    """TP, FP, FN and IoU sums per category for a batch of panoptic maps.

    Args:
        preds, target (Tensor[B, H, W, 2] int): (category id, instance id) per pixel.
        things, stuffs (collections of int): the thing and the stuff category ids.
        allow_unknown_preds_category (bool): treat predicted categories outside
            ``things | stuffs`` as void instead of raising.
    Returns:
        PanopticStats: sums over the batch (add two with ``+``).
    """
    _check_maps(preds, target)
    things, stuffs = _parse_categories(things, stuffs)
    dev = preds.device
    cats = torch.tensor(things + stuffs, dtype=torch.long, device=dev)  # [C] in output order
    C = cats.numel()
    known, order = torch.sort(cats)  # sorted ids and their output index, for searchsorted
    is_stuff = torch.arange(C, device=dev) >= len(things)  # [C]
    if not allow_unknown_preds_category:
        unknown = ~torch.isin(preds[..., 0], cats)
        if bool(unknown.any()):
            raise ValueError(f"preds use category ids {preds[..., 0][unknown].unique().tolist()} "
                             f"that are neither things {things} nor stuffs {stuffs}; pass "
                             "allow_unknown_preds_category=True to count them as void")
    p_seg, p_cat, p_area = _segments(preds, known, order, is_stuff)  # [N], [P], [P]
    g_seg, g_cat, g_area = _segments(target, known, order, is_stuff)  # [N], [G], [G]
    G = max(g_cat.numel(), 1)
    # Joint histogram: every overlapping (pred, target) pair and its pixel count.
    pair, inter = torch.unique(p_seg * G + g_seg, return_counts=True)  # [Q], [Q]
    pp, gg = pair // G, pair % G  # [Q] each
    # Pixels of each predicted segment that are void in the ground truth: left out of its IoU.
    p_void = torch.zeros_like(p_area).index_add_(0, pp, torch.where(g_cat[gg] == C, inter, 0))
    union = p_area[pp] - p_void[pp] + g_area[gg] - inter  # [Q]
    same = (p_cat[pp] == g_cat[gg]) & (g_cat[gg] < C)  # [Q] same, non-void category
    iou = inter.double() / union.clamp(min=1).double()
    match = same & (iou > 0.5)  # [Q]; IoU > 0.5 makes every match unique
    mcat = g_cat[gg][match]
    tp = torch.bincount(mcat, minlength=C + 1)[:C]
    iou_sum = torch.zeros(C + 1, dtype=torch.float64, device=dev).index_add_(0, mcat, iou[match])
    p_matched = torch.zeros_like(p_area, dtype=torch.bool).index_fill_(0, pp[match], True)
    g_matched = torch.zeros_like(g_area, dtype=torch.bool).index_fill_(0, gg[match], True)
    fn = torch.bincount(g_cat[~g_matched], minlength=C + 1)[:C]  # void is index C: dropped
    counts_fp = ~p_matched & (2 * p_void <= p_area)  # mostly void: not a false positive
    fp = torch.bincount(p_cat[counts_fp], minlength=C + 1)[:C]
    return PanopticStats(cats, iou_sum[:C], tp, fp, fn)


def panoptic_quality_from_stats(stats: PanopticStats, things, stuffs,
                                per_class: bool = False) -> dict[str, Tensor]:
    """PQ, SQ, RQ per category and averaged (all, things, stuff) from summed stats.

    A category counts in an average when TP + FP + FN > 0; an average over no
    category is NaN (e.g. ``pq_stuff`` when no stuff occurs anywhere).
    """
    things, _ = _parse_categories(things, stuffs)
    tp, fp, fn = stats.tp.double(), stats.fp.double(), stats.fn.double()
    sq = torch.where(tp > 0, stats.iou_sum / tp.clamp(min=1), 0.0)  # guarded: 0/0 is no match
    denominator = tp + 0.5 * fp + 0.5 * fn
    rq = torch.where(denominator > 0, tp / denominator.clamp(min=0.5), 0.0)
    pq = sq * rq
    valid = denominator > 0
    is_thing = torch.isin(stats.categories, torch.tensor(things, device=tp.device,
                                                         dtype=torch.long))
    out = {}
    for suffix, group in (("", valid), ("_things", valid & is_thing), ("_stuff", valid & ~is_thing)):
        for name, value in (("pq", pq), ("sq", sq), ("rq", rq)):
            out[name + suffix] = value[group].mean()  # NaN for an empty group
    if per_class:
        out.update(categories=stats.categories, pq_per_class=pq, sq_per_class=sq,
                   rq_per_class=rq, tp=stats.tp, fp=stats.fp, fn=stats.fn)
    return out


def panoptic_quality(preds: Tensor, target: Tensor, things, stuffs,
                     allow_unknown_preds_category: bool = False,
                     per_class: bool = False) -> dict[str, Tensor]:
    """Panoptic, segmentation and recognition quality of a batch of panoptic maps.

    Args:
        preds, target (Tensor[B, H, W, 2] int): (category id, instance id) per pixel;
            target categories outside ``things | stuffs`` are void.
        things, stuffs (collections of int): thing and stuff category ids (disjoint).
        allow_unknown_preds_category (bool): count unknown predicted categories as void
            (default: raise ValueError).
        per_class (bool): also return ``categories`` [C] (things sorted, then stuff
            sorted) and ``pq_per_class``, ``sq_per_class``, ``rq_per_class``, ``tp``,
            ``fp``, ``fn`` (each [C]).
    Returns:
        dict[str, Tensor[]]: ``pq``, ``sq``, ``rq`` and the same with ``_things`` and
        ``_stuff`` suffixes, 0-dim float64; ``pq == sq * rq`` per category.
    """
    stats = panoptic_stats(preds, target, things, stuffs, allow_unknown_preds_category)
    return panoptic_quality_from_stats(stats, things, stuffs, per_class)


class PanopticQuality:
    """PQ accumulated over batches: ``update(preds, target)`` adds the stats, ``compute()`` scores.

    PQ is a ratio of sums over the whole data set, so batches add their TP, FP, FN
    and IoU sums, never their PQ.
    """

    def __init__(self, things, stuffs, allow_unknown_preds_category: bool = False):
        self.things, self.stuffs = _parse_categories(things, stuffs)
        self.allow_unknown = allow_unknown_preds_category
        self.stats: PanopticStats | None = None

    def update(self, preds: Tensor, target: Tensor) -> None:
        s = panoptic_stats(preds, target, self.things, self.stuffs, self.allow_unknown)
        self.stats = s if self.stats is None else self.stats + s

    def compute(self, per_class: bool = False) -> dict[str, Tensor]:
        if self.stats is None:
            raise RuntimeError("call update(preds, target) at least once before compute()")
        return panoptic_quality_from_stats(self.stats, self.things, self.stuffs, per_class)

    def reset(self) -> None:
        self.stats = None

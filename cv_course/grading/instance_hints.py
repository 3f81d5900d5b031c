"""Diagnoses for assignment 05's checks: when an answer is wrong, say which slip it is.

Each ``*_hints(out, expected, case)`` yields candidate explanations, most specific
first, by redoing the case with a usual slip (RoI Align with the other ``aligned``,
the loss over every class's mask, pasting without padding or with ``floor``, PQ
matching at IoU >= 0.5 or counting void pixels) and asking whether the student's
answer is that slip's. ``with_hint`` (shared with assignment 04) adds the first
that applies to the comparison's message. They run after the student's function
has returned, outside the guard, on the original inputs.
"""

from __future__ import annotations

import math
from collections import Counter

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.detection.mask_head import mask_loss as _reference_loss  # bound at import
from ..models.detection.mask_head import project_masks_on_boxes as _reference_targets
from ..ops.roi_align import roi_align
from .checks import CheckFailed, check_close, fail
from .numerics import tolerance
from .single_stage_hints import agrees, with_hint

__all__ = ["gradient_hint", "loss_hints", "paste_compare", "paste_hints", "pq_compare", "pq_hints", "target_hints", "with_hint"]

ROI_ALIGN_RECIPE = ("target p = roi_align(gt_masks[:, None] as floats, rois, (M, M), spatial_scale=1.0, "
                    "sampling_ratio=-1, aligned=aligned)[:, 0], with rois[p] = (matched_idxs[p], x1, y1, x2, y2)")


# -------------------------------------------------------------- mask targets
def _target_slips(out, masks, boxes, idx, M, aligned, expected):
    if agrees(out, _reference_targets(masks, boxes, idx, M, not aligned)):
        yield (f"these are the targets of aligned={not aligned}: pass `aligned` on to roi_align (aligned=True moves "
               "the box by half a pixel, so that pixel i is centred at i + 0.5, the boxes' own convention)")
    if any(agrees(out, f(expected, 0.5).to(expected.dtype)) for f in (torch.ge, torch.gt)):
        yield ("the targets are thresholded: keep RoI Align's fractions in [0, 1] (soft targets; the loss takes "
               "them as they are)")
    rois = torch.cat([idx[:, None].to(boxes), boxes], 1)
    for ratio in (1, 2):
        if agrees(out, roi_align(masks[:, None].to(boxes), rois, (M, M), 1.0, ratio, aligned)[:, 0]):
            yield (f"sampling_ratio={ratio}: use roi_align's adaptive sampling (sampling_ratio=-1, its default, "
                   "as torchvision's mask targets)")
    G = len(masks)
    if G > 1:
        for other in (torch.zeros_like(idx), torch.arange(len(idx), device=idx.device) % G):
            if not torch.equal(other, idx) and agrees(out, _reference_targets(masks, boxes, other, M, aligned)):
                yield ("proposal p must read its own ground truth, gt_masks[matched_idxs[p]]: matched_idxs[p] is "
                       "the first column (the batch index) of its row in the rois")
                break


def target_hints(out, expected, case):
    masks, boxes, idx, M, aligned = case.args
    if not len(boxes):
        return
    slips = list(_target_slips(out, masks, boxes, idx, M, aligned, expected))
    if slips:  # a small case can fit several slips (the worked example's aligned=True is all ones)
        yield "; or ".join(slips)
    yield ROI_ALIGN_RECIPE


# ------------------------------------------------------------------ mask loss
def _selected(logits, labels, idxs) -> tuple[Tensor, Tensor]:
    lab = torch.cat([lab[i] for lab, i in zip(labels, idxs)])  # [P]
    return lab, logits[torch.arange(len(lab), device=lab.device), lab]  # [P], [P, M, M]


def loss_hints(out, expected, case):
    logits, props, masks, labels, idxs, aligned = case.args
    if not isinstance(out, dict) or not isinstance(out.get("loss_mask"), Tensor):
        return
    got = out["loss_mask"]
    P, C, M, _ = logits.shape
    if P == 0:
        yield ("with no positive proposals the mean of nothing is NaN: return mask_logits.sum() * 0 "
               "(zero, and still part of the graph)") if bool(torch.isnan(got).any()) else None
        return
    targets = torch.cat([_reference_targets(m, b, i, M, aligned) for m, b, i in zip(masks, props, idxs)])
    lab, sel = _selected(logits, labels, idxs)
    one_hot = torch.zeros_like(logits)
    one_hot[torch.arange(P, device=lab.device), lab] = targets
    if agrees(got, F.binary_cross_entropy_with_logits(logits, targets[:, None].expand_as(logits))) or \
            agrees(got, F.binary_cross_entropy_with_logits(logits, one_hot)):
        yield ("the loss covers every class's mask: take only mask_logits[p, label_p], the mask of the "
               "proposal's ground-truth class (classes do not compete for a pixel; the other masks get no gradient)")
    if all(len(lab_i) for lab_i, i in zip(labels, idxs) if len(i)):
        wrong = torch.cat([lab_i[torch.arange(len(i), device=i.device) % max(len(lab_i), 1)]
                           for lab_i, i in zip(labels, idxs) if len(i)])
        if not torch.equal(wrong, lab):
            x = logits[torch.arange(P, device=lab.device), wrong]
            yield ("the class of proposal p is gt_labels[matched_idxs[p]] (of its own image), not gt_labels[p]"
                   if agrees(got, F.binary_cross_entropy_with_logits(x, targets)) else None)
    yield ("the loss is a sum: take the mean over all P x M x M pixels"
           if agrees(got, expected["loss_mask"] * P * M * M) else None)
    per_image = [F.binary_cross_entropy_with_logits(s, t) for s, t in
                 zip(sel.split([len(i) for i in idxs]), targets.split([len(i) for i in idxs])) if len(s)]
    if len(per_image) > 1 and agrees(got, torch.stack(per_image).mean()):
        yield ("a mean of per-image means: take one mean over the pixels of every image's proposals together "
               "(concatenate them first)")
    other = _reference_loss(logits, props, masks, labels, idxs, not aligned)["loss_mask"]
    yield (f"these are the targets of aligned={not aligned}: pass `aligned` on to your project_masks_on_boxes"
           if agrees(got, other) else None)
    yield ("the targets are thresholded: keep RoI Align's fractions (soft targets)"
           if agrees(got, F.binary_cross_entropy_with_logits(sel, (targets >= 0.5).to(sel.dtype))) else None)
    yield ("loss_mask = F.binary_cross_entropy_with_logits(mask_logits[p, label_p] for every p, the targets "
           "of all images concatenated), with label_p = gt_labels[matched_idxs[p]]")


def gradient_hint(got: Tensor, want: Tensor, case) -> str:
    """Why a gradient differs: it reaches the masks of other classes, or the targets are another aligned's."""
    if got.shape == want.shape and bool((got[want == 0] != 0).any()):
        return ("Your loss sends gradient to the masks of other classes: only mask_logits[p, label_p] takes "
                "part in the loss.")
    logits, *rest, aligned = case.args
    x = logits.detach().clone().requires_grad_()
    other, = torch.autograd.grad(_reference_loss(x, *rest, not aligned)["loss_mask"], x)
    if agrees(got, other, "network"):
        return (f"These are the gradients of the targets of aligned={not aligned}: pass `aligned` on to your "
                "project_masks_on_boxes.")
    return ""


# ---------------------------------------------------------------- pasting
def paste_variant(masks, boxes, shape, padding, *, pad=True, grow=True, trunc="long", plus_one=True,
                  align_corners=False) -> Tensor:
    """paste_masks_in_image one mask at a time, with a slip switched on (defaults: torchvision's)."""
    H, W = shape
    M = masks.shape[-1]
    padded = F.pad(masks[:, 0], ((padding if pad else 0),) * 4)  # [N, Mp, Mp]
    scale = float(M + 2 * padding) / M if grow else 1.0
    half = (boxes[:, 2:] - boxes[:, :2]) * 0.5
    half = half * scale
    centre = (boxes[:, 2:] + boxes[:, :2]) * 0.5
    grown = torch.cat([centre - half, centre + half], 1)
    ibox = {"long": grown, "floor": grown.floor(), "round": grown.round(), "ceil": grown.ceil()}[trunc].long()
    out = masks.new_zeros(len(masks), 1, H, W)
    for i, (x1, y1, x2, y2) in enumerate(ibox.tolist()):  # one mask at a time: a slow reference
        h, w = max(y2 - y1 + plus_one, 1), max(x2 - x1 + plus_one, 1)
        resized = F.interpolate(padded[i][None, None], size=(h, w), mode="bilinear",
                                align_corners=align_corners)[0, 0]
        top, bottom, left, right = max(y1, 0), min(y1 + h, H), max(x1, 0), min(x1 + w, W)
        if top < bottom and left < right:
            out[i, 0, top:bottom, left:right] = resized[top - y1:bottom - y1, left - x1:right - x1]
    return out


def paste_compare(out, expected, name, case):
    """Values within tolerance; a visible failure shows the first wrong object's window only (the rows and
    columns where either image is nonzero), not every pixel of every image."""
    try:
        check_close(out, expected, name, kind="arithmetic", case=case.name)
    except CheckFailed as e:
        if not case.show:
            raise
        got = out.detach().to(expected.dtype)
        wrong = ~torch.isclose(got, expected, **tolerance(expected, "arithmetic"))  # [N, 1, H, W]
        i = int(wrong.flatten(1).any(1).nonzero()[0, 0])
        nonzero = (expected[i, 0] != 0) | (got[i, 0] != 0) | wrong[i, 0]  # [H, W]
        rows, cols = nonzero.any(1).nonzero()[:, 0], nonzero.any(0).nonzero()[:, 0]
        r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        show = lambda t: "\n".join("  " + " ".join(f"{v:6.3f}" for v in row) for row in t.tolist())  # noqa: E731
        raise CheckFailed(f"{str(e).split(' (largest')[0]}.\nobject {i}, rows {r0}..{r1 - 1}, columns {c0}..{c1 - 1} "
                          f"(0 elsewhere in both):\nexpected:\n{show(expected[i, 0, r0:r1, c0:c1])}\n"
                          f"got:\n{show(got[i, 0, r0:r1, c0:c1])}") from None


PASTE_SLIPS = [
    (dict(pad=False, grow=False), "the mask is not padded: add `padding` zero pixels on every side and grow the box "
                                  "by (M + 2 padding) / M about its centre, as torchvision (the zero border lets the "
                                  "mask fade out at the box's edge)"),
    (dict(grow=False), "the mask is padded but its box is not grown to match: multiply the half width and height by "
                       "(M + 2 padding) / M about the box's centre"),
    (dict(pad=False), "the box is grown but the mask is not padded: add `padding` zero pixels on every side"),
    (dict(trunc="floor"), "the grown box's corners are rounded down: truncate them toward zero with .long() (or "
                          "int()), as torchvision; floor differs for negative corners"),
    (dict(trunc="round"), "the grown box's corners are rounded to the nearest integer: truncate them toward zero "
                          "with .long() (or int()), as torchvision"),
    (dict(trunc="ceil"), "the grown box's corners are rounded up: truncate them toward zero with .long()"),
    (dict(plus_one=False), "the box from pixel x1 to pixel x2 covers x2 - x1 + 1 pixels (both ends included): "
                           "resize the padded mask to (y2 - y1 + 1, x2 - x1 + 1)"),
    (dict(align_corners=True), "resize with F.interpolate(..., mode=\"bilinear\", align_corners=False), as "
                               "torchvision"),
]


def paste_hints(out, expected, case):
    masks, boxes, shape, padding = case.args
    for slip, hint in PASTE_SLIPS:
        if (padding or slip.get("pad", True) and slip.get("grow", True)) and \
                agrees(out, paste_variant(masks, boxes, shape, padding, **slip)):
            yield hint
    yield ("the steps: pad each mask by `padding` zeros, grow its box by (M + 2 padding) / M about the centre, "
           "truncate the corners with .long(), resize bilinearly (align_corners=False) to (y2 - y1 + 1, "
           "x2 - x1 + 1) and copy the part inside the image to rows y1..y2, columns x1..x2")


# ------------------------------------------------------------ panoptic quality
VOID = ("void",)
KEYS = [n + s for s in ("", "_things", "_stuff") for n in ("pq", "sq", "rq")]


def pq_variant(preds, target, things, stuffs, *, ge=False, void_iou=True, void_fp=True, stuff_ids=False,
               zero_average=False, one_image=False) -> dict[str, float]:
    """PQ by plain loops over pixels and segment pairs (panopticapi's), with a slip switched on."""
    things, stuffs = sorted(things), sorted(stuffs)
    cats = things + stuffs
    P, T = preds.tolist(), target.tolist()
    if one_image:  # the batch as one tall image: segments matched across images
        P, T = [sum(P, [])], [sum(T, [])]
    tp, fp, fn, iou_sum = Counter(), Counter(), Counter(), Counter()

    def segment(cat, inst):
        return VOID if cat not in cats else (cat, 0) if cat in stuffs and not stuff_ids else (cat, inst)

    for pm, tm in zip(P, T):  # image by image
        pix = [(segment(*p), segment(*t)) for prow, trow in zip(pm, tm) for p, t in zip(prow, trow)]
        p_area = Counter(p for p, _ in pix if p != VOID)
        g_area = Counter(g for _, g in pix if g != VOID)
        inter = Counter(pix)
        p_matched, g_matched = set(), set()
        for (p, g), n in inter.items():
            if p == VOID or g == VOID or p[0] != g[0]:
                continue
            iou = n / (p_area[p] - inter[(p, VOID)] * void_iou + g_area[g] - n)
            if iou >= 0.5 if ge else iou > 0.5:
                tp[g[0]] += 1
                iou_sum[g[0]] += iou
                p_matched.add(p)
                g_matched.add(g)
        fn.update(g[0] for g in g_area if g not in g_matched)
        fp.update(p[0] for p in p_area if p not in p_matched and (not void_fp or 2 * inter[(p, VOID)] <= p_area[p]))
    per = {}
    for c in cats:
        d = tp[c] + fp[c] / 2 + fn[c] / 2
        if d or zero_average:
            sq = iou_sum[c] / tp[c] if tp[c] else 0.0
            per[c] = (sq * tp[c] / d if d else 0.0, sq, tp[c] / d if d else 0.0)
    out = {}
    for suffix, group in (("", cats), ("_things", things), ("_stuff", stuffs)):
        vals = [per[c] for c in group if c in per]
        for k, name in enumerate(("pq", "sq", "rq")):
            out[name + suffix] = sum(v[k] for v in vals) / len(vals) if vals else math.nan
    return out


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or (not math.isnan(a) and not math.isnan(b) and abs(a - b) <= 1e-6)


def _pq_agrees(out, ref: dict) -> bool:
    return isinstance(out, dict) and all(k in out and _same(float(out[k]), v) for k, v in ref.items())


PQ_SLIPS = [
    (dict(ge=True), "a match needs IoU > 0.5, strictly: at IoU = 0.5 a prediction is a false positive and its "
                    "segment a false negative (above 0.5 each segment can match at most one other)"),
    (dict(void_iou=False, void_fp=False), "void pixels are not ignored: ground-truth pixels of a category in "
                                          "neither things nor stuffs are void; remove them from each predicted "
                                          "segment before its IoU, and an unmatched prediction more than half "
                                          "void is not a false positive"),
    (dict(void_iou=False), "void pixels count in the predicted segment's IoU: remove the pixels that are void in "
                           "the target from each predicted segment's area (and so from the union)"),
    (dict(void_fp=False), "an unmatched prediction that lies more than half on void is not a false positive"),
    (dict(stuff_ids=True), "stuff has one segment per category and image: ignore the instance ids of stuff "
                           "pixels (in both maps)"),
    (dict(zero_average=True), "a category with TP + FP + FN = 0 (absent from both maps) is left out of the "
                              "averages, not counted as 0; an average over no category is NaN"),
    (dict(one_image=True), "segments are matched within their own image: count TP, FP, FN and the IoU sums image "
                           "by image, then add them over the batch"),
]


def pq_compare(out, expected, name, case):
    """Every value within tolerance, NaN where (and only where) the reference has NaN."""
    bad = []
    for k, e in expected.items():
        o = out[k].detach()
        if bool(torch.isnan(e)) != bool(torch.isnan(o)) or (not bool(torch.isnan(e)) and not torch.allclose(
                o.to(e.dtype), e, **tolerance(e, "arithmetic"))):
            bad.append(k)
    if not bad:
        return
    where = f" on {case.name}"
    if case.show:
        rows = "\n".join(f"  {k:<10} expected {float(expected[k]):.4f}   got {float(out[k]):.4f}" for k in expected)
        fail(f"{name} returned the wrong values{where}:\n{rows}")
    fail(f"{name} returned the wrong {', '.join(bad)}{where}")


def pq_hints(out, expected, case):
    preds, target, things, stuffs = case.args
    for slip, hint in PQ_SLIPS:
        ref = pq_variant(preds, target, things, stuffs, **slip)
        if _pq_agrees(out, ref):
            yield hint
    if any(bool(torch.isnan(v)) for v in expected.values()) and not any(bool(torch.isnan(out[k])) for k in expected):
        yield "an average over no category is NaN (e.g. pq_stuff when no stuff occurs in either map), not 0"
    yield ("per category: TP = pairs of the same category with IoU > 0.5, FP = unmatched predictions (not mostly "
           "void), FN = unmatched ground truth; SQ = mean IoU of the TP, RQ = TP / (TP + FP / 2 + FN / 2), "
           "PQ = SQ x RQ; then average over the categories that occur")


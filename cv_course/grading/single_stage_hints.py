"""Diagnoses for assignment 04's checks: when an answer is wrong, say which slip it is.

Each ``*_hints(out, expected, case)`` yields candidate explanations, most specific
first, by trying the usual slips on the case's own inputs (the focal loss with alpha
on both classes, YOLO's w and h in pixels, DETR's cross-entropy without the
"no object" weight, FCOS's first box instead of the smallest, ...) and asking
whether the student's answer is that slip's. :func:`with_hint` adds the first
that applies to the comparison's message. They run after the student's function
has returned, outside the guard, on the original inputs.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.detection.detr_loss import detr_set_loss as _reference_set_loss  # bound at import
from ..ops import sigmoid_focal_loss as _reference_focal
from .checks import CheckFailed
from .exercise import close
from .numerics import tolerance


def agrees(a: Tensor, b: Tensor, kind: str = "arithmetic") -> bool:
    a, b = a.detach(), b.detach()
    return a.shape == b.shape and bool(torch.isfinite(a).all()) and torch.allclose(a.to(b.dtype), b,
                                                                                   **tolerance(b, kind))


def _tensors(x) -> list[Tensor]:
    if isinstance(x, Tensor):
        return [x]
    return [t for v in (x.values() if isinstance(x, dict) else x) for t in _tensors(v)]


def _float32_only(out, expected) -> bool:
    """A float64 answer whose float64 parts are right to float32 precision only."""
    pairs = [(o.detach(), e) for o, e in zip(_tensors(out), _tensors(expected)) if e.dtype == torch.float64]
    scale = lambda e: 1e-5 * float(e.abs().max()) if e.numel() else 0.0  # noqa: E731
    return bool(pairs) and all(o.shape == e.shape and torch.allclose(o.double(), e, rtol=1e-5, atol=scale(e))
                               for o, e in pairs)


def with_hint(compare, hints):
    """``compare``; on failure, the first of ``hints(out, expected, case)`` that applies is added."""

    def run(out, expected, name, case):
        try:
            compare(out, expected, name, case)
        except CheckFailed as e:
            if _float32_only(out, expected):
                hint = ("the answer is right to float32 precision only: a step runs in float32 (torch.tensor of "
                        "Python numbers, torch.where between two Python numbers, torch.ones without a dtype are "
                        "float32; give them the input's dtype)")
            else:
                hint = next((h for h in hints(out, expected, case) if h), None)
            raise CheckFailed(f"{e}\nLikely cause: {hint}" if hint else str(e)) from None

    return run


def _weighted_focal(x, t, gamma, reduction, positive: float, negative: float) -> Tensor:
    """The focal loss with the weights ``positive`` / ``negative`` on the two classes (a slip's answer)."""
    loss = _reference_focal(x, t, -1, gamma, "none") * (positive * t + negative * (1 - t))
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def focal_hints(out, expected, case):
    x, t, alpha, gamma, reduction = case.args
    if not bool(torch.isfinite(out.detach()).all()):
        yield ("log(sigmoid(x)) and log(1 - sigmoid(x)) overflow for large logits (1 - sigmoid(100) is 0 in "
               "float32): compute the cross-entropy from the logits, with F.logsigmoid or "
               "F.binary_cross_entropy_with_logits")
    slip = functools.partial(_weighted_focal, x, t, gamma, reduction)
    if alpha < 0:
        yield ("alpha < 0 switches the weighting off: no alpha_t factor at all"
               if agrees(out, slip(alpha, 1 - alpha)) else None)
        return
    same, swapped = agrees(out, slip(alpha, alpha)), agrees(out, slip(1 - alpha, alpha))
    if same or swapped:
        how = "every example gets alpha" if not swapped else "alpha and 1 - alpha are swapped" if not same else \
            "your negatives get alpha"
        yield (f"{how}: negatives (target 0) must be weighted by 1 - alpha ({1 - alpha:g} for alpha = {alpha:g}) "
               "and positives (target 1) by alpha, as in RetinaNet and torchvision")
    yield ("alpha is not applied (a negative alpha, e.g. -1, is what switches the weighting off)"
           if agrees(out, slip(1, 1)) else None)
    yield ("the focusing factor is (1 - pt) ** gamma, with pt = p for a positive and 1 - p for a negative"
           if agrees(out, _reference_focal(x, t, alpha, 0, reduction)) else None)


def yolo_hints(out, expected, case):
    boxes, labels, S, B, C, (H, W) = case.args
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # [K, 2]
    jk = (centres / torch.tensor([W / S, H / S], dtype=boxes.dtype, device=boxes.device)).floor().long()
    jk = jk.clamp(0, S - 1)  # [K, 2]
    counts = torch.zeros(S, S, dtype=torch.int64, device=boxes.device).index_put_(
        (jk[:, 1], jk[:, 0]), torch.ones_like(jk[:, 0]), accumulate=True)  # [S, S]: centres per cell
    shared = counts > 1
    got_all = out.detach().to(expected.dtype)
    if shared.any() and agrees(got_all[~shared], expected[~shared]):
        yield ("where several centres fall into one cell, the cell keeps the object of largest area "
               "(ties: the one that comes first in boxes); your cells with one centre are right")
    slots = expected[..., :5 * B].reshape(S, S, B, 5)  # [S, S, B, 5]
    got = out.detach()[..., :5 * B].reshape(S, S, B, 5).to(expected.dtype)
    cells, got_cells = slots[..., 0, 4] > 0, got[..., 0, 4] > 0  # [S, S]: cells with an object
    if not torch.equal(cells, got_cells):
        if torch.equal(cells.T, got_cells):
            yield "rows and columns are swapped: row i comes from the centre's y, column j from its x"
        yield ("the objects are in the wrong cells: the cell of a centre (cx, cy) is row i = floor(cy / (H / S)), "
               "column j = floor(cx / (W / S)), at most S - 1 (conf = 1 there and only there)")
        return
    if not all(agrees(got[..., b, :], slots[..., 0, :]) for b in range(B)) and agrees(got[..., 0, :],
                                                                                      slots[..., 0, :]):
        yield "only the first of the B slots is filled: all B slots hold the same (x, y, w, h, 1)"
    if not agrees(got[..., :2], slots[..., :2]):
        yield ("x, y are the centre's offset inside its cell, in [0, 1): cx / (W / S) - j and "
               "cy / (H / S) - i (not pixels, not the image fraction)")
    wh, got_wh = slots[..., 2:4], got[..., 2:4]
    if not agrees(got_wh, wh):
        scale = torch.tensor([W, H], dtype=wh.dtype, device=wh.device)
        if agrees(got_wh, wh * scale) or agrees(got_wh, wh * scale.flip(0)):
            yield "w and h are in pixels: divide the box's width by the image width W and its height by H"
        if agrees(got_wh, wh * scale.flip(0) / scale):
            yield "w is divided by H and h by W: image_size is (H, W)"
        yield "w, h are the box's width / W and height / H (the whole box, not half of it, no square root)"
    if not agrees(out.detach()[..., 5 * B:].to(expected.dtype), expected[..., 5 * B:]):
        yield "the class one-hot: a 1 at index 5B + label - 1 (labels run from 1 to C), zeros elsewhere"


def cells_compare(out, expected, name, case):
    """Values within tolerance; a visible failure lists the cells that differ, not the whole grid."""
    try:
        close("arithmetic")(out, expected, name, dataclasses.replace(case, show=False))
    except CheckFailed as e:
        if not case.show:
            raise
        got = out.detach().to(expected.dtype)
        bad = (~torch.isclose(got, expected, **tolerance(expected, "arithmetic"))).any(-1).nonzero().tolist()
        rows = [f"cell (row {i}, column {j}):\n  expected {[round(v, 4) for v in expected[i, j].tolist()]}\n"
                f"  got      {[round(v, 4) for v in got[i, j].tolist()]}" for i, j in bad[:3]]
        more = f"\n(and {len(bad) - 3} more cells)" if len(bad) > 3 else ""
        raise CheckFailed(f"{str(e).split(' (largest')[0]}.\n" + "\n".join(rows) + more) from None


_TERMS = ("the class term: -cost_class * softmax(pred_logits)[q, tgt_labels[t]], the softmax over all C + 1 "
          "logits (no-object included), the probability and not its log",
          "the L1 term: cost_bbox * the sum of |differences| of the (cx, cy, w, h) boxes",
          "the GIoU term: -cost_giou * GIoU of the boxes converted to (x1, y1, x2, y2) (x1 = cx - w / 2, ...), the "
          "generalized IoU and not the IoU")


def cost_hints(out, expected, case):
    weights = (list(case.args[4:]) + [1, 5, 2][len(case.args) - 4:])[:3]
    on = [i for i, w in enumerate(weights) if w]
    yield f"this case has one term only, so it is {_TERMS[on[0]]}" if len(on) == 1 else \
        "the first visible tests check each term alone"


def loss_hints(out, expected, case):
    logits, boxes, labels, tgt, rows, cols, w = case.args
    G = len(labels)
    if not isinstance(out, dict) or not all(isinstance(v, Tensor) for v in out.values()):
        return
    if not agrees(out["loss_ce"], expected["loss_ce"]):
        plain = _reference_set_loss(logits, boxes, labels, tgt, rows, cols, 1.0)["loss_ce"]
        yield ("loss_ce has no 'no object' weight: in the cross-entropy, class C (no object) weighs "
               f"no_object_weight ({w:g}) and the mean is weighted (divide by the sum of the targets' weights), "
               "as F.cross_entropy(..., weight=w) does") if agrees(out["loss_ce"], plain) else None
        Q, C1 = logits.shape
        target = torch.full((Q,), C1 - 1, dtype=torch.int64, device=logits.device)
        target[rows] = labels[cols]
        weight = torch.ones(Q, dtype=logits.dtype, device=logits.device).masked_fill(target == C1 - 1, w)  # [Q]
        by_q = (weight * F.cross_entropy(logits, target, reduction="none")).mean()
        yield ("the weighted mean divides by the sum of the weights of the Q targets, not by Q"
               if agrees(out["loss_ce"], by_q) else None)
        yield ("loss_ce covers all Q predictions: unmatched ones have the target class C (no object), the last "
               "logit; matched prediction rows[k] has tgt_labels[cols[k]]")
    if not agrees(out["loss_bbox"], expected["loss_bbox"]) or not agrees(out["loss_giou"], expected["loss_giou"]):
        K = len(rows)
        for key in ("loss_bbox", "loss_giou"):
            if K and K != max(G, 1) and agrees(out[key], expected[key] * max(G, 1) / K):
                yield f"{key} is divided by the number of pairs K; divide by the number of objects, max(G, 1)"
            if max(G, 1) != 1 and agrees(out[key], expected[key] * max(G, 1)):
                yield f"{key} is a sum: divide it by the number of objects, max(G, 1)"
        yield ("a pair is (pred_boxes[rows[k]], tgt_boxes[cols[k]]): loss_bbox sums |differences| of their "
               "(cx, cy, w, h), loss_giou sums 1 - GIoU of the (x1, y1, x2, y2) boxes")


def eligible(points, boxes, ranges) -> Tensor:
    """Bool Tensor[P, K]: box k may be point p's target (inside, within the size range)."""
    x, y = points[:, 0:1], points[:, 1:2]  # [P, 1]
    ltrb = torch.stack([x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], -1)  # [P, K, 4]
    reach = ltrb.amax(-1)
    return (ltrb.amin(-1) > 0) & (reach >= ranges[:, 0:1]) & (reach <= ranges[:, 1:2])


def fcos_hints(out, expected, case):
    points, boxes, labels, ranges = case.args
    if not (isinstance(out, tuple) and len(out) == 3):
        return
    got, want = out[0], expected[0]
    wrong = got != want  # [P]
    if wrong.any():
        several = eligible(points, boxes, ranges).sum(1) > 1  # [P]
        if bool(several[wrong].all()):
            yield ("the wrong box wins where a point lies in several boxes (each within its size range): the "
                   "box of smallest area wins, ties going to the box that comes first")
        yield ("a point is positive for a box when min(l, t, r, b) > 0 (strictly inside) and "
               "lo <= max(l, t, r, b) <= hi (both bounds included); its label is that box's, else 0")
        return
    pos = want > 0
    if not agrees(out[1].detach()[pos], expected[1][pos]):
        yield "l, t, r, b = x - x1, y - y1, x2 - x, y2 - y, to the box that the point is assigned to"
    if not agrees(out[1].detach()[~pos], expected[1][~pos]) or not agrees(out[2].detach()[~pos], expected[2][~pos]):
        yield "background points have ltrb = 0 and centerness = 0"
    yield "centerness = sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))"

"""The checks of assignment 04 (single-stage detectors and DETR) are honest: they
pass correct answers written in several styles and fail the slips particular to
focal loss, YOLO targets, DETR's cost and set loss and FCOS targets, with a
message that says what is wrong. (The generic cheat battery runs on these
exercises from test_grading.py, with the honest answers of ``HONEST``.) The
worked examples' stated numbers are checked against the references, and the
references against loop implementations and torchvision."""

from __future__ import annotations

import itertools
import math
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision

import cv_course.ops
import cv_course.ops.hungarian
from cv_course.grading import CheckFailed
from cv_course.grading import single_stage as G
from cv_course.grading.single_stage_hints import eligible
from cv_course.models.detection.detr_loss import detr_cost_matrix, detr_set_loss
from cv_course.models.detection.fcos import fcos_targets
from cv_course.models.detection.yolo import encode_yolo_targets


# ------------------------------------------------------------- honest answers
def honest_focal(inputs, targets, alpha=0.25, gamma=2, reduction="none", *, same_alpha=False, swapped=False,
                 naive=False, no_gamma=False):
    if naive:  # log of the probabilities: -inf where sigmoid rounds to 0 or 1
        p = torch.sigmoid(inputs)
        ce = -(targets * torch.log(p) + (1 - targets) * torch.log(1 - p))
    else:
        ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p = torch.sigmoid(inputs)
    pt = p * targets + (1 - p) * (1 - targets)
    loss = ce if no_gamma else ce * (1 - pt) ** gamma
    if alpha >= 0:
        a = 1 - alpha if swapped else alpha
        loss = loss * (a if same_alpha else a * targets + (1 - a) * (1 - targets))
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def focal_by_logsigmoid(inputs, targets, alpha=0.25, gamma=2, reduction="none"):
    """Another style: log p and log(1 - p) as log-sigmoids, 1 - pt from sigmoid(-x)."""
    log_pt = torch.where(targets > 0.5, F.logsigmoid(inputs), F.logsigmoid(-inputs))
    weight = torch.where(targets > 0.5, torch.sigmoid(-inputs), torch.sigmoid(inputs)) ** gamma
    if alpha >= 0:
        weight = weight * (alpha * targets + (1 - alpha) * (1 - targets))
    loss = -weight * log_pt
    return {"none": loss, "mean": loss.mean() if loss.numel() else loss.sum() / 0, "sum": loss.sum()}[reduction]


def honest_yolo(boxes, labels, grid_size=7, num_boxes=2, num_classes=20, image_size=(448, 448), *,
                pixels=False, first_wins=False, last_wins=False, swap_rows=False, one_slot=False, label_shift=1,
                image_offset=False):
    S, B, C = grid_size, num_boxes, num_classes
    H, W = image_size
    out = torch.zeros(S, S, 5 * B + C, dtype=boxes.dtype, device=boxes.device)
    wh = boxes[:, 2:] - boxes[:, :2]
    ctr = boxes[:, :2] + wh / 2
    cells = ctr / torch.tensor([W / S, H / S], dtype=boxes.dtype, device=boxes.device)
    jk = cells.floor().long().clamp(0, S - 1)  # [K, 2] (j, i)
    offset = ctr / torch.tensor([W, H], dtype=boxes.dtype, device=boxes.device) if image_offset \
        else cells - jk.to(boxes.dtype)
    size = wh if pixels else wh / torch.tensor([W, H], dtype=boxes.dtype, device=boxes.device)
    area = wh.prod(dim=1)
    order = list(range(len(boxes)))
    if not (first_wins or last_wins):  # ascending area, ties: later objects first, so the earlier one is written last
        order = sorted(order, key=lambda k: (float(area[k]), -k))
    elif first_wins:
        order = order[::-1]
    for k in order:  # sequential: the last write to a cell wins
        j, i = jk[k].tolist()
        if swap_rows:
            i, j = j, i
        row = torch.cat([offset[k], size[k], boxes.new_ones(1)])
        out[i, j] = 0
        for b in range(1 if one_slot else B):
            out[i, j, 5 * b:5 * b + 5] = row
        out[i, j, 5 * B + int(labels[k]) - label_shift] = 1
    return out


def yolo_by_scatter(boxes, labels, grid_size=7, num_boxes=2, num_classes=20, image_size=(448, 448)):
    """Another style: each cell's winner found by a scatter over ranks, no loop."""
    S, B, C = grid_size, num_boxes, num_classes
    H, W = image_size
    wh = boxes[:, 2:] - boxes[:, :2]
    ctr = (boxes[:, :2] + boxes[:, 2:]) / 2
    gx, gy = ctr[:, 0] * S / W, ctr[:, 1] * S / H
    j, i = gx.floor().long().clamp(max=S - 1), gy.floor().long().clamp(max=S - 1)
    vals = torch.stack([gx - j, gy - i, wh[:, 0] / W, wh[:, 1] / H, torch.ones_like(gx)], 1).repeat(1, B)
    vals = torch.cat([vals, F.one_hot(labels - 1, C).to(boxes.dtype)], 1)
    key = (i * S + j) * (len(boxes) + 1)  # cells apart, then rank by area within a cell
    rank = torch.argsort(torch.argsort(-wh.prod(1), stable=True))
    best = torch.full((S * S,), len(boxes), dtype=torch.long).to(boxes.device).scatter_reduce(
        0, i * S + j, rank, "amin")
    keep = rank == best[i * S + j]
    del key
    out = torch.zeros(S * S, 5 * B + C, dtype=boxes.dtype, device=boxes.device)
    out[(i * S + j)[keep]] = vals[keep]
    return out.view(S, S, -1)


def _xyxy(b):
    return torch.cat([b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2], -1)


def honest_cost(pred_logits, pred_boxes, tgt_labels, tgt_boxes, cost_class=1, cost_bbox=5, cost_giou=2, *,
                log_prob=False, plain_iou=False, xyxy_l1=False, without_no_object=False):
    logits = pred_logits[:, :-1] if without_no_object else pred_logits
    prob = logits.log_softmax(-1) if log_prob else logits.softmax(-1)
    l1 = (_xyxy(pred_boxes)[:, None] - _xyxy(tgt_boxes)[None]).abs().sum(-1) if xyxy_l1 else \
        torch.cdist(pred_boxes, tgt_boxes, p=1)
    overlap = box_iou(_xyxy(pred_boxes), _xyxy(tgt_boxes)) if plain_iou else \
        giou(_xyxy(pred_boxes), _xyxy(tgt_boxes))
    return -cost_class * prob[:, tgt_labels] + cost_bbox * l1 - cost_giou * overlap


def box_iou(a, b):
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    wh = (torch.min(a[:, None, 2:], b[None, :, 2:]) - torch.max(a[:, None, :2], b[None, :, :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def giou(a, b):
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    wh = (torch.min(a[:, None, 2:], b[None, :, 2:]) - torch.max(a[:, None, :2], b[None, :, :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area(a)[:, None] + area(b)[None] - inter
    hull = (torch.max(a[:, None, 2:], b[None, :, 2:]) - torch.min(a[:, None, :2], b[None, :, :2])).prod(-1)
    return inter / union - (hull - union) / hull


def cost_by_loop(pred_logits, pred_boxes, tgt_labels, tgt_boxes, cost_class=1, cost_bbox=5, cost_giou=2):
    """Another style: one (query, object) pair at a time."""
    Q, Gn = len(pred_logits), len(tgt_labels)
    out = pred_logits.new_zeros(Q, Gn)
    for q, t in itertools.product(range(Q), range(Gn)):
        p = pred_logits[q].softmax(0)[tgt_labels[t]]
        g = giou(_xyxy(pred_boxes[q:q + 1]), _xyxy(tgt_boxes[t:t + 1]))[0, 0]
        out[q, t] = -cost_class * p + cost_bbox * (pred_boxes[q] - tgt_boxes[t]).abs().sum() - cost_giou * g
    return out


def honest_set_loss(pred_logits, pred_boxes, tgt_labels, tgt_boxes, rows, cols, no_object_weight=0.1, *,
                    unweighted=False, matched_only=False, per_pair=False, plain_mean=False):
    Q, C1 = pred_logits.shape
    target = torch.full((Q,), C1 - 1, dtype=torch.int64, device=pred_logits.device)
    target[rows] = tgt_labels[cols]
    weight = torch.ones(C1, dtype=pred_logits.dtype, device=pred_logits.device)
    weight[-1] = 1.0 if unweighted else no_object_weight
    if matched_only:
        loss_ce = F.cross_entropy(pred_logits[rows], target[rows]) if len(rows) else pred_logits.sum() * 0
    elif plain_mean:  # weights applied, but divided by Q instead of the sum of the weights
        loss_ce = (F.cross_entropy(pred_logits, target, reduction="none") * weight[target]).mean()
    else:
        loss_ce = F.cross_entropy(pred_logits, target, weight=weight)
    n = max(len(rows), 1) if per_pair else max(len(tgt_labels), 1)
    a, b = pred_boxes[rows], tgt_boxes[cols]
    loss_bbox = (a - b).abs().sum() / n
    loss_giou = (1 - giou(_xyxy(a), _xyxy(b)).diagonal()).sum() / n
    return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}


def set_loss_by_loop(pred_logits, pred_boxes, tgt_labels, tgt_boxes, rows, cols, no_object_weight=0.1, *,
                     float32_weights=False):
    """Another style: the weighted cross-entropy by hand, one pair at a time for the boxes."""
    Q, C1 = pred_logits.shape
    pairs = dict(zip(rows.tolist(), cols.tolist()))
    target = torch.tensor([int(tgt_labels[pairs[q]]) if q in pairs else C1 - 1 for q in range(Q)],
                          device=pred_logits.device)
    w = torch.where(target == C1 - 1, no_object_weight, 1.0).to(pred_logits) if float32_weights else \
        pred_logits.new_tensor([1.0] * (C1 - 1) + [no_object_weight])[target]
    nll = -pred_logits.log_softmax(-1).gather(1, target[:, None])[:, 0]
    n = max(len(tgt_labels), 1)
    l1 = sum(((pred_boxes[q] - tgt_boxes[t]).abs().sum() for q, t in pairs.items()), pred_boxes.new_zeros(()))
    g = sum((1 - giou(_xyxy(pred_boxes[q][None]), _xyxy(tgt_boxes[t][None]))[0, 0] for q, t in pairs.items()),
            pred_boxes.new_zeros(()))
    return {"loss_ce": (w * nll).sum() / w.sum(), "loss_bbox": l1 / n, "loss_giou": g / n}


def honest_fcos(points, boxes, labels, size_ranges, *, first_wins=False, largest_wins=False, on_edge=False,
                open_range=False, no_range=False, bare_ratio=False):
    P, K = len(points), len(boxes)
    if K == 0:
        return torch.zeros(P, dtype=torch.int64, device=points.device), points.new_zeros(P, 4), points.new_zeros(P)
    x, y = points[:, :1], points[:, 1:]
    ltrb = torch.stack([x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], -1)  # [P, K, 4]
    inside = ltrb.amin(-1) >= 0 if on_edge else ltrb.amin(-1) > 0
    reach, lo, hi = ltrb.amax(-1), size_ranges[:, :1], size_ranges[:, 1:]
    fits = (reach > lo) & (reach < hi) if open_range else (reach >= lo) & (reach <= hi)
    ok = inside & (True if no_range else fits)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    if first_wins:
        key = torch.arange(K, dtype=area.dtype, device=area.device).expand(P, K)
    else:
        key = (-area if largest_wins else area).expand(P, K)
    best = torch.where(ok, key, math.inf).argmin(1)
    pos = ok.any(1)
    out = torch.where(pos[:, None], ltrb[torch.arange(P, device=points.device), best], 0.0)
    l, t, r, b = out.unbind(1)
    ratio = torch.minimum(l, r) / torch.maximum(l, r) * torch.minimum(t, b) / torch.maximum(t, b)
    ctr = ratio.sqrt() if bare_ratio else torch.where(pos, ratio.nan_to_num(0.0).sqrt(), 0.0)
    return torch.where(pos, labels[best], 0), out, ctr


def fcos_by_loop(points, boxes, labels, size_ranges):
    """Another style: a loop over the boxes from the largest to the smallest (later boxes overwrite)."""
    P = len(points)
    out_labels = torch.zeros(P, dtype=torch.int64, device=points.device)
    out = points.new_zeros(P, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order = sorted(range(len(boxes)), key=lambda k: (-float(area[k]), -k))  # the smallest (then earliest) last
    for k in order:
        x1, y1, x2, y2 = boxes[k]
        d = torch.stack([points[:, 0] - x1, points[:, 1] - y1, x2 - points[:, 0], y2 - points[:, 1]], 1)
        ok = (d.min(1).values > 0) & (d.max(1).values >= size_ranges[:, 0]) & (d.max(1).values <= size_ranges[:, 1])
        out_labels[ok] = labels[k]
        out[ok] = d[ok]
    l, t, r, b = out.unbind(1)
    safe = lambda v: torch.where(out_labels > 0, v, 1.0)  # noqa: E731
    ctr = torch.sqrt(safe(torch.minimum(l, r)) / safe(torch.maximum(l, r))
                     * safe(torch.minimum(t, b)) / safe(torch.maximum(t, b)))
    return out_labels, out, torch.where(out_labels > 0, ctr, 0.0)


HONEST = {"sigmoid_focal_loss": honest_focal, "encode_yolo_targets": honest_yolo, "detr_cost_matrix": honest_cost,
          "detr_set_loss": honest_set_loss, "fcos_targets": honest_fcos}  # for the generic cheat battery
OTHER_STYLES = {"sigmoid_focal_loss": focal_by_logsigmoid, "encode_yolo_targets": yolo_by_scatter,
                "detr_cost_matrix": cost_by_loop, "detr_set_loss": set_loss_by_loop, "fcos_targets": fcos_by_loop}


def _checks(name):
    return getattr(G, f"check_{name}_visible"), getattr(G, f"check_{name}_hidden")


@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_answers_pass(name, device):
    for check in _checks(name):
        check(HONEST[name], device)


@pytest.mark.parametrize("name", sorted(OTHER_STYLES))
def test_honest_answers_in_other_styles_pass(name):
    for check in _checks(name):
        check(OTHER_STYLES[name], "cpu")


def _expect(message, name, fn, hidden_only=False):
    """Both checks fail (the visible one with ``message``; hidden_only: the hidden one)."""
    visible, hidden = _checks(name)
    if not hidden_only:
        with pytest.raises(CheckFailed, match=message):
            visible(fn, "cpu")
    with pytest.raises(CheckFailed, match=None if not hidden_only else message):
        hidden(fn, "cpu")
    assert sys.getprofile() is None  # the guard never outlives a check


# ------------------------------------------------------------ the stated numbers
def test_the_worked_examples_state_the_references_numbers():
    easy, hard = G.logit_of(0.99, False), G.logit_of(0.1, True)
    x, t = torch.tensor([easy, hard], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert G._reference_focal(x, t).tolist() == pytest.approx([7.5e-7, 0.47], rel=0.01)
    assert float(G._reference_focal(x[:1], t[:1], alpha=0.75)) == pytest.approx(2.5e-7, rel=0.01)  # the seeds'
    assert G._reference_focal(x, t, alpha=-1, gamma=0).tolist() == pytest.approx([0.01005, 2.3026], abs=1e-4)
    big = G._reference_focal(torch.tensor([100.0, -100.0, 100.0, -100.0]), torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert big.tolist() == pytest.approx([0, 0, 75, 25], abs=1e-6)

    voc = encode_yolo_targets(*G._yolo_args(G.VOC_BOX, G.VOC_LABEL, 7, 2, 20, (448, 448)))
    assert voc.shape == (7, 7, 30) and voc.numel() == 1470 and voc[3, 3].nonzero().numel() == 11
    assert voc[3, 3, :5].tolist() == pytest.approx([0.125, 0.125, 200 / 448, 100 / 448, 1])
    assert voc[3, 3, 5:10].tolist() == voc[3, 3, :5].tolist() and voc[3, 3, 10 + 11] == 1
    cases = {c.name.split(":")[0]: c for c in G._yolo_visible(torch.Generator(), "cpu")}
    border = encode_yolo_targets(*next(c for c in cases.values() if "border" in c.tags).args)
    assert border[1, 2, :2].tolist() == [0.0, 0.0]

    cost = detr_cost_matrix(*G._seed_set("cpu"))
    assert cost.tolist() == [pytest.approx(r, abs=0.005) for r in [[-2.45, 5.39], [-1.91, 5.61], [5.55, -2.04]]]
    losses = detr_set_loss(*G._seed_set("cpu"), torch.tensor([0, 2]), torch.tensor([0, 1]), 0.1)
    assert [round(float(losses[k]), 3) for k in ("loss_ce", "loss_bbox", "loss_giou")] == [0.226, 0.045, 0.191]
    walk = cv_course.ops.hungarian.set_matching_example(verbose=False)
    assert torch.allclose(walk["cost"], cost) and walk["pred_idx"].tolist() == [0, 2]

    labels, ltrb, ctr = fcos_targets(*G._fcos_args([[30, 40], [15, 30], [60, 40]], [[10, 20, 50, 60]], [2],
                                                   [[0, math.inf]] * 3))
    assert labels.tolist() == [2, 2, 0] and ltrb[1].tolist() == [5, 10, 35, 30]
    assert ctr.tolist() == pytest.approx([1.0, math.sqrt(5 / 35 * 10 / 30), 0.0]) and round(float(ctr[1]), 3) == 0.218
    for case in G._fcos_visible(torch.Generator(), "cpu"):
        if "ranges" in case.tags:
            assert fcos_targets(*case.args)[0].tolist() == [0, 2, 2, 2]
        if case.tags == ("ambiguous",):
            assert fcos_targets(*case.args)[0].tolist() == [3]
        if "ties" in case.tags:
            assert fcos_targets(*case.args)[0].tolist() == [4, 4]


# ------------------------------------------------- the references against oracles
def test_the_focal_loss_reference_is_torchvisions():
    gen = torch.Generator().manual_seed(0)
    for dtype, (alpha, gamma, reduction) in itertools.product(
            (torch.float32, torch.float64), [(0.25, 2, "none"), (-1, 0, "sum"), (0.6, 1.5, "mean")]):
        x = (torch.randn(64, 4, generator=gen) * 4).to(dtype).requires_grad_()
        t = (torch.rand(64, 4, generator=gen) < 0.3).to(dtype)
        ours, theirs = G._reference_focal(x, t, alpha, gamma, reduction), \
            torchvision.ops.sigmoid_focal_loss(x, t, alpha, gamma, reduction)
        assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-7)
        g1, = torch.autograd.grad(ours.sum(), x)
        g2, = torch.autograd.grad(theirs.sum(), x)
        assert torch.allclose(g1, g2, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("seed", range(4))
def test_the_yolo_and_fcos_references_equal_loop_implementations(seed):
    gen = torch.Generator().manual_seed(seed)
    for case in itertools.chain(G._yolo_visible(gen, "cpu"), G._yolo_hidden(gen, "cpu")):
        assert torch.allclose(encode_yolo_targets(*case.args), honest_yolo(*case.args), atol=1e-6), case.name
    for case in itertools.chain(G._fcos_visible(gen, "cpu"), G._fcos_hidden(gen, "cpu")):
        for ours, loop in zip(fcos_targets(*case.args), fcos_by_loop(*case.args)):
            assert torch.allclose(ours.double(), loop.double(), atol=1e-6), case.name


def test_the_detr_references_equal_the_course_matcher_and_loops_and_scipy_finds_the_optimum():
    from scipy.optimize import linear_sum_assignment

    gen = torch.Generator().manual_seed(0)
    for Q, G_ in [(6, 3), (3, 5), (5, 0)]:
        logits, boxes, labels, tgt = G.random_set(gen, Q, G_, 4, torch.float64)
        cost = detr_cost_matrix(logits, boxes, labels, tgt)
        matcher = cv_course.ops.HungarianMatcher().cost_matrix({"pred_logits": logits[None], "pred_boxes": boxes[None]},
                                                               [{"labels": labels, "boxes": tgt}])[0]
        assert torch.allclose(cost, matcher) and torch.allclose(cost, cost_by_loop(logits, boxes, labels, tgt))
        rows, cols = linear_sum_assignment(cost.numpy())
        best = min((sum(cost[q, t] for q, t in zip(perm, range(G_))) for perm in itertools.permutations(range(Q), G_)),
                   default=0.0) if Q >= G_ else cost[rows, cols].sum()
        assert float(cost[rows, cols].sum()) == pytest.approx(float(best))
        rows, cols = torch.as_tensor(rows), torch.as_tensor(cols)
        ours, loop = detr_set_loss(logits, boxes, labels, tgt, rows, cols), set_loss_by_loop(
            logits, boxes, labels, tgt, rows, cols)
        assert all(torch.allclose(ours[k], loop[k]) for k in ours)


def test_the_hidden_cases_hold_the_edge_cases_they_promise():
    gen = torch.Generator().manual_seed(0)
    for case in G._yolo_hidden(gen, "cpu"):
        boxes, _, S, _, _, (H, W) = case.args
        ctr = (boxes[:, :2] + boxes[:, 2:]) / 2
        cells = (ctr / torch.tensor([W / S, H / S])).floor().long().clamp(max=S - 1)
        cell_ids = cells[:, 1] * S + cells[:, 0]
        if "collision" in case.tags:
            assert len(cell_ids.unique()) < len(cell_ids), case.name
        if "ties" in case.tags:
            area = (boxes[:, 2:] - boxes[:, :2]).prod(1)
            assert (area[0::2] == area[1::2]).all() and (cell_ids[0::2] == cell_ids[1::2]).all()
        if "border" in case.tags:
            assert (ctr % 64 == 0).all()
    for case in G._fcos_hidden(gen, "cpu"):
        points, boxes, _, ranges = case.args
        if not len(boxes):
            continue
        ltrb = torch.stack([points[:, :1] - boxes[:, 0], points[:, 1:] - boxes[:, 1], boxes[:, 2] - points[:, :1],
                            boxes[:, 3] - points[:, 1:]], -1)
        ok = eligible(points, boxes, ranges)
        if "edge" in case.tags:
            assert (ltrb.amin(-1) == 0).any() and (ltrb.amax(-1)[ltrb.amin(-1) > 0] == 64).any()
        if "ambiguous" in case.tags:
            assert (ok.sum(1) > 1).any()
        if "ties" in case.tags:
            area = (boxes[:, 2:] - boxes[:, :2]).prod(1)
            tied = ok[:, :4] & ok[:, 4:] & (area[:4] == area[4:])
            assert tied.any()
    for case in G._cost_hidden(gen, "cpu"):
        if "fewer-queries" in case.tags:
            assert len(case.args[0]) < len(case.args[2])


# ------------------------------------------------------------------ focal loss
def _focal(**bug):
    return lambda x, t, alpha=0.25, gamma=2, reduction="none": honest_focal(x, t, alpha, gamma, reduction, **bug)


CHEATS_FOCAL = {
    "alpha on both classes": (_focal(same_alpha=True), r"(?s)easy negative.*7.5e-7.*Likely cause: .*negatives "
                                                       r"\(target 0\) must be weighted by 1 - alpha"),
    "alpha and 1 - alpha swapped": (_focal(swapped=True), r"Likely cause: your negatives get alpha: negatives \(target "
                                                            r"0\) must be weighted by 1 - alpha"),
    "no focusing factor": (_focal(no_gamma=True), r"Likely cause: the focusing factor is \(1 - pt\) \*\* gamma"),
    "log of sigmoid": (_focal(naive=True), r"(?s)\+-100.*Likely cause: log\(sigmoid\(x\)\).*F.logsigmoid"),
    "alpha_t even for alpha < 0": (lambda x, t, alpha=0.25, gamma=2, reduction="none": honest_focal(
        x, t, -1, gamma, reduction) * (alpha * t + (1 - alpha) * (1 - t)) if reduction == "none" else honest_focal(
        x, t, alpha, gamma, reduction), "Likely cause: alpha < 0 switches the weighting off"),
    "reduction ignored": (lambda x, t, alpha=0.25, gamma=2, reduction="none": honest_focal(x, t, alpha, gamma),
                          r'shape \[2, 3\], expected \[\] on reduction="mean"'),
    "detached": (lambda *a: _focal()(*a).detach(), "does not depend on its inputs"),
    "torchvision's focal loss": (lambda *a: torchvision.ops.sigmoid_focal_loss(*a), "torchvision.ops"),
    "the course's focal loss": (lambda *a: cv_course.ops.sigmoid_focal_loss(*a), "cv_course.ops"),
}


@pytest.mark.parametrize("cheat", list(CHEATS_FOCAL))
def test_focal_loss_slips_and_shortcuts_fail(cheat):
    fn, message = CHEATS_FOCAL[cheat]
    _expect(message, "sigmoid_focal_loss", fn)


# ---------------------------------------------------------------- YOLO targets
def _yolo(**bug):
    return lambda b, lab, S=7, B=2, C=20, size=(448, 448): honest_yolo(b, lab, S, B, C, size, **bug)


CHEATS_YOLO = {
    "w, h not normalised": (_yolo(pixels=True), r"(?s)7 x 7 x 30.*Likely cause: w and h are in pixels"),
    "the first object wins a cell": (_yolo(first_wins=True), r"(?s)larger box.*Likely cause: where several "
                                     r"centres fall into one cell, the cell keeps the object of largest area"),
    "the last object wins ties": (_yolo(last_wins=True), r"(?s)the same area.*first one in the list wins"),
    "rows and columns swapped": (_yolo(swap_rows=True), "Likely cause: rows and columns are swapped"),
    "one slot only": (_yolo(one_slot=True), "Likely cause: only the first of the B slots is filled"),
    "class at index label": (_yolo(label_shift=0), r"Likely cause: the class one-hot: a 1 at index 5B \+ label - 1"),
    "x, y as image fractions": (_yolo(image_offset=True),
                                r"Likely cause: x, y are the centre's offset inside its cell"),
    "float32 always": (lambda b, *a: honest_yolo(b.float(), *a), "dtype"),
    "the course's encoder": (lambda *a: encode_yolo_targets(*a), "cv_course.models"),
}


@pytest.mark.parametrize("cheat", list(CHEATS_YOLO))
def test_yolo_slips_and_shortcuts_fail(cheat):
    fn, message = CHEATS_YOLO[cheat]
    _expect(message, "encode_yolo_targets", fn)


# ------------------------------------------------------------- DETR: the cost
def _cost(**bug):
    return lambda *a: honest_cost(*a, **bug)


CHEATS_COST = {
    "log-probabilities": (_cost(log_prob=True), r"(?s)class term alone.*Likely cause: .* it is the class term"),
    "softmax without no-object": (_cost(without_no_object=True), "no-object included"),
    "IoU instead of GIoU": (_cost(plain_iou=True), r"(?s)GIoU term alone.*it is the GIoU term.*not the IoU"),
    "L1 on corners": (_cost(xyxy_l1=True), r"(?s)L1 term alone.*it is the L1 term.*\(cx, cy, w, h\)"),
    "the course's matcher": (lambda lg, bx, lb, tb, *w: cv_course.ops.HungarianMatcher(*w).cost_matrix(
        {"pred_logits": lg[None], "pred_boxes": bx[None]}, [{"labels": lb, "boxes": tb}])[0], "cv_course.ops"),
    "the course's cost": (lambda *a: detr_cost_matrix(*a), "cv_course.models"),
    "torchvision's GIoU": (lambda lg, bx, lb, tb, c1=1, c2=5, c3=2: honest_cost(lg, bx, lb, tb, c1, c2, 0) - c3 *
                           torchvision.ops.generalized_box_iou(_xyxy(bx), _xyxy(tb)), "torchvision.ops"),
}


@pytest.mark.parametrize("cheat", list(CHEATS_COST))
def test_detr_cost_slips_and_shortcuts_fail(cheat):
    fn, message = CHEATS_COST[cheat]
    _expect(message, "detr_cost_matrix", fn)


# --------------------------------------------------------- DETR: the set loss
def _loss(**bug):
    return lambda *a: honest_set_loss(*a, **bug)


CHEATS_LOSS = {
    "no no-object weight": (_loss(unweighted=True), r"(?s)walk-through.*0.226.*Likely cause: loss_ce has no "
                                                   r"'no object' weight"),
    "matched predictions only": (_loss(matched_only=True), "Likely cause: loss_ce covers all Q predictions"),
    "weights without the weighted mean": (_loss(plain_mean=True), "divides by the sum of the weights"),
    "box losses divided by the pairs": (_loss(per_pair=True), r"(?s)fewer queries.*Likely cause: loss_bbox is divided "
                                                             r"by the number of pairs K"),
    "detached boxes": (lambda lg, bx, *a: honest_set_loss(lg, bx.detach(), *a),
                       r"loss_bbox'\] does not depend on pred_boxes"),
    "the course's set loss": (lambda *a: detr_set_loss(*a), "cv_course.models"),
}


def test_a_float64_set_loss_with_float32_weights_is_told_why():
    with pytest.raises(CheckFailed, match="right to float32 precision only"):
        G.check_detr_set_loss_visible(lambda *a: set_loss_by_loop(*a, float32_weights=True), "cpu")


@pytest.mark.parametrize("cheat", list(CHEATS_LOSS))
def test_detr_set_loss_slips_and_shortcuts_fail(cheat):
    fn, message = CHEATS_LOSS[cheat]
    _expect(message, "detr_set_loss", fn)


def test_a_wrong_gradient_fails_even_with_the_right_values():
    def set_loss_wrong_grad(lg, bx, *a):
        out = honest_set_loss(lg, bx, *a)
        return {**out, "loss_giou": out["loss_giou"] + 0.5 * (bx.sum() - bx.sum().detach())}

    _expect(r"the gradient of detr_set_loss\['loss_giou'\] with respect to pred_boxes", "detr_set_loss",
            set_loss_wrong_grad)


# ---------------------------------------------------------------- FCOS targets
def _fcos(**bug):
    return lambda *a: honest_fcos(*a, **bug)


CHEATS_FCOS = {
    "the first box wins": (_fcos(first_wins=True), r"(?s)the smaller box wins.*Likely cause: the wrong box wins where "
                                                   r"a point lies in several boxes"),
    "the largest box wins": (_fcos(largest_wins=True), "the box of smallest area wins"),
    "points on an edge are positive": (_fcos(on_edge=True), r"(?s)on the box's edge.*min\(l, t, r, b\) > 0"),
    "open size ranges": (_fcos(open_range=True), r"(?s)size ranges.*both bounds included"),
    "no size ranges": (_fcos(no_range=True), r"(?s)size ranges.*expected"),
    "NaN centre-ness on background": (_fcos(bare_ratio=True), "NaN"),
    "the course's targets": (lambda *a: fcos_targets(*a), "cv_course.models"),
}


@pytest.mark.parametrize("cheat", list(CHEATS_FCOS))
def test_fcos_slips_and_shortcuts_fail(cheat):
    fn, message = CHEATS_FCOS[cheat]
    _expect(message, "fcos_targets", fn)


def test_hidden_failures_name_the_slip_without_the_data():
    for name, fn, message in [("sigmoid_focal_loss", _focal(same_alpha=True), "every example gets alpha"),
                              ("encode_yolo_targets", _yolo(pixels=True), "w and h are in pixels"),
                              ("encode_yolo_targets", _yolo(first_wins=True), "largest area"),
                              ("detr_set_loss", _loss(unweighted=True), "no 'no object' weight"),
                              ("fcos_targets", _fcos(first_wins=True), "smallest area wins")]:
        with pytest.raises(CheckFailed, match=message) as info:
            _checks(name)[1](fn, "cpu")
        assert "tensor(" not in str(info.value) and "expected:" not in str(info.value)


def test_the_reference_is_computed_after_the_students_function_returns():
    def peek(*args):
        frame = sys._getframe(1)
        while frame is not None:
            assert "expected" not in frame.f_locals
            frame = frame.f_back
        return honest_set_loss(*args)

    G.check_detr_set_loss_visible(peek, "cpu")

"""Checks for assignment 04 (single-stage detectors and DETR): ``sigmoid_focal_loss``,
``encode_yolo_targets``, ``detr_cost_matrix``, ``detr_set_loss`` and ``fcos_targets``.

Visible checks use the lecture's worked examples (the focal loss of an easy
negative at pt = 0.99 and of a hard positive at pt = 0.1; VOC's 7 x 7 x 30 YOLO
target; the seeds' three-query, two-object set-loss walk-through) and a small twin
of every kind of hidden case. Hidden checks draw fresh inputs at every run and
compare with the ``cv_course`` references on the student's device:
``cv_course.ops.sigmoid_focal_loss`` (torchvision's convention) and
``cv_course.models.detection.{yolo, detr_loss, fcos}``. The losses' gradients are
compared too.

When an answer is wrong, the comparators try the usual slips on the same inputs
(alpha on both classes, w and h in pixels, no "no object" weight, the first box
instead of the smallest) and say which one it is (:mod:`.single_stage_hints`).

What the answers may not use (see :mod:`.policy`): the course's own code (its
matcher, losses and detectors included) and ``torchvision.ops`` /
``torchvision.models``. ``F.binary_cross_entropy_with_logits``,
``F.cross_entropy`` and scipy's ``linear_sum_assignment`` are allowed.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from ..models.detection.detr_loss import detr_cost_matrix as _reference_cost  # bound at import, before
from ..models.detection.detr_loss import detr_set_loss as _reference_set_loss  # any student code runs
from ..models.detection.fcos import fcos_targets as _reference_fcos
from ..models.detection.yolo import encode_yolo_targets as _reference_yolo
from ..ops import sigmoid_focal_loss as _reference_focal
from . import policy
from . import single_stage_hints as hints
from .checks import check_close, check_like, fail
from .exercise import Case, Exercise, _reference_call, _student_call, close
from .numerics import dtype_name

FORBIDDEN = policy.course_code() + policy.TORCHVISION


def _tags(dtype, *more) -> tuple[str, ...]:
    return ("float64",) * (dtype == torch.float64) + more


# ---------------------------------------------------------------- focal loss
def logit_of(pt: float, positive: bool) -> float:
    """The logit x whose example has probability ``pt`` of its true answer."""
    logit = math.log(pt) - math.log1p(-pt)  # sigmoid(logit) = pt
    return logit if positive else -logit


def _focal_args(x, t, alpha=0.25, gamma=2.0, reduction="none", *, dtype=torch.float32, device="cpu"):
    as_t = functools.partial(torch.as_tensor, dtype=dtype, device=device)
    return as_t(x), as_t(t), alpha, gamma, reduction


def _focal_visible(gen, device):
    f = functools.partial(_focal_args, device=device)
    easy, hard = logit_of(0.99, False), logit_of(0.1, True)
    yield Case(f"the seeds' easy negative: logit {easy:.3f} (p = 0.01, target 0, so pt = 0.99): "
               "0.75 * (1 - 0.99)^2 * -log 0.99 = 7.5e-7 (negatives weigh 1 - alpha = 0.75, as in RetinaNet "
               "and torchvision; the seeds' weight 0.25 would give 2.5e-7, and cross-entropy gives 0.01)",
               f([easy], [0.0]), show=True)
    yield Case(f"the seeds' hard positive: logit {hard:.3f} (p = 0.1, target 1, so pt = 0.1): "
               "0.25 * 0.9^2 * -log 0.1 = 0.47 (cross-entropy gives 2.30)", f([hard], [1.0]), show=True)
    yield Case("alpha = -1 (no weighting) and gamma = 0: plain cross-entropy, 0.01005 and 2.303",
               f([easy, hard], [0.0, 1.0], -1, 0), ("no-alpha",), show=True)
    yield Case("alpha = 0.5, gamma = 1, logits [-2, -1, 0, 1, 2], targets [0, 1, 0, 1, 1]",
               f([-2.0, -1.0, 0.0, 1.0, 2.0], [0.0, 1.0, 0.0, 1.0, 1.0], 0.5, 1), ("alpha-gamma",), show=True)
    grid = torch.tensor([[-3.0, 0.5, 2.0], [1.0, -0.5, 4.0]])
    labels = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    for reduction in ("mean", "sum"):
        yield Case(f'reduction="{reduction}" on a 2 x 3 grid of logits: a 0-dim tensor',
                   f(grid, labels, 0.25, 2, reduction), ("reduction",), show=True)
    yield Case("logits of +-100 (right and badly wrong, both classes): finite, 25 and 75 for the wrong ones",
               f([100.0, -100.0, 100.0, -100.0], [1.0, 0.0, 0.0, 1.0]), ("large",), show=True)
    batch = torch.randn(2, 3, 4, generator=gen) * 2
    yield Case("a batch of 2 images x 3 anchors x 4 classes: the loss of every element, and the first image "
               "alone gets the same", f(batch, (torch.rand(2, 3, 4, generator=gen) < 0.3).float()),
               ("batch",), alone=True, show=True)
    yield Case("the gradient with respect to the logits (same 2 x 3 grid)", f(grid, labels), ("gradient",),
               grad=(0,), show=True)
    yield Case("the seeds' two examples in float64: a float64 result",
               f([easy, hard], [0.0, 1.0], dtype=torch.float64), ("float64",), show=True)
    yield Case("no elements (shape [0, 4]) with the default reduction: shape [0, 4]",
               f(torch.zeros(0, 4), torch.zeros(0, 4)), ("empty",), show=True)


def _focal_hidden(gen, device):
    for shape, dtype, alpha, gamma, reduction, tags in [
            ((300, 4), torch.float32, 0.25, 2.0, "none", ()),
            ((100, 5), torch.float64, 0.25, 2.0, "none", ()),
            ((50, 3), torch.float32, 0.6, 1.5, "none", ("alpha-gamma",)),
            ((60, 4), torch.float32, -1, 2.0, "none", ("no-alpha",)),
            ((40, 4), torch.float64, -1, 0.0, "sum", ("no-alpha", "reduction")),
            ((200, 4), torch.float32, 0.25, 2.0, "mean", ("reduction",)),
            ((2, 50, 4), torch.float32, 0.25, 2.0, "none", ("batch",))]:
        x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 3).to(dtype)
        t = (torch.rand(shape, generator=gen) < 0.2).to(dtype)  # mostly negatives, as for anchors
        yield Case(f"{list(shape)} random logits, alpha {alpha}, gamma {gamma}, reduction {reduction!r}, "
                   f"{dtype_name(dtype)}", _focal_args(x, t, alpha, gamma, reduction, device=device),
                   _tags(dtype, *tags), alone=len(shape) == 3)
    x = torch.randn(80, 4, generator=gen, dtype=torch.float64)
    t = (torch.rand(80, 4, generator=gen) < 0.3).double()
    yield Case("the gradient with respect to the logits, 80 x 4, float64",
               _focal_args(x, t, dtype=torch.float64, device=device), ("gradient", "float64"), grad=(0,))
    yield Case("the gradient with respect to the logits, alpha 0.5, gamma 1, 'sum', float32",
               _focal_args(x.float(), t.float(), 0.5, 1.0, "sum", device=device), ("gradient", "reduction"),
               grad=(0,))
    big = (torch.rand(100, 2, generator=gen, dtype=torch.float64) * 200 - 100).round()
    yield Case("logits in [-100, 100], float32", _focal_args(big, (torch.rand(100, 2, generator=gen) < 0.5).double(),
                                                             device=device), ("large",))
    yield Case("no elements", _focal_args(torch.zeros(0, 3), torch.zeros(0, 3), device=device), ("empty",))


FOCAL = Exercise("sigmoid_focal_loss", _reference_focal, FORBIDDEN, _focal_visible, _focal_hidden,
                 hints.with_hint(close("arithmetic"), hints.focal_hints), batched=(0, 1))
check_sigmoid_focal_loss_visible, check_sigmoid_focal_loss_hidden = FOCAL.checks()


# -------------------------------------------------------------- YOLO targets
# The lecture's VOC setting: a 448 x 448 image, S = 7 (cells of 64 pixels), B = 2, C = 20.
VOC_BOX, VOC_LABEL = [[100.0, 150.0, 300.0, 250.0]], [12]  # centre (200, 200): cell (3, 3)


def _yolo_args(boxes, labels, S, B, C, size, *, dtype=torch.float32, device="cpu"):
    boxes = torch.as_tensor(boxes, dtype=dtype, device=device).reshape(-1, 4)
    return boxes, torch.as_tensor(labels, dtype=torch.int64, device=device), S, B, C, tuple(size)


def _yolo_visible(gen, device):
    y = functools.partial(_yolo_args, device=device)
    yield Case("the lecture's VOC setting (S = 7, B = 2, C = 20, a 448 x 448 image: a 7 x 7 x 30 tensor): the box "
               "(100, 150, 300, 250) of class 12 has its centre (200, 200) in row 3, column 3; x = y = "
               "200 / 64 - 3 = 0.125, w = 200 / 448 = 0.446, h = 100 / 448 = 0.223, conf 1 in both slots, "
               "a 1 at channel 10 + 11", y(VOC_BOX, VOC_LABEL, 7, 2, 20, (448, 448)), show=True)
    yield Case("a 96 x 128 image (H x W), S = 4, B = 1, C = 4: boxes (8, 4, 40, 20) of class 1 and (70, 40, 126, 94) "
               "of class 4; cells of 32 x 24 pixels",
               y([[8, 4, 40, 20], [70, 40, 126, 94]], [1, 4], 4, 1, 4, (96, 128)),
               ("non-square",), show=True)
    yield Case("two centres in cell (0, 0) of a 128 x 128 image, S = 4: the larger box (2, 2, 30, 30) wins over the "
               "earlier, smaller (4, 4, 20, 20)", y([[4, 4, 20, 20], [2, 2, 30, 30]], [2, 3], 4, 2, 4, (128, 128)),
               ("collision",), show=True)
    yield Case("two boxes of the same area (16 x 16) with centres in cell (1, 1), S = 4: the first one in the "
               "list wins",
               y([[36, 36, 52, 52], [44, 40, 60, 56]], [3, 1], 4, 2, 4, (128, 128)), ("ties", "collision"),
               show=True)
    yield Case("a centre exactly on a cell border: (48, 16, 80, 48) has its centre (64, 32) on column 2's left edge "
               "(x = 0) and row 1's top edge, S = 4 on 128 x 128",
               y([[48, 16, 80, 48]], [2], 4, 2, 3, (128, 128)), ("border",), show=True)
    yield Case("the VOC example in float64: a float64 result",
               y(VOC_BOX, VOC_LABEL, 7, 2, 20, (448, 448), dtype=torch.float64), ("float64",), show=True)
    yield Case("no objects (boxes of shape [0, 4]): all zeros, 7 x 7 x 30",
               y(torch.zeros(0, 4), torch.zeros(0), 7, 2, 20, (448, 448)), ("empty",), show=True)


def random_scene(gen, k: int, size=(128, 128), lo=6.0, hi=60.0) -> Tensor:
    """Tensor[k, 4] (float64) of boxes inside an image of ``size`` (H, W), sides in [lo, hi)."""
    H, W = size
    wh = torch.rand(k, 2, generator=gen, dtype=torch.float64) * (hi - lo) + lo  # [k, 2]
    wh = wh.minimum(torch.tensor([W, H], dtype=torch.float64))
    xy = torch.rand(k, 2, generator=gen, dtype=torch.float64) * (torch.tensor([W, H]) - wh)  # top-left
    return torch.cat([xy, xy + wh], dim=1)


def _same_size_pairs(gen, pairs: int, S: int, size: int) -> Tensor:
    """Integer boxes in pairs of one size (exactly equal areas) whose two centres share a cell."""
    cell = size // S
    ij = torch.randint(S, (pairs, 1, 2), generator=gen) * cell  # [pairs, 1, 2]: a cell's corner
    centres = ij + torch.randint(2, cell - 1, (pairs, 2, 2), generator=gen)  # [pairs, 2, 2]
    half = torch.randint(2, cell // 2, (pairs, 1, 2), generator=gen)  # [pairs, 1, 2]
    return torch.cat([centres - half, centres + half], dim=-1).reshape(-1, 4).double()


def _yolo_hidden(gen, device):
    for k, S, B, C, size, dtype, tags in [(6, 7, 2, 4, (128, 128), torch.float32, ()),
                                          (8, 7, 2, 20, (448, 448), torch.float64, ()),
                                          (5, 5, 3, 3, (96, 160), torch.float32, ("non-square",)),
                                          (40, 4, 2, 4, (128, 128), torch.float32, ("collision",))]:
        boxes = random_scene(gen, k, size, hi=0.5 * min(size))
        labels = torch.randint(1, C + 1, (k,), generator=gen)
        yield Case(f"{k} random boxes{' (crowded: shared cells)' * ('collision' in tags)} in a {size[0]} x {size[1]} "
                   f"image, S = {S}, B = {B}, C = {C}, {dtype_name(dtype)}",
                   _yolo_args(boxes, labels, S, B, C, size, dtype=dtype, device=device), _tags(dtype, *tags))
    boxes = _same_size_pairs(gen, 6, 4, 128)
    yield Case("6 pairs of same-sized boxes whose centres share a cell, S = 4, 128 x 128",
               _yolo_args(boxes, torch.randint(1, 5, (12,), generator=gen), 4, 2, 4, (128, 128), device=device),
               ("ties", "collision"))
    centres = torch.randint(1, 7, (5, 2), generator=gen).double() * 64  # on the borders of 64-pixel cells
    half = torch.randint(4, 30, (5, 2), generator=gen).double()
    yield Case("5 integer boxes centred exactly on cell borders, S = 7, 448 x 448",
               _yolo_args(torch.cat([centres - half, centres + half], 1), torch.randint(1, 21, (5,), generator=gen),
                          7, 2, 20, (448, 448), device=device), ("border",))
    yield Case("no objects", _yolo_args(torch.zeros(0, 4), torch.zeros(0), 7, 2, 4, (128, 128), device=device),
               ("empty",))


YOLO = Exercise("encode_yolo_targets", _reference_yolo, FORBIDDEN, _yolo_visible, _yolo_hidden,
                hints.with_hint(hints.cells_compare, hints.yolo_hints))
check_encode_yolo_targets_visible, check_encode_yolo_targets_hidden = YOLO.checks()


# ------------------------------------------------------------ DETR: the cost
# The seeds' walk-through: three queries, a cat (class 0) and a dog (class 1); class 2 is "no object".
SEED_LOGITS = [[3.0, 0.0, 0.0], [2.0, 0.0, 1.0], [0.0, 2.0, 0.0]]
SEED_BOXES = [[0.32, 0.30, 0.20, 0.20], [0.28, 0.31, 0.22, 0.20], [0.70, 0.68, 0.20, 0.25]]
SEED_LABELS, SEED_TARGETS = [0, 1], [[0.30, 0.30, 0.20, 0.20], [0.70, 0.70, 0.20, 0.20]]


def random_set(gen, Q: int, G: int, C: int, dtype=torch.float32, device="cpu"):
    """(pred_logits [Q, C + 1], pred_boxes [Q, 4], tgt_labels [G], tgt_boxes [G, 4]): boxes as normalized
    (cx, cy, w, h) inside the image, some predictions near the targets."""
    def boxes(n):
        wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 0.4 + 0.05
        return torch.cat([wh / 2 + torch.rand(n, 2, generator=gen, dtype=torch.float64) * (1 - wh), wh], dim=1)

    tgt, pred = boxes(G), boxes(Q)
    near = min(Q, G) // 2
    pred[:near] = tgt[:near] + 0.02 * torch.randn(near, 4, generator=gen, dtype=torch.float64)
    logits = torch.randn(Q, C + 1, generator=gen, dtype=torch.float64) * 2
    labels = torch.randint(C, (G,), generator=gen)
    return tuple(x.to(device=device, dtype=dtype if x.is_floating_point() else x.dtype)
                 for x in (logits, pred, labels, tgt))


def _seed_set(device, dtype=torch.float32):
    t = functools.partial(torch.tensor, device=device)
    return (t(SEED_LOGITS, dtype=dtype), t(SEED_BOXES, dtype=dtype), t(SEED_LABELS), t(SEED_TARGETS, dtype=dtype))


def _cost_visible(gen, device):
    seed = _seed_set(device)
    yield Case("the class term alone (cost_bbox = cost_giou = 0) on the seeds' walk-through: -softmax of all 3 "
               "logits at the target's class", (*seed, 1, 0, 0), ("weights",), show=True)
    yield Case("the L1 term alone (cost_class = cost_giou = 0, cost_bbox = 5): 5 * sum |(cx, cy, w, h) differences|",
               (*seed, 0, 5, 0), ("weights",), show=True)
    far = seed[:3] + (torch.tensor([[0.8, 0.2, 0.2, 0.2], [0.1, 0.9, 0.1, 0.1]], device=device),)
    yield Case("the GIoU term alone (cost_giou = 2) for targets that overlap no query: GIoU < 0, so -2 GIoU > 0",
               (*far, 0, 0, 2), ("weights",), show=True)
    yield Case("the seeds' walk-through (3 queries; a cat, class 0, and a dog, class 1), all three terms: cost "
               "[[-2.45, 5.39], [-1.91, 5.61], [5.55, -2.04]] (rounded)", seed, show=True)
    yield Case("fewer queries than objects: the first 2 queries against 3 objects, a 2 x 3 cost",
               (seed[0][:2], seed[1][:2], torch.tensor([0, 1, 0], device=device),
                torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2], [0.5, 0.5, 0.4, 0.4]], device=device)),
               ("fewer-queries",), show=True)
    yield Case("the walk-through in float64: a float64 result", _seed_set(device, torch.float64), ("float64",),
               show=True)
    yield Case("no objects (tgt_labels of shape [0]): a 3 x 0 cost", (*seed[:2], seed[2][:0], seed[3][:0]),
               ("empty",), show=True)


def _cost_hidden(gen, device):
    for Q, G, C, dtype, weights, tags in [(20, 6, 4, torch.float32, (), ()),
                                          (15, 8, 20, torch.float64, (), ()),
                                          (10, 5, 4, torch.float32, (2.0, 1.0, 3.0), ("weights",)),
                                          (3, 7, 4, torch.float32, (), ("fewer-queries",))]:
        yield Case(f"{Q} predictions, {G} objects, {C} classes{', weights ' + str(weights) if weights else ''}, "
                   f"{dtype_name(dtype)}", (*random_set(gen, Q, G, C, dtype, device), *weights), _tags(dtype, *tags))
    yield Case("no objects", random_set(gen, 10, 0, 4, device=device), ("empty",))


COST = Exercise("detr_cost_matrix", _reference_cost, FORBIDDEN, _cost_visible, _cost_hidden,
                hints.with_hint(close("arithmetic"), hints.cost_hints))
check_detr_cost_matrix_visible, check_detr_cost_matrix_hidden = COST.checks()


# -------------------------------------------------------- DETR: the set loss
WALK_THROUGH = ("the seeds' walk-through: query 0 -> cat, query 2 -> dog, query 1 -> no object (weight 0.1): "
                "loss_ce = (0.09 + 0.24 + 0.1 * 1.41) / (1 + 1 + 0.1) = 0.226, loss_bbox = (0.02 + 0.07) / 2 = 0.045, "
                "loss_giou = (0.18 + 0.20) / 2 = 0.19")


def _pairs(gen, Q: int, G: int, device) -> tuple[Tensor, Tensor]:
    """A random one-to-one matching of min(Q, G) pairs, in no particular order."""
    K = min(Q, G)
    rows, cols = torch.randperm(Q, generator=gen)[:K], torch.randperm(G, generator=gen)[:K]
    return rows.to(device), cols.to(device)


def _loss_visible(gen, device):
    seed = _seed_set(device)
    pairs = (torch.tensor([0, 2], device=device), torch.tensor([0, 1], device=device))  # query 0: cat, 2: dog
    yield Case(WALK_THROUGH, (*seed, *pairs, 0.1), show=True)
    yield Case("no_object_weight = 1: loss_ce is the plain mean of the 3 cross-entropies", (*seed, *pairs, 1.0),
               ("weights",), show=True)
    yield Case("the same pairs listed in another order (rows [2, 0], cols [1, 0])",
               (*seed, pairs[0].flip(0), pairs[1].flip(0), 0.1), ("order",), show=True)
    more = (torch.tensor([0, 1, 1], device=device),
            torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2], [0.5, 0.5, 0.4, 0.4]], device=device))
    yield Case("fewer queries than objects: 2 queries, 3 objects, 2 pairs; the box losses are divided by G = 3",
               (seed[0][:2], seed[1][:2], *more, torch.tensor([0, 1], device=device),
                torch.tensor([0, 2], device=device), 0.1), ("fewer-queries",), show=True)
    yield Case("the walk-through in float64: float64 losses", (*_seed_set(device, torch.float64), *pairs, 0.1),
               ("float64",), show=True)
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    yield Case("no objects: every query learns 'no object'; loss_bbox = loss_giou = 0",
               (*seed[:2], seed[2][:0], seed[3][:0], empty, empty, 0.1), ("empty",), show=True)


def _loss_hidden(gen, device):
    for Q, G, C, dtype, w, tags in [(20, 6, 4, torch.float32, 0.1, ("order",)),
                                    (15, 8, 20, torch.float64, 0.1, ("order",)),
                                    (10, 5, 4, torch.float32, 0.5, ("weights",)),
                                    (3, 7, 4, torch.float32, 0.1, ("fewer-queries",))]:
        yield Case(f"{Q} predictions, {G} objects, {C} classes, no_object_weight {w}, {dtype_name(dtype)}",
                   (*random_set(gen, Q, G, C, dtype, device), *_pairs(gen, Q, G, device), w), _tags(dtype, *tags))
    yield Case("no objects", (*random_set(gen, 10, 0, 4, device=device), *_pairs(gen, 10, 0, device), 0.1),
               ("empty",))


def _set_loss_gradients(fn, gen, device, hidden: bool) -> None:
    """Values, then the gradient of each loss with respect to its input (loss_ce: pred_logits; loss_bbox,
    loss_giou: pred_boxes), on the walk-through (visible) or a random float64 set (hidden). A loss dict has
    no single output to differentiate, so this runs as an extra check rather than as a Case."""
    if hidden:
        case = Case("12 predictions and 5 objects, float64, values and gradients", (*random_set(
            gen, 12, 5, 4, torch.float64, device), *_pairs(gen, 12, 5, device), 0.1), grad=(0, 1))
    else:
        case = Case(WALK_THROUGH + ", with the gradients", (*_seed_set(device), torch.tensor(
            [0, 2], device=device), torch.tensor([0, 1], device=device), 0.1), grad=(0, 1), show=True)
    out, leaves = _student_call(SET_LOSS, fn, case)  # under the guard, on copies whose gradients we take
    expected, ref_leaves = _reference_call(SET_LOSS, case)
    check_like(out, expected, SET_LOSS.label, case=case.name)
    SET_LOSS.compare(out, expected, SET_LOSS.label, case)
    for key, i, wrt in (("loss_ce", 0, "pred_logits"), ("loss_bbox", 1, "pred_boxes"), ("loss_giou", 1, "pred_boxes")):
        name = f"{SET_LOSS.label}['{key}']"
        if not out[key].requires_grad:
            fail(f"{name} does not depend on {wrt} through autograd (no gradient); compute it with tensor "
                 "operations, without .detach(), .item(), torch.no_grad() or NumPy")
        got, = torch.autograd.grad(out[key], leaves[i], retain_graph=True, allow_unused=True)
        if got is None:
            fail(f"{name}: no gradient reaches {wrt}; it must take part in the computation")
        want, = torch.autograd.grad(expected[key], ref_leaves[i], retain_graph=True)
        check_close(got, want, f"the gradient of {name} with respect to {wrt}", kind="network", case=case.name)


SET_LOSS = Exercise("detr_set_loss", _reference_set_loss, FORBIDDEN, _loss_visible, _loss_hidden,
                    hints.with_hint(close("arithmetic"), hints.loss_hints), extra=(_set_loss_gradients,))
check_detr_set_loss_visible, check_detr_set_loss_hidden = SET_LOSS.checks()


# -------------------------------------------------------------- FCOS targets
def _fcos_args(points, boxes, labels, ranges, *, dtype=torch.float32, device="cpu"):
    f = functools.partial(torch.as_tensor, dtype=dtype, device=device)
    labels = torch.as_tensor(labels, dtype=torch.int64, device=device)
    return f(points).reshape(-1, 2), f(boxes).reshape(-1, 4), labels, f(ranges).reshape(-1, 2)


def fcos_points(strides=(8, 16, 32), image=128, ranges=((0, 64), (64, 128), (128, math.inf))):
    """(points [P, 2], size_ranges [P, 2]) of an FCOS head on an ``image`` x ``image`` input:
    points ((k + 0.5) * stride) of every level, each with its level's range."""
    pts, rng = [], []
    for s, r in zip(strides, ranges):
        c = (torch.arange(image // s, dtype=torch.float64) + 0.5) * s
        y, x = torch.meshgrid(c, c, indexing="ij")
        pts.append(torch.stack([x.flatten(), y.flatten()], 1))
        rng.append(torch.tensor(r, dtype=torch.float64).expand(len(c) ** 2, 2))
    return torch.cat(pts), torch.cat(rng)


def _fcos_visible(gen, device):
    f = functools.partial(_fcos_args, device=device)
    inf = math.inf
    pts, box = [[30, 40], [15, 30], [60, 40]], [[10, 20, 50, 60]]
    yield Case("the box (10, 20, 50, 60) of class 2 and three points: (30, 40) at its centre (l = t = r = b = 20, "
               "centerness 1), (15, 30) (l, t, r, b = 5, 10, 35, 30, centerness sqrt(5/35 * 10/30) = 0.218) and "
               "(60, 40) outside (background)", f(pts, box, [2], [[0, inf]] * 3), show=True)
    yield Case("size ranges: (15, 30) reaches max(l, t, r, b) = 35, so it is background in the range (0, 32), "
               "positive in (32, 64) and in (0, 35); (30, 40) reaches 20, positive in (20, 40) (both bounds included)",
               f([[15, 30], [15, 30], [15, 30], [30, 40]], box, [2], [[0, 32], [32, 64], [0, 35], [20, 40]]),
               ("ranges",), show=True)
    yield Case("a point on the box's edge, (10, 40): l = 0, so background (a positive needs min(l, t, r, b) > 0)",
               f([[10, 40], [11, 40]], box, [2], [[0, inf]] * 2), ("edge",), show=True)
    yield Case("a point (30, 40) inside the boxes (0, 0, 100, 100) (class 1) and (10, 20, 50, 60) (class 3): "
               "the smaller box wins", f([[30, 40]], [[0, 0, 100, 100], [10, 20, 50, 60]], [1, 3], [[0, inf]]),
               ("ambiguous",), show=True)
    yield Case("two boxes of the same area, (10, 20, 50, 60) (class 4) and (20, 10, 60, 50) (class 1), both "
               "containing (30, 40): the first one wins", f([[30, 40], [45, 25]], [[10, 20, 50, 60], [20, 10, 60, 50]],
                                                            [4, 1], [[0, inf]] * 2), ("ties", "ambiguous"), show=True)
    yield Case("the first example in float64: float64 ltrb and centerness",
               f(pts, box, [2], [[0, inf]] * 3, dtype=torch.float64), ("float64",), show=True)
    yield Case("no boxes (shape [0, 4]): every point is background",
               f(pts, torch.zeros(0, 4), torch.zeros(0), [[0, inf]] * 3), ("empty",), show=True)
    points, ranges = fcos_points(strides=(16, 32), image=64, ranges=((0, 32), (32, math.inf)))  # 16 + 4 points
    yield Case("the 20 points of a 64 x 64 image at strides 16 and 32, ranges (0, 32) and (32, inf), two boxes",
               f(points, [[4, 4, 40, 36], [20, 24, 62, 60]], [1, 2], ranges), ("scene",), show=True)


def _fcos_hidden(gen, device):
    points, ranges = fcos_points()
    for k, dtype, tags in [(5, torch.float32, ()), (8, torch.float64, ()), (12, torch.float32, ("ambiguous",))]:
        boxes = random_scene(gen, k, lo=10.0, hi=110.0)
        yield Case(f"{len(points)} points of a 128 x 128 image (strides 8, 16, 32) and {k} random boxes, "
                   f"{dtype_name(dtype)}", _fcos_args(points, boxes, torch.randint(1, 5, (k,), generator=gen),
                                                      ranges, dtype=dtype, device=device), _tags(dtype, "scene", *tags))
    # Corners on a 4-pixel grid: points sit at 4 mod 8, so many l, t, r, b are exactly 0, 64 or 128.
    grid = torch.randint(0, 33, (10, 4), generator=gen).double() * 4
    grid = torch.cat([grid[:, :2].minimum(grid[:, 2:]), grid[:, :2].maximum(grid[:, 2:]) + 4], 1)
    yield Case("10 boxes with corners on a 4-pixel grid: points on edges, max(l, t, r, b) exactly at the ranges' "
               "bounds", _fcos_args(points, grid, torch.randint(1, 5, (10,), generator=gen), ranges, device=device),
               ("edge", "ranges", "scene"))
    base = random_scene(gen, 4, lo=30.0, hi=80.0).round()  # integers: the copies' areas are exactly equal
    shift = torch.randint(-10, 11, (4, 2), generator=gen).double()
    twins = torch.cat([base, base + shift.repeat(1, 2)])  # each box and a shifted copy of the same area
    yield Case("4 boxes each with a shifted copy of the same area: ties broken by order",
               _fcos_args(points, twins, torch.randint(1, 5, (8,), generator=gen), ranges, device=device),
               ("ties", "ambiguous", "scene"))
    yield Case("no boxes", _fcos_args(points, torch.zeros(0, 4), torch.zeros(0), ranges, device=device), ("empty",))


FCOS = Exercise("fcos_targets", _reference_fcos, FORBIDDEN, _fcos_visible, _fcos_hidden,
                hints.with_hint(close("arithmetic"), hints.fcos_hints))
check_fcos_targets_visible, check_fcos_targets_hidden = FCOS.checks()

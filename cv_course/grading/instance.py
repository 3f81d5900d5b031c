"""Checks for assignment 05 (instance and panoptic segmentation): ``project_masks_on_boxes``,
``mask_loss``, ``paste_masks_in_image`` and ``panoptic_quality``.

Visible checks use worked examples a student can redo by hand (a 4 x 4 square
read by a 2 x 2 RoI Align with and without the half-pixel shift; a mask loss of
ln 2; a 2 x 2 mask pasted without padding and a one-pixel mask pasted with it;
the panoptic chapter's 10 x 10 scene with PQ = 0.647) and a small twin of every
kind of hidden case. Hidden checks draw fresh scenes at every run and compare
with the ``cv_course`` references on the student's device:
``cv_course.models.detection.mask_head.{project_masks_on_boxes, mask_loss}``
(torchvision's ``project_masks_on_boxes`` / ``maskrcnn_loss``),
``cv_course.ops.masks.paste_masks_in_image`` (torchvision's) and
``cv_course.metrics.panoptic.panoptic_quality`` (the panoptic paper's void rules).

When an answer is wrong, the comparators try the usual slips on the same inputs
(the other ``aligned``, the loss over every class's mask, no padding, floor
instead of truncation, matches at IoU >= 0.5, void pixels counted) and say which
one it is (:mod:`.instance_hints`).

What the answers may not use (see :mod:`.policy`): the course's own code, except
``cv_course.ops.roi_align``, which the notebook's setup cell hands out (students
wrote it in assignment 03), ``torchvision.ops`` / ``torchvision.models`` (whose
``roi_heads.paste_masks_in_image`` is the answer) and ``torchmetrics``.
"""

from __future__ import annotations

import functools
import pkgutil

import torch
from torch import Tensor

import cv_course.ops

from ..metrics.panoptic import panoptic_quality as _reference_pq  # bound at import, before
from ..models.detection.mask_head import mask_loss as _reference_loss  # any student code runs
from ..models.detection.mask_head import project_masks_on_boxes as _reference_targets
from ..ops.masks import paste_masks_in_image as _reference_paste
from . import instance_hints as hints
from . import policy
from .checks import check_close, check_like, fail
from .exercise import Case, Exercise, _reference_call, _student_call, close
from .guard import Forbidden
from .numerics import dtype_name

_GIVEN = {"roi_align", "_bags", "_checks"}  # the setup cell's roi_align and the code it runs


def _course_code_but_roi_align() -> Forbidden:
    """policy.course_code() with cv_course.ops forbidden module by module, roi_align left out."""
    ops = tuple(f"cv_course.ops.{m.name}" for m in pkgutil.iter_modules(cv_course.ops.__path__)
                if m.name not in _GIVEN)
    return Forbidden(modules=tuple(m for m in policy.course_code().modules if m != "cv_course.ops") + ops)


FORBIDDEN = _course_code_but_roi_align() + policy.TORCHVISION + policy.DETECTION_METRICS


def _tags(dtype, *more) -> tuple[str, ...]:
    return ("float64",) * (dtype == torch.float64) + more


# ------------------------------------------------------------------- scenes
def square_example(aligned: bool = False, dtype=torch.float32, device="cpu"):
    """The worked example: an 8 x 8 mask whose pixels 2..5 (rows and columns) are 1, one
    proposal (2, 2, 6, 6), M = 2. aligned=False: [[1, .75], [.75, .5625]]; aligned=True: ones."""
    masks = torch.zeros(1, 8, 8, dtype=torch.bool, device=device)
    masks[0, 2:6, 2:6] = True
    boxes = torch.tensor([[2.0, 2.0, 6.0, 6.0]], dtype=dtype, device=device)
    return masks, boxes, torch.zeros(1, dtype=torch.int64, device=device), 2, aligned


def random_instances(gen, G: int, size=(48, 64)) -> tuple[Tensor, Tensor]:
    """(bool masks [G, H, W], float64 boxes [G, 4]): rectangles and ellipses, boxes in the COCO
    convention (x2 = last column + 1)."""
    H, W = size
    wh = torch.rand(G, 2, generator=gen, dtype=torch.float64) * 0.5 * torch.tensor([W, H]) + 4
    xy = torch.rand(G, 2, generator=gen, dtype=torch.float64) * (torch.tensor([W, H]) - wh)
    boxes = torch.cat([xy, xy + wh], 1).round()  # [G, 4] integer corners
    ys, xs = torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5
    c = (boxes[:, :2] + boxes[:, 2:]) / 2  # [G, 2]
    half = (boxes[:, 2:] - boxes[:, :2]) / 2
    dx = (xs[None, None, :] - c[:, None, None, 0]) / half[:, None, None, 0]  # [G, 1, W]
    dy = (ys[None, :, None] - c[:, None, None, 1]) / half[:, None, None, 1]  # [G, H, 1]
    ellipse = torch.rand(G, generator=gen) < 0.5
    masks = torch.where(ellipse[:, None, None], dx ** 2 + dy ** 2 <= 1, (dx.abs() < 1) & (dy.abs() < 1))
    return masks, boxes


def jittered(gen, boxes: Tensor, P: int, spread: float = 4.0) -> tuple[Tensor, Tensor]:
    """P proposals around random ground-truth boxes (some reaching outside the image, none
    inverted) and the index of the box each one came from."""
    idx = torch.randint(len(boxes), (P,), generator=gen)
    props = boxes[idx] + (torch.rand(P, 4, generator=gen, dtype=torch.float64) * 2 - 1) * spread
    props = torch.cat([props[:, :2], torch.maximum(props[:, 2:], props[:, :2] + 0.5)], 1)
    if P:
        props[0, 0::2] -= props[0, 0] + 3  # the first one moved to x1 = -3: partly outside the image
    return props, idx


def _target_args(masks, boxes, idx, M, aligned, *, dtype=torch.float32, device="cpu"):
    return (masks.to(device), boxes.to(device=device, dtype=dtype), idx.to(device), M, aligned)


# ------------------------------------------------------------- mask targets
def _targets_visible(gen, device):
    yield Case("the worked example: an 8 x 8 mask that is 1 on pixels 2..5 (rows and columns), the proposal "
               "(2, 2, 6, 6), M = 2, aligned=False: samples at 2.5, 3.5, 4.5, 5.5, pixel 5.5 half on the mask, "
               "so the targets are [[1, 0.75], [0.75, 0.5625]]", square_example(False, device=device), show=True)
    yield Case("the same with aligned=True: the box moves by half a pixel, samples at 2, 3, 4, 5, all on the "
               "mask: [[1, 1], [1, 1]]", square_example(True, device=device), ("aligned",), show=True)
    masks, boxes, _, _, _ = square_example(device=device)
    two = torch.cat([masks, masks.flip(1, 2)])  # mask 1: pixels 2..5 of the flipped image, the same square
    two[1, :3] = False
    yield Case("two masks and three proposals matched to [1, 0, 1]: proposal p reads gt_masks[matched_idxs[p]]",
               (two, boxes.repeat(3, 1), torch.tensor([1, 0, 1], device=device), 2, False), ("matched",),
               show=True)
    yield Case("the worked example with a uint8 mask (0 / 1): the same targets",
               (masks.to(torch.uint8), boxes, torch.zeros(1, dtype=torch.int64, device=device), 2, False),
               ("uint8",), show=True)
    flat = torch.tensor([[3.0, 2.0, 3.0, 6.0], [2.0, 4.0, 6.0, 4.0]], device=device)
    for aligned in (False, True):
        yield Case(f"degenerate proposals (3, 2, 3, 6) and (2, 4, 6, 4) (zero width, zero height), "
                   f"aligned={aligned}", (masks, flat, torch.zeros(2, dtype=torch.int64, device=device), 2, aligned),
                   ("degenerate",), show=True)
    yield Case("a proposal (-3, 4, 5, 11) partly outside the 8 x 8 image, M = 4",
               (masks, torch.tensor([[-3.0, 4.0, 5.0, 11.0]], device=device),
                torch.zeros(1, dtype=torch.int64, device=device), 4, False), ("outside",), show=True)
    yield Case("the worked example with float64 boxes: float64 targets", square_example(False, torch.float64, device),
               ("float64",), show=True)
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    yield Case("no positive proposals (boxes of shape [0, 4]): targets of shape [0, 2, 2]",
               (masks, boxes[:0], empty, 2, False), ("empty",), show=True)
    yield Case("an image without objects nor proposals (gt_masks of shape [0, 8, 8])",
               (masks[:0], boxes[:0], empty, 2, True), ("empty",), show=True)


def _targets_hidden(gen, device):
    for G, P, M, aligned, dtype, size, tags in [(3, 12, 28, False, torch.float32, (48, 64), ()),
                                                (5, 20, 28, True, torch.float32, (64, 48), ("aligned",)),
                                                (4, 9, 14, False, torch.float64, (40, 40), ()),
                                                (2, 6, 7, True, torch.float64, (32, 56), ("aligned",))]:
        masks, boxes = random_instances(gen, G, size)
        props, idx = jittered(gen, boxes, P)
        yield Case(f"{G} objects in a {size[0]} x {size[1]} image, {P} proposals, M = {M}, aligned={aligned}, "
                   f"{dtype_name(dtype)}", _target_args(masks, props, idx, M, aligned, dtype=dtype, device=device),
                   _tags(dtype, "matched", "outside", *tags))
    masks, boxes = random_instances(gen, 3)
    yield Case("uint8 masks", _target_args(masks.to(torch.uint8), *jittered(gen, boxes, 5), 28, False, device=device),
               ("uint8",))
    x = torch.rand(4, 1, generator=gen, dtype=torch.float64) * 40
    y = torch.rand(4, 1, generator=gen, dtype=torch.float64) * 30
    flat = torch.cat([x, y, x + torch.tensor([[0.0], [5.0], [0.0], [0.3]]), y + torch.tensor([[6.0], [0.0], [0.0],
                                                                                             [0.2]])], 1)
    for aligned in (False, True):
        yield Case(f"degenerate and tiny proposals, aligned={aligned}",
                   _target_args(masks, flat, torch.randint(3, (4,), generator=gen), 28, aligned, device=device),
                   ("degenerate",))
    empty = torch.zeros(0, dtype=torch.int64)
    yield Case("no positive proposals", _target_args(masks, boxes[:0], empty, 28, False, device=device), ("empty",))
    yield Case("no objects and no proposals", _target_args(masks[:0], boxes[:0], empty, 28, True, device=device),
               ("empty",))


TARGETS = Exercise("project_masks_on_boxes", _reference_targets, FORBIDDEN, _targets_visible, _targets_hidden,
                   hints.with_hint(close("arithmetic"), hints.target_hints))
check_project_masks_on_boxes_visible, check_project_masks_on_boxes_hidden = TARGETS.checks()


# ----------------------------------------------------------------- mask loss
def loss_example(device="cpu", dtype=torch.float32, aligned=False):
    """One image, the worked example's proposal, C = 3 masks, label 2: its mask's logits are 0
    (loss ln 2 = 0.693 whatever the target), the other two masks' are +-5."""
    masks, boxes, idx, M, _ = square_example(aligned, dtype, device)
    logits = torch.full((1, 3, M, M), 5.0, dtype=dtype, device=device)
    logits[0, 0] = -5.0
    logits[0, 2] = 0.0
    return logits, [boxes], [masks], [torch.tensor([2], device=device)], [idx], aligned


def random_batch(gen, counts, C: int, M: int, aligned: bool, dtype=torch.float32, device="cpu"):
    """mask_loss's arguments for images with (G_i, P_i) = counts; logits ~ N(0, 2)."""
    props, masks, labels, idxs = [], [], [], []
    for G, P in counts:
        m, b = random_instances(gen, G)
        p, i = jittered(gen, b, P) if G else (b[:0], torch.zeros(0, dtype=torch.int64))
        props.append(p.to(device=device, dtype=dtype))
        masks.append(m.to(device))
        labels.append(torch.randint(1, C, (G,), generator=gen).to(device))
        idxs.append(i.to(device))
    P = sum(P for _, P in counts)
    logits = (torch.randn(P, C, M, M, generator=gen, dtype=torch.float64) * 2).to(device=device, dtype=dtype)
    return logits, props, masks, labels, idxs, aligned


LOSS_EXAMPLE = ("the worked example: one proposal (2, 2, 6, 6) of class 2 among C = 3 masks; the class-2 mask's "
                "logits are all 0, so every pixel costs -log sigmoid(0) = ln 2 and loss_mask = 0.6931 (the other "
                "two masks, at +5 and -5, take no part)")


# A fixed draw for the visible batch case: one in which some proposal p is matched to an object
# other than the p-th, of another class, so that gt_labels[p] for gt_labels[matched_idxs[p]] fails
# the visible checks every time (a fresh draw misses that slip now and then)
SLIP_SEED = 3


def _loss_visible(gen, device):
    yield Case(LOSS_EXAMPLE, loss_example(device), show=True)
    yield Case("the worked example with aligned=True: still ln 2", loss_example(device, aligned=True), ("aligned",),
               show=True)
    yield Case("two images with (objects, proposals) = (2, 3) and (3, 2), C = 4, M = 4: each proposal's class is "
               "gt_labels[matched_idxs[p]] of its image; one mean over all 5 x 4 x 4 pixels",
               random_batch(torch.Generator().manual_seed(SLIP_SEED), [(2, 3), (3, 2)], 4, 4, False, device=device),
               ("matched", "batch"), show=True)
    yield Case("the worked example in float64: a float64 loss", loss_example(device, torch.float64), ("float64",),
               show=True)
    yield Case("two images, the first without positive proposals", random_batch(gen, [(2, 0), (2, 2)], 3, 4, True,
                                                                               device=device),
               ("empty-image", "batch"), show=True)
    yield Case("no positive proposals anywhere (mask_logits of shape [0, 3, 4, 4]): loss_mask = 0, not NaN",
               random_batch(gen, [(2, 0), (0, 0)], 3, 4, False, device=device), ("empty",), show=True)


def _loss_hidden(gen, device):
    for counts, C, M, aligned, dtype, tags in [([(3, 8), (4, 10)], 5, 28, False, torch.float32, ("batch",)),
                                               ([(5, 16)], 81, 14, True, torch.float32, ("aligned",)),
                                               ([(2, 4), (3, 0), (4, 6)], 5, 28, True, torch.float64,
                                                ("batch", "empty-image", "aligned"))]:
        yield Case(f"{len(counts)} images with (objects, proposals) {counts}, C = {C}, M = {M}, aligned={aligned}, "
                   f"{dtype_name(dtype)}", random_batch(gen, counts, C, M, aligned, dtype, device),
                   _tags(dtype, "matched", *tags))
    yield Case("no positive proposals", random_batch(gen, [(3, 0)], 5, 28, False, device=device), ("empty",))


def _loss_gradients(fn, gen, device, hidden: bool) -> None:
    """The gradient of loss_mask with respect to mask_logits (a dict has no single output to
    differentiate, so this runs as an extra check): zero on every mask but the ground truth's."""
    if hidden:
        case = Case("2 images, float64, the gradient", random_batch(gen, [(3, 6), (2, 3)], 4, 7, True, torch.float64,
                                                                    device), grad=(0,))
    else:
        # aligned=True: the targets are all ones there (all 0.75-ish with aligned=False), so the
        # gradient (sigmoid - target) / N tells whether `aligned` reaches the targets; the loss
        # value (ln 2 at logits 0) cannot
        case = Case(LOSS_EXAMPLE + ", with aligned=True, and its gradient", loss_example(device, aligned=True),
                    grad=(0,), show=True)
    out, leaves = _student_call(LOSS, fn, case)
    expected, ref_leaves = _reference_call(LOSS, case)
    check_like(out, expected, LOSS.label, case=case.name)
    LOSS.compare(out, expected, LOSS.label, case)
    if not out["loss_mask"].requires_grad:
        fail(f"{LOSS.label}['loss_mask'] does not depend on mask_logits through autograd (no gradient); compute "
             "it with tensor operations, without .detach(), .item(), torch.no_grad() or NumPy")
    got, = torch.autograd.grad(out["loss_mask"], leaves[0], allow_unused=True)
    if got is None:
        fail(f"{LOSS.label}['loss_mask']: no gradient reaches mask_logits")
    want, = torch.autograd.grad(expected["loss_mask"], ref_leaves[0])
    check_close(got, want, f"the gradient of {LOSS.label}['loss_mask'] with respect to mask_logits", kind="network",
                case=case.name, hint=hints.gradient_hint(got, want, case))


LOSS = Exercise("mask_loss", _reference_loss, FORBIDDEN, _loss_visible, _loss_hidden,
                hints.with_hint(close("arithmetic"), hints.loss_hints), uses=("project_masks_on_boxes",),
                extra=(_loss_gradients,))
check_mask_loss_visible, check_mask_loss_hidden = LOSS.checks()


# --------------------------------------------------------------- paste masks
def _paste_args(masks, boxes, shape, padding=1, *, dtype=torch.float32, device="cpu"):
    masks = torch.as_tensor(masks, dtype=dtype, device=device)
    return masks, torch.as_tensor(boxes, dtype=dtype, device=device).reshape(-1, 4), tuple(shape), padding


def _paste_visible(gen, device):
    p = functools.partial(_paste_args, device=device)
    yield Case("padding 0: the 2 x 2 mask [[1, 2], [3, 4]] in the box (2, 2, 3, 3) of a 6 x 6 image; the box "
               "covers pixels 2..3 (x2 - x1 + 1 = 2 of them) in each direction, so the mask is copied as it is "
               "to rows 2..3, columns 2..3", p([[[[1.0, 2.0], [3.0, 4.0]]]], [[2, 2, 3, 3]], (6, 6), 0),
               ("no-padding",), show=True)
    yield Case("padding 1: the one-pixel mask [[1]] in the box (4, 4, 5, 5) of a 10 x 10 image; padded to "
               "[[0, 0, 0], [0, 1, 0], [0, 0, 0]], the box grows by 3 / 1 about its centre 4.5 to (3, 3, 6, 6): "
               "4 pixels per side, resized from 3 with align_corners=False: [0, 0.625, 0.625, 0] per axis, so "
               "pixels (4..5, 4..5) get 0.625^2 = 0.390625", p([[[[1.0]]]], [[4, 4, 5, 5]], (10, 10)), show=True)
    masks = torch.rand(2, 1, 4, 4, generator=gen)
    yield Case("two 4 x 4 masks in boxes with fractional corners (3.7, 2.2, 11.4, 9.9) and (8.5, 6.5, 14.5, 17.9) "
               "of a 20 x 16 image (H x W)", p(masks, [[3.7, 2.2, 11.4, 9.9], [8.5, 6.5, 14.5, 17.9]], (20, 16)),
               ("fractional",), show=True)
    yield Case("a box (-3.6, 1.2, 4.4, 6.8) partly outside the image: the grown corner -5.6 truncates toward zero "
               "(to -5, as .long() does), and what falls outside is cut off",
               p(masks[:1], [[-3.6, 1.2, 4.4, 6.8]], (8, 8)), ("outside",), show=True)
    yield Case("a degenerate box (5, 2, 5, 7) (zero width)", p(masks[:1], [[5, 2, 5, 7]], (10, 10)), ("degenerate",),
               show=True)
    yield Case("padding 2 on a 4 x 4 mask in the box (2, 3, 9, 8) of a 12 x 12 image",
               p(masks[:1], [[2, 3, 9, 8]], (12, 12), 2), ("padding",), show=True)
    yield Case("the one-pixel example in float64: a float64 image",
               p([[[[1.0]]]], [[4, 4, 5, 5]], (10, 10), dtype=torch.float64), ("float64",), show=True)
    yield Case("no masks (shape [0, 1, 28, 28]): an output of shape [0, 1, 5, 7]",
               p(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (5, 7)), ("empty",), show=True)


def _paste_hidden(gen, device):
    for N, M, shape, padding, dtype, tags in [(6, 28, (64, 80), 1, torch.float32, ()),
                                              (5, 28, (48, 48), 1, torch.float64, ()),
                                              (4, 14, (40, 56), 2, torch.float32, ("padding",)),
                                              (4, 7, (32, 32), 0, torch.float32, ("no-padding",))]:
        H, W = shape
        wh = torch.rand(N, 2, generator=gen, dtype=torch.float64) * torch.tensor([W, H]) * 0.6 + 1
        xy = torch.rand(N, 2, generator=gen, dtype=torch.float64) * torch.tensor([W, H]) - wh / 4  # some outside
        boxes = torch.cat([xy, xy + wh], 1)
        boxes[0, 1::2] -= boxes[0, 1] + 2.6  # y1 = -2.6: partly outside, the grown corner truncates toward 0
        masks = torch.rand(N, 1, M, M, generator=gen, dtype=torch.float64)
        yield Case(f"{N} random {M} x {M} masks in a {H} x {W} image, padding {padding}, some boxes partly outside, "
                   f"{dtype_name(dtype)}", _paste_args(masks, boxes, shape, padding, dtype=dtype, device=device),
                   _tags(dtype, "fractional", "outside", *tags))
    corners = torch.randint(0, 30, (4, 2), generator=gen).double()
    flat = torch.cat([corners, corners + torch.tensor([[0.0, 6.0], [4.0, 0.0], [0.0, 0.0], [0.4, 0.3]])], 1)
    yield Case("degenerate and tiny boxes", _paste_args(torch.rand(4, 1, 28, 28, generator=gen), flat, (32, 32),
                                                        device=device), ("degenerate",))
    yield Case("no masks", _paste_args(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (32, 48), device=device),
               ("empty",))


PASTE = Exercise("paste_masks_in_image", _reference_paste, FORBIDDEN, _paste_visible, _paste_hidden,
                 hints.with_hint(hints.paste_compare, hints.paste_hints))
check_paste_masks_in_image_visible, check_paste_masks_in_image_hidden = PASTE.checks()


# ---------------------------------------------------------- panoptic quality
THINGS, STUFFS = (1, 2, 3), (5, 6)


def worked_scene(device="cpu"):
    """The panoptic chapter's 10 x 10 scene: thing 1, stuff 5. Things: TP 2 (IoU 0.8 and 0.833), FP 1,
    FN 1: SQ 0.817, RQ 0.667, PQ 0.544; stuff: IoU 48 / 64 = 0.75; PQ = (0.544 + 0.75) / 2 = 0.647."""
    target = torch.zeros(1, 10, 10, 2, dtype=torch.int64)
    target[..., 0] = 5
    target[0, 0:4, 0:5] = torch.tensor([1, 1])  # A: 20 pixels
    target[0, 6:10, 0:5] = torch.tensor([1, 2])  # B: 20 pixels
    target[0, 0:2, 7:9] = torch.tensor([1, 3])  # C: 4 pixels, missed
    preds = torch.zeros_like(target)
    preds[..., 0] = 5
    preds[0, 0:4, 0:4] = torch.tensor([1, 7])  # inside A: IoU 16 / 20
    preds[0, 6:10, 0:6] = torch.tensor([1, 8])  # around B: IoU 20 / 24
    preds[0, 7:9, 7:9] = torch.tensor([1, 9])  # on stuff: a false positive
    return preds.to(device), target.to(device)


def random_panoptic(gen, B: int, H: int, W: int, void=True, device="cpu"):
    """Blocky ground truth (2 x 2 blocks, void = category 0) and a prediction that copies it with
    20 % of its pixels changed; predictions never use void."""
    cats = torch.tensor(list(THINGS) + list(STUFFS) + [0] * void)
    t_cat = cats[torch.randint(len(cats), (B, H // 2, W // 2), generator=gen)]
    t_inst = torch.randint(1, 4, (B, H // 2, W // 2), generator=gen)
    target = torch.stack([t_cat, t_inst], -1).repeat_interleave(2, 1).repeat_interleave(2, 2)
    preds = target.clone()
    preds[..., 0][preds[..., 0] == 0] = 5
    flip = torch.rand(B, H, W, generator=gen) < 0.2
    known = torch.tensor(THINGS + STUFFS)
    preds[..., 0][flip] = known[torch.randint(len(known), (int(flip.sum()),), generator=gen)]
    preds[..., 1][flip] = torch.randint(1, 4, (int(flip.sum()),), generator=gen)
    return preds.to(device), target.to(device)


def half_overlaps(gen, B: int, device="cpu"):
    """Thing segments whose prediction has IoU exactly 0.5 (half of it, or it plus as much again),
    next to ones at 9/16 (a match), on 16 x 16 stuff."""
    target = torch.zeros(B, 16, 16, 2, dtype=torch.int64)
    target[..., 0] = 6
    preds = target.clone()
    for b in range(B):
        for k, (r, c) in enumerate([(0, 0), (0, 8), (8, 0), (8, 8)]):
            cat = int(torch.randint(1, 4, (1,), generator=gen))
            target[b, r:r + 4, c:c + 4] = torch.tensor([cat, k + 1])
            kind = int(torch.randint(3, (1,), generator=gen))
            if kind == 0:  # half of it: 8 / 16
                preds[b, r:r + 2, c:c + 4] = torch.tensor([cat, k + 1])
            elif kind == 1:  # it and 16 more pixels: 16 / 32
                preds[b, r:r + 4, c:c + 8] = torch.tensor([cat, k + 1])
            else:  # 9 of its 16 pixels: 9 / 16 > 0.5, a match
                preds[b, r:r + 3, c:c + 3] = torch.tensor([cat, k + 1])
    return preds.to(device), target.to(device)


def _pq_args(preds, target, things=THINGS, stuffs=STUFFS):
    return preds, target, tuple(things), tuple(stuffs)


def _pq_visible(gen, device):
    yield Case("the panoptic chapter's 10 x 10 scene (thing 1, stuff 5): things TP 2 (IoU 0.8 and 0.833), FP 1, "
               "FN 1, so sq_things = 0.817, rq_things = 2 / 3, pq_things = 0.544; stuff IoU 48 / 64 = 0.75; "
               "pq = (0.544 + 0.75) / 2 = 0.647", _pq_args(*worked_scene(device), (1,), (5,)), show=True)
    target = torch.full((1, 4, 4, 2), 6, dtype=torch.int64)
    target[0, :, :2] = torch.tensor([1, 1])  # a thing of 8 pixels
    preds = target.clone()
    preds[0, 2:, :2] = torch.tensor([6, 0])  # predicted on 4 of them only: IoU 4 / 8 = 0.5
    yield Case("IoU exactly 0.5 is not a match: the thing (8 pixels) is predicted on 4 of them, so it is a false "
               "negative and the prediction a false positive: pq_things = 0", _pq_args(preds, target, (1,), (6,)),
               ("tie",), show=True)
    target = torch.zeros(1, 4, 10, 2, dtype=torch.int64)  # category 0: void
    target[0, :, 0:5] = torch.tensor([1, 1])
    preds = torch.zeros_like(target)
    preds[0, :, 0:7] = torch.tensor([1, 1])  # 28 pixels, 8 on void
    preds[0, :, 7:] = torch.tensor([1, 2])  # another instance, all on void: not a false positive
    yield Case("void (category 0 in the target, columns 5..9): the thing (columns 0..4) is predicted on columns "
               "0..6, 28 pixels, 8 of them void; void pixels leave the prediction, so IoU = 20 / 20 = 1; a second "
               "predicted instance lies all on void, so it is not a false positive: pq_things = 1; no stuff "
               "anywhere, so pq_stuff is NaN and pq = pq_things", _pq_args(preds.to(device), target.to(device), (1,),
                                                                          (5,)), ("void", "nan"), show=True)
    preds, target = worked_scene(device)
    preds[..., 1] = torch.where(preds[..., 0] == 5, torch.arange(100, device=device).reshape(1, 10, 10), preds[..., 1])
    yield Case("the chapter's scene with a different instance id on every stuff pixel: stuff has one segment per "
               "category and image, its instance ids are ignored (the same numbers)",
               _pq_args(preds, target, (1,), (5,)), ("stuff-ids",), show=True)
    preds, target = worked_scene(device)
    yield Case("a batch of two images, the chapter's scene and the same scene flipped left-right: segments are "
               "matched within their image only, the counts are summed over the images (same PQ)",
               _pq_args(torch.cat([preds, preds.flip(2)]), torch.cat([target, target.flip(2)]), (1,), (5,)),
               ("batch",), show=True)
    yield Case("categories (2, 3, 6) that occur nowhere are left out of the averages",
               _pq_args(*worked_scene(device), (1, 2, 3), (5, 6)), ("absent",), show=True)
    void = torch.zeros(1, 4, 4, 2, dtype=torch.int64, device=device)
    yield Case("an all-void target, predicted as stuff 5: nothing to score, every value NaN",
               _pq_args(torch.full_like(void, 5), void, (1,), (5,)), ("all-void", "nan"), show=True)
    preds, target = random_panoptic(gen, 2, 8, 8, device=device)
    yield Case("two random 8 x 8 images with void", _pq_args(preds, target), ("void", "batch", "absent"), show=True)


def _pq_hidden(gen, device):
    for B, H, W in [(3, 24, 32), (2, 32, 32), (4, 16, 20)]:
        yield Case(f"{B} random {H} x {W} panoptic images with void", _pq_args(*random_panoptic(gen, B, H, W,
                                                                                                device=device)),
                   ("void", "batch", "absent", "stuff-ids"))
    preds, target = random_panoptic(gen, 2, 24, 24, void=False, device=device)
    yield Case("2 random images without void", _pq_args(preds, target), ("batch",))
    yield Case("3 images of thing segments predicted at IoU exactly 0.5 or 9 / 16", _pq_args(
        *half_overlaps(gen, 3, device)), ("tie", "batch", "absent"))
    preds, target = random_panoptic(gen, 3, 16, 16, device=device)
    target[1, ..., 0] = 0
    yield Case("3 images, one of them all void", _pq_args(preds, target), ("all-void", "void", "batch"))
    void = torch.zeros(2, 8, 8, 2, dtype=torch.int64, device=device)
    yield Case("all-void targets", _pq_args(torch.full_like(void, 6), void), ("all-void", "nan"))


PQ = Exercise("panoptic_quality", _reference_pq, FORBIDDEN, _pq_visible, _pq_hidden,
              hints.with_hint(hints.pq_compare, hints.pq_hints))
check_panoptic_quality_visible, check_panoptic_quality_hidden = PQ.checks()


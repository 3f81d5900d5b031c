"""Checks for assignment 03 (detection): ``encode_boxes``, ``decode_boxes``,
``roi_align``, ``label_anchors`` and ``average_precision``.

Visible checks use the lecture's worked examples (the refinement -0.12, 0.02,
x0.915, x1.66; f(6.5, 5.8) of RoI Align; the RPN's 0.7 / 0.3 rule; a five-detection
precision-recall table) and a small twin of every kind of hidden case. Hidden checks
draw fresh inputs at every run and compare with the ``cv_course`` references
(``BoxCoder``, ``roi_align``, ``Matcher`` as the RPN labels anchors, and the
all-points AP of ``cv_course.metrics``) on the student's device.

What the answers may not use (see :mod:`.policy`): the course's own code,
``torchvision.ops`` / ``torchvision.models`` (its detection utilities included),
the detection-metric libraries, and, in ``roi_align``, ``F.grid_sample``.
``roi_align``'s gradient with respect to the feature map must equal the
reference's; a version written with differentiable tensor operations has it.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from ..metrics import average_precision as _reference_ap  # bound at import, before any student code
from ..metrics import precision_recall as _reference_pr
from ..ops import BoxCoder, Matcher, box_iou, grid_anchors
from ..ops import roi_align as _reference_roi_align
from . import policy
from .boxes import random_boxes
from .checks import CheckFailed, fail
from .exercise import Case, Exercise, close
from .numerics import dtype_name

FORBIDDEN = policy.course_code() + policy.TORCHVISION + policy.DETECTION_METRICS
_CODER = BoxCoder()  # weights (1, 1, 1, 1), tw and th clamped at log(1000 / 16) when decoding
# The lecture's refinement of a 40 x 40 box centred at (64, 64): offset x -0.12, offset y 0.02,
# width x 0.915, height x 1.66, which gives the box (40.9, 31.6, 77.5, 98.0).
ANCHOR, REFINED = [[44.0, 44.0, 84.0, 84.0]], [[40.9, 31.6, 77.5, 98.0]]
DELTAS = [[-0.12, 0.02, math.log(0.915), math.log(1.66)]]


def _tags(dtype, *more) -> tuple[str, ...]:
    return ("float64",) * (dtype == torch.float64) + more


def _tensor(rows, dtype=torch.float32, device="cpu") -> Tensor:
    return torch.tensor(rows, dtype=dtype, device=device)


def close_or_float32(out, expected, name, case):
    """``close("arithmetic")``; a float64 answer right to float32 precision only is told why."""
    try:
        close("arithmetic")(out, expected, name, case)
    except CheckFailed as e:
        if expected.dtype == torch.float64 and out.shape == expected.shape and torch.allclose(
                out.detach().double(), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max())):
            fail(f"{e} The answer is right to float32 precision only: a step runs in float32 (a Python float "
                 "added to an integer tensor, e.g. torch.arange(n) + 0.5, is float32; give torch.arange the "
                 "input's dtype).")
        raise


def near_boxes(anchors: Tensor, gen: torch.Generator) -> Tensor:
    """Boxes a little off their anchors: shifted by ~0.3 of the size, resized by ~e^{+-0.5}."""
    ctr, wh = (anchors[:, :2] + anchors[:, 2:]) / 2, anchors[:, 2:] - anchors[:, :2]  # [N, 2]
    ctr = ctr + 0.3 * wh * torch.randn(ctr.shape, generator=gen, dtype=torch.float64).to(ctr)
    wh = wh * torch.exp(0.5 * torch.randn(wh.shape, generator=gen, dtype=torch.float64)).to(wh)
    return torch.cat([ctr - wh / 2, ctr + wh / 2], dim=1)


# ------------------------------------------------------------- encode / decode
def _coding_visible(gen, device, decode: bool):
    t = functools.partial(_tensor, device=device)
    if decode:
        yield Case("the lecture's refinement (-0.12, 0.02, log 0.915, log 1.66) of the anchor (44, 44, 84, 84): "
                   "(40.9, 31.6, 77.5, 98.0)", (t(DELTAS), t(ANCHOR)), show=True)
        yield Case("zero deltas: the anchors themselves", (t([[0, 0, 0, 0]] * 2), t([[0, 0, 10, 20], [5, 5, 6, 9]])),
                   show=True)
        yield Case("tw = 20 is clamped to log(1000/16) (width 62.5 x 40 = 2500); th = -5 is not (height 0.27)",
                   (t([[0, 0, 20, -5]]), t(ANCHOR)), ("clamp",), show=True)
        boxes, anchors = t([[2, 3, 12, 43], [0, 0, 1, 1]]), t([[0, 0, 10, 20], [0.5, 0.5, 2.5, 1.5]])
        yield Case("a round trip: decode_boxes(encode(boxes, anchors), anchors) == boxes",
                   (_CODER.encode(boxes, anchors), anchors), ("round-trip",), expected=boxes, show=True)
    else:
        yield Case("the lecture's box (40.9, 31.6, 77.5, 98.0) from the anchor (44, 44, 84, 84): "
                   "(-0.12, 0.02, log 0.915 = -0.0888, log 1.66 = 0.5068)", (t(REFINED), t(ANCHOR)), show=True)
        yield Case("a box equal to its anchor: (0, 0, 0, 0)", (t(ANCHOR), t(ANCHOR)), show=True)
        yield Case("(0, 0, 20, 10) from the anchor (0, 0, 10, 10): tx = 0.5 (the centre moves half the anchor's "
                   "width), tw = log 2 = 0.693", (t([[0, 0, 20, 10]]), t([[0, 0, 10, 10]])), show=True)
    args = (t(DELTAS, torch.float64), t(ANCHOR, torch.float64)) if decode else \
        (t(REFINED, torch.float64), t(ANCHOR, torch.float64))
    yield Case("the lecture's example in float64: a float64 result", args, ("float64",), show=True)
    big, small = t([[4000, 5000, 6000, 5500]]), t([[0.2, 0.1, 0.7, 0.35]])
    if decode:
        yield Case("large coordinates: anchor (4000, 5000, 6000, 5500)", (t([[0.1, -0.2, 0.3, 0.05]]), big),
                   ("large",), show=True)
        yield Case("a sub-pixel anchor (0.2, 0.1, 0.7, 0.35)", (t([[0.1, -0.2, 0.3, 0.05]]), small), ("tiny",),
                   show=True)
    else:
        yield Case("large coordinates: (4100, 4900, 6300, 5600) from (4000, 5000, 6000, 5500)",
                   (t([[4100, 4900, 6300, 5600]]), big), ("large",), show=True)
        yield Case("sub-pixel boxes: (0.3, 0.1, 0.6, 0.3) from (0.2, 0.1, 0.7, 0.35)",
                   (t([[0.3, 0.1, 0.6, 0.3]]), small), ("tiny",), show=True)
    yield Case("no boxes (shape [0, 4]): shape [0, 4]", (t(ANCHOR)[:0], t(ANCHOR)[:0]), ("empty",), show=True)


def _coding_hidden(gen, device, decode: bool):
    for n, dtype, scale, tags in [(60, torch.float32, 200.0, ()), (40, torch.float64, 200.0, ()),
                                  (20, torch.float32, 1e4, ("large",)), (20, torch.float32, 2.0, ("tiny",))]:
        anchors = random_boxes(n, gen, dtype=dtype, scale=scale)
        boxes = near_boxes(anchors, gen)
        what = f"{n} random boxes and anchors (image size {scale:g}), {dtype_name(dtype)}"
        if decode:
            deltas = _CODER.encode(boxes, anchors)
            yield Case(f"{what}, deltas of boxes near their anchors", (deltas.to(device), anchors.to(device)),
                       _tags(dtype, *tags))
        else:
            yield Case(what, (boxes.to(device), anchors.to(device)), _tags(dtype, *tags))
    if decode:
        anchors = random_boxes(30, gen, scale=300.0)
        boxes = near_boxes(anchors, gen)
        yield Case("a round trip on 30 random boxes (decode of their encoding must give them back)",
                   (_CODER.encode(boxes, anchors).to(device), anchors.to(device)), ("round-trip",),
                   expected=boxes.to(device))
        deltas = torch.rand(30, 4, generator=gen, dtype=torch.float64) * 16 - 8  # tw, th in [-8, 8)
        yield Case("30 deltas with tw, th in [-8, 8] (clamp only above log(1000/16))",
                   (deltas.float().to(device), anchors.to(device)), ("clamp",))
    yield Case("no boxes", (torch.zeros(0, 4, device=device), torch.zeros(0, 4, device=device)), ("empty",))


ENCODE = Exercise("encode_boxes", _CODER.encode, FORBIDDEN, lambda g, d: _coding_visible(g, d, False),
                  lambda g, d: _coding_hidden(g, d, False), close_or_float32)
DECODE = Exercise("decode_boxes", _CODER.decode, FORBIDDEN, lambda g, d: _coding_visible(g, d, True),
                  lambda g, d: _coding_hidden(g, d, True), close_or_float32)
check_encode_boxes_visible, check_encode_boxes_hidden = ENCODE.checks()
check_decode_boxes_visible, check_decode_boxes_hidden = DECODE.checks()


# ------------------------------------------------------------------- roi_align
def lecture_feature_map(device="cpu", dtype=torch.float32) -> Tensor:
    """Tensor[1, 1, 8, 8] with f(x, y) = 10 y + x at pixel (x, y): f(6, 5) = 56, f(7, 6) = 67."""
    y, x = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    return (10 * y + x)[None, None].to(dtype=dtype, device=device)


def random_rois(k: int, gen: torch.Generator, images: int, size: tuple[float, float], *, lo: float = 0.02,
                hi: float = 0.6, outside: float = 0.2, dtype=torch.float32) -> Tensor:
    """Tensor[k, 5] of (batch index, x1, y1, x2, y2) rows in an image of ``size`` (H, W):
    box sides between ``lo`` and ``hi`` of the image, up to ``outside`` of it past the border."""
    H, W = size
    wh = (torch.rand(k, 2, generator=gen, dtype=torch.float64) * (hi - lo) + lo) * torch.tensor([W, H])
    xy = (torch.rand(k, 2, generator=gen, dtype=torch.float64) * (1 + 2 * outside) - outside) * torch.tensor([W, H])
    batch = torch.randint(images, (k, 1), generator=gen).double()
    return torch.cat([batch, xy, xy + wh], dim=1).to(dtype)


def _roi_case(name, gen, device, *, dtype=torch.float32, images=2, channels=3, hw=(12, 16), k=10,
              output=(3, 3), scale=0.5, sampling=-1, aligned=False, tags=(), grad=False, **box):
    fmap = torch.randn(images, channels, *hw, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
    rois = random_rois(k, gen, images, (hw[0] / scale, hw[1] / scale), dtype=dtype, **box).to(device)
    more = ("aligned",) * aligned + ("sampling_ratio",) * (sampling > 0) + ("gradient",) * grad
    return Case(name, (fmap, rois, output, scale, sampling, aligned), _tags(dtype, *tags, *more),
                grad=(0,) if grad else ())


def _roi_visible(gen, device):
    f = lecture_feature_map(device)
    t = functools.partial(_tensor, device=device)
    lecture = t([[0, 6, 5.3, 7, 6.3]])
    yield Case("the lecture's sample: f(6.5, 5.8) = 0.1 f(6,5) + 0.1 f(7,5) + 0.4 f(6,6) + 0.4 f(7,6) = 64.5 "
               "(f(x, y) = 10 y + x; a 1 x 1 box centred at (6.5, 5.8), output 1 x 1)",
               (f, lecture, (1, 1), 1.0, -1, False), show=True)
    yield Case("its gradient: 0.1, 0.1, 0.4, 0.4 at the four neighbours", (f, lecture, (1, 1), 1.0, -1, False),
               ("gradient",), grad=(0,), show=True)
    r = torch.randint(0, 10, (1, 2, 8, 8), generator=gen).float().to(device)
    yield Case("the box (1, 1, 5, 5) on a 2 x 2 output: bins of 2 x 2 pixels, so the adaptive grid takes "
               "2 x 2 samples per bin", (r, t([[0, 1, 1, 5, 5]]), (2, 2), 1.0, -1, False), show=True)
    yield Case("the box (-4, -4, 12, 12), larger than the 8 x 8 map: 8 x 8 samples per bin, those beyond "
               "-1 and 8 read 0", (r, t([[0, -4, -4, 12, 12]]), (2, 2), 1.0, -1, False), ("large", "outside"),
               show=True)
    yield Case("the box (1, 1, 5, 5) with sampling_ratio=1: one sample per bin", (r, t([[0, 1, 1, 5, 5]]),
                                                                                (2, 2), 1.0, 1, False),
               ("sampling_ratio",), show=True)
    yield Case("(1, 1, 5, 5) with aligned=True: every coordinate moves by -0.5 pixel",
               (r, t([[0, 1, 1, 5, 5]]), (2, 2), 1.0, -1, True), ("aligned",), show=True)
    yield Case("a 0.3 x 0.2 box: with aligned=False a box is at least 1 x 1 pixel",
               (r, t([[0, 2.1, 3.3, 2.4, 3.5]]), (2, 2), 1.0, -1, False), ("tiny",), show=True)
    two = torch.cat([r, r.flip(-1)])  # [2, 2, 8, 8]
    yield Case("two images, spatial_scale 0.5 (boxes in 16 x 16 image pixels) and a 2 x 3 output; the second "
               "box reads image 1", (two, t([[0, 2, 2, 10, 12], [1, 2, 2, 10, 12]]), (2, 3), 0.5, -1, False),
               ("batch",), show=True)
    yield Case("the lecture's sample in float64: a float64 result",
               (f.double(), lecture.double(), (1, 1), 1.0, -1, False), ("float64",), show=True)
    yield Case("no boxes (shape [0, 5]): shape [0, 2, 2, 2]", (r, t([[0, 1, 1, 5, 5]])[:0], (2, 2), 1.0, -1, False),
               ("empty",), show=True)


def _roi_hidden(gen, device):
    yield _roi_case("12 random boxes on 2 images, spatial_scale 0.5, 3 x 3 output, float32", gen, device,
                    k=12, tags=("batch", "outside"))
    yield _roi_case("10 random boxes, aligned=True, sampling_ratio=2, 2 x 4 output, float64", gen, device,
                    dtype=torch.float64, output=(2, 4), sampling=2, aligned=True, tags=("batch", "outside"))
    yield _roi_case("6 boxes larger than the map (adaptive grid of many samples)", gen, device, k=6, hw=(8, 10),
                    lo=1.0, hi=1.6, outside=0.5, tags=("large", "outside"))
    for aligned in (False, True):
        yield _roi_case(f"10 boxes under a pixel wide, aligned={aligned}", gen, device, scale=1.0, lo=0.01,
                        hi=0.08, aligned=aligned, tags=("tiny",))
    yield _roi_case("the gradient with respect to the feature map, 8 boxes, float64", gen, device, k=8,
                    dtype=torch.float64, scale=0.25, grad=True, tags=("outside",))
    yield _roi_case("no boxes", gen, device, k=0, tags=("empty",))


ROI_ALIGN = Exercise("roi_align", _reference_roi_align, FORBIDDEN + policy.BILINEAR_SAMPLING, _roi_visible,
                     _roi_hidden, close_or_float32)
check_roi_align_visible, check_roi_align_hidden = ROI_ALIGN.checks()


# --------------------------------------------------------------- label_anchors
def _reference_labels(iou: Tensor, high_threshold: float = 0.7, low_threshold: float = 0.3) -> Tensor:
    """The RPN's labels: Matcher with low-quality matches, then 1 / 0 / -1."""
    matches = Matcher(high_threshold, low_threshold, allow_low_quality_matches=True)(iou)  # [N]
    return torch.where(matches >= 0, 1, torch.where(matches == Matcher.BELOW_LOW_THRESHOLD, 0, -1))


def same_labels(out, expected, name, case):
    """Labels equal; on a hidden case, how many anchors of each kind went wrong."""
    if torch.equal(out, expected):
        return
    if case.show:
        fail(f"{name} returned the wrong labels on {case.name}.\nexpected: {expected.tolist()}\ngot: {out.tolist()}")
    wrong = out != expected
    kinds = [f"{int(n)} that should be {v} ({what})" for v, what in ((1, "positive"), (0, "negative"), (-1, "ignored"))
             if (n := (wrong & (expected == v)).sum())]
    fail(f"{name} labelled {int(wrong.sum())} of {len(out)} anchors wrongly on {case.name}: {', '.join(kinds)}")


def scene_ious(gen, objects: int, dtype=torch.float32, grid=(12, 12)) -> Tensor:
    """Tensor[G, N] IoU of ``objects`` random boxes in a 96 x 96 image with 9 anchors per
    position of a ``grid`` (stride 8, sizes 16, 32, 64, ratios 0.5, 1, 2), every box overlapping some anchor."""
    anchors = grid_anchors(grid, 8, (16.0, 32.0, 64.0), (0.5, 1.0, 2.0), dtype=torch.float64)  # [N, 4]
    gt = random_boxes(objects, gen, dtype=torch.float64, scale=8.0 * grid[0])
    return box_iou(gt, anchors).to(dtype)


def _labels_visible(gen, device):
    t = functools.partial(_tensor, device=device)
    yield Case("one object, IoUs [0.85, 0.7, 0.5, 0.3, 0.1]: [1, 1, -1, -1, 0] (IoU >= 0.7 positive, < 0.3 "
               "negative, 0.3 itself ignored)", (t([[0.85, 0.7, 0.5, 0.3, 0.1]]), 0.7, 0.3), ("exact-threshold",),
               show=True)
    yield Case("two objects, the second overlapping at most 0.25: its best anchor is positive all the same "
               "(a low-quality match)", (t([[0.9, 0.1, 0.0, 0.4], [0.0, 0.05, 0.25, 0.2]]), 0.7, 0.3),
               ("low-quality",), show=True)
    yield Case("an object whose best IoU, 0.6, is shared by two anchors: both are positive",
               (t([[0.6, 0.2, 0.6, 0.45]]), 0.7, 0.3), ("ties",), show=True)
    yield Case("thresholds 0.5 / 0.4 (RetinaNet's), IoUs [0.55, 0.5, 0.45, 0.4, 0.35] and a second object",
               (t([[0.55, 0.5, 0.45, 0.4, 0.35], [0.0, 0.0, 0.1, 0.2, 0.3]]), 0.5, 0.4), ("thresholds",), show=True)
    yield Case("the first example in float64", (t([[0.85, 0.7, 0.5, 0.3, 0.1]], torch.float64), 0.7, 0.3),
               ("float64",), show=True)
    yield Case("no objects (IoU of shape [0, 4]): every anchor negative", (t([[0.0] * 4])[:0], 0.7, 0.3),
               ("no-objects",), show=True)
    yield Case("no anchors (IoU of shape [2, 0]): an empty int64 tensor", (t([[0.0], [0.0]])[:, :0], 0.7, 0.3),
               ("empty",), show=True)
    small = scene_ious(gen, 2, grid=(2, 2))  # [2, 36]
    yield Case("2 objects and 36 anchors in a 16 x 16 image, IoUs from their boxes", (small.to(device), 0.7, 0.3),
               ("scene",), show=True)


def _labels_hidden(gen, device):
    for objects, dtype, (hi, lo) in [(5, torch.float32, (0.7, 0.3)), (8, torch.float64, (0.7, 0.3)),
                                     (6, torch.float32, (0.5, 0.4))]:
        iou = scene_ious(gen, objects, dtype).to(device)
        tags = _tags(dtype, "scene", "low-quality", *(("thresholds",) * (hi != 0.7)))
        yield Case(f"{objects} objects and {iou.shape[1]} anchors, thresholds {hi} / {lo}, {dtype_name(dtype)}",
                   (iou, hi, lo), tags)
    steps = torch.randint(0, 11, (6, 200), generator=gen).double() / 10  # IoUs 0, 0.1, ..., 1: ties, 0.3 and 0.7
    steps = steps * (torch.rand(6, 200, generator=gen) < 0.3)  # mostly 0, as for real anchors
    steps[:, 0] = 0.2  # every object overlaps some anchor
    yield Case("IoUs on a 0.1 grid (many exactly 0.7 and 0.3, many tied best anchors), 6 objects",
               (steps.float().to(device), 0.7, 0.3), ("exact-threshold", "ties"))
    yield Case("no objects", (torch.zeros(0, 50, device=device), 0.7, 0.3), ("no-objects",))
    yield Case("no anchors", (torch.zeros(3, 0, device=device), 0.7, 0.3), ("empty",))


LABEL_ANCHORS = Exercise("label_anchors", _reference_labels, FORBIDDEN, _labels_visible, _labels_hidden,
                         same_labels)
check_label_anchors_visible, check_label_anchors_hidden = LABEL_ANCHORS.checks()


# ----------------------------------------------------------- average_precision
def _reference_average_precision(boxes: Tensor, scores: Tensor, gt_boxes: Tensor,
                                 iou_threshold: float = 0.5) -> Tensor:
    """All-points AP (the exact area under the interpolated curve) of one class in one image."""
    curve = _reference_pr(boxes, scores, gt_boxes, iou_threshold)
    return _reference_ap(curve.precision, curve.recall, "voc")


# The evaluation chapter's example: objects 1-3; detections on 1, 2, background, 1 again, 3.
EXAMPLE_GT = [[10.0, 10.0, 40.0, 40.0], [60.0, 10.0, 90.0, 40.0], [30.0, 60.0, 70.0, 95.0]]
EXAMPLE_DETECTIONS = [[12.0, 11.0, 41.0, 42.0], [58.0, 12.0, 88.0, 40.0], [72.0, 55.0, 97.0, 80.0],
                      [8.0, 8.0, 38.0, 39.0], [32.0, 58.0, 70.0, 92.0]]
EXAMPLE_SCORES = [0.99, 0.95, 0.90, 0.50, 0.10]


def detection_scene(gen, objects: int, *, crowded=False, tied=False, dtype=torch.float32, device="cpu"):
    """(boxes, scores, gt_boxes): ``objects`` ground truths, about 0.8 hits per object (some
    loose, some duplicates) and as many background boxes, shuffled."""
    gt = random_boxes(objects, gen, dtype=torch.float64, scale=300.0, clustered=crowded)
    hits = gt[torch.randint(objects, (int(0.8 * objects) + 1,), generator=gen)] if objects else gt
    size = (hits[:, 2:] - hits[:, :2]).repeat(1, 2)
    hits = hits + 0.15 * size * torch.randn(hits.shape, generator=gen, dtype=torch.float64)
    hits = torch.cat([hits[:, :2].minimum(hits[:, 2:]), hits[:, :2].maximum(hits[:, 2:])], dim=1)
    boxes = torch.cat([hits, random_boxes(objects + 2, gen, dtype=torch.float64, scale=300.0)])
    boxes = boxes[torch.randperm(len(boxes), generator=gen)]
    scores = torch.rand(len(boxes), generator=gen, dtype=torch.float64)
    scores = (scores * 4).floor() / 4 if tied else scores  # four distinct scores: many ties
    return tuple(x.to(dtype=dtype, device=device) for x in (boxes, scores, gt))


def exact_match_scene(gen, objects: int, device="cpu"):
    """Integer boxes: each object (width 3d) with a detection shifted by d (IoU exactly 0.5)
    and one shifted by d + 1 (IoU below 0.5)."""
    d = torch.randint(1, 8, (objects, 1), generator=gen).double()
    x = 100.0 * torch.arange(objects, dtype=torch.float64)[:, None]
    h = torch.randint(5, 30, (objects, 1), generator=gen).double()
    gt = torch.cat([x, torch.zeros_like(x), x + 3 * d, h], dim=1)
    shift = torch.cat([d, d + 1]).repeat(1, 4) * torch.tensor([1.0, 0.0, 1.0, 0.0])
    boxes = gt.repeat(2, 1) + shift
    scores = torch.randperm(2 * objects, generator=gen).double() / (2 * objects)
    return boxes.to(device).float(), scores.to(device).float(), gt.to(device).float()


def _ap_visible(gen, device):
    t = functools.partial(_tensor, device=device)
    ex = (t(EXAMPLE_DETECTIONS), t(EXAMPLE_SCORES), t(EXAMPLE_GT), 0.5)
    yield Case("the chapter's example: TP, TP, FP, FP (a duplicate), TP; precision 1, 1, 2/3, 1/2, 3/5, "
               "recall 1/3, 2/3, 2/3, 2/3, 1; AP = 2/3 * 1 + 1/3 * 3/5 = 0.8667", ex, show=True)
    yield Case("the same example at IoU threshold 0.9: no true positive, AP 0", (*ex[:3], 0.9), ("threshold",),
               show=True)
    rising = t([[0, 0, 10, 10], [50, 50, 60, 60], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]])
    yield Case("TP, FP, TP, TP, TP for 4 objects: precision 1, 1/2, 2/3, 3/4, 4/5 rises again, so the "
               "interpolated precision is 4/5 from recall 1/4 on: AP = 1/4 * 1 + 3/4 * 4/5 = 0.85 "
               "(without interpolation it would be 0.8042)",
               (rising, t([0.9, 0.8, 0.7, 0.6, 0.5]), t([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10],
                                                         [60, 0, 70, 10]]), 0.5), ("interpolation",), show=True)
    yield Case("two detections of one object (IoU 1 and 0.91): the second is a false positive, AP 1",
               (t([[0, 0, 10, 10], [0, 0, 10, 11]]), t([0.9, 0.8]), t([[0, 0, 10, 10]]), 0.5), ("duplicates",),
               show=True)
    yield Case("two overlapping objects A (0, 0, 10, 10) and B (4, 0, 14, 10): the second detection overlaps A "
               "best (0.82) but A is taken, so it takes B (0.54): AP 1",
               (t([[0, 0, 10, 10], [1, 0, 11, 10]]), t([0.9, 0.8]), t([[0, 0, 10, 10], [4, 0, 14, 10]]), 0.5),
               ("crowded",), show=True)
    yield Case("a detection (0, 0, 30, 10) of the object (10, 0, 40, 10): IoU exactly 0.5 is a match at "
               "threshold 0.5, AP 1", (t([[0, 0, 30, 10]]), t([0.7]), t([[10, 0, 40, 10]]), 0.5),
               ("exact-threshold",), show=True)
    yield Case("tied scores 0.5, 0.5: equal scores in index order (a FP before the TP), AP 0.5",
               (t([[50, 50, 60, 60], [0, 0, 10, 10]]), t([0.5, 0.5]), t([[0, 0, 10, 10]]), 0.5), ("ties",),
               show=True)
    yield Case("the chapter's example in float64: a float64 result",
               tuple(x.double() if torch.is_tensor(x) else x for x in ex), ("float64",), show=True)
    yield Case("no detections (shape [0, 4]): AP 0", (t(EXAMPLE_DETECTIONS)[:0], t([0.0])[:0], t(EXAMPLE_GT), 0.5),
               ("empty",), show=True)
    yield Case("no objects (ground truth of shape [0, 4]): AP 0", (*ex[:2], t(EXAMPLE_GT)[:0], 0.5),
               ("no-objects",), show=True)


def _ap_hidden(gen, device):
    for objects, dtype, thr, crowded, tied in [(12, torch.float32, 0.5, False, False),
                                               (10, torch.float64, 0.75, False, False),
                                               (15, torch.float32, 0.5, True, False),
                                               (10, torch.float32, 0.5, False, True)]:
        scene = detection_scene(gen, objects, crowded=crowded, tied=tied, dtype=dtype, device=device)
        kind = "crowded" if crowded else "tied-score" if tied else "random"
        tags = _tags(dtype, "interpolation", "duplicates", *(("threshold",) * (thr != 0.5)),
                     *(("crowded",) * crowded), *(("ties",) * tied))
        yield Case(f"a {kind} scene of {objects} objects and {len(scene[0])} detections, IoU threshold {thr}, "
                   f"{dtype_name(dtype)}", (*scene, thr), tags)
    yield Case("integer boxes: 8 objects, each with a detection at IoU exactly 0.5 and one just below",
               (*exact_match_scene(gen, 8, device), 0.5), ("exact-threshold",))
    boxes, scores, gt = detection_scene(gen, 6, device=device)
    yield Case("no detections", (boxes[:0], scores[:0], gt, 0.5), ("empty",))
    yield Case("no objects", (boxes, scores, gt[:0], 0.5), ("no-objects",))


AVERAGE_PRECISION = Exercise("average_precision", _reference_average_precision, FORBIDDEN, _ap_visible,
                             _ap_hidden, close_or_float32)
check_average_precision_visible, check_average_precision_hidden = AVERAGE_PRECISION.checks()

"""Checks for assignment 02 (comparing boxes): ``box_iou`` and ``nms``.

Visible checks use the lecture's worked examples and a small twin of every kind
of hidden case (empty inputs, zero-area boxes, float64, tied scores, an IoU
exactly at the threshold), and say exactly what was expected. Hidden checks draw
fresh random and edge-case inputs at every run and compare with the
``cv_course.ops`` reference on the student's device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops import box_iou as _reference_box_iou  # bound at import, before any student code
from ..ops import nms as _reference_nms
from . import policy
from .exercise import Case, Exercise, close, kept_indices

FORBIDDEN = policy.course_code() + policy.TORCHVISION


def random_boxes(n: int, gen: torch.Generator, *, dtype=torch.float32, device="cpu",
                 scale: float = 100.0, clustered: bool = False) -> Tensor:
    """Tensor[n, 4] of valid (x1, y1, x2, y2) boxes: scattered over a
    ``scale``-sized image, or jittered copies of a few objects (``clustered``)."""
    if clustered:
        k = max(1, n // 15)
        centers = torch.rand(k, 2, generator=gen, dtype=torch.float64) * scale
        sizes = (torch.rand(k, 2, generator=gen, dtype=torch.float64) * 0.3 + 0.1) * scale
        pick = torch.randint(k, (n,), generator=gen)
        jitter = torch.randn(n, 4, generator=gen, dtype=torch.float64) * 0.04 * scale
        ctr, wh = centers[pick], sizes[pick]
        boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], dim=1) + jitter  # [n, 4]
    else:
        xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * scale
        wh = (torch.rand(n, 2, generator=gen, dtype=torch.float64) * 0.3 + 0.01) * scale
        boxes = torch.cat([xy, xy + wh], dim=1)  # [n, 4]
    lo = torch.minimum(boxes[:, :2], boxes[:, 2:])
    hi = torch.maximum(boxes[:, :2], boxes[:, 2:])
    return torch.cat([lo, hi], dim=1).to(dtype=dtype, device=device)


def exact_threshold_scene(groups: int, thr: float, gen: torch.Generator, *, dtype=torch.float32,
                          device="cpu") -> tuple[Tensor, Tensor]:
    """Far-apart groups of three integer boxes, each shifted along x from the last
    so that neighbours have an IoU of exactly ``thr`` (0.5 or 0.25; integers keep
    the arithmetic exact): an NMS that suppresses at IoU == thr keeps fewer.
    Returns (boxes [3 * groups, 4], scores [3 * groups], distinct)."""
    w_per_d = {0.5: 3, 0.25: 5 / 3}[thr]  # (w - d) / (w + d) = thr for equal boxes shifted by d
    d = 3 * torch.randint(1, 6, (groups, 1), generator=gen, dtype=torch.float64)  # [G, 1]
    w, h = w_per_d * d, torch.randint(4, 30, (groups, 1), generator=gen).double()  # [G, 1]
    x0 = 200.0 * torch.arange(groups, dtype=torch.float64)[:, None] + d * torch.arange(3)  # [G, 3]
    y0 = torch.randint(0, 50, (groups, 1), generator=gen).double().expand(groups, 3)
    boxes = torch.stack([x0, y0, x0 + w, y0 + h], dim=-1).reshape(-1, 4)  # [3G, 4]
    scores = torch.randperm(3 * groups, generator=gen).double() / (3 * groups)
    return boxes.to(dtype=dtype, device=device), scores.to(dtype=dtype, device=device)


# --------------------------------------------------------------------- box_iou
def _iou_visible(gen, device):
    t = lambda rows, dtype=torch.float32: torch.tensor(rows, dtype=dtype, device=device)  # noqa: E731
    yield Case("(10,10,50,50) vs (30,30,70,70), IoU 400/2800 = 0.143",
               (t([[10, 10, 50, 50]]), t([[30, 30, 70, 70]])), show=True)
    yield Case("(0,0,10,10) vs (1,1,11,11), IoU 81/119 = 0.681", (t([[0, 0, 10, 10]]), t([[1, 1, 11, 11]])),
               show=True)
    yield Case("3 boxes vs 2 boxes (shape [3, 2])", (t([[0, 0, 10, 10], [0, 0, 5, 5], [20, 20, 30, 30]]),
                                                     t([[0, 0, 10, 10], [5, 5, 15, 15]])), show=True)
    yield Case("(0,0,4,4) vs (2,0,6,4) in float64: IoU 8/24 = 0.333, a float64 result",
               (t([[0, 0, 4, 4]], torch.float64), t([[2, 0, 6, 4]], torch.float64)), ("float64",), show=True)
    flat = t([[3, 3, 3, 8], [0, 0, 6, 6]])  # a zero-width box and a normal one
    yield Case("a zero-width box (3,3,3,8) against itself and (0,0,6,6): IoU 0, not NaN", (flat, flat),
               ("zero-area",), show=True)
    yield Case("an empty first input (shape [0, 4]) against 2 boxes: shape [0, 2]",
               (t([[0, 0, 1, 1]])[:0], flat), ("empty",), show=True)
    yield Case("2 boxes against an empty second input: shape [2, 0]", (flat, t([[0, 0, 1, 1]])[:0]),
               ("empty",), show=True)
    yield Case("(1000,2000,5000,6000) vs (3000,2000,7000,6000): large coordinates, IoU 1/3",
               (t([[1000, 2000, 5000, 6000]]), t([[3000, 2000, 7000, 6000]])), ("large",), show=True)


def _iou_hidden(gen, device):
    for dtype in (torch.float32, torch.float64):
        b1 = random_boxes(37, gen, dtype=dtype, device=device)
        b2 = random_boxes(23, gen, dtype=dtype, device=device, clustered=True)
        tags = ("float64",) if dtype == torch.float64 else ()
        yield Case(f"37 x 23 random boxes, {str(dtype)[6:]}", (b1, b2), tags)
    big = random_boxes(12, gen, device=device, scale=1e4)
    yield Case("large coordinates (up to 10,000 px)", (big, big), ("large",))
    flat = random_boxes(9, gen, device=device)
    flat[::2, 2] = flat[::2, 0]  # zero-width boxes: IoU must be 0, not NaN
    yield Case("zero-area boxes (IoU must be 0, not NaN)", (flat, flat), ("zero-area",))
    empty = torch.zeros(0, 4, device=device)
    yield Case("an empty first input (shape [0, 4])", (empty, flat), ("empty",))
    yield Case("an empty second input (shape [0, 4])", (flat, empty), ("empty",))


BOX_IOU = Exercise("box_iou", _reference_box_iou, FORBIDDEN, _iou_visible, _iou_hidden, close("arithmetic"))
check_box_iou_visible, check_box_iou_hidden = BOX_IOU.checks()


# ------------------------------------------------------------------------- nms
def abc_example(device="cpu", dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """The lecture's NMS example: A (0.95); B (0.88), IoU 0.72 with A; C (0.60),
    IoU 0.15 with A. Boxes are 100 x 100, shifted along x."""
    shift_b = 100 * (1 - 0.72) / (1 + 0.72)  # IoU of a box and its x-shift by d: (100-d)/(100+d)
    shift_c = 100 * (1 - 0.15) / (1 + 0.15)
    boxes = torch.tensor([[0, 0, 100, 100], [shift_b, 0, 100 + shift_b, 100],
                          [shift_c, 0, 100 + shift_c, 100]], dtype=dtype, device=device)
    scores = torch.tensor([0.95, 0.88, 0.60], dtype=dtype, device=device)
    return boxes, scores


def _nms_visible(gen, device):
    boxes, scores = abc_example(device)
    yield Case("the A/B/C example at threshold 0.5 (keeps A and C)", (boxes, scores, 0.5), show=True)
    yield Case("the A/B/C example at threshold 0.8 (keeps all three)", (boxes, scores, 0.8), show=True)
    order = torch.tensor([1, 2, 0], device=device)  # same boxes, shuffled: indices refer to the input
    yield Case("the A/B/C example shuffled (indices refer to the input order)",
               (boxes[order], scores[order], 0.5), show=True)
    b64, s64 = abc_example(device, torch.float64)
    yield Case("the A/B/C example in float64 at threshold 0.7", (b64, s64, 0.7), ("float64",), show=True)
    t = lambda rows: torch.tensor(rows, dtype=torch.float32, device=device)  # noqa: E731
    pair = t([[0, 0, 30, 10], [10, 0, 40, 10]])  # intersection 200, union 400
    yield Case("(0,0,30,10) score 0.9 and (10,0,40,10) score 0.8: IoU exactly 0.5 at threshold 0.5, "
               "both kept (remove only IoU > threshold)", (pair, t([0.9, 0.8]), 0.5), ("exact-threshold",),
               show=True)
    tied = t([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 1, 10, 11]])
    yield Case("tied scores [0.5, 0.7, 0.5, 0.7]: equal scores are ranked in index order (1, 3, 0, 2)",
               (tied, t([0.5, 0.7, 0.5, 0.7]), 0.5), ("ties",), show=True)
    yield Case("a single box", (t([[5, 5, 9, 9]]), t([0.3]), 0.5), ("single",), show=True)
    yield Case("three identical boxes (scores 0.2, 0.9, 0.4): only the best stays",
               (t([[1, 2, 3, 4]] * 3), t([0.2, 0.9, 0.4]), 0.5), ("identical",), show=True)
    yield Case("no boxes (shape [0, 4]): an empty int64 tensor", (t([[0, 0, 1, 1]])[:0], t([0.0])[:0], 0.5),
               ("empty",), show=True)
    crowd = random_boxes(12, gen, device=device, clustered=True)
    yield Case("12 crowded boxes at threshold 0.3", (crowd, torch.rand(12, generator=gen).to(device), 0.3),
               ("crowded",), show=True)


def _nms_hidden(gen, device):
    for n, clustered, thr, dtype in [(150, False, 0.5, torch.float32), (200, True, 0.5, torch.float32),
                                     (120, True, 0.3, torch.float64), (120, True, 0.7, torch.float32)]:
        boxes = random_boxes(n, gen, dtype=dtype, device=device, clustered=clustered)
        scores = torch.rand(n, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
        kind = "crowded" if clustered else "scattered"
        tags = ("crowded",) * clustered + ("float64",) * (dtype == torch.float64)
        yield Case(f"{n} {kind} boxes, threshold {thr}, {str(dtype)[6:]}", (boxes, scores, thr), tags)
    boxes = random_boxes(60, gen, device=device, clustered=True)
    tied = (torch.rand(60, generator=gen) * 4).floor().div(4).to(device)  # four distinct scores
    yield Case("60 crowded boxes with tied scores (equal scores: lower index first)", (boxes, tied, 0.5),
               ("ties",))
    for thr, dtype in ((0.5, torch.float32), (0.25, torch.float64)):
        boxes, scores = exact_threshold_scene(10, thr, gen, dtype=dtype, device=device)
        yield Case(f"integer boxes whose neighbours have IoU exactly {thr}, threshold {thr} "
                   "(remove only IoU > threshold)", (boxes, scores, thr), ("exact-threshold",))
    one = random_boxes(1, gen, device=device)
    yield Case("a single box", (one, torch.ones(1, device=device), 0.5), ("single",))
    yield Case("five identical boxes", (one.repeat(5, 1), torch.rand(5, generator=gen).to(device), 0.5),
               ("identical",))
    yield Case("no boxes", (torch.zeros(0, 4, device=device), torch.zeros(0, device=device), 0.5), ("empty",))


NMS = Exercise("nms", _reference_nms, FORBIDDEN, _nms_visible, _nms_hidden, kept_indices("boxes"),
               shape=False, uses=("box_iou",))
check_nms_visible, check_nms_hidden = NMS.checks()

"""Checks for assignment 02 (comparing boxes): ``box_iou`` and ``nms``.

Visible checks use the lecture's worked examples and say exactly what was
expected. Hidden checks draw fresh random and edge-case inputs at every run and
compare with the ``cv_course.ops`` reference on the student's device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops import box_iou as _reference_box_iou  # bound at import, before any student code
from ..ops import nms as _reference_nms
from .checks import call_student, check_close, check_tensor, fail, fresh_generator
from .failclosed import hidden_check
from .guard import Forbidden

FORBIDDEN = Forbidden(modules=("cv_course.ops", "torchvision.ops"), ops=("torchvision::",))


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


def _tol(dtype: torch.dtype) -> dict:
    return dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------- box_iou
def _check_iou_case(box_iou, b1: Tensor, b2: Tensor, case: str, show: bool) -> None:
    out = call_student(box_iou, (b1, b2), FORBIDDEN, "box_iou", case)
    check_tensor(out, "box_iou", shape=(len(b1), len(b2)), dtype=b1.dtype, device=b1.device, case=case)
    expected = _reference_box_iou(b1, b2)  # computed after the call, never visible to it
    check_close(out, expected, "box_iou", case=case, show=show, **_tol(b1.dtype))


def check_box_iou_visible(box_iou, device) -> None:
    """The lecture's two worked examples, a shape check and the corner cases."""
    t = lambda rows: torch.tensor(rows, dtype=torch.float32, device=device)  # noqa: E731
    _check_iou_case(box_iou, t([[10, 10, 50, 50]]), t([[30, 30, 70, 70]]),
                    "(10,10,50,50) vs (30,30,70,70), IoU 400/2800 = 0.143", show=True)
    _check_iou_case(box_iou, t([[0, 0, 10, 10]]), t([[1, 1, 11, 11]]),
                    "(0,0,10,10) vs (1,1,11,11), IoU 81/119 = 0.681", show=True)
    _check_iou_case(box_iou, t([[0, 0, 10, 10], [0, 0, 5, 5], [20, 20, 30, 30]]),
                    t([[0, 0, 10, 10], [5, 5, 15, 15]]), "3 boxes vs 2 boxes (shape [3, 2])", show=True)
    print("box_iou: visible checks passed")


@hidden_check  # no points under autograde without the course's tamper scan
def check_box_iou_hidden(box_iou, device) -> None:
    """Fresh random inputs and edge cases, compared with the reference."""
    gen = fresh_generator()
    for dtype in (torch.float32, torch.float64):
        name = str(dtype).replace("torch.", "")
        b1 = random_boxes(37, gen, dtype=dtype, device=device)
        b2 = random_boxes(23, gen, dtype=dtype, device=device, clustered=True)
        _check_iou_case(box_iou, b1, b2, f"37 x 23 random boxes, {name}", show=False)
    big = random_boxes(12, gen, device=device, scale=1e4)
    _check_iou_case(box_iou, big, big, "large coordinates (up to 10,000 px)", show=False)
    flat = random_boxes(9, gen, device=device)
    flat[::2, 2] = flat[::2, 0]  # zero-width boxes: IoU must be 0, not NaN
    _check_iou_case(box_iou, flat, flat, "zero-area boxes (IoU must be 0, not NaN)", show=False)
    empty = torch.zeros(0, 4, device=device)
    _check_iou_case(box_iou, empty, flat, "an empty first input (shape [0, 4])", show=False)
    _check_iou_case(box_iou, flat, empty, "an empty second input (shape [0, 4])", show=False)
    print("box_iou: hidden checks passed")


# ------------------------------------------------------------------------- nms
def _check_nms_case(nms, boxes: Tensor, scores: Tensor, thr: float, case: str, show: bool) -> None:
    out = call_student(nms, (boxes, scores, thr), FORBIDDEN, "nms", case)
    check_tensor(out, "nms", dtype=torch.int64, device=boxes.device, case=case)
    if out.dim() != 1:
        fail(f"nms must return a 1-D tensor of indices, got shape {list(out.shape)} on {case}")
    expected = _reference_nms(boxes, scores, thr)
    if not torch.equal(out, expected):
        if show:
            fail(f"nms kept the wrong boxes on {case}.\nexpected indices: {expected.tolist()}\n"
                 f"got: {out.tolist()}")
        hint = ("the right boxes in the wrong order (sort by decreasing score)"
                if sorted(out.tolist()) == sorted(expected.tolist())
                else f"{len(out)} boxes where {len(expected)} should be kept")
        fail(f"nms kept the wrong boxes on {case}: {hint}")


def abc_example(device="cpu", dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """The lecture's NMS example: A (0.95); B (0.88), IoU 0.72 with A; C (0.60),
    IoU 0.15 with A. Boxes are 100 x 100, shifted along x."""
    shift_b = 100 * (1 - 0.72) / (1 + 0.72)  # IoU of a box and its x-shift by d: (100-d)/(100+d)
    shift_c = 100 * (1 - 0.15) / (1 + 0.15)
    boxes = torch.tensor([[0, 0, 100, 100], [shift_b, 0, 100 + shift_b, 100],
                          [shift_c, 0, 100 + shift_c, 100]], dtype=dtype, device=device)
    scores = torch.tensor([0.95, 0.88, 0.60], dtype=dtype, device=device)
    return boxes, scores


def check_nms_visible(nms, device) -> None:
    """The A/B/C example, output format, and the threshold's direction."""
    boxes, scores = abc_example(device)
    _check_nms_case(nms, boxes, scores, 0.5, "the A/B/C example at threshold 0.5 (keeps A and C)", True)
    _check_nms_case(nms, boxes, scores, 0.8, "the A/B/C example at threshold 0.8 (keeps all three)", True)
    order = torch.tensor([1, 2, 0], device=device)  # same boxes, shuffled: indices refer to the input
    _check_nms_case(nms, boxes[order], scores[order], 0.5,
                    "the A/B/C example shuffled (indices refer to the input order)", True)
    print("nms: visible checks passed")


@hidden_check  # no points under autograde without the course's tamper scan
def check_nms_hidden(nms, device) -> None:
    """Fresh random scenes (scattered and crowded), several thresholds, dtypes,
    tied scores and the degenerate cases."""
    gen = fresh_generator()
    cases = []
    for n, clustered, thr, dtype in [(150, False, 0.5, torch.float32), (200, True, 0.5, torch.float32),
                                     (120, True, 0.3, torch.float64), (120, True, 0.7, torch.float32)]:
        boxes = random_boxes(n, gen, dtype=dtype, device=device, clustered=clustered)
        scores = torch.rand(n, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
        kind = "crowded" if clustered else "scattered"
        cases.append((boxes, scores, thr, f"{n} {kind} boxes, threshold {thr}, {str(dtype)[6:]}"))
    boxes = random_boxes(60, gen, device=device, clustered=True)
    tied = (torch.rand(60, generator=gen) * 4).floor().div(4).to(device)  # four distinct scores
    cases.append((boxes, tied, 0.5, "60 crowded boxes with tied scores (equal scores: lower index first)"))
    one = random_boxes(1, gen, device=device)
    cases.append((one, torch.ones(1, device=device), 0.5, "a single box"))
    same = one.repeat(5, 1)
    cases.append((same, torch.rand(5, generator=gen).to(device), 0.5, "five identical boxes"))
    cases.append((torch.zeros(0, 4, device=device), torch.zeros(0, device=device), 0.5, "no boxes"))
    for boxes, scores, thr, case in cases:
        _check_nms_case(nms, boxes, scores, thr, case, show=False)
    print("nms: hidden checks passed")

"""Box geometry against torchvision and obviously-correct loop references."""

from __future__ import annotations

import pytest
import torch
import torchvision.ops as tvo

from cv_course.ops import (box_area, box_convert, box_iou, clip_boxes_to_image, generalized_box_iou,
                           remove_small_boxes)
from cv_course.grading.boxes import random_boxes


def loop_iou(b1, b2):
    out = torch.zeros(len(b1), len(b2), dtype=torch.float64)
    for i, (ax1, ay1, ax2, ay2) in enumerate(b1.double().tolist()):
        for j, (bx1, by1, bx2, by2) in enumerate(b2.double().tolist()):
            iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
            ih = max(0.0, min(ay2, by2) - max(ay1, by1))
            union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - iw * ih
            out[i, j] = iw * ih / union if union > 0 else 0.0
    return out


def test_lecture_examples():
    t = lambda *r: torch.tensor([r], dtype=torch.float32)  # noqa: E731
    assert box_iou(t(10, 10, 50, 50), t(30, 30, 70, 70)).item() == pytest.approx(400 / 2800)
    assert box_iou(t(0, 0, 10, 10), t(1, 1, 11, 11)).item() == pytest.approx(81 / 119)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("clustered", [False, True])
def test_box_iou_matches_torchvision_and_loop(dtype, clustered, device):
    gen = torch.Generator().manual_seed(0)
    b1 = random_boxes(31, gen, dtype=dtype, device=device, clustered=clustered)
    b2 = random_boxes(17, gen, dtype=dtype, device=device, clustered=clustered)
    ours = box_iou(b1, b2)
    assert ours.dtype == dtype and ours.device == b1.device and ours.shape == (31, 17)
    torch.testing.assert_close(ours, tvo.box_iou(b1, b2))
    torch.testing.assert_close(ours.cpu().double(), loop_iou(b1.cpu(), b2.cpu()),
                               rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-6)


def test_box_iou_large_coordinates_and_degenerate():
    gen = torch.Generator().manual_seed(1)
    big = random_boxes(20, gen, scale=1e5)
    torch.testing.assert_close(box_iou(big, big), tvo.box_iou(big, big))
    flat = torch.tensor([[5.0, 5, 5, 9], [0, 0, 0, 0], [0, 0, 10, 10]])
    iou = box_iou(flat, flat)
    assert not iou.isnan().any()
    assert iou[0, 0] == 0 and iou[1, 1] == 0 and iou[2, 2] == 1


@pytest.mark.parametrize("n,m", [(0, 3), (3, 0), (0, 0)])
def test_empty_inputs(n, m, device):
    for dtype in (torch.float32, torch.float64):
        gen = torch.Generator().manual_seed(n + m)
        b1 = random_boxes(n, gen, dtype=dtype, device=device)
        b2 = random_boxes(m, gen, dtype=dtype, device=device)
        for fn in (box_iou, generalized_box_iou):
            out = fn(b1, b2)
            assert out.shape == (n, m) and out.dtype == dtype and out.device == b1.device


def test_inputs_not_modified():
    gen = torch.Generator().manual_seed(2)
    b1, b2 = random_boxes(8, gen), random_boxes(5, gen)
    c1, c2 = b1.clone(), b2.clone()
    box_iou(b1, b2), generalized_box_iou(b1, b2), box_convert(b1, "xyxy", "cxcywh"), clip_boxes_to_image(b1, (50, 50))
    assert torch.equal(b1, c1) and torch.equal(b2, c2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_generalized_iou_matches_torchvision(dtype):
    gen = torch.Generator().manual_seed(3)
    b1, b2 = random_boxes(25, gen, dtype=dtype), random_boxes(12, gen, dtype=dtype, clustered=True)
    torch.testing.assert_close(generalized_box_iou(b1, b2), tvo.generalized_box_iou(b1, b2))
    disjoint = torch.tensor([[0.0, 0, 1, 1], [2, 0, 3, 1]], dtype=dtype)
    # two unit boxes with a unit gap: IoU 0, hull 3, union 2 -> GIoU = -1/3
    assert generalized_box_iou(disjoint[:1], disjoint[1:]).item() == pytest.approx(-1 / 3)


def test_gradcheck_iou_and_giou():
    gen = torch.Generator().manual_seed(4)
    b1 = random_boxes(4, gen, dtype=torch.float64, clustered=True).requires_grad_()
    b2 = random_boxes(3, gen, dtype=torch.float64, clustered=True).requires_grad_()
    assert torch.autograd.gradcheck(box_iou, (b1, b2))
    assert torch.autograd.gradcheck(generalized_box_iou, (b1, b2))


def test_zero_area_gradient_is_finite():
    b = torch.tensor([[1.0, 1, 1, 1], [0, 0, 2, 2]], dtype=torch.float64, requires_grad=True)
    box_iou(b, b).sum().backward()
    assert torch.isfinite(b.grad).all()


@pytest.mark.parametrize("fmt", ["xywh", "cxcywh"])
def test_box_convert_matches_torchvision_and_round_trips(fmt):
    gen = torch.Generator().manual_seed(5)
    b = random_boxes(10, gen, dtype=torch.float64)
    there = box_convert(b, "xyxy", fmt)
    torch.testing.assert_close(there, tvo.box_convert(b, "xyxy", fmt))
    torch.testing.assert_close(box_convert(there, fmt, "xyxy"), b)
    torch.testing.assert_close(box_convert(there, fmt, "xywh" if fmt == "cxcywh" else "cxcywh"),
                               tvo.box_convert(there, fmt, "xywh" if fmt == "cxcywh" else "cxcywh"))


def test_area_clip_and_small_boxes_match_torchvision():
    gen = torch.Generator().manual_seed(6)
    b = random_boxes(30, gen, scale=120) - 10
    torch.testing.assert_close(box_area(b), tvo.box_area(b))
    torch.testing.assert_close(clip_boxes_to_image(b, (80, 100)), tvo.clip_boxes_to_image(b, (80, 100)))
    assert torch.equal(remove_small_boxes(b, 12.0), tvo.remove_small_boxes(b, 12.0))
    assert box_area(torch.tensor([[5.0, 5, 2, 9]])).item() == 0  # inverted box counts as empty


def test_bad_input_errors_say_what_to_fix():
    with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
        box_iou(torch.rand(3, 5), torch.rand(2, 4))
    with pytest.raises(ValueError, match="x2 < x1"):
        generalized_box_iou(torch.tensor([[10.0, 10, 5, 20]]), torch.rand(1, 4))
    with pytest.raises(ValueError, match="in_fmt"):
        box_convert(torch.rand(2, 4), "xyhw", "xyxy")
    with pytest.raises(TypeError, match="torch.Tensor"):
        box_iou([[0, 0, 1, 1]], torch.rand(1, 4))
    with pytest.raises(ValueError, match="floating-point"):
        box_iou(torch.ones(1, 4, dtype=torch.int64), torch.rand(1, 4))

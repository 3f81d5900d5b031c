"""BoxCoder against torchvision's BoxCoder and the R-CNN formulas."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

from cv_course.grading.boxes import random_boxes
from cv_course.ops import BoxCoder

WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weights", WEIGHTS)
def test_encode_decode_match_torchvision(dtype, weights, device):
    gen = torch.Generator().manual_seed(0)
    boxes = random_boxes(200, gen, dtype=dtype, device=device)
    anchors = random_boxes(200, gen, dtype=dtype, device=device)
    ours, theirs = BoxCoder(weights), TVBoxCoder(weights)
    deltas = ours.encode(boxes, anchors)
    assert deltas.shape == (200, 4) and deltas.dtype == dtype and deltas.device == boxes.device
    torch.testing.assert_close(deltas, theirs.encode_single(boxes, anchors))
    # class-specific regression: 3 groups of (tx, ty, tw, th), some stretches past the clip
    codes = torch.randn(200, 12, generator=gen, dtype=torch.float64).mul(3).to(dtype=dtype, device=device)
    decoded = ours.decode(codes, anchors)
    assert decoded.shape == (200, 12) and decoded.dtype == dtype
    torch.testing.assert_close(decoded, theirs.decode_single(codes, anchors))
    torch.testing.assert_close(decoded.view(200, 3, 4)[:, 1], ours.decode(codes[:, 4:8], anchors))


@pytest.mark.parametrize("weights", WEIGHTS)
def test_round_trip_is_the_identity(weights):
    gen = torch.Generator().manual_seed(1)
    boxes = random_boxes(300, gen, dtype=torch.float64, scale=500)
    anchors = random_boxes(300, gen, dtype=torch.float64, scale=500)
    coder = BoxCoder(weights)
    torch.testing.assert_close(coder.decode(coder.encode(boxes, anchors), anchors), boxes,
                               rtol=1e-12, atol=1e-9)
    deltas = torch.randn(300, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(coder.encode(coder.decode(deltas, anchors), anchors), deltas)


def test_the_formulas_on_one_box():
    # anchor centre (20, 30), size 20 x 40; box centre (25, 20), size 40 x 10
    anchor = torch.tensor([[10.0, 10, 30, 50]])
    box = torch.tensor([[5.0, 15, 45, 25]])
    t = BoxCoder((10, 10, 5, 5)).encode(box, anchor)[0].tolist()
    expected = [10 * 5 / 20, 10 * -10 / 40, 5 * math.log(2), 5 * math.log(0.25)]
    assert t == pytest.approx(expected, rel=1e-6)
    assert BoxCoder().decode(torch.zeros(1, 4), anchor).tolist() == anchor.tolist()  # zero deltas: the anchor


def test_decode_clamps_the_stretch():
    anchor = torch.tensor([[0.0, 0, 10, 10]])
    coder = BoxCoder(bbox_xform_clip=math.log(4))
    box = coder.decode(torch.tensor([[0.0, 0, 50, -50]]), anchor)[0]
    assert (box[2] - box[0]).item() == pytest.approx(40) and (box[3] - box[1]).item() == pytest.approx(0, abs=1e-6)


def test_empty_inputs(device):
    coder = BoxCoder()
    for dtype in (torch.float32, torch.float64):
        empty = torch.zeros(0, 4, dtype=dtype, device=device)
        out = coder.encode(empty, empty)
        assert out.shape == (0, 4) and out.dtype == dtype and out.device == empty.device
        out = coder.decode(torch.zeros(0, 8, dtype=dtype, device=device), empty)
        assert out.shape == (0, 8) and out.dtype == dtype and out.device == empty.device


def test_bad_shapes_say_what_to_fix():
    coder, a = BoxCoder(), torch.tensor([[0.0, 0, 10, 10]] * 3)
    with pytest.raises(ValueError, match=r"\[N, 4 \* C\]"):
        coder.decode(torch.zeros(3, 6), a)
    with pytest.raises(ValueError, match="same length"):
        coder.decode(torch.zeros(2, 4), a)
    with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
        coder.encode(torch.zeros(3, 5), a)
    with pytest.raises(ValueError, match="x2 < x1"):
        coder.encode(torch.tensor([[5.0, 5, 10, 10], [0, 0, 1, 1], [20, 0, 10, 10]]), a)
    with pytest.raises(ValueError, match="zero width"):
        coder.encode(a, torch.tensor([[0.0, 0, 10, 10], [3, 3, 3, 9], [0, 0, 1, 1]]))
    with pytest.raises(ValueError, match="positive"):
        BoxCoder((1.0, 1.0, 0.0, 1.0))

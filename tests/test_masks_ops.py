"""masks_to_boxes and paste_masks_in_image against torchvision and loop references."""

from __future__ import annotations

import pytest
import torch
import torchvision.ops as tvo
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste

from cv_course.data.scenes import make_scenes
from cv_course.ops import masks_to_boxes, paste_masks_in_image
from cv_course.ops.masks import paste_masks_in_image_loop, resize_matrix

# Tolerance against torchvision (and against our loop reference, which also uses
# F.interpolate): PyTorch's CPU bilinear kernel computes the sampling position by an
# equivalent formula in another order (for small outputs, normalised "antialias-style"
# weights), so positions up to M + 2p ~ 30 differ by a few ulps of 30: ~2e-6 in float32,
# ~4e-15 in float64, times a value difference of at most 1; our matrix product also sums
# the two taps (and exact zeros) in its own order. A misplaced pixel or a wrong weight
# would differ by ~0.01-1.
TOL = {torch.float32: 1e-5, torch.float64: 1e-13}


# ------------------------------------------------------------------ masks_to_boxes
def loop_masks_to_boxes(masks):
    out = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        out.append([xs.min().item(), ys.min().item(), xs.max().item(), ys.max().item()])
    return torch.tensor(out, dtype=torch.float32).view(-1, 4)


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.float32])
def test_masks_to_boxes_matches_torchvision_and_loop(device, dtype):
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(60, 17, 23, generator=g) > 0.97
    masks[0] = False
    masks[0, 16, 22] = True  # one pixel in the last row and column
    masks[1] = True  # the whole image
    masks[2] = False
    masks[2, 5] = True  # a single row
    masks = masks[masks.flatten(1).any(1)].to(device=device, dtype=dtype)
    ours = masks_to_boxes(masks)
    assert ours.dtype == torch.float32 and ours.device.type == device.type
    assert torch.equal(ours, tvo.masks_to_boxes(masks))
    assert torch.equal(ours.cpu(), loop_masks_to_boxes(masks.cpu()))
    assert ours[0].tolist() == [22, 16, 22, 16] and ours[1].tolist() == [0, 0, 22, 16]
    assert ours[2].tolist() == [0, 5, 22, 5]


def test_masks_to_boxes_relates_to_the_scenes_boxes():
    """Scenes use the COCO convention (x2 = last column + 1); torchvision's is x2 = last column."""
    for scene in make_scenes(4, seed=3):
        assert torch.equal(scene.boxes, masks_to_boxes(scene.masks) + torch.tensor([0, 0, 1, 1.0]))


def test_masks_to_boxes_empty_and_errors(device):
    out = masks_to_boxes(torch.zeros(0, 5, 7, dtype=torch.bool, device=device))
    assert out.shape == (0, 4) and out.dtype == torch.float32 and out.device.type == device.type
    masks = torch.ones(3, 4, 4, dtype=torch.bool, device=device)
    masks[1] = False
    with pytest.raises(ValueError, match=r"masks\[1\] is all zero"):
        masks_to_boxes(masks)
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        masks_to_boxes(torch.ones(4, 4, dtype=torch.bool))


def test_torchvision_empty_mask_box_is_ambiguous():
    """Why we raise: torchvision's box of an empty mask is the box of pixel (0, 0)."""
    empty, corner = torch.zeros(2, 3, 3, dtype=torch.bool), torch.zeros(3, 3, dtype=torch.bool)
    corner[0, 0] = True
    empty[1] = corner
    tv = tvo.masks_to_boxes(empty)
    assert torch.equal(tv[0], tv[1])


# ------------------------------------------------------------------ paste_masks_in_image
def random_boxes(n, H, W, dtype, g, min_size=1.0, max_size=60.0):
    """Boxes overlapping the image, often partly outside (torchvision raises on some outside)."""
    x1 = torch.rand(n, generator=g, dtype=torch.float64) * (W - 5 + 15) - 15
    y1 = torch.rand(n, generator=g, dtype=torch.float64) * (H - 5 + 15) - 15
    wh = min_size + torch.rand(n, 2, generator=g, dtype=torch.float64) * (max_size - min_size)
    x1 = torch.maximum(x1, -wh[:, 0] + 2)  # x2 >= 2: at least part of the box is inside
    y1 = torch.maximum(y1, -wh[:, 1] + 2)
    return torch.stack([x1, y1, x1 + wh[:, 0], y1 + wh[:, 1]], 1).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("M,padding", [(28, 1), (14, 0), (7, 2)])
def test_paste_matches_torchvision(device, dtype, M, padding):
    g = torch.Generator().manual_seed(M + padding)
    H, W = 70, 90
    masks = torch.rand(80, 1, M, M, generator=g, dtype=torch.float64).to(dtype)
    boxes = random_boxes(80, H, W, dtype, g)
    expected = tv_paste(masks, boxes, (H, W), padding=padding)
    ours = paste_masks_in_image(masks.to(device), boxes.to(device), (H, W), padding=padding)
    assert ours.shape == (80, 1, H, W) and ours.dtype == dtype and ours.device.type == device.type
    torch.testing.assert_close(ours.cpu(), expected, atol=TOL[dtype], rtol=0)
    # same placement (grown, truncated, clipped box): pixels that are clearly nonzero agree
    # (at the box border a value can be 0 in one and a rounding-sized 1e-8 in the other)
    assert torch.equal(ours.cpu().abs() > 1e-3, expected.abs() > 1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_paste_tiny_and_degenerate_boxes(dtype):
    g = torch.Generator().manual_seed(1)
    H, W = 30, 40
    boxes = random_boxes(60, H, W, dtype, g, min_size=0.0, max_size=2.0)
    boxes[0] = torch.tensor([3.0, 4.0, 3.0, 4.0])  # zero area
    boxes[1] = torch.tensor([10.2, 10.7, 10.4, 10.9])  # inside one pixel
    boxes[2] = torch.tensor([-0.6, -0.6, 0.3, 0.3])  # across the corner
    boxes[3] = torch.tensor([38.5, 28.5, 40.5, 30.5])  # across the far corner
    boxes[4] = torch.tensor([5.0, 2.0, 3.0, 4.0])  # x2 < x1: nothing pasted (torchvision too)
    masks = torch.rand(60, 1, 28, 28, generator=g, dtype=torch.float64).to(dtype)
    expected = tv_paste(masks, boxes, (H, W))
    ours = paste_masks_in_image(masks, boxes, (H, W))
    torch.testing.assert_close(ours, expected, atol=TOL[dtype], rtol=0)
    assert ours[4].abs().sum() == 0


def test_paste_matches_loop_reference_including_boxes_wholly_outside():
    g = torch.Generator().manual_seed(2)
    H, W = 40, 50
    boxes = random_boxes(30, H, W, torch.float64, g)
    outside = torch.tensor([[-30.0, -30, -10, -10], [60, 5, 80, 20], [5, 45, 20, 70],
                            [-20, 5, -3, 9]])
    boxes = torch.cat([boxes, outside.double()])
    masks = torch.rand(len(boxes), 1, 28, 28, generator=g, dtype=torch.float64)
    ours = paste_masks_in_image(masks, boxes, (H, W))
    torch.testing.assert_close(ours, paste_masks_in_image_loop(masks, boxes, (H, W)),
                               atol=TOL[torch.float64], rtol=0)
    assert ours[-4:].abs().sum() == 0  # wholly outside: a zero image
    with pytest.raises(RuntimeError):  # torchvision cannot paste a box above and left of the image
        tv_paste(masks[-4:-3], boxes[-4:-3], (H, W))


def test_paste_constant_mask_fills_the_integer_box():
    """A mask of ones with no padding resizes to ones: exactly the truncated box, clipped, is 1."""
    boxes = torch.tensor([[2.7, 3.2, 9.9, 6.0], [-4.5, 1.0, 3.0, 50.0]])
    out = paste_masks_in_image(torch.ones(2, 1, 5, 5), boxes, (20, 12), padding=0)[:, 0]
    expected = torch.zeros(2, 20, 12)
    expected[0, 3:7, 2:10] = 1  # columns 2..9, rows 3..6 (x2 = last column, as torchvision)
    expected[1, 1:20, 0:4] = 1  # x1 -4.5 truncates toward zero to -4, clipped at 0
    assert torch.equal(out, expected)


def test_resize_matrix_rows_are_weights_inside_the_box():
    first, last = torch.tensor([2, -3, 5]), torch.tensor([9, 4, 3])  # the last box is inverted
    R = resize_matrix(first, last, 12, 30, torch.float64)  # [3, 12, 30]
    rows = R.sum(2)  # [3, 12]
    inside = (torch.arange(12) >= first[:, None]) & (torch.arange(12) <= last[:, None])
    torch.testing.assert_close(rows, inside.double())  # partition of unity in the box, 0 outside
    assert ((R > 0).sum(2) <= 2).all() and (R >= 0).all()  # at most two taps, convex weights


def test_paste_empty_and_errors(device):
    for dtype in (torch.float32, torch.float64):
        out = paste_masks_in_image(torch.zeros(0, 1, 28, 28, dtype=dtype, device=device),
                                   torch.zeros(0, 4, dtype=dtype, device=device), (10, 12))
        assert out.shape == (0, 1, 10, 12) and out.dtype == dtype
        assert out.device.type == device.type
    with pytest.raises(ValueError, match=r"\[N, 1, M, M\]"):
        paste_masks_in_image(torch.zeros(2, 28, 28), torch.zeros(2, 4), (10, 10))
    with pytest.raises(ValueError, match="same length"):
        paste_masks_in_image(torch.zeros(2, 1, 28, 28), torch.zeros(3, 4), (10, 10))
    with pytest.raises(ValueError, match="floating-point"):
        paste_masks_in_image(torch.zeros(2, 1, 28, 28, dtype=torch.bool), torch.zeros(2, 4),
                             (10, 10))


def test_paste_gradcheck():
    """Pasting is linear in the masks; its gradient is the transposed resampling."""
    g = torch.Generator().manual_seed(4)
    boxes = random_boxes(3, 9, 11, torch.float64, g, min_size=2.0, max_size=8.0)
    masks = torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m: paste_masks_in_image(m, boxes, (9, 11)), (masks,))

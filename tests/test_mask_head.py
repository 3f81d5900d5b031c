"""Mask R-CNN's mask branch: targets and loss vs torchvision, head shapes at the lecture's size."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import maskrcnn_loss
from torchvision.models.detection.roi_heads import project_masks_on_boxes as tv_project

from cv_course.models.detection.mask_head import (
    MaskHead,
    mask_head_shapes,
    mask_loss,
    project_masks_on_boxes,
)


def random_image(g, G, P, H=40, W=50, dtype=torch.float32):
    """G ground-truth masks (blobs), P proposals around the image, each matched to one mask."""
    masks = torch.rand(G, H, W, generator=g) > 0.6
    xy = torch.rand(P, 2, generator=g, dtype=torch.float64) * torch.tensor([W - 5.0, H - 5.0]) - 3
    wh = 0.5 + torch.rand(P, 2, generator=g, dtype=torch.float64) * 30
    boxes = torch.cat([xy, xy + wh], 1).to(dtype)
    matched = torch.randint(0, max(G, 1), (P,), generator=g)
    return masks, boxes, matched


# ------------------------------------------------------------------ targets
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_project_masks_on_boxes_matches_torchvision(device, dtype):
    g = torch.Generator().manual_seed(0)
    masks, boxes, matched = random_image(g, G=4, P=30, dtype=dtype)
    ours = project_masks_on_boxes(masks.to(device), boxes.to(device), matched.to(device), 28)
    assert ours.shape == (30, 28, 28) and ours.dtype == dtype and ours.device.type == device.type
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(ours.cpu(), tv_project(masks, boxes, matched, 28), atol=tol, rtol=0)
    assert ours.min() >= 0 and ours.max() <= 1 + tol  # fractions of a 0/1 mask


def test_project_masks_reads_the_matched_mask():
    """A full mask gives an all-ones target, an empty one all zeros, whatever the box."""
    masks = torch.zeros(2, 30, 30, dtype=torch.bool)
    masks[1] = True
    boxes = torch.tensor([[2.0, 3.0, 20.0, 25.0], [5.5, 1.0, 9.0, 29.0], [2.0, 3.0, 20.0, 25.0]])
    targets = project_masks_on_boxes(masks, boxes, torch.tensor([1, 1, 0]), 14)
    assert torch.allclose(targets[:2], torch.ones(2, 14, 14)) and targets[2].abs().sum() == 0


def test_project_masks_empty_and_errors():
    masks = torch.ones(3, 10, 10, dtype=torch.bool)
    out = project_masks_on_boxes(masks, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), 28)
    assert out.shape == (0, 28, 28)
    # a proposal matched to a mask that does not exist
    with pytest.raises(ValueError, match="must index the G = 3"):
        project_masks_on_boxes(masks, torch.tensor([[0.0, 0, 5, 5]]), torch.tensor([3]), 28)
    with pytest.raises(ValueError, match="one ground-truth index per proposal"):
        project_masks_on_boxes(masks, torch.tensor([[0.0, 0, 5, 5]]), torch.tensor([0, 1]), 28)


# ------------------------------------------------------------------ loss
def loss_inputs(seed, C=5, M=28, sizes=((3, 12), (1, 0), (2, 7))):
    """Per-image (G, P) sizes; the middle image has no positive proposal."""
    g = torch.Generator().manual_seed(seed)
    gt_masks, proposals, labels, matched = [], [], [], []
    for G, P in sizes:
        m, b, i = random_image(g, G, P)
        gt_masks.append(m), proposals.append(b), matched.append(i)
        labels.append(torch.randint(1, C, (G,), generator=g))
    P = sum(p for _, p in sizes)
    logits = (3 * torch.randn(P, C, M, M, generator=g)).requires_grad_()
    return logits, proposals, gt_masks, labels, matched


def test_mask_loss_matches_torchvision_value_and_gradient():
    logits, proposals, gt_masks, labels, matched = loss_inputs(1)
    ours = mask_loss(logits, proposals, gt_masks, labels, matched)["loss_mask"]
    (ours_grad,) = torch.autograd.grad(ours, logits)
    expected = maskrcnn_loss(logits, proposals, gt_masks, labels, matched)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(ours_grad, expected_grad)


def test_mask_loss_trains_only_the_ground_truth_class():
    logits, proposals, gt_masks, labels, matched = loss_inputs(2)
    loss = mask_loss(logits, proposals, gt_masks, labels, matched)["loss_mask"]
    (grad,) = torch.autograd.grad(loss, logits)
    true_class = torch.cat([lab[i] for lab, i in zip(labels, matched)])  # [P]
    touched = grad.abs().flatten(2).amax(2) > 0  # [P, C]
    assert torch.equal(touched, torch.nn.functional.one_hot(true_class, logits.shape[1]).bool())


def test_mask_loss_is_the_mean_binary_cross_entropy_by_hand():
    logits, proposals, gt_masks, labels, matched = loss_inputs(3, sizes=((2, 4),))
    y = project_masks_on_boxes(gt_masks[0], proposals[0], matched[0], 28)  # [P, M, M]
    x = logits[torch.arange(4), labels[0][matched[0]]]  # [P, M, M]
    p = torch.sigmoid(x)
    by_hand = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    ours = mask_loss(logits, proposals, gt_masks, labels, matched)["loss_mask"]
    torch.testing.assert_close(ours, by_hand, atol=1e-5, rtol=1e-5)


def test_mask_loss_without_positives_is_zero_and_backpropagates():
    logits, proposals, gt_masks, labels, matched = loss_inputs(4, sizes=((2, 0), (0, 0)))
    loss = mask_loss(logits, proposals, gt_masks, labels, matched)["loss_mask"]
    loss.backward()
    assert loss.item() == 0 and logits.grad.shape == logits.shape


def test_mask_loss_errors():
    logits, proposals, gt_masks, labels, matched = loss_inputs(5, sizes=((2, 3),))
    with pytest.raises(TypeError, match="one tensor per image"):
        mask_loss(logits, proposals[0], gt_masks, labels, matched)
    with pytest.raises(ValueError, match="positive proposals"):
        mask_loss(logits[:2], proposals, gt_masks, labels, matched)


# ------------------------------------------------------------------ head
def test_mask_head_shapes_at_the_lecture_size():
    """The lecture's worked example: 5 objects, 256x14x14 in, two convs, 80x28x28 out."""
    shapes = mask_head_shapes()
    assert shapes == {"input": (5, 256, 14, 14), "conv1": (5, 256, 14, 14),
                      "conv2": (5, 256, 14, 14),
                      "upsample": (5, 256, 28, 28), "logits": (5, 80, 28, 28)}
    four = mask_head_shapes(num_convs=4)  # the paper's FPN head
    assert four["conv4"] == (5, 256, 14, 14) and four["logits"] == (5, 80, 28, 28)
    ours = mask_head_shapes(num_rois=12, in_channels=64, num_classes=5, channels=64)
    assert ours["upsample"] == (12, 64, 28, 28) and ours["logits"] == (12, 5, 28, 28)


def test_mask_head_runs_and_matches_the_meta_shapes():
    head = MaskHead(16, 5, num_convs=2, channels=8)
    x = torch.randn(3, 16, 7, 7)
    assert head.shapes(x) == mask_head_shapes(3, 16, 7, 5, 2, 8)
    assert head(x).shape == (3, 5, 14, 14)
    assert head(torch.zeros(0, 16, 7, 7)).shape == (0, 5, 14, 14)


def test_mask_head_equals_torchvision_heads_with_the_same_weights():
    torch.manual_seed(0)
    ours = MaskHead(32, 6, num_convs=4, channels=16)
    tv_heads, tv_pred = MaskRCNNHeads(32, [16] * 4, 1), MaskRCNNPredictor(16, 16, 6)
    tv_params = list(tv_heads.parameters()) + list(tv_pred.parameters())
    assert [p.shape for p in ours.parameters()] == [p.shape for p in tv_params]
    with torch.no_grad():
        for p, q in zip(ours.parameters(), tv_params):
            q.copy_(p)
    x = torch.randn(4, 32, 14, 14)
    torch.testing.assert_close(ours(x), tv_pred(tv_heads(x)))

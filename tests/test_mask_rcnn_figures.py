"""The Mask R-CNN chapter's helper: one object's target, prediction and pasted mask."""

from __future__ import annotations

import pytest
import torch

from cv_course.experiments.detection import build_backbone
from cv_course.experiments.mask_rcnn_figures import mask_example
from cv_course.models.detection.mask_head import project_masks_on_boxes
from cv_course.models.detection.mask_rcnn import MaskRCNN, MaskRCNNConfig
from cv_course.ops.masks import paste_masks_in_image


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = MaskRCNNConfig(pretrained=False)
    return MaskRCNN(config=config, backbone=build_backbone(config)).eval()


def scene():
    image = torch.rand(3, 64, 64)
    masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
    masks[0, 10:30, 12:40] = 1
    masks[1, 40:60, 5:25] = 1
    boxes = torch.tensor([[12.0, 10.0, 40.0, 30.0], [5.0, 40.0, 25.0, 60.0]])
    return image, {"boxes": boxes, "labels": torch.tensor([2, 4]), "masks": masks}


def test_stages_come_from_the_models_own_functions(model):
    image, target = scene()
    shift = (-2.0, 1.0, 3.0, -1.0)
    ex = mask_example(model, image, target, index=1, shift=shift)
    M = model.config.mask_size
    box = target["boxes"][1] + torch.tensor(shift)
    assert torch.equal(ex.box, box) and ex.label == 4
    expected = project_masks_on_boxes(target["masks"].bool(), box[None], torch.tensor([1]),
                                      M, model.config.mask_target_aligned)[0]
    assert torch.equal(ex.target, expected) and ex.target.shape == (M, M)
    with torch.no_grad():
        feats, sizes, _ = model.extract_features([image])
        logits = model.roi_heads.mask_logits(feats, [box[None]], sizes)
    assert torch.allclose(ex.probs, logits[0, 4].sigmoid())
    pasted = paste_masks_in_image(ex.probs[None, None], box[None], (64, 64))[0, 0]
    assert torch.allclose(ex.pasted, pasted)
    assert torch.equal(ex.gt_mask, target["masks"][1].bool())
    assert not model.training


def test_proposal_is_clipped_to_the_image_and_iou_is_pixel_iou(model):
    image, target = scene()
    ex = mask_example(model, image, target, index=1, shift=(-10.0, 0.0, 0.0, 10.0))
    assert ex.box.tolist() == [0.0, 40.0, 25.0, 64.0]
    pred = ex.pasted > 0.5
    union = (pred | ex.gt_mask).sum().item()
    assert ex.pasted_iou == pytest.approx((pred & ex.gt_mask).sum().item() / max(union, 1))
    ex.pasted = ex.gt_mask.float()  # a perfect prediction
    assert ex.pasted_iou == 1.0

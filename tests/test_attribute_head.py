"""The colour attribute head on frozen RoI features (cv_course.experiments.attributes):
labels against a loop, RoI pixels against torchvision, shapes, and the disk cache."""

from __future__ import annotations

import pytest
import torch
import torchvision

from cv_course.experiments.attributes import (
    AttributeHead,
    AttributeSetup,
    attribute_accuracy,
    dominant_colour,
    roi_features,
    roi_pixels,
    scenes_with_colours,
    trained_attribute_head,
)
from cv_course.models.detection import FasterRCNN, FasterRCNNConfig


def test_dominant_colour_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 20, 30, generator=g)
    masks = torch.rand(4, 20, 30, generator=g) > 0.7
    masks[3] = False  # an empty mask must not divide by zero
    got = dominant_colour(image, masks)
    for k in range(3):
        mean = torch.stack([image[c][masks[k]].mean() for c in range(3)])
        assert got[k] == mean.argmax()
    assert got[3] in (0, 1, 2)
    pure = torch.zeros(3, 4, 4)
    pure[2] = 1.0
    assert dominant_colour(pure, torch.ones(1, 4, 4, dtype=torch.bool)).item() == 2


def test_roi_pixels_is_roi_align_on_the_image():
    images = [torch.rand(3, 32, 32) for _ in range(2)]
    boxes = [torch.tensor([[2.0, 3.0, 20.0, 30.0]]), torch.tensor([[0.0, 0.0, 8.0, 8.0],
                                                                    [5.0, 5.0, 31.0, 17.0]])]
    got = roi_pixels(images, boxes)
    ref = torchvision.ops.roi_align(torch.stack(images), boxes, 7, sampling_ratio=2,
                                    aligned=True)
    torch.testing.assert_close(got, ref)


def test_head_shapes_and_features_of_the_box_head():
    torch.manual_seed(0)
    model = FasterRCNN(config=FasterRCNNConfig(pretrained=False)).eval()
    images, boxes, colours = scenes_with_colours(3, seed=5)
    x = roi_features(model, images, boxes)
    assert x.shape == (sum(len(b) for b in boxes), 64, 7, 7)
    assert AttributeHead(64, 3)(x).shape == (x.shape[0], 3)
    assert all(len(c) == len(b) for c, b in zip(colours, boxes))


def test_trained_head_is_cached(tmp_path):
    torch.manual_seed(0)
    model = FasterRCNN(config=FasterRCNNConfig(pretrained=False)).eval()
    setup = AttributeSetup(source="pixels", n_train=4, steps=5)
    head = trained_attribute_head(model, setup, cache_dir=tmp_path)
    assert len(head.losses) == 5 and len(list(tmp_path.glob("attribute_head_*.pt"))) == 1
    again = trained_attribute_head(model, setup, cache_dir=tmp_path)
    for a, b in zip(head.parameters(), again.parameters()):
        assert torch.equal(a, b)
    images, boxes, colours = scenes_with_colours(2, seed=9)
    r = attribute_accuracy(model, head, images, boxes, colours, "pixels")
    assert 0.0 <= r["gt"] <= 1.0 and r["n_gt"] == sum(len(c) for c in colours)
    with pytest.raises(ValueError, match="source"):
        attribute_accuracy(model, head, images, boxes, colours, "logits")

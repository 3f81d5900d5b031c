"""The stage-by-stage trace of Faster R-CNN, the NMS variants and flip TTA
(cv_course.experiments.pipeline): the trace ends where the model's own forward
ends, class-agnostic NMS is torchvision's nms on all boxes, box voting matches
a loop, and TTA of a mirror-equivariant detector changes nothing."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cv_course.experiments.pipeline import (
    box_voting,
    flip_tta,
    full_size_config,
    hflip_boxes,
    merge_detections,
    nms_detections,
    raw_detections,
    trace_faster_rcnn,
)
from cv_course.models.detection import FasterRCNN, FasterRCNNConfig


def _model(config=None) -> FasterRCNN:
    torch.manual_seed(0)
    config = config or FasterRCNNConfig(pretrained=False, box_score_thresh=0.0)
    return FasterRCNN(config=config).eval()


def _images(n=2, size=(64, 96)):
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, *size, generator=g) for _ in range(n)]


def test_trace_agrees_with_the_models_forward():
    model, image = _model(), _images(1)[0]
    t = trace_faster_rcnn(model, image)
    with torch.no_grad():
        ref = model([image])[0]
        feats = model.backbone(t.tensors["input"])
        proposals, _ = model.rpn(list(feats.values()), [tuple(image.shape[-2:])])
    for key in ("boxes", "labels", "scores"):
        assert torch.equal(t.tensors["detections"][key], ref[key]), key
    assert torch.equal(t.tensors["proposals"], proposals[0])
    c = model.config
    assert t.tensors["input"].shape == (1, 3, 64, 96)
    for (name, f), s in zip(t.tensors["features"].items(), c.strides):
        assert f.shape == (1, c.fpn_channels, 64 // s, 96 // s), name
    n_anchors = sum((64 // s) * (96 // s) * c.num_anchors for s in c.strides)
    assert t.counts["anchors"] == n_anchors == t.tensors["anchors"].shape[0]
    P = t.tensors["proposals"].shape[0]
    assert P == t.counts["proposals kept (top-n)"] <= c.rpn_post_nms_top_n[1]
    assert P <= t.counts["proposals after NMS"] <= t.counts["proposals before NMS"]
    assert t.tensors["roi_features"].shape == (P, c.fpn_channels, 7, 7)
    assert t.tensors["class_logits"].shape == (P, c.num_classes)
    assert t.tensors["box_deltas"].shape == (P, 4 * c.num_classes)
    assert t.counts["final detections"] <= t.counts["candidates above the score threshold"]


def test_trace_refuses_train_mode():
    with pytest.raises(ValueError, match="eval"):
        trace_faster_rcnn(_model().train(), _images(1)[0])


def test_full_size_config_gives_the_lectures_shapes():
    c = full_size_config()
    assert c.num_anchors == 9 and c.fpn_channels == 256 and c.rpn_post_nms_top_n[1] == 300
    model = FasterRCNN(config=c).eval()
    t = trace_faster_rcnn(model, torch.rand(3, 96, 128))  # small image: shapes only
    P = t.tensors["proposals"].shape[0]
    assert t.tensors["roi_features"].shape == (P, 256, 7, 7)
    assert t.tensors["class_logits"].shape == (P, 81)
    assert t.counts["anchors"] == 9 * sum((96 // s) * (128 // s) for s in (4, 8, 16, 32))


def test_class_aware_nms_of_raw_detections_is_the_models_output():
    model, images = _model(), _images(3)
    c = model.config
    got = nms_detections(raw_detections(model, images), c.box_nms_thresh,
                         False, c.detections_per_img)
    with torch.no_grad():
        ref = model(images)
    for g, r in zip(got, ref):
        for key in ("boxes", "labels", "scores"):
            assert torch.equal(g[key], r[key]), key


def _random_candidates(n=60, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 30], 1).to(dtype)
    scores = torch.rand(n, generator=g).to(dtype)
    labels = torch.randint(1, 5, (n,), generator=g)
    return {"boxes": boxes, "scores": scores, "labels": labels}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_class_agnostic_nms_is_torchvision_nms_on_all_boxes(dtype):
    for seed in range(3):
        d = _random_candidates(seed=seed, dtype=dtype)
        got = nms_detections([d], 0.5, class_agnostic=True, max_detections=1000)[0]
        keep = torchvision.ops.nms(d["boxes"], d["scores"], 0.5)
        assert torch.equal(got["boxes"], d["boxes"][keep])
        assert torch.equal(got["labels"], d["labels"][keep])
        aware = nms_detections([d], 0.5, class_agnostic=False, max_detections=1000)[0]
        ref = torchvision.ops.batched_nms(d["boxes"], d["scores"], d["labels"], 0.5)
        assert torch.equal(aware["scores"], d["scores"][ref])
        assert len(got["scores"]) <= len(aware["scores"])  # fewer groups, more suppression


def test_nms_detections_of_empty_candidates():
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
             "labels": torch.zeros(0, dtype=torch.int64)}
    for agnostic in (False, True):
        out = nms_detections([empty], class_agnostic=agnostic)[0]
        assert out["boxes"].shape == (0, 4)


def test_box_voting_matches_a_loop():
    d = _random_candidates(40, seed=3, dtype=torch.float64)
    keep = torchvision.ops.batched_nms(d["boxes"], d["scores"], d["labels"], 0.5)
    got = box_voting(d["boxes"], d["scores"], d["labels"], keep, 0.5)
    iou = torchvision.ops.box_iou(d["boxes"], d["boxes"])
    for row, k in enumerate(keep.tolist()):  # the slow, obvious reference
        num, den = torch.zeros(4, dtype=torch.float64), 0.0
        for j in range(len(d["scores"])):
            if d["labels"][j] == d["labels"][k] and (iou[k, j] >= 0.5 or j == k):
                num += d["scores"][j] * d["boxes"][j]
                den += float(d["scores"][j])
        torch.testing.assert_close(got[row], num / den)
    assert box_voting(d["boxes"], d["scores"], d["labels"], keep[:0]).shape == (0, 4)


def test_hflip_boxes_is_an_involution():
    b = _random_candidates(10)["boxes"]
    torch.testing.assert_close(hflip_boxes(hflip_boxes(b, 100), 100), b)
    assert torch.equal(hflip_boxes(torch.tensor([[10.0, 2.0, 30.0, 8.0]]), 100),
                       torch.tensor([[70.0, 2.0, 90.0, 8.0]]))


class BrightBoxDetector(nn.Module):
    """A mirror-equivariant stand-in: one box around the pixels brighter than 0.5."""

    def forward(self, images):
        out = []
        for im in images:
            ys, xs = (im.mean(0) > 0.5).nonzero(as_tuple=True)
            box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            out.append({"boxes": box[None], "labels": torch.tensor([1]),
                        "scores": torch.tensor([0.9])})
        return out


def test_tta_of_a_mirror_equivariant_detector_changes_nothing():
    image = torch.zeros(3, 40, 60)
    image[:, 5:20, 8:30] = 1.0  # off-centre, so the mirror pass sees another place
    model = BrightBoxDetector()
    ref = model([image])[0]
    for merge in ("nms", "vote"):
        got = flip_tta(model, [image], merge=merge)[0]
        assert torch.equal(got["boxes"], ref["boxes"]) and torch.equal(got["labels"],
                                                                        ref["labels"])


def test_tta_of_a_flip_symmetric_image_finds_mirror_pairs():
    # On a mirror-symmetric image the flipped pass sees the same pixels, so its
    # detections mapped back are the mirror images of the plain pass's.
    model = _model()
    half = torch.rand(3, 64, 48, generator=torch.Generator().manual_seed(2))
    image = torch.cat([half, half.flip(-1)], dim=-1)  # [3, 64, 96], symmetric
    with torch.no_grad():
        plain = model([image])[0]
    got = flip_tta(model, [image], merge="nms", max_detections=1000)[0]
    mirror = {**plain, "boxes": hflip_boxes(plain["boxes"], 96)}
    ref = merge_detections([plain], [mirror], "nms", max_detections=1000)[0]
    torch.testing.assert_close(got["boxes"], ref["boxes"])
    # every plain detection survives or is suppressed by an equal-or-better box
    assert got["scores"].max() == plain["scores"].max()


def test_merge_rejects_unknown_methods():
    with pytest.raises(ValueError, match="nms"):
        merge_detections([], [], merge="mean")


def test_objectness_map_covers_the_finest_grid():
    from cv_course.viz.pipeline import objectness_map

    model, image = _model(), _images(1)[0]
    t = trace_faster_rcnn(model, image)
    m = objectness_map(t)
    assert m.shape == (16, 24) and 0 <= float(m.min()) and float(m.max()) <= 1
    A = model.config.num_anchors
    finest = torch.sigmoid(t.tensors["objectness"][:16 * 24 * A]).view(16, 24, A).amax(-1)
    assert bool((m >= finest).all())  # the other levels can only raise it


def test_trace_of_a_mask_rcnn_adds_the_mask_branch():
    from cv_course.models.detection.mask_rcnn import MaskRCNN, MaskRCNNConfig

    torch.manual_seed(0)
    model = MaskRCNN(config=MaskRCNNConfig(pretrained=False, box_score_thresh=0.0)).eval()
    image = _images(1)[0]
    t = trace_faster_rcnn(model, image)
    with torch.no_grad():
        ref = model([image])[0]
    for key in ("boxes", "labels", "scores", "masks"):
        assert torch.equal(t.tensors["detections"][key], ref[key]), key
    D = len(ref["boxes"])
    assert D > 0 and ref["masks"].shape == (D, 1, 64, 96)
    M = model.config.mask_size
    assert t.tensors["mask_logits"].shape == (D, model.config.num_classes, M, M)
    assert t.tensors["mask_roi_features"].shape[0] == D

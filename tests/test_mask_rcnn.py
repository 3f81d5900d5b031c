"""Tests for Mask R-CNN (cv_course.models.detection.mask_rcnn, cv_course.experiments.mask_rcnn).

The mask branch's targets against a loop of one roi_align per object, its loss
against torchvision's ``maskrcnn_loss`` on the same RoIs, the gradient reaching
only the ground-truth class's mask, eval outputs pasted into each image, a tiny
training run, the augmentation, the RoI Pool ablation's pooler, torchvision's
MaskRCNN built by the registry, and the evaluation on an oracle. Tiny models
(16-channel FPN, 64 x 64 scenes, 14 x 14 masks): seconds on one thread.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torchvision.models.detection.roi_heads import maskrcnn_loss

from cv_course.data import DetectionScenes, detection_collate
from cv_course.experiments.detection import DetectionSetup, detector_names, train_detector
from cv_course.experiments.mask_rcnn import (
    dihedral_augment_masks,
    evaluate_instance_segmentation,
    make_mask_scenes,
    mask_head_optimizer,
    torchvision_mask_rcnn,
)
from cv_course.models.detection.fpn import BackboneWithFPN
from cv_course.models.detection.backbone import ShapeBackbone
from cv_course.models.detection.mask_head import mask_loss
from cv_course.models.detection.mask_rcnn import (
    MaskRCNN,
    MaskRCNNConfig,
    MultiScaleRoIPool,
    SampledMaskRCNNConfig,
    subsample_positives,
)
from cv_course.ops import paste_masks_in_image
from detection_tiny import TINY

TINY_MASK = MaskRCNNConfig(**{**vars(TINY), "mask_roi_output_size": 7, "mask_head_convs": 1,
                              "mask_head_channels": 8})
LOSSES = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}


def scenes(n=3, size=64, seed=0, max_objects=6):
    ds = DetectionScenes(n, size=size, seed=seed, max_objects=max_objects, include_masks=True)
    images, targets = detection_collate([ds[i] for i in range(n)])
    return images, [{k: t[k] for k in ("boxes", "labels", "masks")} for t in targets]


def tiny_model(seed=0, config=TINY_MASK):
    torch.manual_seed(seed)
    return MaskRCNN(config=config)


def sampled_positives(model, images, targets, seed=0):
    """The RoI heads' sampled positives and matches, and the features they are pooled from."""
    features, sizes, targets = model.extract_features(images, targets)
    proposals, _ = model.rpn(list(features.values()), sizes, targets)
    torch.manual_seed(seed)
    rois, labels, _ = model.roi_heads.select_training_samples(proposals, targets)
    positives, matched = model.roi_heads.match_positives(rois, labels, targets)
    return features, sizes, proposals, positives, matched


def test_train_mode_returns_five_finite_losses_and_every_parameter_gets_a_gradient():
    images, targets = scenes()
    model = tiny_model().train()
    losses = model(images, targets)
    assert set(losses) == LOSSES
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    head = model.roi_heads.mask_head
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


@pytest.mark.parametrize("aligned", [True, False])
def test_mask_targets_match_a_loop_of_roi_align_per_object(aligned):
    images, targets = scenes(seed=1)
    model = tiny_model(config=TINY_MASK.replace(mask_target_aligned=aligned)).train()
    _, _, _, positives, matched = sampled_positives(model, images, targets)
    assert sum(len(p) for p in positives) > 5
    ours = model.roi_heads.mask_targets(positives, matched, targets)  # [P, M, M]
    M = TINY_MASK.mask_size
    expected = []
    for pos, t in zip(positives, targets):  # loop reference: one object at a time
        for box in pos:
            ious = torchvision.ops.box_iou(t["boxes"], box[None])[:, 0]
            gt = int(ious.argmax())  # the best-overlapping object, as the matcher picks
            assert ious[gt] >= TINY_MASK.box_fg_iou_thresh
            mask = t["masks"][gt][None, None].float()  # [1, 1, H, W]
            expected.append(torchvision.ops.roi_align(mask, [box[None]], M, 1.0, -1, aligned)[0, 0])
    torch.testing.assert_close(ours, torch.stack(expected), atol=1e-6, rtol=0)


def test_mask_loss_in_the_heads_equals_torchvision_maskrcnn_loss():
    """torchvision's targets are RoI Align without the half-pixel shift: the same config here."""
    images, targets = scenes(seed=2)
    model = tiny_model(config=TINY_MASK.replace(mask_target_aligned=False)).train()
    features, sizes, proposals, positives, matched = sampled_positives(model, images, targets)
    # the heads' own forward, with the same sampling (same seed before select_training_samples)
    torch.manual_seed(0)
    _, losses = model.roi_heads(features, proposals, sizes, targets)
    logits = model.roi_heads.mask_logits(features, positives, sizes)
    theirs = maskrcnn_loss(logits, positives, [t["masks"] for t in targets],
                           [t["labels"] for t in targets], matched)
    torch.testing.assert_close(losses["loss_mask"], theirs, atol=1e-6, rtol=1e-5)
    aligned = tiny_model(config=TINY_MASK).train()  # the default (aligned) targets differ
    torch.manual_seed(0)
    _, losses = aligned.roi_heads(features, proposals, sizes, targets)
    assert (losses["loss_mask"] - theirs).abs() > 1e-4


def test_only_the_ground_truth_class_mask_gets_a_gradient():
    images, targets = scenes(seed=3)
    for t in targets:  # every object of class 2: the loss may only reach channel 2
        t["labels"] = torch.full_like(t["labels"], 2)
    model = tiny_model().train()
    captured = {}

    def keep_output(module, inputs, output):
        output.retain_grad()
        captured["logits"] = output

    model.roi_heads.mask_head.register_forward_hook(keep_output)
    model(images, targets)["loss_mask"].backward()
    grad = captured["logits"].grad  # [P, C, M, M]
    assert grad.shape[0] > 0
    others = torch.ones(grad.shape[1], dtype=torch.bool)
    others[2] = False
    assert grad[:, others].abs().max() == 0
    assert (grad[:, 2].flatten(1).abs().amax(dim=1) > 0).all()  # every positive RoI learns


def test_eval_masks_are_the_predicted_class_pasted_into_each_image(device):
    images, _ = scenes(n=2)
    images = [images[0].to(device), images[1][:, :48].to(device)]  # two image sizes
    model = tiny_model().to(device).eval()
    with torch.no_grad():
        out = model(images)
        features, sizes, _ = model.extract_features(images)
        logits = model.roi_heads.mask_logits(features, [o["boxes"] for o in out], sizes)
    for o, im, size, lg in zip(out, images, sizes, logits.split([len(o["boxes"]) for o in out])):
        D = len(o["boxes"])
        assert D > 0 and o["masks"].shape == (D, 1) + tuple(im.shape[-2:])
        assert o["masks"].dtype == im.dtype and o["masks"].device == im.device
        assert o["masks"].min() >= 0 and o["masks"].max() <= 1
        probs = lg[torch.arange(D), o["labels"]].sigmoid()[:, None]  # [D, 1, M, M]
        expected = paste_masks_in_image(probs, o["boxes"], size)
        torch.testing.assert_close(o["masks"], expected, atol=1e-6, rtol=0)


def test_eval_with_no_detections_returns_empty_masks():
    images, _ = scenes(n=2)
    model = tiny_model(config=TINY_MASK.replace(box_score_thresh=1.0)).eval()
    with torch.no_grad():
        out = model(images)
    assert all(o["masks"].shape == (0, 1, 64, 64) for o in out)


def test_images_without_objects_train():
    images, targets = scenes(n=2)
    targets[0] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                  "masks": torch.zeros(0, 64, 64, dtype=torch.uint8)}
    losses = tiny_model().train()(images, targets)
    assert torch.isfinite(losses["loss_mask"])


def test_tiny_training_lowers_the_mask_loss_and_masks_depend_on_the_image():
    images, targets = scenes(n=4, seed=4, max_objects=3)
    model = tiny_model().train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(25):
        losses = model(images, targets)
        history.append(losses["loss_mask"].item())
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    assert sum(history[-5:]) / 5 < 0.7 * sum(history[:5]) / 5
    model.eval()
    box = [torch.tensor([[10.0, 10.0, 40.0, 40.0]])]
    with torch.no_grad():  # the same box on two images: different masks
        a = model.roi_heads.mask_logits(model.extract_features(images[:1])[0], box, [(64, 64)])
        b = model.roi_heads.mask_logits(model.extract_features(images[1:2])[0], box, [(64, 64)])
    assert (a - b).abs().max() > 1e-3


def test_targets_without_masks_or_with_wrong_masks_say_what_to_fix():
    images, targets = scenes(n=2)
    model = tiny_model().train()
    with pytest.raises(ValueError, match=r"targets\[0\] has no 'masks'.*include_masks=True"):
        model(images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
    bad = [dict(t) for t in targets]
    bad[1]["masks"] = bad[1]["masks"][:, :32]
    with pytest.raises(ValueError, match=r"targets\[1\]\['masks'\] must have shape \[K, H, W\]"):
        model(images, bad)
    with pytest.raises(ValueError, match="roi_pooler must be 'align' or 'pool'"):
        MaskRCNNConfig(roi_pooler="max")


def test_a_faster_rcnn_config_gets_the_mask_defaults():
    model = MaskRCNN(num_classes=3, config=TINY)
    assert isinstance(model.config, MaskRCNNConfig) and model.config.num_classes == 3
    assert model.roi_heads.mask_head.predictor.out_channels == 3


def test_multiscale_roi_pool_pools_each_box_on_its_level():
    g = torch.Generator().manual_seed(0)
    features = {str(i): torch.randn(2, 3, 32 // 2**i, 32 // 2**i, generator=g) for i in range(3)}
    xy = torch.rand(12, 2, generator=g) * 90
    boxes = torch.cat([xy, xy + 4 + torch.rand(12, 2, generator=g) * 60], 1)
    per_image = [boxes[:7], boxes[7:]]
    pool = MultiScaleRoIPool(["0", "1", "2"], 5, 2, canonical_scale=64, canonical_level=3)
    ours = pool(features, per_image, [(128, 128), (128, 128)])
    expected = []
    for i, bs in enumerate(per_image):  # loop reference with torchvision's roi_pool
        for b in bs:
            size = float(((b[2] - b[0]) * (b[3] - b[1])).sqrt())  # FPN eq. 1, levels 2..4
            k = min(max(math.floor(3 + math.log2(size / 64) + 1e-6), 2), 4) - 2
            x = features[str(k)][i:i + 1]
            expected.append(torchvision.ops.roi_pool(x, [b[None]], 5, 1 / 2 ** (k + 2))[0])
    torch.testing.assert_close(ours, torch.stack(expected))
    model = tiny_model(config=TINY_MASK.replace(roi_pooler="pool"))
    assert isinstance(model.roi_heads.box_roi_pool, MultiScaleRoIPool)
    assert isinstance(model.roi_heads.mask_roi_pool, MultiScaleRoIPool)


def test_augmentation_turns_masks_with_their_boxes():
    images, targets = make_mask_scenes(6, 0, DetectionSetup(size=64))
    out_images, out_targets = dihedral_augment_masks(images, targets,
                                                     torch.Generator().manual_seed(1))
    changed = 0
    for im, t, old in zip(out_images, out_targets, targets):
        assert t["masks"].dtype == old["masks"].dtype and im.shape == (3, 64, 64)
        boxes = torchvision.ops.masks_to_boxes(t["masks"]) + torch.tensor([0.0, 0, 1, 1])
        torch.testing.assert_close(boxes, t["boxes"])  # masks and boxes moved together
        changed += not torch.equal(t["masks"], old["masks"])
        assert t["masks"].sum() == old["masks"].sum()
    assert changed > 0 and all("masks" in t for t in targets)  # inputs left alone


def test_subsample_positives_keeps_matching_rows_and_at_most_cap_per_image():
    torch.manual_seed(0)
    positives = [torch.rand(n, 4) for n in (0, 3, 10)]
    matched = [torch.arange(n) for n in (0, 3, 10)]
    pos, m = subsample_positives(positives, matched, cap=4)
    assert [len(p) for p in pos] == [0, 3, 4] and [len(x) for x in m] == [0, 3, 4]
    for p, x, full in zip(pos, m, positives):
        torch.testing.assert_close(p, full[x])  # the box and its match stay together
        assert len(set(x.tolist())) == len(x)  # without repeats
    draws = torch.stack([subsample_positives(positives, matched, 4)[1][2] for _ in range(200)])
    assert set(draws.flatten().tolist()) == set(range(10))  # every positive can be drawn


def test_capped_mask_loss_sees_at_most_cap_positives_per_image():
    images, targets = scenes(seed=4)
    cap = 2
    config = SampledMaskRCNNConfig(**{**vars(TINY_MASK), "mask_positives_per_image": cap})
    model = tiny_model(config=config).train()
    rows = []
    model.roi_heads.mask_head.register_forward_hook(lambda m, i, o: rows.append(len(o)))
    torch.manual_seed(0)
    uncapped = sampled_positives(tiny_model().train(), images, targets)[3]
    assert sum(min(len(p), cap) for p in uncapped) < sum(len(p) for p in uncapped)
    torch.manual_seed(0)
    losses = model(images, targets)
    assert rows == [sum(min(len(p), cap) for p in uncapped)]
    assert torch.isfinite(losses["loss_mask"]) and losses["loss_mask"] > 0
    with pytest.raises(ValueError, match="mask_positives_per_image must be >= 0"):
        SampledMaskRCNNConfig(mask_positives_per_image=-1)


def test_mask_head_optimizer_scales_the_mask_head_lr_for_ours_and_torchvision():
    setup = DetectionSetup(lr=1e-3)
    config = SampledMaskRCNNConfig(**{**vars(TINY_MASK), "mask_head_lr_scale": 3.0})
    tv = torchvision_mask_rcnn(config, BackboneWithFPN(ShapeBackbone(len(config.anchor_sizes)),
                                                       config.fpn_channels))
    tv.config = config
    for model in (tiny_model(config=config), tv):
        rest, head = mask_head_optimizer(model, setup).param_groups
        assert (rest["lr"], head["lr"]) == (1e-3, pytest.approx(3e-3))
        mask_ids = {id(p) for n, p in model.named_parameters() if ".mask_" in n}
        assert {id(p) for p in head["params"]} == mask_ids and mask_ids  # the whole head
        assert len(rest["params"]) + len(head["params"]) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="mask_head_lr_scale must be > 0"):
        SampledMaskRCNNConfig(mask_head_lr_scale=0)


def test_the_cap_is_not_a_field_of_mask_rcnn_config():
    """Panoptic FPN's config inherits MaskRCNNConfig: its fields (its cache name) must not move."""
    assert "mask_positives_per_image" not in vars(MaskRCNNConfig())
    assert "mask_head_lr_scale" not in vars(MaskRCNNConfig())
    assert SampledMaskRCNNConfig().mask_positives_per_image == 0  # 0: every positive


def test_registry_trains_the_three_mask_detectors_on_scenes_with_masks():
    assert {"mask_rcnn", "mask_rcnn_roi_pool", "torchvision_mask_rcnn"} <= set(detector_names())
    setup = DetectionSetup(size=64, n_train=4, epochs=1, batch_size=2, warmup_steps=1)
    for name in ("mask_rcnn", "torchvision_mask_rcnn"):
        r = train_detector(name, setup, config=TINY_MASK)  # scenes with masks made by the spec
        assert "loss_mask" in r.history.losses and len(r.history.step_loss) == 2
        with torch.no_grad():
            out = r.model([torch.rand(3, 64, 64)])
        assert out[0]["masks"].shape[1:] == (1, 64, 64)


def test_torchvision_mask_rcnn_shares_the_settings_and_mask_head_shapes():
    torch.manual_seed(0)
    backbone = BackboneWithFPN(ShapeBackbone(3), TINY_MASK.fpn_channels)
    tv = torchvision_mask_rcnn(TINY_MASK, backbone, image_size=64)
    assert type(tv) is torchvision.models.detection.MaskRCNN
    assert tuple(tv.roi_heads.mask_roi_pool.output_size) == (7, 7)
    assert tv.roi_heads.mask_predictor.mask_fcn_logits.out_channels == TINY_MASK.num_classes
    assert tv.roi_heads.detections_per_img == TINY_MASK.detections_per_img


class Oracle(torch.nn.Module):
    """Returns the ground truth as detections (score 1, mask probability 0.9 inside)."""

    def __init__(self, targets):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))  # for the device lookup
        self.targets, self.seen = targets, 0

    def forward(self, images):
        out = []
        for t in self.targets[self.seen:self.seen + len(images)]:
            out.append({"boxes": t["boxes"], "labels": t["labels"],
                        "scores": torch.ones(len(t["boxes"])),
                        "masks": 0.9 * t["masks"][:, None].float()})
        self.seen += len(images)
        return out


def test_evaluation_of_an_oracle_is_perfect_and_of_shifted_masks_is_not():
    images, targets = make_mask_scenes(5, 1, DetectionSetup(size=64))
    m = evaluate_instance_segmentation(Oracle(targets), images, targets, batch_size=2)
    for k in ("box_map", "box_map_50", "mask_map", "mask_map_50", "mask_map_75"):
        assert m[k] == pytest.approx(1.0), k
    assert m["seconds_per_image"] >= 0
    shifted = [{**t, "masks": t["masks"].roll(3, dims=-1)} for t in targets]
    oracle = Oracle(shifted)
    oracle.targets = [{**s, "boxes": t["boxes"]} for s, t in zip(shifted, targets)]
    m = evaluate_instance_segmentation(oracle, images, targets)
    assert m["box_map"] == pytest.approx(1.0) and m["mask_map"] < 0.9


@pytest.mark.cuda
def test_training_step_on_cuda():
    images, targets = scenes(n=2)
    model = tiny_model().cuda().train()
    to = lambda t: {k: v.cuda() for k, v in t.items()}  # noqa: E731
    losses = model([im.cuda() for im in images], [to(t) for t in targets])
    assert set(losses) == LOSSES and all(v.is_cuda and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()

"""Tests for cv_course.models.detection: the torchvision interface, the RPN's
labelling and proposals against loop references, equality with torchvision's
Faster R-CNN given the same weights, R-CNN / Fast R-CNN, edge cases.

Every model here is tiny (16-channel FPN, 64 x 64 scenes) and untrained, so
each test takes a second or two on one thread.
"""

from __future__ import annotations

import copy

import pytest
import torch

from cv_course.data import DetectionScenes, detection_collate
from cv_course.experiments.detection import dihedral_augment, torchvision_faster_rcnn
from cv_course.models.detection import (
    RCNN,
    FastRCNN,
    FasterRCNN,
    sliding_window_proposals,
)
from cv_course.models.detection.rpn import flatten_anchor_maps
from detection_tiny import TINY

LOSSES = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}


def scenes(n=3, size=64, seed=0, max_objects=6):
    ds = DetectionScenes(n, size=size, seed=seed, max_objects=max_objects)
    images, targets = detection_collate([ds[i] for i in range(n)])
    return images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]


def tiny_model(seed=0, config=TINY):
    torch.manual_seed(seed)
    return FasterRCNN(config=config)


def test_train_mode_returns_the_four_named_finite_losses():
    images, targets = scenes()
    model = tiny_model().train()
    losses = model(images, targets)
    assert set(losses) == LOSSES
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_eval_mode_returns_one_dict_per_image_within_limits():
    images, _ = scenes()
    config = TINY.replace(box_score_thresh=0.21, detections_per_img=7)
    model = tiny_model(config=config).eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == len(images)
    for o in out:
        assert set(o) == {"boxes", "labels", "scores"}
        K = o["boxes"].shape[0]
        assert o["boxes"].shape == (K, 4) and o["labels"].shape == (K,) == o["scores"].shape
        assert 0 < K <= 7  # an untrained head scores ~0.2-0.25 for every class
        assert (o["scores"] > 0.21).all() and (o["scores"].diff() <= 0).all()
        assert o["labels"].dtype == torch.int64 and ((o["labels"] >= 1) & (o["labels"] <= 4)).all()
        assert (o["boxes"] >= 0).all() and (o["boxes"] <= 64).all()


def test_losses_decrease_over_a_few_steps_on_one_batch():
    images, targets = scenes(2)
    model = tiny_model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    torch.manual_seed(0)
    history = []
    for _ in range(6):
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert all(torch.isfinite(torch.tensor(history)))
    assert sum(history[-2:]) / 2 < 0.8 * history[0], history


def test_images_without_objects_train():
    images, targets = scenes(2)
    targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    model = tiny_model().train()
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    losses = model(images, empty)
    assert losses["loss_rpn_box_reg"] == 0 and losses["loss_box_reg"] == 0  # nothing to regress
    assert losses["loss_objectness"] > 0 and losses["loss_classifier"] > 0


def test_images_of_different_sizes_in_one_batch():
    a, ta = scenes(1, size=64)
    b, tb = scenes(1, size=(48, 80), seed=3)
    model = tiny_model().train()
    losses = model(a + b, ta + tb)
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model(a + b)
    for o, (h, w) in zip(out, [(64, 64), (48, 80)]):  # clipped to its own image, not the padding
        assert len(o["boxes"]) > 0
        assert (o["boxes"][:, 0::2] <= w).all() and (o["boxes"][:, 1::2] <= h).all()
    assert (out[1]["boxes"][:, 2] > 64).any()  # the wide image is used beyond x = 64


def test_same_seed_same_losses_and_weights():
    images, targets = scenes(2)
    runs = []
    for _ in range(2):
        model = tiny_model(seed=5).train()
        torch.manual_seed(7)
        runs.append((model(images, targets), model.state_dict()))
    for k in LOSSES:
        assert torch.equal(runs[0][0][k], runs[1][0][k])
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


def test_clear_errors_for_interface_mistakes():
    images, targets = scenes(2)
    model = tiny_model().train()
    with pytest.raises(ValueError, match="targets"):
        model(images)
    with pytest.raises(TypeError, match="list"):
        model(torch.stack(images), targets)
    bad = [{"boxes": t["boxes"][:, [2, 1, 0, 3]], "labels": t["labels"]} for t in targets]
    with pytest.raises(ValueError, match="x2 <= x1"):
        model(images, bad)


def _loop_anchor_labels(anchors, gt, high=0.7, low=0.3):
    """Faster R-CNN's anchor labels written out one anchor at a time (slow, obvious)."""
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union
    A, G = anchors.tolist(), gt.tolist()
    table = [[iou(g, a) for a in A] for g in G]
    labels = []
    for n in range(len(A)):
        best = max(table[g][n] for g in range(len(G)))
        labels.append(1 if best >= high else 0 if best < low else -1)
    for g in range(len(G)):  # low-quality matches: each box's best anchors are positive
        top = max(table[g])
        for n in range(len(A)):
            if table[g][n] == top:
                labels[n] = 1
    return torch.tensor(labels)


def test_rpn_anchor_labels_equal_a_loop_reference():
    torch.manual_seed(0)
    model = tiny_model()
    # float64: the loop computes in Python floats, so ties (several anchors with
    # the same best IoU for a box) must break the same way
    features = [torch.zeros(1, 16, 16 // 2**i, 16 // 2**i, dtype=torch.float64) for i in range(3)]
    anchors, _ = model.rpn.anchors(features)  # a 64 x 64 image
    xy = torch.rand(5, 2, dtype=torch.float64) * 40
    gt = torch.cat([xy, xy + 6 + torch.rand(5, 2, dtype=torch.float64) * 24], dim=1)  # random boxes
    gt[4] = torch.tensor([2.0, 2.0, 6.0, 5.0])  # tiny: only low-quality matches (tied)
    labels, matched = model.rpn.assign_targets(anchors, [{"boxes": gt}])
    assert torch.equal(labels[0], _loop_anchor_labels(anchors, gt))
    assert labels[0].eq(1).sum() >= 5  # every box has a positive anchor
    pos = labels[0] == 1
    assert (matched[0][pos][:, None] == gt[None]).all(-1).any(-1).all()


def test_rpn_proposals_equal_the_computation_by_hand():
    import torchvision

    torch.manual_seed(0)
    model = tiny_model().eval()
    rpn, c = model.rpn, TINY
    features = [torch.randn(2, 16, 16 // 2**i, 16 // 2**i) for i in range(3)]
    sizes = [(64, 64), (60, 52)]
    proposals, losses = rpn(features, sizes)
    assert losses == {}
    logits, offsets = rpn.head(features)
    anchors, per_level = rpn.anchors(features)
    for b, (h, w) in enumerate(sizes):
        scores = torch.cat([flatten_anchor_maps(o, 1)[b, :, 0] for o in logits])
        deltas = torch.cat([flatten_anchor_maps(d, 4)[b] for d in offsets])
        # decode by the lecture's formulas
        aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
        cx = anchors[:, 0] + aw / 2 + deltas[:, 0] * aw
        cy = anchors[:, 1] + ah / 2 + deltas[:, 1] * ah
        bw, bh = aw * deltas[:, 2].exp(), ah * deltas[:, 3].exp()
        boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        keep_boxes, keep_scores, keep_levels, start = [], [], [], 0
        for lvl, n in enumerate(per_level):
            top = scores[start:start + n].topk(min(n, c.rpn_pre_nms_top_n[1])).indices + start
            keep_boxes.append(boxes[top]), keep_scores.append(scores[top])
            keep_levels.append(torch.full((len(top),), lvl))
            start += n
        bx = torch.cat(keep_boxes)
        bx[:, 0::2], bx[:, 1::2] = bx[:, 0::2].clamp(0, w), bx[:, 1::2].clamp(0, h)
        sc, lv = torch.cat(keep_scores), torch.cat(keep_levels)
        ok = ((bx[:, 2] - bx[:, 0]) >= 1e-3) & ((bx[:, 3] - bx[:, 1]) >= 1e-3)
        bx, sc, lv = bx[ok], sc[ok], lv[ok]
        kept = torchvision.ops.batched_nms(bx, sc, lv, c.rpn_nms_thresh)[:c.rpn_post_nms_top_n[1]]
        torch.testing.assert_close(proposals[b], bx[kept], atol=1e-4, rtol=1e-5)


def _copy_heads(ours, theirs):
    for a, b in ((ours.rpn.head, theirs.rpn.head), (ours.roi_heads.box_head, theirs.roi_heads.box_head),
                 (ours.roi_heads.box_predictor, theirs.roi_heads.box_predictor)):
        src, dst = list(a.parameters()), list(b.parameters())
        assert [p.shape for p in src] == [p.shape for p in dst]
        with torch.no_grad():
            for p, q in zip(src, dst):
                q.copy_(p)


def test_equal_to_torchvision_faster_rcnn_with_the_same_weights():
    images, targets = scenes(3)
    ours = tiny_model()
    theirs = torchvision_faster_rcnn(TINY, copy.deepcopy(ours.backbone), image_size=64)
    _copy_heads(ours, theirs)
    # torchvision draws a random training size per image (here always 64): skip that
    # draw so that both samplers see the same random numbers.
    theirs.transform.torch_choice = lambda sizes: sizes[0]
    ours.train(), theirs.train()
    torch.manual_seed(1)
    a = ours(images, targets)
    torch.manual_seed(1)
    b = theirs(images, targets)
    for k in LOSSES:
        torch.testing.assert_close(a[k], b[k])
    ours.eval(), theirs.eval()
    with torch.no_grad():
        for p, q in zip(ours(images), theirs(images)):
            assert len(p["boxes"]) > 0
            for k in ("boxes", "labels", "scores"):
                torch.testing.assert_close(p[k], q[k])


def test_torchvision_peer_trains_one_step():
    images, targets = scenes(2)
    torch.manual_seed(0)
    peer = torchvision_faster_rcnn(TINY, tiny_model().backbone, image_size=64).train()
    opt = torch.optim.SGD(peer.parameters(), lr=0.01)
    losses = peer(images, targets)
    assert set(losses) == LOSSES
    sum(losses.values()).backward()
    opt.step()


def test_dihedral_augment_moves_boxes_with_the_pixels():
    ds = DetectionScenes(4, size=(48, 64), seed=2, include_masks=True)
    gen = torch.Generator().manual_seed(0)
    for i in range(4):
        image, t = ds[i]
        # Stack the instance masks under the image: the same symmetry moves both,
        # and each box must stay the tight box of its mask.
        stacked = torch.cat([image, t["masks"].float()])  # [3 + K, H, W]
        for _ in range(6):
            (aug,), (aug_t,) = dihedral_augment([stacked], [t], gen)
            assert aug.shape[1:] in ((48, 64), (64, 48))
            for m, box in zip(aug[3:], aug_t["boxes"]):
                ys, xs = m.nonzero(as_tuple=True)
                torch.testing.assert_close(box, torch.stack(
                    [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float())


def test_rcnn_and_fast_rcnn_follow_the_interface():
    images, targets = scenes(2)
    config = TINY.replace(box_batch_size_per_image=8, detections_per_img=5)
    windows = ((16, (16, 32), (1.0,)),)
    assert sliding_window_proposals((128, 128)).shape[0] == 1984  # about 2,000 proposals
    for cls, kw in ((RCNN, {"crop_size": 32}), (FastRCNN, {})):
        torch.manual_seed(0)
        model = cls(5, config, windows=windows, **kw).train()
        losses = model(images, targets)
        assert set(losses) == {"loss_classifier", "loss_box_reg"}
        sum(losses.values()).backward()
        model.eval()
        with torch.no_grad():
            out = model(images[:1])
        assert len(out) == 1 and out[0]["boxes"].shape[0] <= 5

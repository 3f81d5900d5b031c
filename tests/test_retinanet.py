"""Tests for RetinaNet (cv_course.models.detection.retinanet, retinanet_head): the head
and its prior bias, anchor labels and postprocessing against loop references, the
losses against torchvision's RetinaNet components, SSD's hard-negative mining,
equality with torchvision's RetinaNet given the same weights, a tiny training run.

Every model here is tiny (16-channel FPN, one conv per subnet, 64 x 64 scenes).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from cv_course.data import DetectionScenes, detection_collate
from cv_course.experiments.retinanet import SPECS, torchvision_retinanet
from cv_course.models.detection import RetinaNet, RetinaNetConfig, RetinaNetHead
from cv_course.models.detection.retinanet_head import (
    box_loss,
    classification_loss,
    hard_negative_mask,
    loss_shares,
)
from cv_course.ops import BoxCoder

TINY = RetinaNetConfig(pretrained=False, fpn_channels=16, head_convs=1, topk_candidates=50)
LOSSES = {"loss_classifier", "loss_box_reg"}


def scenes(n=3, size=64, seed=0, max_objects=6):
    ds = DetectionScenes(n, size=size, seed=seed, max_objects=max_objects)
    images, targets = detection_collate([ds[i] for i in range(n)])
    return images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]


def tiny_model(seed=0, config=TINY):
    torch.manual_seed(seed)
    return RetinaNet(config)


def random_labels(B, N, K, gen, p_pos=0.05, p_ignore=0.1):
    u = torch.rand(B, N, generator=gen)
    labels = torch.where(u < p_pos, torch.randint(1, K + 1, (B, N), generator=gen), 0)
    return torch.where((u >= p_pos) & (u < p_pos + p_ignore), -1, labels)


# --- head -------------------------------------------------------------------------------

def test_head_shapes_and_prior_probability_bias():
    head = RetinaNetHead(16, num_anchors=3, num_classes=4, num_convs=2, prior_probability=0.01)
    features = [torch.randn(2, 16, 8, 8), torch.randn(2, 16, 4, 4)]
    logits, deltas = head(features)
    N = (64 + 16) * 3
    assert logits.shape == (2, N, 4) and deltas.shape == (2, N, 4)
    assert torch.allclose(head.cls_logits.bias, torch.full((12,), -math.log(99.0)))
    assert (head.bbox_pred.bias == 0).all()
    # small weights: every anchor starts as an object with probability ~ pi = 0.01
    assert (logits.sigmoid() - 0.01).abs().max() < 0.005
    assert len(head.cls_subnet) == 4 and len(head.box_subnet) == 4  # 2 x (conv, ReLU)
    with pytest.raises(ValueError, match="prior_probability"):
        RetinaNetHead(16, 3, 4, prior_probability=1.0)


def test_head_equals_torchvision_head_with_the_same_weights():
    from torchvision.models.detection.retinanet import RetinaNetHead as TVHead

    torch.manual_seed(0)
    ours, theirs = RetinaNetHead(8, 3, 4, num_convs=4), TVHead(8, 3, 4)
    src, dst = list(ours.parameters()), list(theirs.parameters())
    assert [p.shape for p in src] != [] and len(src) == len(dst)
    with torch.no_grad():
        for p in dst:  # randomise, then copy ours over theirs by name order
            p.normal_()
        for p, q in zip([*ours.cls_subnet.parameters(), *ours.cls_logits.parameters(),
                         *ours.box_subnet.parameters(), *ours.bbox_pred.parameters()],
                        [*theirs.classification_head.parameters(),
                         *theirs.regression_head.parameters()]):
            q.copy_(p)
    features = [torch.randn(2, 8, 6, 6), torch.randn(2, 8, 3, 3)]
    logits, deltas = ours(features)
    out = theirs(features)
    torch.testing.assert_close(logits, out["cls_logits"])
    torch.testing.assert_close(deltas, out["bbox_regression"])


# --- anchor labels ----------------------------------------------------------------------

def _loop_anchor_labels(anchors, gt, classes, high=0.5, low=0.4):
    """RetinaNet's anchor labels one anchor at a time: class, 0 background, -1 ignored."""
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)
    A, G, C = anchors.tolist(), gt.tolist(), classes.tolist()
    table = [[iou(g, a) for a in A] for g in G]
    labels = []
    for n in range(len(A)):
        column = [table[g][n] for g in range(len(G))]
        best = max(column)
        g = column.index(best)  # first maximum
        labels.append(C[g] if best >= high else 0 if best < low else -1)
    for g in range(len(G)):  # low-quality matches: each box's best anchors are its own
        top = max(table[g])
        for n in range(len(A)):
            if table[g][n] == top:
                column = [table[k][n] for k in range(len(G))]
                labels[n] = C[column.index(max(column))]
    return torch.tensor(labels)


def test_anchor_labels_equal_a_loop_reference():
    model = tiny_model()
    features = [torch.zeros(1, 16, 16 // 2**i, 16 // 2**i, dtype=torch.float64) for i in range(3)]
    anchors, per_level = model.anchors(features)  # a 64 x 64 image
    assert per_level == [16 * 16 * 3, 8 * 8 * 3, 4 * 4 * 3]
    gen = torch.Generator().manual_seed(1)
    xy = torch.rand(6, 2, generator=gen, dtype=torch.float64) * 40
    gt = torch.cat([xy, xy + 6 + torch.rand(6, 2, generator=gen, dtype=torch.float64) * 24], 1)
    gt[5] = torch.tensor([2.0, 2.0, 6.0, 5.0])  # tiny: only a low-quality match
    classes = torch.randint(1, 5, (6,), generator=gen)
    empty = {"boxes": torch.zeros(0, 4, dtype=torch.float64),
             "labels": torch.zeros(0, dtype=torch.int64)}
    labels, matched = model.assign_targets(anchors, [{"boxes": gt, "labels": classes}, empty])
    assert torch.equal(labels[0], _loop_anchor_labels(anchors, gt, classes))
    assert (labels[1] == 0).all() and (matched[1] == 0).all()  # no objects: all background
    assert {-1, 0}.issubset(set(labels[0].tolist())) and (labels[0] > 0).sum() >= 6
    pos = labels[0] > 0
    assert (matched[0][pos][:, None] == gt[None]).all(-1).any(-1).all()


# --- losses -----------------------------------------------------------------------------

def _tv_matched_idxs(labels):
    """Anchor labels -> torchvision matched_idxs: gt index (one fake box per anchor), -1, -2."""
    idx = torch.arange(labels.shape[1]).expand_as(labels)
    return torch.where(labels > 0, idx, torch.where(labels == 0, -1, -2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_focal_and_box_losses_equal_torchvision_retinanet_head(dtype):
    from torchvision.models.detection.retinanet import RetinaNetHead as TVHead

    gen = torch.Generator().manual_seed(0)
    B, N, K = 3, 200, 4
    labels = random_labels(B, N, K, gen)
    labels[2] = torch.where(labels[2] > 0, 0, labels[2])  # an image without positives
    logits = torch.randn(B, N, K, generator=gen, dtype=dtype) * 3
    deltas = torch.randn(B, N, 4, generator=gen, dtype=dtype) * 0.3
    xy = torch.rand(N, 2, generator=gen, dtype=dtype) * 50
    anchors = torch.cat([xy, xy + 4 + torch.rand(N, 2, generator=gen, dtype=dtype) * 20], 1)
    matched = anchors[None] + torch.randn(B, N, 4, generator=gen, dtype=dtype).clamp(-1, 1)
    # torchvision's head has a column 0 for the background label: make it a certain "no"
    tv_logits = torch.cat([torch.full((B, N, 1), -100.0, dtype=dtype), logits], 2)
    targets = [{"labels": labels[b].clamp(min=0), "boxes": matched[b]} for b in range(B)]
    head = TVHead(8, 1, K + 1)
    out = {"cls_logits": tv_logits, "bbox_regression": deltas}
    theirs = head.compute_loss(targets, out, [anchors] * B, list(_tv_matched_idxs(labels)))
    coder = BoxCoder()
    torch.testing.assert_close(classification_loss(logits, labels), theirs["classification"])
    torch.testing.assert_close(box_loss(deltas, anchors, matched, labels, coder),  # L1
                               theirs["bbox_regression"])
    for kind, tv_type in (("giou", "giou"), ("smooth_l1", "smooth_l1")):
        head.regression_head._loss_type = tv_type
        theirs = head.compute_loss(targets, out, [anchors] * B, list(_tv_matched_idxs(labels)))
        ours = box_loss(deltas, anchors, matched, labels, coder, kind, beta=1.0)
        torch.testing.assert_close(ours, theirs["bbox_regression"])


def test_bce_loss_equals_a_loop_reference():
    gen = torch.Generator().manual_seed(2)
    B, N, K = 2, 50, 3
    labels = random_labels(B, N, K, gen, p_pos=0.1)
    logits = torch.randn(B, N, K, generator=gen, dtype=torch.float64)
    total = 0.0
    for b in range(B):
        s, pos = 0.0, 0
        for n in range(N):
            if labels[b, n] < 0:
                continue
            pos += int(labels[b, n] > 0)
            for k in range(K):
                p = 1 / (1 + math.exp(-logits[b, n, k].item()))
                s -= math.log(p) if labels[b, n] == k + 1 else math.log(1 - p)
        total += s / max(pos, 1)
    assert math.isclose(classification_loss(logits, labels, "bce").item(), total / B, rel_tol=1e-9)


def _loop_hard_negatives(loss, labels, ratio):
    keep = torch.zeros_like(labels, dtype=torch.bool)
    for b in range(labels.shape[0]):
        negatives = [n for n in range(labels.shape[1]) if labels[b, n] == 0]
        k = min(ratio * int((labels[b] > 0).sum()), len(negatives))
        negatives.sort(key=lambda n: (-loss[b, n].item(), n))  # hardest first, ties: lower index
        keep[b, negatives[:k]] = True
    return keep


def test_hard_negative_mining_keeps_three_negatives_per_positive():
    gen = torch.Generator().manual_seed(3)
    labels = random_labels(4, 300, 4, gen, p_pos=0.03)
    loss = torch.rand(4, 300, generator=gen)
    loss[1] = 0.5  # every negative tied
    loss[2, ::2] = 0.25  # many ties
    labels[3] = torch.where(labels[3] > 0, 0, labels[3])  # no positives
    keep = hard_negative_mask(loss, labels, 3)
    assert torch.equal(keep, _loop_hard_negatives(loss, labels, 3))
    assert torch.equal(keep.sum(1)[:3], 3 * (labels[:3] > 0).sum(1))
    assert keep[3].sum() == 0  # nothing to balance: no negatives kept
    assert not (keep & (labels != 0)).any()  # only background anchors
    assert torch.equal(keep[1].nonzero().flatten(), (labels[1] == 0).nonzero().flatten()[
        :3 * int((labels[1] > 0).sum())])  # ties: the lowest anchor indices
    few = torch.tensor([[1, 1, 0, -1, 0]])  # 2 positives but only 2 negatives: keep both
    kept = hard_negative_mask(torch.rand(1, 5), few, 3)
    assert kept.tolist() == [[False, False, True, False, True]]


def test_bce_hnm_counts_positives_and_mined_negatives_only():
    gen = torch.Generator().manual_seed(4)
    labels = random_labels(2, 100, 4, gen, p_pos=0.05)
    logits = torch.randn(2, 100, 4, generator=gen, dtype=torch.float64)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.nn.functional.one_hot(labels.clamp(min=0), 5)[..., 1:].double(),
        reduction="none")
    keep = (labels > 0) | _loop_hard_negatives(bce.sum(2), labels, 3)
    expected = ((bce * keep[..., None]).sum((1, 2)) / (labels > 0).sum(1).clamp(min=1)).mean()
    torch.testing.assert_close(classification_loss(logits, labels, "bce_hnm"), expected)
    assert classification_loss(logits, labels, "bce_hnm") < classification_loss(logits, labels,
                                                                                  "bce")


def test_loss_shares_add_up_and_find_easy_negatives():
    labels = torch.tensor([[1, 0, 0, 0, -1]])
    logits = torch.tensor([[[0.0, -3], [-6, -6], [-6, -6], [2, -6], [5, 5]]])  # 2 easy negatives
    for kind in ("focal", "bce", "bce_hnm"):
        s = loss_shares(logits, labels, kind)
        total = s["easy_negative_share"] + s["hard_negative_share"] + s["positive_share"]
        assert math.isclose(total, 1.0, rel_tol=1e-6)
    focal, bce = loss_shares(logits, labels, "focal"), loss_shares(logits, labels, "bce")
    assert focal["easy_negative_fraction"] == bce["easy_negative_fraction"] == 0.5  # 2 of 4
    assert focal["easy_negative_share"] < 0.01 * bce["easy_negative_share"]  # faded out
    assert loss_shares(logits, labels, "bce_hnm")["anchors"] == 4  # 1 positive + 3 negatives


# --- the whole detector -----------------------------------------------------------------

def test_train_and_eval_interface():
    images, targets = scenes()
    model = tiny_model().train()
    losses = model(images, targets)
    assert set(losses) == LOSSES
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model = tiny_model(config=TINY.replace(score_thresh=0.005, detections_per_img=9)).eval()
    with torch.no_grad():
        out = model(images)
    for o in out:
        assert set(o) == {"boxes", "labels", "scores"}
        D = len(o["boxes"])
        assert 0 < D <= 9 and o["labels"].dtype == torch.int64 and o["scores"].shape == (D,)
        assert ((o["labels"] >= 1) & (o["labels"] <= 4)).all() and (o["scores"] > 0.005).all()
        assert (o["scores"].diff() <= 0).all()
        assert (o["boxes"] >= 0).all() and (o["boxes"] <= 64).all()


def _loop_postprocess(logits, deltas, anchors, per_level, size, c):
    """Per level top-k above the threshold, decode by the formulas, clip, class-aware NMS."""
    import torchvision

    K, boxes, scores, labels, start = logits.shape[1], [], [], [], 0
    for n in per_level:
        flat = logits[start:start + n].sigmoid().flatten()
        cand = [(s, i) for i, s in enumerate(flat.tolist()) if s > c.score_thresh]
        cand = sorted(cand, key=lambda t: -t[0])[:c.topk_candidates]
        for s, i in cand:
            a, d = anchors[start + i // K], deltas[start + i // K]
            w, h = a[2] - a[0], a[3] - a[1]
            cx, cy = a[0] + w / 2 + d[0] * w, a[1] + h / 2 + d[1] * h
            bw, bh = w * d[2].exp(), h * d[3].exp()
            box = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
            boxes.append(torch.stack([box[0].clamp(0, size[1]), box[1].clamp(0, size[0]),
                                      box[2].clamp(0, size[1]), box[3].clamp(0, size[0])]))
            scores.append(s), labels.append(i % K + 1)
        start += n
    boxes, labels = torch.stack(boxes), torch.tensor(labels)
    scores = torch.tensor(scores, dtype=logits.dtype)
    keep = torchvision.ops.batched_nms(boxes, scores, labels, c.nms_thresh)[:c.detections_per_img]
    return boxes[keep], labels[keep], scores[keep]


def test_postprocess_equals_a_loop_reference():
    c = TINY.replace(topk_candidates=30, score_thresh=0.3, detections_per_img=12)
    model = tiny_model(config=c).eval()
    gen = torch.Generator().manual_seed(5)
    features = [torch.zeros(2, 16, 16 // 2**i, 16 // 2**i, dtype=torch.float64) for i in range(3)]
    anchors, per_level = model.anchors(features)
    N = anchors.shape[0]
    logits = torch.randn(2, N, 4, generator=gen, dtype=torch.float64)
    deltas = torch.randn(2, N, 4, generator=gen, dtype=torch.float64) * 0.5
    sizes = [(64, 64), (40, 56)]
    out = model.postprocess(logits, deltas, anchors, per_level, sizes)
    for b in range(2):
        boxes, labels, scores = _loop_postprocess(logits[b], deltas[b], anchors, per_level,
                                                  sizes[b], c)
        assert len(boxes) == 12
        torch.testing.assert_close(out[b]["boxes"], boxes)
        assert torch.equal(out[b]["labels"], labels)
        torch.testing.assert_close(out[b]["scores"], scores)


def _copy_into_torchvision(ours, theirs):
    """Our head's weights into torchvision's; its extra background column 0 never fires."""
    tv = theirs.head
    pairs = [(ours.head.cls_subnet, tv.classification_head.conv),
             (ours.head.box_subnet, tv.regression_head.conv),
             (ours.head.bbox_pred, tv.regression_head.bbox_reg)]
    with torch.no_grad():
        for a, b in pairs:
            for p, q in zip(a.parameters(), b.parameters(), strict=True):
                q.copy_(p)
        A, K = ours.config.num_anchors, ours.config.num_classes - 1
        w = ours.head.cls_logits.weight.view(A, K, *ours.head.cls_logits.weight.shape[1:])
        bias = ours.head.cls_logits.bias.view(A, K)
        tv.classification_head.cls_logits.weight.copy_(
            torch.cat([torch.zeros_like(w[:, :1]), w], 1).flatten(0, 1))
        tv.classification_head.cls_logits.bias.copy_(
            torch.cat([torch.full_like(bias[:, :1], -100.0), bias], 1).flatten())


def test_equal_to_torchvision_retinanet_with_the_same_weights():
    images, targets = scenes(3)
    config = TINY.replace(score_thresh=0.05)
    ours = tiny_model(config=config)
    with torch.no_grad():  # a less uniform head than the fresh one, so NMS has work to do
        for p in [*ours.head.cls_subnet.parameters(), *ours.head.box_subnet.parameters()]:
            p.normal_(std=0.3)
        ours.head.cls_logits.bias.normal_(-2.0, 1.0)
    theirs = torchvision_retinanet(config, copy.deepcopy(ours.backbone), image_size=64)
    _copy_into_torchvision(ours, theirs)
    theirs.transform.torch_choice = lambda sizes: sizes[0]
    ours.train(), theirs.train()
    a, b = ours(images, targets), theirs(images, targets)
    torch.testing.assert_close(a["loss_classifier"], b["classification"])
    torch.testing.assert_close(a["loss_box_reg"], b["bbox_regression"])
    ours.eval(), theirs.eval()
    with torch.no_grad():
        for p, q in zip(ours(images), theirs(images), strict=True):
            assert len(p["boxes"]) > 5
            for k in ("boxes", "labels", "scores"):
                torch.testing.assert_close(p[k], q[k])


def test_tiny_training_lowers_the_loss_and_predictions_follow_the_input():
    images, targets = scenes(2, seed=1, max_objects=3)
    model = tiny_model(config=TINY.replace(head_convs=2, score_thresh=0.0)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(60):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert sum(history[-3:]) / 3 < 0.5 * history[0], history
    model.eval()
    with torch.no_grad():
        out = model(images)
    from cv_course.ops import box_iou

    for i, j in ((0, 1), (1, 0)):  # each image's best box sits on its own objects
        top = out[i]["boxes"][:1]
        own = box_iou(top, targets[i]["boxes"]).max()
        other = box_iou(top, targets[j]["boxes"]).max()
        assert own > 0.5 and own > other + 0.2, (own, other)


def test_images_without_objects_and_of_different_sizes():
    a, ta = scenes(1, size=64)
    b, _ = scenes(1, size=(48, 80), seed=3)
    tb = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    model = tiny_model().train()
    losses = model(a + b, ta + tb)
    assert all(torch.isfinite(v) for v in losses.values())
    losses = model(a + b, [tb[0], tb[0]])
    assert losses["loss_box_reg"] == 0 and losses["loss_classifier"] > 0
    model.eval()
    with torch.no_grad():
        out = model(a + b)
    w, h = 80, 48
    assert (out[1]["boxes"][:, 0::2] <= w).all() and (out[1]["boxes"][:, 1::2] <= h).all()


def test_clear_errors():
    images, targets = scenes(2)
    model = tiny_model().train()
    with pytest.raises(ValueError, match="targets"):
        model(images)
    with pytest.raises(TypeError, match="list"):
        model(torch.stack(images), targets)
    with pytest.raises(ValueError, match="cls_loss must be one of"):
        RetinaNetConfig(cls_loss="softmax")
    with pytest.raises(ValueError, match="box_loss must be one of"):
        RetinaNetConfig(box_loss="l2")
    with pytest.raises(ValueError, match="bg_iou_thresh"):
        RetinaNetConfig(fg_iou_thresh=0.3, bg_iou_thresh=0.4)
    with pytest.raises(ValueError, match="one tuple per FPN level"):
        RetinaNetConfig(anchor_sizes=((16,), (32, 40)))
    from cv_course.models.detection import BackboneWithFPN, ShapeBackbone

    with pytest.raises(ValueError, match="strides"):
        RetinaNet(TINY, BackboneWithFPN(ShapeBackbone(2), 16))
    with pytest.raises(ValueError, match="focal loss"):
        torchvision_retinanet(TINY.replace(cls_loss="bce"), BackboneWithFPN(ShapeBackbone(3), 16))


def test_registered_specs_differ_only_in_the_classification_loss():
    import dataclasses

    from cv_course.experiments.retinanet import ABLATION

    names = {"retinanet", "retinanet_focal", "retinanet_bce", "retinanet_bce_hnm",
             "torchvision_retinanet"}
    assert names <= set(SPECS)
    base = SPECS["retinanet"].config
    assert ABLATION == ("retinanet_focal", "retinanet_bce", "retinanet_bce_hnm")
    for name, kind in zip(ABLATION, ("focal", "bce", "bce_hnm")):
        assert SPECS[name].config == base.replace(cls_loss=kind)
        assert SPECS[name].setup == SPECS["retinanet_focal"].setup  # one budget
    # the ablation's budget is its own (shorter), not the default's
    ablation_setup = SPECS["retinanet_focal"].setup
    assert ablation_setup.epochs < SPECS["retinanet"].setup.epochs
    default = SPECS["retinanet"].setup
    assert dataclasses.replace(ablation_setup, epochs=default.epochs) == default
    assert SPECS["torchvision_retinanet"].config == base
    assert SPECS["torchvision_retinanet"].setup == SPECS["retinanet"].setup


def test_focal_ablation_refuses_models_trained_on_different_budgets(monkeypatch):
    import dataclasses

    from cv_course.experiments import retinanet as experiment

    spec = experiment.SPECS["retinanet_bce"]
    shorter = dataclasses.replace(spec.setup, epochs=spec.setup.epochs // 2)
    monkeypatch.setitem(experiment.SPECS, "retinanet_bce",
                        dataclasses.replace(spec, setup=shorter))

    def no_training(*args, **kwargs):
        raise AssertionError("focal_ablation loaded or trained a model before the check")

    monkeypatch.setattr(experiment, "trained_detector", no_training)
    with pytest.raises(ValueError, match="one budget"):
        experiment.focal_ablation()


@pytest.mark.cuda
def test_cuda_matches_cpu():
    images, targets = scenes(2)
    model = tiny_model().train()
    cpu = model(images, targets)
    gpu_model = copy.deepcopy(model).cuda()
    gpu = gpu_model([im.cuda() for im in images],
                    [{k: v.cuda() for k, v in t.items()} for t in targets])
    for k in LOSSES:
        assert gpu[k].device.type == "cuda"
        torch.testing.assert_close(gpu[k].cpu(), cpu[k], atol=1e-4, rtol=1e-4)
    model.eval(), gpu_model.eval()
    with torch.no_grad():
        out = gpu_model([im.cuda() for im in images])
        ref = model(images)
    for o, r in zip(out, ref):
        assert o["boxes"].device.type == "cuda"
        torch.testing.assert_close(o["scores"][:5].cpu(), r["scores"][:5], atol=1e-4, rtol=1e-4)

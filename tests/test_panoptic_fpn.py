"""Tests for Panoptic FPN: the semantic head, the merge, the joint model and its experiment.

The merge is checked against a pixel-by-pixel pure-Python reference of the
paper's heuristic and on hand-made cases; the model with a tiny config (no
training beyond one step); the experiment's augmentation and evaluation on
exact ground truth.
"""

from __future__ import annotations

import pytest
import torch

from cv_course.data.panoptic import STUFF_IDS, THING_IDS, PanopticScenes
from cv_course.models.detection.panoptic_fpn import (
    IGNORE_INDEX,
    PanopticFPN,
    PanopticFPNConfig,
    SemanticHead,
    panoptic_merge,
    semantic_targets,
)

TINY = PanopticFPNConfig(pretrained=False, fpn_channels=16, representation_size=32,
                         rpn_batch_size_per_image=64, box_batch_size_per_image=32,
                         rpn_pre_nms_top_n=(100, 50), rpn_post_nms_top_n=(50, 20),
                         mask_head_channels=16, semantic_channels=16)


def _batch(n=2, size=64, seed=0):
    ds = PanopticScenes(n, size=size, seed=seed, max_objects=3)
    images, targets = zip(*[ds[i] for i in range(n)])
    return list(images), list(targets)


# ---------------------------------------------------------------- semantic head
def test_semantic_targets_map_things_stuff_and_unknown():
    semantic = torch.tensor([[1, 4, 5], [6, 7, 0], [9, -1, 2]])
    expected = torch.tensor([[0, 0, 1], [2, 3, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX, 0]])
    assert torch.equal(semantic_targets(semantic, STUFF_IDS, THING_IDS), expected)


@pytest.mark.parametrize("H, W", [(128, 128), (64, 96)])
def test_semantic_head_shapes_and_gradients(H, W):
    head = SemanticHead(in_channels=8, num_levels=3, channels=16, num_classes=4)
    features = {str(i): torch.randn(2, 8, H // 4 // 2**i, W // 4 // 2**i, requires_grad=True)
                for i in range(3)}
    logits = head(features, (H, W))
    assert logits.shape == (2, 4, H, W)
    logits.sum().backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in features.values())
    assert [len(stages) for stages in head.levels] == [1, 1, 2]  # conv stages per level


# ------------------------------------------------------------------------ merge
def merge_loop(masks, scores, labels, semantic, stuff_ids, overlap=0.5, score_thr=0.5,
               area_thr=64):
    """Pure-Python reference of the heuristic, one pixel at a time."""
    K, H, W = masks.shape
    m, sem = masks.tolist(), semantic.tolist()
    out = [[(0, 0) for _ in range(W)] for _ in range(H)]
    taken = set()
    order = sorted(range(K), key=lambda k: -float(scores[k]))  # sorted() is stable
    inst = 0
    for k in order:
        if float(scores[k]) < score_thr:
            continue
        pix = {(i, j) for i in range(H) for j in range(W) if m[k][i][j] > 0.5}
        if not pix or len(pix & taken) > overlap * len(pix):
            continue
        inst += 1
        for i, j in pix - taken:
            out[i][j] = (int(labels[k]), inst)
        taken |= pix
    for s in stuff_ids:
        pix = [(i, j) for i in range(H) for j in range(W) if (i, j) not in taken and sem[i][j] == s]
        if len(pix) >= area_thr:
            for i, j in pix:
                out[i][j] = (s, 0)
    return torch.tensor(out)


def test_merge_hand_case():
    masks = torch.zeros(5, 8, 8)
    masks[0, 0:4, 0:4] = 0.9  # A: score 0.9, placed first
    masks[1, 0:4, 3:7] = 0.8  # B: 4 of 16 pixels taken (25 %): placed on the other 12
    masks[2, 0:4, 1:5] = 0.7  # C: 12 of 16 taken (75 %): a duplicate, dropped
    masks[3, 6:8, 0:2] = 0.9  # D: score 0.3, below the threshold
    masks[4, 6:8, 6:8] = 0.4  # E: probabilities below 0.5: an empty mask
    scores = torch.tensor([0.9, 0.8, 0.7, 0.3, 0.95])
    labels = torch.tensor([1, 2, 3, 4, 1])
    semantic = torch.full((8, 8), 5)  # sky everywhere ...
    semantic[6:8, 4:8] = 7  # ... but a wall of 8 pixels: too small, void
    semantic[5, :] = 0  # "thing" according to the semantic head, no instance: void
    out = panoptic_merge(masks, scores, labels, semantic, STUFF_IDS, stuff_area_threshold=10)
    assert torch.equal(out[0:4, 0:4], torch.tensor([1, 1]).expand(4, 4, 2))
    assert torch.equal(out[0:4, 4:7], torch.tensor([2, 2]).expand(4, 3, 2))
    assert not bool((out[..., 0] == 3).any()) and not bool((out[..., 0] == 4).any())
    assert bool((out[6:8, 4:8] == 0).all()) and bool((out[5] == 0).all())
    assert torch.equal(out[6:8, 0:4], torch.tensor([5, 0]).expand(2, 4, 2))
    assert torch.equal(out, merge_loop(masks, scores, labels, semantic, STUFF_IDS, area_thr=10))


@pytest.mark.parametrize("seed", range(5))
def test_merge_matches_loop_reference_on_random_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    K, H, W = 8, 12, 12
    boxes = torch.randint(0, 9, (K, 2), generator=g)
    sizes = torch.randint(2, 7, (K, 2), generator=g)
    ys, xs = torch.arange(H)[:, None], torch.arange(W)[None]
    masks = torch.stack([((ys >= y) & (ys < y + h) & (xs >= x) & (xs < x + w)).float()
                         * (0.5 + 0.5 * torch.rand(1, generator=g))
                         for (y, x), (h, w) in zip(boxes.tolist(), sizes.tolist())])
    scores = torch.rand(K, generator=g).round(decimals=1)  # ties happen
    labels = torch.randint(1, 5, (K,), generator=g)
    semantic = torch.tensor([0, 5, 6, 7])[torch.randint(4, (H // 3, W // 3), generator=g)]
    semantic = semantic.repeat_interleave(3, 0).repeat_interleave(3, 1)
    out = panoptic_merge(masks[:, None], scores, labels, semantic, STUFF_IDS,
                         stuff_area_threshold=12)
    assert torch.equal(out, merge_loop(masks, scores, labels, semantic, STUFF_IDS, area_thr=12))
    assert bool((out[..., 0] > 0).any())


def test_merge_without_instances_and_errors():
    semantic = torch.full((4, 4), 6)
    out = panoptic_merge(torch.zeros(0, 4, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long),
                         semantic, STUFF_IDS, stuff_area_threshold=1)
    assert torch.equal(out, torch.tensor([6, 0]).expand(4, 4, 2))
    with pytest.raises(ValueError, match="semantic map's size"):
        panoptic_merge(torch.zeros(1, 4, 5), torch.ones(1), torch.ones(1, dtype=torch.long),
                       semantic, STUFF_IDS)
    with pytest.raises(ValueError, match="one score and one label"):
        panoptic_merge(torch.zeros(2, 4, 4), torch.ones(1), torch.ones(2, dtype=torch.long),
                       semantic, STUFF_IDS)


# ------------------------------------------------------------------------ model
def test_panoptic_fpn_losses_and_gradients():
    torch.manual_seed(0)
    model = PanopticFPN(TINY).train()
    images, targets = _batch()
    losses = model(images, targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier",
                           "loss_box_reg", "loss_mask", "loss_semantic"}
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    losses["loss_semantic"].backward()
    assert model.semantic_head.predictor.weight.grad.abs().sum() > 0
    assert model.backbone.fpn.output[0].weight.grad.abs().sum() > 0  # the shared FPN learns


def test_panoptic_fpn_needs_semantic_targets():
    model = PanopticFPN(TINY).train()
    images, targets = _batch()
    del targets[1]["semantic"]
    with pytest.raises(ValueError, match=r"targets\[1\].*semantic.*PanopticScenes"):
        model(images, targets)


def test_panoptic_fpn_eval_outputs_and_mixed_sizes():
    torch.manual_seed(0)
    model = PanopticFPN(TINY)
    (a,), (ta,) = _batch(1, 64)
    (b,), (tb,) = _batch(1, 48, seed=1)
    model.train()
    assert torch.isfinite(sum(model([a, b], [ta, tb]).values()))  # padding is ignored
    model.eval()
    with torch.no_grad():
        out = model([a, b])
    for o, size in zip(out, [(64, 64), (48, 48)]):
        assert {"boxes", "labels", "scores", "masks", "semantic", "panoptic"} <= set(o)
        assert o["panoptic"].shape == (*size, 2) and o["semantic"].shape == size
        assert set(o["panoptic"][..., 0].unique().tolist()) <= {0, *THING_IDS, *STUFF_IDS}
        assert set(o["semantic"].unique().tolist()) <= {0, *STUFF_IDS}


@pytest.mark.cuda
def test_panoptic_fpn_on_cuda():
    torch.manual_seed(0)
    model = PanopticFPN(TINY).cuda().train()
    images, targets = _batch()
    images = [im.cuda() for im in images]
    targets = [{k: v.cuda() for k, v in t.items()} for t in targets]
    assert torch.isfinite(sum(model(images, targets).values()))
    model.eval()
    with torch.no_grad():
        assert model(images)[0]["panoptic"].device.type == "cuda"


# ------------------------------------------------------------------- experiment
def test_mirror_augment_moves_boxes_masks_and_stuff_together():
    from cv_course.experiments.panoptic import mirror_augment

    images, targets = _batch(6)
    g = torch.Generator().manual_seed(0)
    out_images, out_targets = mirror_augment(images, targets, g)
    flipped = 0
    for im, t, im2, t2 in zip(images, targets, out_images, out_targets):
        same = torch.equal(im, im2)
        flipped += not same
        ref = (im, t) if same else (im.flip(-1), {k: t[k].flip(-1) for k in ("masks", "semantic")})
        assert torch.equal(im2, ref[0])
        if not same:
            assert torch.equal(t2["masks"], ref[1]["masks"])
            assert torch.equal(t2["semantic"], ref[1]["semantic"])
        m = t2["masks"].bool()
        cols, rows = m.any(1), m.any(2)
        x1 = cols.int().argmax(1)
        x2 = m.shape[-1] - cols.flip(1).int().argmax(1)
        assert torch.equal(t2["boxes"][:, 0], x1.float()) and torch.equal(t2["boxes"][:, 2],
                                                                         x2.float())
        assert torch.equal(t2["boxes"][:, 1], rows.int().argmax(1).float())
    assert 0 < flipped < 6


def test_evaluate_panoptic_scores_exact_ground_truth_as_one():
    from cv_course.experiments.panoptic import evaluate_panoptic

    class Oracle(torch.nn.Module):
        def __init__(self, maps):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.maps = maps

        def forward(self, images):
            return [self.maps.pop(0) for _ in images]

    ds = PanopticScenes(5, size=32, seed=3)
    scenes = [ds.scene(i) for i in range(5)]
    images, truth = [s.image for s in scenes], [s.panoptic for s in scenes]
    targets = [{"boxes": s.boxes, "labels": s.labels, "masks": s.masks} for s in scenes]
    outputs = [{"panoptic": s.panoptic, "boxes": s.boxes, "labels": s.labels,
                "scores": torch.ones(len(s.labels)), "masks": s.masks[:, None].float()}
               for s in scenes]
    result = evaluate_panoptic(Oracle(outputs), images, truth, targets, batch_size=2)
    assert result["pq"] == result["pq_things"] == result["pq_stuff"] == 1.0
    assert result["map"] == result["mask_map"] == 1.0
    wrong = [t.clone() for t in truth]
    for w in wrong:
        w[..., 0][w[..., 0] == 6] = 5  # ground predicted as sky
    result = evaluate_panoptic(Oracle([{"panoptic": w} for w in wrong]), images, truth,
                               batch_size=2)
    assert result["pq_things"] == 1.0 and result["pq_stuff"] < 1.0


def test_registered_by_name():
    from cv_course.experiments.detection import detector_spec

    spec = detector_spec("panoptic_fpn")
    model = spec.build(spec.config.replace(pretrained=False))
    assert isinstance(model, PanopticFPN)
    images, targets = spec.scenes(2, 0, spec.setup)
    assert "semantic" in targets[0] and targets[0]["masks"].dtype == torch.uint8

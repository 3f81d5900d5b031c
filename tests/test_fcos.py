"""Tests for FCOS: locations and targets against a plain loop, centre-ness by hand, the
ltrb GIoU against the pairwise op, the head, the detector's interface and training,
torchvision's FCOS (its target assignment as an oracle for ours), errors, CUDA.

Every model here is tiny (16-channel FPN, one conv per tower, 64 x 64 scenes) and
untrained, so each test takes a second or two on one thread.
"""

from __future__ import annotations

import math

import pytest
import torch

from cv_course.data import DetectionScenes, detection_collate
from cv_course.experiments.fcos import fcos_backbone, torchvision_fcos
from cv_course.models.detection import (
    FCOS,
    FCOSConfig,
    FCOSHead,
    centerness_of,
    fcos_locations,
    fcos_targets,
    ltrb_giou,
)
from cv_course.ops import generalized_box_iou

TINY = FCOSConfig(pretrained=False, fpn_channels=16, norm_groups=8, num_convs=1)
LOSSES = {"loss_classifier", "loss_box_reg", "loss_centerness"}


def scenes(n=3, size=64, seed=0, max_objects=6):
    ds = DetectionScenes(n, size=size, seed=seed, max_objects=max_objects)
    images, targets = detection_collate([ds[i] for i in range(n)])
    return images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]


def tiny_model(seed=0, config=TINY):
    torch.manual_seed(seed)
    return FCOS(config)


# --- locations and targets ---------------------------------------------------------------

def test_locations_are_cell_centres_level_after_level_row_major():
    points, levels = fcos_locations([(2, 3), (1, 2)], [4, 8])
    expected = [[2, 2], [6, 2], [10, 2], [2, 6], [6, 6], [10, 6], [4, 4], [12, 4]]
    assert points.tolist() == expected
    assert levels.tolist() == [0] * 6 + [1] * 2
    # Row p of a flattened [B, V, H, W] map is location p: value = x + 100 y at each cell.
    from cv_course.models.detection.fcos_head import flatten_maps
    H, W, s = 3, 5, 4
    pts, _ = fcos_locations([(H, W)], [s])
    grid = ((torch.arange(W) + 0.5) * s)[None, :] + 100 * ((torch.arange(H) + 0.5) * s)[:, None]
    flat = flatten_maps(grid[None, None])[0, :, 0]  # [H * W]
    assert torch.equal(flat, pts[:, 0] + 100 * pts[:, 1])


def loop_targets(points, boxes, labels, ranges):
    """Obviously-correct reference: one point, one box at a time, in float64."""
    P = points.shape[0]
    out_labels, out_ltrb, out_ctr = [0] * P, [[0.0] * 4 for _ in range(P)], [0.0] * P
    for p in range(P):
        x, y = points[p].tolist()
        lo, hi = ranges[p].tolist()
        best, best_area = None, math.inf
        for k in range(boxes.shape[0]):
            x1, y1, x2, y2 = boxes[k].tolist()
            l, t, r, b = x - x1, y - y1, x2 - x, y2 - y
            area = (x2 - x1) * (y2 - y1)
            if min(l, t, r, b) > 0 and lo <= max(l, t, r, b) <= hi and area < best_area:
                best, best_area = k, area  # strict <: the earlier of equal areas stays
        if best is not None:
            x1, y1, x2, y2 = boxes[best].tolist()
            l, t, r, b = x - x1, y - y1, x2 - x, y2 - y
            out_labels[p], out_ltrb[p] = int(labels[best]), [l, t, r, b]
            out_ctr[p] = math.sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))
    return out_labels, out_ltrb, out_ctr


def random_scene(K, seed, integer=True, dtype=torch.float32):
    """Boxes on a 64 x 64 image; integer corners put locations exactly on edges and on
    range ends; every third box repeats an earlier one's size (ties in area)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.randint(0, 48, (K, 2), generator=g).to(dtype)
    wh = torch.randint(1, 40, (K, 2), generator=g).to(dtype)
    if not integer:
        xy, wh = xy + torch.rand(K, 2, generator=g, dtype=dtype), wh + torch.rand(
            K, 2, generator=g, dtype=dtype)
    wh[2::3] = wh[: len(wh[2::3])]  # same size as an earlier box: equal areas
    boxes = torch.cat((xy, xy + wh), 1)
    labels = torch.randint(1, 5, (K,), generator=g)
    return boxes, labels


def level_ranges(levels, ranges=((0, 8), (8, 16), (16, math.inf)), dtype=torch.float32):
    return torch.tensor(ranges, dtype=dtype)[levels]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("K,seed,integer", [(0, 0, True), (1, 1, True), (5, 2, True),
                                            (12, 3, True), (8, 4, False), (20, 5, False)])
def test_targets_match_the_loop_reference(K, seed, integer, dtype):
    points, levels = fcos_locations([(16, 16), (8, 8), (4, 4)], [4, 8, 16])
    ranges = level_ranges(levels, dtype=dtype)
    boxes, labels = random_scene(K, seed, integer, dtype)
    lab, ltrb, ctr = fcos_targets(points, boxes, labels, ranges)
    assert lab.dtype == torch.int64 and ltrb.dtype == dtype == ctr.dtype
    assert lab.shape == (336,) and ltrb.shape == (336, 4) and ctr.shape == (336,)
    ref_lab, ref_ltrb, ref_ctr = loop_targets(points.double(), boxes.double(), labels,
                                              ranges.double())
    assert lab.tolist() == ref_lab
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(ltrb, torch.tensor(ref_ltrb, dtype=dtype), atol=tol, rtol=0)
    torch.testing.assert_close(ctr, torch.tensor(ref_ctr, dtype=dtype), atol=tol, rtol=tol)
    if K:
        assert (lab > 0).any()  # the scene is not all background


def test_ties_edges_and_range_ends_by_hand():
    points = torch.tensor([[10.0, 10.0], [4.0, 10.0], [10.0, 10.0], [18.0, 10.0]])
    ranges = torch.tensor([[0.0, 100.0], [0.0, 100.0], [0.0, 6.0], [0.0, 14.0]])
    boxes = torch.tensor([[4.0, 4.0, 16.0, 16.0],  # area 144
                          [8.0, 4.0, 20.0, 16.0],  # area 144: ties with box 0
                          [0.0, 0.0, 32.0, 32.0]])  # area 1024
    labels = torch.tensor([1, 2, 3])
    lab, ltrb, ctr = fcos_targets(points, boxes, labels, ranges)
    # (10, 10) is inside all three: the two smallest tie, the earlier (box 0) wins.
    assert lab[0] == 1 and ltrb[0].tolist() == [6, 6, 6, 6] and ctr[0] == 1
    # (4, 10) lies on box 0's left edge (l = 0): not inside it, nor in box 1; box 2 takes it.
    assert lab[1] == 3 and ltrb[1].tolist() == [4, 10, 28, 22]
    # Range (0, 6) at (10, 10): box 0 has max 6 (the range end, kept), box 1 has 10.
    assert lab[2] == 1
    # (18, 10), range (0, 14): box 1 (max 10) fits; box 2 (max 22) does not.
    assert lab[3] == 2 and ltrb[3].tolist() == [10, 6, 2, 6]
    # Just past a range end nothing fits.
    lab, ltrb, ctr = fcos_targets(points[2:3], boxes, labels, torch.tensor([[0.0, 5.999]]))
    assert lab.tolist() == [0] and ltrb.abs().sum() == 0 and ctr.tolist() == [0]


def test_empty_scene_is_all_background():
    points, levels = fcos_locations([(4, 4)], [16])
    lab, ltrb, ctr = fcos_targets(points, torch.zeros(0, 4, dtype=torch.float64),
                                  torch.zeros(0, dtype=torch.int64), level_ranges(levels))
    assert lab.tolist() == [0] * 16 and ltrb.shape == (16, 4) and ltrb.dtype == torch.float64
    assert ltrb.abs().sum() == 0 and ctr.abs().sum() == 0 and ctr.dtype == torch.float64


def test_centerness_by_hand():
    ltrb = torch.tensor([[5.0, 5.0, 5.0, 5.0],  # the centre: 1
                         [1.0, 2.0, 4.0, 2.0],  # sqrt(1/4 * 1) = 0.5
                         [2.0, 1.0, 8.0, 9.0],  # sqrt(2/8 * 1/9) = 1/6
                         [1e-6, 5.0, 10.0, 5.0],  # at the left edge: -> 0
                         [0.0, 0.0, 0.0, 0.0]])  # background: 0, not NaN
    torch.testing.assert_close(centerness_of(ltrb),
                               torch.tensor([1.0, 0.5, 1 / 6, math.sqrt(1e-7), 0.0]))
    # Along a box's middle row, centre-ness falls from 1 at the centre to ~0 at the edge.
    points = torch.stack((torch.linspace(0.5, 19.5, 20), torch.full((20,), 10.0)), 1)
    _, _, ctr = fcos_targets(points, torch.tensor([[0.0, 0.0, 20.0, 20.0]]), torch.tensor([1]),
                             torch.tensor([[0.0, math.inf]]).expand(20, 2))
    assert ctr[9] == ctr[10] == pytest.approx(math.sqrt(9.5 / 10.5))  # 0.5 px off centre
    assert ctr[0] == ctr[-1] == pytest.approx(math.sqrt(0.5 / 19.5))  # 0.5 px from an edge
    assert (ctr[:10].diff() > 0).all() and (ctr[10:].diff() < 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ltrb_giou_is_the_diagonal_of_generalized_box_iou(dtype):
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(50, 4, generator=g, dtype=dtype) * 20 + 0.1
    target = torch.rand(50, 4, generator=g, dtype=dtype) * 20 + 0.1
    xy = torch.rand(50, 2, generator=g, dtype=dtype) * 64

    def boxes(d):
        return torch.cat((xy - d[:, :2], xy + d[:, 2:]), 1)

    expected = generalized_box_iou(boxes(pred), boxes(target)).diagonal()
    torch.testing.assert_close(ltrb_giou(pred, target), expected)
    assert torch.allclose(ltrb_giou(target, target), torch.ones(50, dtype=dtype))
    assert torch.autograd.gradcheck(ltrb_giou, (pred[:5].double().requires_grad_(),
                                                target[:5].double()))


# --- head and detector ---------------------------------------------------------------------

def test_head_shapes_positive_distances_and_prior():
    torch.manual_seed(0)
    head = FCOSHead(TINY)
    feats = [torch.randn(2, 16, 8, 8), torch.randn(2, 16, 4, 4), torch.randn(2, 16, 2, 2)]
    logits, dist, ctr = head(feats)
    assert logits.shape == (2, 84, 4) and dist.shape == (2, 84, 4) and ctr.shape == (2, 84)
    assert (dist > 0).all()
    # Untrained: every class starts near the prior 0.01, distances near one stride.
    assert torch.allclose(logits.sigmoid(), torch.full_like(logits, 0.01), atol=0.005)
    strides = torch.tensor([4.0] * 64 + [8.0] * 16 + [16.0] * 4)
    assert torch.allclose(dist / strides[None, :, None], torch.ones_like(dist), atol=0.3)
    with pytest.raises(ValueError, match="3 feature levels"):
        head(feats[:2])


def test_train_mode_returns_three_named_finite_losses_with_gradients():
    images, targets = scenes()
    targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    model = tiny_model().train()
    losses = model(images, targets)
    assert set(losses) == LOSSES
    assert all(v.dim() == 0 and torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # A batch with no object at all: only the classifier has something to learn.
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 3
    losses = model(images, empty)
    assert losses["loss_box_reg"] == 0 and losses["loss_centerness"] == 0
    assert losses["loss_classifier"] > 0


def test_eval_mode_returns_one_dict_per_image_within_limits():
    images, _ = scenes()
    model = tiny_model(config=TINY.replace(score_thresh=0.0, detections_per_img=7)).eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 3
    for o in out:
        assert set(o) == {"boxes", "labels", "scores"}
        K = o["boxes"].shape[0]
        assert 0 < K <= 7 and o["labels"].shape == (K,) == o["scores"].shape
        assert o["labels"].dtype == torch.int64 and ((o["labels"] >= 1) & (o["labels"] <= 4)).all()
        assert (o["scores"].diff() <= 0).all()
        assert (o["boxes"] >= 0).all() and (o["boxes"] <= 64).all()
        assert (o["boxes"][:, 2:] >= o["boxes"][:, :2]).all()
    # The untrained score is sqrt(0.01 * 0.5) ~ 0.07: a threshold above it keeps nothing.
    model.config = model.config.replace(score_thresh=0.2)
    with torch.no_grad():
        assert all(o["boxes"].shape == (0, 4) for o in model(images))


def test_a_few_steps_lower_the_loss_and_predictions_depend_on_the_input():
    images, targets = scenes(4, seed=1)
    model = tiny_model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(25):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.6 * history[0]
    model.eval()
    with torch.no_grad():
        a = model(images[:2])
        b = model([images[1], images[0]])
    # The same image gives the same detections whatever its batch position...
    torch.testing.assert_close(a[0]["boxes"], b[1]["boxes"])
    # ... and a different image gives different ones (no constant output).
    assert a[0]["boxes"].shape != a[1]["boxes"].shape or not torch.allclose(
        a[0]["boxes"], a[1]["boxes"])


def test_errors_say_what_to_fix():
    images, targets = scenes(1)
    model = tiny_model()
    with pytest.raises(ValueError, match="pass targets"):
        model.train()(images)
    with pytest.raises(TypeError, match="list of Tensor"):
        model(torch.stack(images), targets)
    with pytest.raises(ValueError, match="points must be"):
        fcos_targets(torch.zeros(5, 3), torch.zeros(0, 4), torch.zeros(0), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="boxes must be a float"):
        fcos_targets(torch.zeros(5, 2), torch.zeros(2, 4, dtype=torch.int64),
                     torch.zeros(2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="labels must be"):
        fcos_targets(torch.zeros(5, 2), torch.zeros(2, 4), torch.zeros(3), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="size_ranges"):
        fcos_targets(torch.zeros(5, 2), torch.zeros(2, 4), torch.zeros(2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="one stride per feature map"):
        fcos_locations([(2, 2)], [4, 8])
    with pytest.raises(ValueError, match="strides"):
        FCOSConfig(strides=(8, 16, 32))
    with pytest.raises(ValueError, match="one \\(lo, hi\\) per level"):
        FCOSConfig(size_ranges=((0, 16), (16, math.inf)))
    with pytest.raises(ValueError, match="norm_groups"):
        FCOSConfig(fpn_channels=16)
    with pytest.raises(ValueError, match="do not match"):
        FCOS(TINY, fcos_backbone(TINY.replace(strides=(4, 8), size_ranges=((0, 8), (8, 99)))))
    with pytest.raises(ValueError, match="torchvision's FCOS ties"):
        torchvision_fcos(TINY.replace(size_ranges=((0, 10), (10, 32), (32, math.inf))),
                         fcos_backbone(TINY))


# --- torchvision's FCOS ------------------------------------------------------------------

def test_torchvision_fcos_trains_and_predicts_with_our_backbone():
    images, targets = scenes(2)
    torch.manual_seed(0)
    model = torchvision_fcos(TINY, fcos_backbone(TINY), image_size=64).train()
    losses = model(images, targets)
    assert set(losses) == {"classification", "bbox_regression", "bbox_ctrness"}
    sum(losses.values()).backward()
    with torch.no_grad():
        out = model.eval()(images)
    assert len(out) == 2 and all(set(o) == {"boxes", "labels", "scores"} for o in out)


def test_torchvision_assignment_without_centre_sampling_equals_ours():
    """torchvision's matching, with centre sampling off (radius inf), on boxes whose
    corners are not integers (so no location sits exactly on a range end, where its
    open ranges and our closed ones differ), labels every location as we do."""
    images, _ = scenes(3, seed=2)
    targets = []
    for seed in range(3):
        boxes, labels = random_scene(8, seed + 10, integer=False)
        targets.append({"boxes": boxes, "labels": labels})
    torch.manual_seed(0)
    config = TINY.replace(size_ranges=((0, 8), (8, 16), (16, math.inf)))
    model = torchvision_fcos(config, fcos_backbone(config), image_size=64,
                             center_sampling_radius=math.inf).train()
    captured = {}

    def capture(targets, head_outputs, anchors, matched_idxs):
        captured["matched"] = matched_idxs
        return {"loss": head_outputs["cls_logits"].sum() * 0}

    model.head.compute_loss = capture
    model(images, targets)
    points, levels = fcos_locations([(16, 16), (8, 8), (4, 4)], config.strides)
    ranges = level_ranges(levels, config.size_ranges)
    for t, matched in zip(targets, captured["matched"]):
        lab, _, _ = fcos_targets(points, t["boxes"], t["labels"], ranges)
        theirs = torch.where(matched >= 0, t["labels"][matched.clamp(min=0)], 0)
        assert lab.tolist() == theirs.tolist()
        assert (lab > 0).sum() > 10  # not a vacuous agreement on background


# --- CUDA ---------------------------------------------------------------------------------

@pytest.mark.cuda
def test_cuda_matches_cpu_targets_and_runs_the_detector():
    points, levels = fcos_locations([(16, 16), (8, 8), (4, 4)], [4, 8, 16])
    ranges = level_ranges(levels)
    boxes, labels = random_scene(12, 3)
    cpu = fcos_targets(points, boxes, labels, ranges)
    gpu = fcos_targets(points.cuda(), boxes.cuda(), labels.cuda(), ranges.cuda())
    for a, b in zip(cpu, gpu):
        assert b.device.type == "cuda"
        torch.testing.assert_close(a, b.cpu())
    images, targets = scenes(2)
    model = tiny_model().cuda().train()
    losses = model([im.cuda() for im in images],
                   [{k: v.cuda() for k, v in t.items()} for t in targets])
    sum(losses.values()).backward()
    with torch.no_grad():
        out = model.eval()([im.cuda() for im in images])
    assert all(o["boxes"].device.type == "cuda" for o in out)

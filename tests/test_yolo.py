"""YOLO v1: grid encoding, loss and decoding against plain-loop references; the model's
interface, errors, and a tiny end-to-end training run."""

from __future__ import annotations

import math

import pytest
import torch

from cv_course.experiments.detection import DetectionSetup, detector_names, make_scenes
from cv_course.models.detection.yolo import (
    YOLOConfig,
    YOLOv1,
    decode_yolo,
    encode_yolo_targets,
    lost_objects,
    yolo_loss,
    yolo_output_size,
    yolo_predictions,
)
from cv_course.models.detection.yolo_loss import split_yolo_output

TINY = YOLOConfig(grid_size=4, stride=16, pretrained=False, head_channels=16, head_layers=1)


# ---------------------------------------------------------------- references (plain loops)

def encode_loop(boxes, labels, S, B, C, image_size):
    """WAVE.md's contract, one object at a time."""
    H, W = image_size
    target = torch.zeros(S, S, 5 * B + C, dtype=boxes.dtype)
    kept = {}  # (i, j) -> area of the object the cell holds
    for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist()):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        j = min(max(math.floor(cx / (W / S)), 0), S - 1)
        i = min(max(math.floor(cy / (H / S)), 0), S - 1)
        area = (x2 - x1) * (y2 - y1)
        if (i, j) in kept and kept[(i, j)] >= area:  # an earlier object at least as large
            continue
        kept[(i, j)] = area
        onehot = [1.0 if c == label - 1 else 0.0 for c in range(C)]
        box = [cx / (W / S) - j, cy / (H / S) - i, (x2 - x1) / W, (y2 - y1) / H, 1.0]
        target[i, j] = torch.tensor(box * B + onehot, dtype=boxes.dtype)
    return target


def iou_loop(p, t, S):
    """IoU of two (x, y, w, h) boxes of the same cell, x, y offsets in the cell."""
    def corners(b):
        return (b[0] / S - b[2] / 2, b[1] / S - b[3] / 2, b[0] / S + b[2] / 2, b[1] / S + b[3] / 2)
    a, b = corners(p), corners(t)
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = p[2] * p[3] + t[2] * t[3] - inter
    return inter / union if union > 0 else 0.0


def loss_loop(output, target, B, lambda_coord, lambda_noobj, rescore):
    """Equation 3 of the paper, cell by cell and predictor by predictor."""
    N, S, _, D = output.shape
    C = D - 5 * B
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    coord = obj = noobj = cls = 0.0
    for n in range(N):
        for i in range(S):
            for j in range(S):
                o, t = output[n, i, j].tolist(), target[n, i, j].tolist()
                preds = [[sig(v) for v in o[5 * b:5 * b + 5]] for b in range(B)]
                m = max(o[5 * B:])
                e = [math.exp(v - m) for v in o[5 * B:]]
                probs = [v / sum(e) for v in e]
                if t[4] == 0:
                    noobj += sum(p[4] ** 2 for p in preds)
                    continue
                ious = [iou_loop([p[0], p[1], p[2] ** 2, p[3] ** 2], t[:4], S) for p in preds]
                r = ious.index(max(ious))
                for b, p in enumerate(preds):
                    if b != r:
                        noobj += p[4] ** 2
                        continue
                    coord += ((p[0] - t[0]) ** 2 + (p[1] - t[1]) ** 2
                              + (p[2] - math.sqrt(t[2])) ** 2 + (p[3] - math.sqrt(t[3])) ** 2)
                    obj += (p[4] - (ious[r] if rescore else 1.0)) ** 2
                cls += sum((probs[c] - t[5 * B + c]) ** 2 for c in range(C))
    return {"loss_coord": lambda_coord * coord / N, "loss_obj": obj / N,
            "loss_noobj": lambda_noobj * noobj / N, "loss_class": cls / N}


def random_scene(K, gen, size=(128, 128), C=4, min_wh=4, max_wh=60, dtype=torch.float64):
    H, W = size
    wh = min_wh + torch.rand(K, 2, generator=gen, dtype=dtype) * (max_wh - min_wh)
    xy = torch.rand(K, 2, generator=gen, dtype=dtype) * torch.tensor([W, H], dtype=dtype)
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=1)
    return boxes, torch.randint(1, C + 1, (K,), generator=gen)


# ---------------------------------------------------------------- encoding

@pytest.mark.parametrize("S,B,C,size", [(7, 2, 20, (448, 448)), (8, 2, 4, (128, 128)),
                                        (3, 1, 4, (96, 128)), (5, 3, 2, (100, 70))])
def test_encode_matches_loop_on_random_scenes(S, B, C, size):
    gen = torch.Generator().manual_seed(S * 10 + B)
    for K in (0, 1, 5, 30):  # 30 objects on few cells: many collisions
        boxes, labels = random_scene(K, gen, size, C)
        got = encode_yolo_targets(boxes, labels, S, B, C, size)
        assert got.shape == (S, S, 5 * B + C) and got.dtype == torch.float64
        torch.testing.assert_close(got, encode_loop(boxes, labels, S, B, C, size), rtol=0, atol=1e-12)


def test_encode_keeps_largest_and_earliest_on_ties():
    # Three centres in cell (0, 0) of a 2 x 2 grid over 100 x 100: the largest (index 1) wins.
    boxes = torch.tensor([[10., 10, 20, 20], [0, 0, 40, 40], [20, 20, 30, 30]])
    t = encode_yolo_targets(boxes, torch.tensor([1, 2, 3]), 2, 2, 3, (100, 100))
    assert t[0, 0, 10:].tolist() == [0, 1, 0] and t[0, 0, 2].item() == pytest.approx(0.4)
    # Equal areas: the earlier one (label 3) wins, whatever the order of the others.
    boxes = torch.tensor([[5., 5, 15, 15], [10, 10, 20, 20], [0, 0, 10, 10]])
    t = encode_yolo_targets(boxes, torch.tensor([3, 1, 2]), 2, 1, 3, (100, 100))
    assert t[0, 0, 5:].tolist() == [0, 0, 1]
    assert t[0, 0, :2].tolist() == pytest.approx([0.2, 0.2])
    assert (t[1:] == 0).all() and (t[:, 1:] == 0).all()


def test_encode_boundary_centres_and_all_slots():
    # Centres exactly on cell borders go to the next cell; one on the far edge is clamped.
    boxes = torch.tensor([[0., 0, 32, 32], [118, 118, 138, 138], [-5, 50, 5, 60]])
    t = encode_yolo_targets(boxes, torch.tensor([1, 2, 4]), 8, 2, 4, (128, 128))
    assert t[1, 1, :5].tolist() == [0, 0, 0.25, 0.25, 1]  # centre (16, 16) -> row 1, column 1
    assert t[7, 7, :2].tolist() == [1, 1]  # centre (128, 128) -> clamped cell, offset 1
    assert t[3, 0, 0].item() == 0  # centre x = 0 -> column 0, offset 0
    assert torch.equal(t[..., :5], t[..., 5:10])  # the same box in both predictor slots
    assert int((t[..., 4] > 0).sum()) == 3


def test_encode_empty_and_dtype():
    for dtype in (torch.float32, torch.float64):
        t = encode_yolo_targets(torch.zeros(0, 4, dtype=dtype), torch.zeros(0, dtype=torch.int64))
        assert t.shape == (7, 7, 30) and t.dtype == dtype and not t.any()


def test_encode_errors_say_what_to_fix():
    boxes = torch.tensor([[10., 10, 20, 20]])
    with pytest.raises(ValueError, match="no background"):
        encode_yolo_targets(boxes, torch.tensor([0]), 7, 2, 20, (448, 448))
    with pytest.raises(ValueError, match="x2 < x1"):
        encode_yolo_targets(torch.tensor([[10., 10, 5, 5]]), torch.tensor([1]))
    with pytest.raises(ValueError, match="integer Tensor"):
        encode_yolo_targets(boxes, torch.tensor([1.0]))


def test_lost_objects_counts_shared_cells():
    gen = torch.Generator().manual_seed(0)
    scenes = [random_scene(K, gen)[0] for K in (0, 3, 12, 40)]
    for S in (2, 4, 8):
        occupied = sum(int((encode_yolo_targets(b, torch.ones(len(b), dtype=torch.int64), S, 1, 1,
                                                (128, 128))[..., 4] > 0).sum()) for b in scenes)
        assert lost_objects(scenes, S, (128, 128)) == sum(len(b) for b in scenes) - occupied
    assert lost_objects(torch.tensor([[0., 0, 10, 10], [2, 2, 12, 12]]), 8, (128, 128)) == 1


# ---------------------------------------------------------------- decoding

def test_decode_of_encode_recovers_the_kept_boxes():
    gen = torch.Generator().manual_seed(1)
    for S, size in ((8, (128, 128)), (7, (448, 448)), (4, (64, 96))):
        boxes, labels = random_scene(25, gen, size, C=4)
        boxes = torch.min(boxes.clamp(min=0), torch.tensor([size[1], size[0]] * 2))
        t = encode_yolo_targets(boxes, labels, S, 2, 4, size)
        out = decode_yolo(t, 2, size, nms_thresh=0.99)  # twins (IoU 1) go, distinct objects stay
        kept = encode_loop(boxes, labels, S, 2, 4, size)[..., 4] > 0
        assert len(out["boxes"]) == int(kept.sum())  # one box per kept object (NMS drops the twin)
        assert torch.equal(out["scores"], torch.ones_like(out["scores"]))
        iou = torch.cdist(out["boxes"], boxes, p=1)  # [D, K] L1 distance to every ground truth
        d, k = iou.min(dim=1)
        assert d.max() < 1e-9 and torch.equal(out["labels"], labels[k])


def test_decode_scores_threshold_and_nms():
    # One cell, two predictors on the same box: conf 0.9 and 0.6, class probs (0.5, 0.5).
    g = torch.zeros(1, 1, 12)
    g[0, 0, :10] = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.9, 0.5, 0.5, 0.5, 0.5, 0.6])
    g[0, 0, 10:] = torch.tensor([0.5, 0.5])
    out = decode_yolo(g, 2, (10, 10), score_thresh=0.01, nms_thresh=0.5)
    assert out["labels"].tolist() == [1, 2] and out["scores"].tolist() == pytest.approx([0.45] * 2)
    assert out["boxes"].tolist() == [[2.5, 2.5, 7.5, 7.5]] * 2
    assert len(decode_yolo(g, 2, (10, 10), score_thresh=0.5)["boxes"]) == 0
    with pytest.raises(ValueError, match=r"Tensor\[S, S, 5B \+ C\]"):
        decode_yolo(torch.zeros(2, 7, 7, 30))


# ---------------------------------------------------------------- loss

def _random_target(N, S, B, C, gen, K=6):
    return torch.stack([encode_yolo_targets(*random_scene(K, gen, C=C), S, B, C, (128, 128))
                        for _ in range(N)])


@pytest.mark.parametrize("rescore", [True, False])
@pytest.mark.parametrize("B", [1, 2, 3])
def test_loss_matches_loop(B, rescore):
    gen = torch.Generator().manual_seed(B)
    S, C = 4, 3
    target = _random_target(3, S, B, C, gen)
    output = torch.randn(3, S, S, 5 * B + C, generator=gen, dtype=torch.float64) * 2
    got = yolo_loss(output, target, B, 5.0, 0.5, rescore)
    want = loss_loop(output, target, B, 5.0, 0.5, rescore)
    assert set(got) == set(want)
    for k in want:
        assert got[k].item() == pytest.approx(want[k], rel=1e-12, abs=1e-12), k


def test_loss_edge_cases():
    gen = torch.Generator().manual_seed(3)
    S, B, C = 3, 2, 4
    output = torch.randn(2, S, S, 5 * B + C, generator=gen, dtype=torch.float64)
    empty = torch.zeros_like(output)  # no objects: only the no-object term
    got = yolo_loss(output, empty, B)
    assert got["loss_coord"] == 0 and got["loss_obj"] == 0 and got["loss_class"] == 0
    assert got["loss_noobj"].item() == pytest.approx(loss_loop(output, empty, B, 5, .5, True)["loss_noobj"])
    # Every cell full: one object centred in each cell.
    k = torch.arange(S, dtype=torch.float64) * 32 + 16
    cy, cx = torch.meshgrid(k, k, indexing="ij")
    boxes = torch.stack([cx - 10, cy - 6, cx + 10, cy + 6], -1).reshape(-1, 4)
    t = encode_yolo_targets(boxes, torch.randint(1, C + 1, (S * S,), generator=gen), S, B, C, (96, 96))
    full = torch.stack([t, t])
    assert (full[..., 4] > 0).all()
    got, want = yolo_loss(output, full, B), loss_loop(output, full, B, 5, .5, True)
    for name in want:
        assert got[name].item() == pytest.approx(want[name], rel=1e-12)
    # A perfect prediction costs nothing but its non-responsible twin's confidence.
    logit = lambda p: torch.log(p / (1 - p))  # noqa: E731
    raw = t.clone()
    raw[..., 2:4] = raw[..., 2:4].sqrt()
    raw[..., 7:10] = 0.5
    raw[..., :10] = logit(raw[..., :10].clamp(1e-9, 1 - 1e-9))
    raw[..., 10:] = t[..., 10:] * 50
    got = yolo_loss(raw[None], t[None], B)
    assert got["loss_coord"] < 1e-12 and got["loss_obj"] < 1e-12 and got["loss_class"] < 1e-12
    assert got["loss_noobj"].item() == pytest.approx(0.5 * S * S * 0.5**2)  # twin's conf 0.5


def test_loss_gradcheck_float64():
    # rescore=False: with rescore=True the IoU target is a constant by design (no gradient
    # flows through it), which finite differences cannot see.
    gen = torch.Generator().manual_seed(4)
    target = _random_target(2, 3, 2, 2, gen, K=4)
    output = torch.randn(2, 3, 3, 12, generator=gen, dtype=torch.float64, requires_grad=True)
    loss = lambda o: sum(yolo_loss(o, target, 2, rescore=False).values())  # noqa: E731
    assert torch.autograd.gradcheck(loss, (output,))
    # rescore=True differs only by the confidence target: the same gradient w.r.t. the boxes.
    g1 = torch.autograd.grad(sum(yolo_loss(output, target, 2).values()), output)[0]
    g0 = torch.autograd.grad(loss(output), output)[0]
    assert torch.equal(g1[..., [0, 1, 2, 3, 5, 6, 7, 8, 10, 11]], g0[..., [0, 1, 2, 3, 5, 6, 7, 8, 10, 11]])
    assert not torch.equal(g1[..., 4], g0[..., 4])


def test_predictions_format():
    raw = torch.randn(2, 4, 4, 13)
    xy, sqrt_wh, conf, probs = split_yolo_output(raw, 2)
    p = yolo_predictions(raw, 2)
    assert p.shape == raw.shape and torch.allclose(p[..., 10:].sum(-1), torch.ones(2, 4, 4))
    assert torch.allclose(p[..., 7:9], sqrt_wh[..., 1, :] ** 2) and torch.equal(p[..., 4], conf[..., 0])


# ---------------------------------------------------------------- model

def test_output_size_is_measured_by_building_the_head():
    assert yolo_output_size() == ((7, 7, 30), 1470)
    assert yolo_output_size(8, 2, 4) == ((8, 8, 14), 896)


def test_model_interface_and_errors():
    torch.manual_seed(0)
    model = YOLOv1(TINY)
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[4., 6, 30, 20]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = model(images, targets)
    assert set(losses) == {"loss_coord", "loss_obj", "loss_noobj", "loss_class"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    with pytest.raises(ValueError, match="pass targets"):
        model(images)
    with pytest.raises(ValueError, match="64 x 64 images"):
        model([torch.rand(3, 128, 128)], targets[:1])
    with pytest.raises(ValueError, match="no background"):
        model(images[:1], [{"boxes": targets[0]["boxes"], "labels": torch.tensor([0])}])
    with pytest.raises(TypeError, match="list"):
        model(torch.stack(images), targets)
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and set(out[0]) == {"boxes", "labels", "scores"}
    b = out[0]["boxes"]
    assert b.shape[1] == 4 and (b >= 0).all() and (b <= 64).all()
    assert out[0]["labels"].dtype == torch.int64 and out[0]["labels"].min() >= 1
    assert out[0]["labels"].max() <= 4 and len(b) <= TINY.detections_per_img
    with pytest.raises(ValueError, match="stride"):
        YOLOConfig(stride=12)
    assert "yolo" in detector_names()


def test_tiny_training_lowers_the_loss_and_predictions_depend_on_the_input():
    setup = DetectionSetup(size=64, max_objects=3)
    images, targets = make_scenes(16, 0, setup)
    torch.manual_seed(0)
    model = YOLOv1(TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for step in range(40):
        batch = slice(8 * (step % 2), 8 * (step % 2) + 8)
        loss = sum(model(images[batch], targets[batch]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    last = sum(model(images[:8], targets[:8]).values()).item()
    assert last < 0.5 * first
    model.eval()
    with torch.no_grad():
        a, b = model(images[:2])
    assert not torch.equal(a["boxes"][:3], b["boxes"][:3])
    top = a["scores"].argmax()
    assert a["labels"][top] in targets[0]["labels"]  # the most confident class is present


@pytest.mark.cuda
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(5)
    boxes, labels = random_scene(20, gen, dtype=torch.float32)
    t = encode_yolo_targets(boxes.cuda(), labels.cuda(), 8, 2, 4, (128, 128))
    assert t.is_cuda and torch.equal(t.cpu(), encode_yolo_targets(boxes, labels, 8, 2, 4, (128, 128)))
    output = torch.randn(1, 8, 8, 14, generator=gen)
    cpu = yolo_loss(output, t.cpu()[None])
    for k, v in yolo_loss(output.cuda(), t[None]).items():
        assert v.is_cuda and v.item() == pytest.approx(cpu[k].item(), rel=1e-5)
    torch.manual_seed(0)
    model = YOLOv1(TINY).eval()
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    with torch.no_grad():
        want = model(images)
        got = model.cuda()([im.cuda() for im in images])
    for g, w in zip(got, want):
        assert g["boxes"].is_cuda
        torch.testing.assert_close(g["scores"][:10].cpu(), w["scores"][:10], rtol=1e-4, atol=1e-5)

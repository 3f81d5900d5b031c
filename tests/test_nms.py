"""NMS, class-aware NMS and Soft-NMS against torchvision and loop references."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tvo

from cv_course.grading.boxes import abc_example, random_boxes
from cv_course.ops import batched_nms, box_iou, nms, soft_nms


def loop_nms(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    keep, removed = [], set()
    iou = box_iou(boxes, boxes)
    for i in order:
        if i in removed:
            continue
        keep.append(i)
        removed |= {j for j in order if float(iou[i, j]) > thr}
    return torch.tensor(keep, dtype=torch.int64)


def test_lecture_abc_example():
    boxes, scores = abc_example()
    iou = box_iou(boxes, boxes)
    assert iou[0, 1].item() == pytest.approx(0.72, abs=1e-6) and iou[0, 2].item() == pytest.approx(0.15, abs=1e-6)
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("clustered", [False, True])
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_nms_matches_torchvision(seed, clustered, thr, device):
    gen = torch.Generator().manual_seed(seed)
    n = [1, 7, 60, 300, 900, 2000][seed]
    dtype = torch.float64 if seed % 2 else torch.float32
    boxes = random_boxes(n, gen, dtype=dtype, device=device, clustered=clustered)
    scores = torch.rand(n, generator=gen, dtype=dtype).to(device)
    ours = nms(boxes, scores, thr)
    assert ours.dtype == torch.int64 and ours.device == boxes.device
    assert torch.equal(ours, tvo.nms(boxes, scores, thr))
    if n <= 300:
        assert torch.equal(ours.cpu(), loop_nms(boxes.cpu(), scores.cpu(), thr))


def test_nms_ties_identical_and_empty(device):
    gen = torch.Generator().manual_seed(7)
    boxes = random_boxes(200, gen, device=device, clustered=True)
    tied = (torch.rand(200, generator=gen) * 3).floor().to(device)  # three distinct scores
    assert torch.equal(nms(boxes, tied, 0.5), tvo.nms(boxes, tied, 0.5))
    same = boxes[:1].repeat(4, 1)
    assert nms(same, torch.ones(4, device=device), 0.5).tolist() == [0]
    empty = nms(torch.zeros(0, 4, device=device), torch.zeros(0, device=device), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64 and empty.device == boxes.device


def test_nms_long_chain_is_still_greedy():
    # boxes shifted step by step: each overlaps its neighbours above the
    # threshold, so greedy keeps every second one (a worst case for fixed points)
    x = torch.arange(40, dtype=torch.float64) * 2.0
    boxes = torch.stack([x, torch.zeros_like(x), x + 10, torch.full_like(x, 10)], dim=1)
    scores = torch.linspace(1, 0.1, 40, dtype=torch.float64)
    assert torch.equal(nms(boxes, scores, 0.5), tvo.nms(boxes, scores, 0.5))
    assert torch.equal(nms(boxes, scores, 0.5), loop_nms(boxes, scores, 0.5))


def test_nms_does_not_modify_inputs():
    gen = torch.Generator().manual_seed(8)
    boxes, scores = random_boxes(50, gen), torch.rand(50, generator=gen)
    b, s = boxes.clone(), scores.clone()
    nms(boxes, scores, 0.5), soft_nms(boxes, scores), batched_nms(boxes, scores, torch.zeros(50, dtype=torch.int64), 0.5)
    assert torch.equal(b, boxes) and torch.equal(s, scores)


@pytest.mark.parametrize("seed", range(3))
def test_batched_nms_matches_torchvision(seed, device):
    gen = torch.Generator().manual_seed(seed)
    boxes = random_boxes(400, gen, device=device, clustered=True)
    scores = torch.rand(400, generator=gen).to(device)
    idxs = torch.randint(4, (400,), generator=gen).to(device)
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.5), tvo.batched_nms(boxes, scores, idxs, 0.5))
    # class-aware keeps at least as many as class-agnostic
    assert len(batched_nms(boxes, scores, idxs, 0.5)) >= len(nms(boxes, scores, 0.5))


def loop_soft_nms(boxes, scores, sigma, thr, method, iou_thr):
    s = scores.double().tolist()
    alive = [i for i in range(len(s)) if s[i] >= thr]
    iou = box_iou(boxes.double(), boxes.double())
    picked = []
    while alive:
        m = max(alive, key=lambda i: (s[i], -i))
        picked.append((m, s[m]))
        alive.remove(m)
        for i in alive:
            o = float(iou[m, i])
            s[i] *= math.exp(-o * o / sigma) if method == "gaussian" else (1 - o if o > iou_thr else 1.0)
        alive = [i for i in alive if s[i] >= thr]
    return picked


@pytest.mark.parametrize("method", ["gaussian", "linear"])
def test_soft_nms_matches_loop(method):
    gen = torch.Generator().manual_seed(9)
    boxes = random_boxes(80, gen, dtype=torch.float64, clustered=True)
    scores = torch.rand(80, generator=gen, dtype=torch.float64)
    idx, sc = soft_nms(boxes, scores, sigma=0.5, score_threshold=0.05, method=method)
    ref = loop_soft_nms(boxes, scores, 0.5, 0.05, method, 0.3)
    assert idx.tolist() == [i for i, _ in ref]
    torch.testing.assert_close(sc, torch.tensor([v for _, v in ref], dtype=torch.float64))
    assert (sc[1:] <= sc[:-1] + 1e-12).all()


def test_soft_nms_keeps_overlapping_box_with_lower_score():
    boxes, scores = abc_example(dtype=torch.float64)
    idx, sc = soft_nms(boxes, scores, sigma=0.5)
    assert idx.tolist()[0] == 0 and 1 in idx.tolist()  # B survives, decayed
    assert idx.tolist() == [0, 2, 1]  # C (0.60 * 0.96) now outranks B (0.88 * 0.35)
    iou = box_iou(boxes, boxes)
    decayed_b = 0.88 * math.exp(-iou[0, 1].item() ** 2 / 0.5) * math.exp(-iou[2, 1].item() ** 2 / 0.5)
    assert sc[2].item() == pytest.approx(decayed_b, rel=1e-6)


def test_bad_input():
    boxes = torch.tensor([[0.0, 0, 1, 1]]).repeat(3, 1)
    with pytest.raises(ValueError, match="same length"):
        nms(boxes, torch.rand(2), 0.5)
    with pytest.raises(ValueError, match="shape \\[N\\]"):
        nms(boxes, torch.rand(3, 1), 0.5)
    with pytest.raises(ValueError, match="box_convert"):
        nms(torch.tensor([[10.0, 10, 4, 4]]), torch.rand(1), 0.5)  # looks like (x, y, w, h)
    with pytest.raises(ValueError, match="shape \\[N\\]"):
        soft_nms(boxes, torch.rand(3, 1))
    with pytest.raises(ValueError, match="method"):
        soft_nms(torch.rand(0, 4), torch.rand(0), method="hard")

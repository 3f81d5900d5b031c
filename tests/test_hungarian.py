"""hungarian_match against a brute-force search over all assignments, and DETR's
HungarianMatcher against a per-pair loop and a torchvision-based cost matrix."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torchvision.ops as tvo
from scipy.optimize import linear_sum_assignment

from cv_course.ops import HungarianMatcher, hungarian_match
from cv_course.ops.hungarian import set_matching_example


def brute_force_min(cost: torch.Tensor) -> float:
    """Least total cost over every one-to-one assignment of min(N, G) pairs."""
    c = cost.double().cpu().tolist()
    N, G = cost.shape
    if N >= G:  # each column picks a distinct row
        perms = itertools.permutations(range(N), G)
        return min(sum(c[r][j] for j, r in enumerate(p)) for p in perms)
    perms = itertools.permutations(range(G), N)  # each row picks a distinct column
    return min(sum(c[i][col] for i, col in enumerate(p)) for p in perms)


def check_assignment(cost, rows, cols):
    N, G = cost.shape
    K = min(N, G)
    assert rows.dtype == cols.dtype == torch.int64
    assert rows.device == cols.device == cost.device
    assert rows.shape == cols.shape == (K,)
    assert len(set(rows.tolist())) == K and len(set(cols.tolist())) == K
    assert rows.tolist() == sorted(rows.tolist())
    assert all(0 <= r < N for r in rows.tolist()) and all(0 <= c < G for c in cols.tolist())


SHAPES = [(1, 1), (3, 3), (6, 6), (6, 4), (4, 6), (5, 1), (1, 5), (2, 6), (6, 2)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_optimal_like_brute_force(shape, dtype, device):
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        cost = torch.randn(shape, generator=gen, dtype=torch.float64).to(device, dtype)
        rows, cols = hungarian_match(cost)
        check_assignment(cost, rows, cols)
        total = float(cost[rows, cols].double().sum())
        assert total == pytest.approx(brute_force_min(cost), abs=1e-5)


@pytest.mark.parametrize("shape", [(4, 4), (6, 3), (3, 6), (5, 5)])
def test_ties(shape, device):
    ones = torch.ones(shape, device=device)
    rows, cols = hungarian_match(ones)
    check_assignment(ones, rows, cols)
    assert float(ones[rows, cols].sum()) == min(shape)
    for seed in range(5):  # small integers: many optimal assignments
        gen = torch.Generator().manual_seed(seed)
        cost = torch.randint(0, 3, shape, generator=gen).to(device)  # int64 costs work too
        rows, cols = hungarian_match(cost)
        check_assignment(cost, rows, cols)
        assert int(cost[rows, cols].sum()) == brute_force_min(cost)
        for dtype in (torch.float16, torch.bfloat16):  # small integers are exact in both
            rows, cols = hungarian_match(cost.to(dtype))
            assert int(cost[rows, cols].sum()) == brute_force_min(cost)


def test_greedy_is_not_optimal():
    """Why an assignment solver: the cheapest pair first costs 1 + 10 = 11; the optimum is 4."""
    cost = torch.tensor([[1.0, 2.0], [2.0, 10.0]])
    rows, cols = hungarian_match(cost)
    assert (rows.tolist(), cols.tolist()) == ([0, 1], [1, 0])


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 0)])
def test_empty(shape, device):
    for dtype in (torch.float32, torch.float64):
        rows, cols = hungarian_match(torch.zeros(shape, dtype=dtype, device=device))
        assert rows.shape == cols.shape == (0,)
        assert rows.dtype == cols.dtype == torch.int64 and rows.device.type == device.type


def test_forbidden_pairs_and_errors():
    inf = math.inf
    cost = torch.tensor([[0.0, inf], [inf, 5.0], [1.0, 1.0]])  # row 0 must take column 0
    rows, cols = hungarian_match(cost)
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 0, 2: 1}
    with pytest.raises(ValueError, match="forbidden"):
        hungarian_match(torch.tensor([[inf, inf], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="NaN"):
        hungarian_match(torch.tensor([[0.0, math.nan]]))
    with pytest.raises(ValueError, match=r"matrix \[N, G\]"):
        hungarian_match(torch.zeros(2, 3, 4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        hungarian_match([[0.0, 1.0]])
    rows, _ = hungarian_match(torch.rand(3, 2, requires_grad=True))  # detached inside
    assert len(rows) == 2


# --------------------------------------------------------------------------- matcher

def random_batch(sizes, Q=6, C=4, dtype=torch.float32, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    B = len(sizes)
    logits = torch.randn(B, Q, C + 1, generator=gen, dtype=torch.float64)

    def boxes(n):  # normalized (cx, cy, w, h) with w, h > 0
        cxcy = torch.rand(n, 2, generator=gen, dtype=torch.float64)
        wh = 0.05 + 0.5 * torch.rand(n, 2, generator=gen, dtype=torch.float64)
        return torch.cat([cxcy, wh], -1)

    outputs = {"pred_logits": logits.to(device, dtype),
               "pred_boxes": boxes(B * Q).view(B, Q, 4).to(device, dtype)}
    targets = [{"labels": torch.randint(0, C, (n,), generator=gen).to(device),
                "boxes": boxes(n).to(device, dtype)} for n in sizes]
    return outputs, targets


def loop_cost(outputs, targets, w_class=1.0, w_bbox=5.0, w_giou=2.0):
    """Each entry of the batch cost matrix on its own, from the definitions, in float64."""
    def xyxy(b):
        cx, cy, w, h = b
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2

    def giou(a, b):
        (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = xyxy(a), xyxy(b)
        inter = max(0, min(ax2, bx2) - max(ax1, bx1)) * max(0, min(ay2, by2) - max(ay1, by1))
        union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
        hull = (max(ax2, bx2) - min(ax1, bx1)) * (max(ay2, by2) - min(ay1, by1))
        return inter / union - (hull - union) / hull

    logits = outputs["pred_logits"].double().cpu().tolist()
    pboxes = outputs["pred_boxes"].double().cpu().tolist()
    labels = [int(x) for t in targets for x in t["labels"].tolist()]
    tboxes = [b for t in targets for b in t["boxes"].double().cpu().tolist()]
    B, Q = len(logits), len(logits[0])
    out = torch.zeros(B, Q, len(labels), dtype=torch.float64)
    for b in range(B):
        for q in range(Q):
            z = logits[b][q]
            probs = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
            for j, (lab, tb) in enumerate(zip(labels, tboxes)):
                l1 = sum(abs(u - v) for u, v in zip(pboxes[b][q], tb))
                out[b, q, j] = -w_class * probs[lab] + w_bbox * l1 - w_giou * giou(pboxes[b][q], tb)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weights", [(1, 5, 2), (1, 0, 0), (0, 1, 0), (0, 0, 1), (2, 0.5, 3)])
def test_cost_matrix_equals_loop(dtype, weights, device):
    outputs, targets = random_batch([2, 0, 3], dtype=dtype, device=device, seed=1)
    cost = HungarianMatcher(*weights).cost_matrix(outputs, targets)
    assert cost.shape == (3, 6, 5) and cost.dtype == dtype and cost.device.type == device.type
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(cost.double().cpu(), loop_cost(outputs, targets, *weights), **tol)


def test_cost_matrix_equals_torchvision_reference():
    outputs, targets = random_batch([4, 1, 3, 2], Q=10, C=7, dtype=torch.float64, seed=2)
    logits, boxes = outputs["pred_logits"].flatten(0, 1), outputs["pred_boxes"].flatten(0, 1)
    labels = torch.cat([t["labels"] for t in targets])
    tboxes = torch.cat([t["boxes"] for t in targets])
    ref = (-logits.softmax(-1)[:, labels] + 5 * torch.cdist(boxes, tboxes, p=1)
           - 2 * tvo.generalized_box_iou(tvo.box_convert(boxes, "cxcywh", "xyxy"),
                                         tvo.box_convert(tboxes, "cxcywh", "xyxy")))
    cost = HungarianMatcher().cost_matrix(outputs, targets)
    torch.testing.assert_close(cost, ref.view(4, 10, -1))


@pytest.mark.parametrize("sizes,Q", [([3, 0, 5, 1], 6), ([4, 2], 3), ([0, 0], 4), ([6], 6)])
def test_matches_are_optimal_per_image(sizes, Q, device):
    outputs, targets = random_batch(sizes, Q=Q, device=device, seed=sum(sizes))
    matcher = HungarianMatcher()
    cost = matcher.cost_matrix(outputs, targets).cpu()
    indices = matcher(outputs, targets)
    assert len(indices) == len(sizes)
    start = 0
    for b, (n, (pred_idx, tgt_idx)) in enumerate(zip(sizes, indices)):
        block = cost[b, :, start:start + n]  # [Q, n]
        start += n
        check_assignment(block.to(device), pred_idx, tgt_idx)
        assert pred_idx.shape == (min(Q, n),)
        if n:
            total = float(block[pred_idx.cpu(), tgt_idx.cpu()].sum())
            assert total == pytest.approx(brute_force_min(block), abs=1e-4)
        # The same as matching that image alone.
        one_out = {k: v[b:b + 1] for k, v in outputs.items()}
        alone = matcher(one_out, [targets[b]])[0]
        assert alone[0].tolist() == pred_idx.tolist() and alone[1].tolist() == tgt_idx.tolist()


def test_empty_batch_and_non_contiguous(device):
    outputs, targets = random_batch([2, 3], Q=4, device=device, seed=5)
    empty = {k: v[:0] for k, v in outputs.items()}
    assert HungarianMatcher()(empty, []) == []
    assert HungarianMatcher().cost_matrix(empty, []).shape == (0, 4, 0)
    # Queries taken from a [Q, B, ...] layout (as a transformer decoder emits them).
    flipped = {k: v.transpose(0, 1).contiguous().transpose(0, 1) for k, v in outputs.items()}
    assert not flipped["pred_boxes"].is_contiguous()
    m = HungarianMatcher()
    torch.testing.assert_close(m.cost_matrix(flipped, targets), m.cost_matrix(outputs, targets))


def test_block_diagonal_split_matters():
    """Image 0's query 0 sits exactly on image 1's object, and image 1's query 1 on image
    0's. Solving the whole [B*Q, T] matrix at once pairs them across images; per image,
    each object goes to its own image's nearby query."""
    A, Bx = [0.25, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2]
    outputs = {
        "pred_logits": torch.zeros(2, 2, 3),  # uniform class probabilities
        "pred_boxes": torch.tensor([[Bx, [0.3, 0.3, 0.2, 0.2]],       # image 0
                                    [[0.7, 0.7, 0.2, 0.2], A]]),      # image 1
    }
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([A])},
               {"labels": torch.tensor([1]), "boxes": torch.tensor([Bx])}]
    matcher = HungarianMatcher()
    (p0, t0), (p1, t1) = matcher(outputs, targets)
    assert (p0.tolist(), t0.tolist()) == ([1], [0])  # image 0's best own query
    assert (p1.tolist(), t1.tolist()) == ([0], [0])  # image 1's own query near its object
    # The check has teeth: the unsplit solve pairs across images.
    rows, cols = linear_sum_assignment(matcher.cost_matrix(outputs, targets).view(4, 2).numpy())
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 1, 3: 0}


def test_hand_example():
    """Three queries, two objects: query 2 is on object 0, query 0 on object 1,
    query 1 says 'no object'."""
    # scores of (class 0, class 1, no object)
    logits = torch.tensor([[[0.0, 4.0, 0.0], [0.0, 0.0, 4.0], [4.0, 0.0, 0.0]]])
    boxes = torch.tensor([[[0.7, 0.7, 0.2, 0.2], [0.5, 0.5, 0.1, 0.1], [0.3, 0.3, 0.2, 0.2]]])
    targets = [{"labels": torch.tensor([0, 1]),
                "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])}]
    (pred_idx, tgt_idx), = HungarianMatcher()({"pred_logits": logits, "pred_boxes": boxes}, targets)
    assert (pred_idx.tolist(), tgt_idx.tolist()) == ([0, 2], [1, 0])


def test_matcher_errors():
    outputs, targets = random_batch([2, 1], C=4)
    m = HungarianMatcher()
    with pytest.raises(ValueError, match="list of B = 2"):
        m(outputs, targets[:1])
    bad = [targets[0], {"labels": torch.tensor([4]), "boxes": targets[1]["boxes"]}]
    with pytest.raises(ValueError, match="no-object class"):
        m(outputs, bad)
    bad = [targets[0], {"labels": torch.tensor([0.0]), "boxes": targets[1]["boxes"]}]
    with pytest.raises(ValueError, match="integers"):
        m(outputs, bad)
    bad = [targets[0], {"labels": torch.tensor([0, 1]), "boxes": targets[1]["boxes"]}]
    with pytest.raises(ValueError, match=r"boxes \[T, 4\]"):
        m(outputs, bad)
    with pytest.raises(ValueError, match=r"pred_boxes \[B, Q, 4\]"):
        m({**outputs, "pred_boxes": outputs["pred_boxes"][..., :3]}, targets)
    with pytest.raises(ValueError, match="non-zero"):
        HungarianMatcher(0, 0, 0)


def test_set_matching_example(capsys):
    ex = set_matching_example()
    printed = capsys.readouterr().out
    assert printed.strip() == ex["text"]
    # The docstring shows exactly what is printed.
    assert ex["text"] in "\n".join(line.strip() for line in
                                   set_matching_example.__doc__.splitlines())
    assert (ex["pred_idx"].tolist(), ex["tgt_idx"].tolist()) == ([0, 2], [0, 1])
    cat, dog, dup = ex["terms"][0], ex["terms"][2], ex["terms"][1]
    e = math.e
    # Hand-computed: softmax of (3, 0, 0), (0, 2, 0), (2, 0, 1); boxes 0.02 / 0.07 off.
    assert cat == pytest.approx((math.log(1 + 2 / e ** 3), 0.02, 1 - 0.036 / 0.044), abs=1e-6)
    assert dog == pytest.approx((math.log(1 + 2 / e ** 2), 0.07, 1 - 0.04 / 0.05), abs=1e-6)
    assert dup == pytest.approx((math.log(e ** 2 + 1 + e) - 1,), abs=1e-6)
    assert set_matching_example(verbose=False)["text"] == ex["text"]
    assert capsys.readouterr().out == ""

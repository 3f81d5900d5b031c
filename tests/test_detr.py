"""DETR: the matching cost and set loss against loop references, torchvision's GIoU and a
brute-force optimum; the set criterion over a batch; the model's interface, its errors,
and that a briefly trained model's predictions depend on the image (no constant box)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torchvision.ops as tvo
from scipy.optimize import linear_sum_assignment

from cv_course.experiments.detection import detector_names, make_scenes, DetectionSetup
from cv_course.experiments.detr import (detr_optimizer, matching_example, query_predictions)
from cv_course.models.detection.detr import (DETR, DETRConfig, reference_grid,
                                             sine_position_encoding)
from cv_course.models.detection.detr_loss import SetCriterion, detr_cost_matrix, detr_set_loss
from cv_course.ops import HungarianMatcher, hungarian_match

TINY = DETRConfig(pretrained=False, num_queries=6, d_model=16, heads=2, encoder_layers=1,
                  decoder_layers=2, dim_feedforward=32)


def random_set(Q, G, C=4, seed=0, dtype=torch.float32, device="cpu"):
    """Logits [Q, C + 1], boxes [Q, 4] and targets [G], [G, 4], boxes normalized cxcywh."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(Q, C + 1, generator=g, dtype=torch.float64)
    boxes = torch.cat([torch.rand(Q, 2, generator=g, dtype=torch.float64) * 0.6 + 0.2,
                       torch.rand(Q, 2, generator=g, dtype=torch.float64) * 0.3 + 0.05], 1)
    labels = torch.randint(C, (G,), generator=g)
    tboxes = torch.cat([torch.rand(G, 2, generator=g, dtype=torch.float64) * 0.6 + 0.2,
                        torch.rand(G, 2, generator=g, dtype=torch.float64) * 0.3 + 0.05], 1)
    to = lambda t: t.to(device, dtype)  # noqa: E731
    return to(logits), to(boxes), labels.to(device), to(tboxes)


def loop_cost(logits, boxes, labels, tboxes, wc=1.0, wb=5.0, wg=2.0):
    """The cost one pair at a time, GIoU from torchvision."""
    Q, G = len(logits), len(labels)
    xyxy = lambda b: tvo.box_convert(b[None].double(), "cxcywh", "xyxy")  # noqa: E731
    cost = torch.zeros(Q, G, dtype=torch.float64)
    for q in range(Q):
        p = logits[q].double().softmax(-1)
        for t in range(G):
            l1 = (boxes[q].double() - tboxes[t].double()).abs().sum()
            giou = tvo.generalized_box_iou(xyxy(boxes[q]), xyxy(tboxes[t]))[0, 0]
            cost[q, t] = -wc * p[labels[t]] + wb * l1 - wg * giou
    return cost


def loop_set_loss(logits, boxes, labels, tboxes, rows, cols, eos=0.1):
    """The set loss written out: weighted mean cross-entropy, summed box terms / max(G, 1)."""
    Q, C1 = logits.shape
    match = dict(zip(rows.tolist(), cols.tolist()))
    num = den = 0.0
    for q in range(Q):
        cls = int(labels[match[q]]) if q in match else C1 - 1
        w = eos if cls == C1 - 1 else 1.0
        num += w * -float(logits[q].double().log_softmax(-1)[cls])
        den += w
    l1 = giou = 0.0
    for q, t in match.items():
        l1 += float((boxes[q].double() - tboxes[t].double()).abs().sum())
        a = tvo.box_convert(boxes[q][None].double(), "cxcywh", "xyxy")
        b = tvo.box_convert(tboxes[t][None].double(), "cxcywh", "xyxy")
        giou += 1 - float(tvo.generalized_box_iou(a, b)[0, 0])
    n = max(len(labels), 1)
    return {"loss_ce": num / den, "loss_bbox": l1 / n, "loss_giou": giou / n}


def brute_force_min(cost):
    Q, G = cost.shape
    c = cost.double().tolist()
    if Q >= G:
        perms = itertools.permutations(range(Q), G)
        return min(sum(c[r][j] for j, r in enumerate(p)) for p in perms)
    return min(sum(c[i][j] for i, j in enumerate(p)) for p in itertools.permutations(range(G), Q))


SHAPES = [(5, 3), (4, 4), (3, 5), (6, 1), (1, 4), (4, 0)]


@pytest.mark.parametrize("Q,G", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cost_matrix_loop_and_matcher(Q, G, dtype, device):
    logits, boxes, labels, tboxes = random_set(Q, G, seed=Q * 10 + G, dtype=dtype, device=device)
    cost = detr_cost_matrix(logits, boxes, labels, tboxes)
    assert cost.shape == (Q, G) and cost.dtype == dtype and cost.device == logits.device
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(cost.cpu().double(), loop_cost(*(t.cpu() for t in (
        logits, boxes, labels, tboxes))), atol=tol, rtol=tol)
    weighted = detr_cost_matrix(logits, boxes, labels, tboxes, 0.5, 2.0, 3.0)
    torch.testing.assert_close(weighted.cpu().double(), loop_cost(*(t.cpu() for t in (
        logits, boxes, labels, tboxes)), 0.5, 2.0, 3.0), atol=tol, rtol=tol)
    batch = HungarianMatcher().cost_matrix({"pred_logits": logits[None], "pred_boxes": boxes[None]},
                                           [{"labels": labels, "boxes": tboxes}])[0]
    assert torch.equal(cost, batch)


@pytest.mark.parametrize("Q,G", SHAPES)
def test_matched_cost_is_the_optimum(Q, G):
    for seed in range(3):
        cost = detr_cost_matrix(*random_set(Q, G, seed=seed, dtype=torch.float64))
        rows, cols = hungarian_match(cost)
        assert len(rows) == min(Q, G)
        if G:
            assert float(cost[rows, cols].sum()) == pytest.approx(brute_force_min(cost), abs=1e-9)
            r, c = linear_sum_assignment(cost.numpy())
            assert float(cost[rows, cols].sum()) == pytest.approx(float(cost.numpy()[r, c].sum()))


@pytest.mark.parametrize("Q,G", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_set_loss_loop_reference(Q, G, dtype, device):
    logits, boxes, labels, tboxes = random_set(Q, G, seed=Q + 7 * G, dtype=dtype, device=device)
    rows, cols = hungarian_match(detr_cost_matrix(logits, boxes, labels, tboxes))
    for eos in (0.1, 1.0):
        got = detr_set_loss(logits, boxes, labels, tboxes, rows, cols, no_object_weight=eos)
        want = loop_set_loss(*(t.cpu() for t in (logits, boxes, labels, tboxes, rows, cols)), eos)
        assert set(got) == {"loss_ce", "loss_bbox", "loss_giou"}
        for k, v in got.items():
            assert v.shape == () and v.dtype == dtype and v.device == logits.device
            assert float(v) == pytest.approx(want[k], rel=1e-5 if dtype == torch.float32 else 1e-10,
                                             abs=1e-6)
    if G == 0:  # no objects: every query learns "no object", no box loss
        assert float(got["loss_bbox"]) == float(got["loss_giou"]) == 0.0


def test_set_loss_any_pairs_and_gradcheck():
    """The pairs are given, not recomputed: a non-optimal matching changes the loss."""
    logits, boxes, labels, tboxes = random_set(4, 3, dtype=torch.float64)
    rows, cols = torch.tensor([0, 2, 3]), torch.tensor([2, 0, 1])
    got = detr_set_loss(logits, boxes, labels, tboxes, rows, cols)
    want = loop_set_loss(logits, boxes, labels, tboxes, rows, cols)
    for k in want:
        assert float(got[k]) == pytest.approx(want[k], rel=1e-12)
    logits.requires_grad_(), boxes.requires_grad_()
    total = lambda lg, bx: sum(detr_set_loss(lg, bx, labels, tboxes, rows, cols).values())  # noqa
    assert torch.autograd.gradcheck(total, (logits, boxes))


def test_set_loss_errors():
    logits, boxes, labels, tboxes = random_set(3, 2)
    ok = (torch.tensor([0, 1]), torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="no object"):
        detr_set_loss(logits, boxes, torch.tensor([0, 4]), tboxes, *ok)
    with pytest.raises(ValueError, match="one-to-one"):
        detr_set_loss(logits, boxes, labels, tboxes, torch.tensor([0, 0]), torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="cols in 0..1"):
        detr_set_loss(logits, boxes, labels, tboxes, torch.tensor([0, 1]), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"\[Q, 4\]"):
        detr_cost_matrix(logits, boxes[:2], labels, tboxes)
    with pytest.raises(ValueError, match="integer"):
        detr_cost_matrix(logits, boxes, labels.float(), tboxes)


def test_criterion_batch_block_diagonal_and_aux():
    """The batch loss equals a loop over images and queries, each image matched on its own."""
    C, Q, sizes = 4, 5, [3, 0, 2]
    sets = [random_set(Q, G, C, seed=10 + b, dtype=torch.float64) for b, G in enumerate(sizes)]
    layer = {"pred_logits": torch.stack([s[0] for s in sets]),
             "pred_boxes": torch.stack([s[1] for s in sets])}
    targets = [{"labels": s[2], "boxes": s[3]} for s in sets]
    aux = {"pred_logits": layer["pred_logits"].flip(1), "pred_boxes": layer["pred_boxes"].flip(1)}
    crit = SetCriterion(C)
    losses = crit({**layer, "aux_outputs": [aux]}, targets)
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou",
                           "loss_ce_0", "loss_bbox_0", "loss_giou_0"}
    for out, suffix in ((layer, ""), (aux, "_0")):
        num = den = l1 = giou = 0.0
        for b, (logits, boxes, labels, tboxes) in enumerate(sets):
            logits, boxes = out["pred_logits"][b], out["pred_boxes"][b]
            rows, cols = hungarian_match(detr_cost_matrix(logits, boxes, labels, tboxes))
            ref = loop_set_loss(logits, boxes, labels, tboxes, rows, cols)
            w = 0.1 * (Q - len(rows)) + len(rows)  # the weights of image b's Q predictions
            num, den = num + ref["loss_ce"] * w, den + w
            l1, giou = l1 + ref["loss_bbox"] * max(len(labels), 1), giou + ref["loss_giou"] * max(
                len(labels), 1)
        G = sum(sizes)
        assert float(losses["loss_ce" + suffix]) == pytest.approx(num / den, rel=1e-10)
        assert float(losses["loss_bbox" + suffix]) == pytest.approx(5 * l1 / G, rel=1e-10)
        assert float(losses["loss_giou" + suffix]) == pytest.approx(2 * giou / G, rel=1e-10)


def test_sine_position_encoding_loop():
    H, W, d = 3, 5, 8
    pos = sine_position_encoding(H, W, d, dtype=torch.float64)
    assert pos.shape == (H * W, d)
    for i, j in itertools.product(range(H), range(W)):
        y, x = (i + 0.5) / H * 2 * math.pi, (j + 0.5) / W * 2 * math.pi  # cell centres
        f = [10000 ** (k / (d // 4)) for k in range(d // 4)]
        want = ([math.sin(y / v) for v in f] + [math.cos(y / v) for v in f]
                + [math.sin(x / v) for v in f] + [math.cos(x / v) for v in f])
        torch.testing.assert_close(pos[i * W + j], torch.tensor(want, dtype=torch.float64))
    assert len({tuple(p.tolist()) for p in pos}) == H * W  # every cell is told apart


def test_reference_grid():
    pts = reference_grid(10)  # 4 columns, 3 rows
    assert pts.shape == (10, 2) and bool(((pts > 0) & (pts < 1)).all())
    assert len({tuple(p.tolist()) for p in pts}) == 10
    first = [[0.125, 1 / 6], [0.375, 1 / 6], [0.625, 1 / 6], [0.875, 1 / 6], [0.125, 0.5]]
    torch.testing.assert_close(pts[:5], torch.tensor(first))


def scenes(n, seed):
    return make_scenes(n, seed, DetectionSetup())


VARIANTS = {"default": {}, "refine": {"box_refine": True},
            "plain": {"reference_points": False, "attention_sigma": 0},
            "groups": {"groups": 3}, "refine_groups": {"box_refine": True, "groups": 2},
            "plain_groups": {"reference_points": False, "attention_sigma": 0, "groups": 2},
            "selection": {"box_refine": True, "query_selection": True},
            "selection_groups": {"box_refine": True, "query_selection": True, "groups": 2}}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_model_interface(variant, device):
    torch.manual_seed(0)
    config = TINY.replace(**VARIANTS[variant])
    model = DETR(config).to(device)
    images, targets = scenes(3, 5)
    images = [im.to(device) for im in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    targets[1] = {"boxes": targets[1]["boxes"][:0], "labels": targets[1]["labels"][:0]}  # empty
    model.train()
    losses = model(images, targets)
    suffixes = ("", "_0", "_enc") if config.query_selection else ("", "_0")
    assert set(losses) == {f"loss_{n}{s}" for n in ("ce", "bbox", "giou") for s in suffixes}
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.query_pos.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(images)
    for o in out:
        assert o["boxes"].shape == (TINY.num_queries, 4) and o["boxes"].device == images[0].device
        assert o["labels"].dtype == torch.int64 and set(o["labels"].tolist()) <= {1, 2, 3, 4}
        assert bool((o["boxes"] >= 0).all() and (o["boxes"] <= 128).all())
        assert bool((o["boxes"][:, 2:] >= o["boxes"][:, :2]).all())
        assert bool(((o["scores"] > 0) & (o["scores"] < 1)).all())


@pytest.mark.parametrize("refine", [False, True])
def test_query_groups_are_independent(refine):
    """Group DETR: in training each group only sees itself, so group 0 predicts exactly what
    the model predicts at inference (group 0 alone), and changing another group's queries
    changes nothing in group 0; each group is matched and scored like a copy of the image."""
    torch.manual_seed(0)
    model = DETR(TINY.replace(groups=3, box_refine=refine))
    Q = TINY.num_queries
    assert model.query_pos.weight.shape == (3 * Q, TINY.d_model)
    images, targets = scenes(2, 7)
    x = torch.stack(images)
    def train_mode():  # the decoder in training (all groups), BatchNorm as at inference
        model.train()
        model.backbone.eval()
        return model

    with torch.no_grad():
        train = train_mode().predict_sets(x)
        infer = model.eval().predict_sets(x)
        assert train["pred_boxes"].shape == (2, 3 * Q, 4) and infer["pred_boxes"].shape == (2, Q, 4)
        for k in ("pred_logits", "pred_boxes"):
            torch.testing.assert_close(train[k][:, :Q], infer[k])
        model.query_pos.weight[Q:] += 1.0  # other groups only
        again = train_mode().predict_sets(x)
    torch.testing.assert_close(again["pred_boxes"][:, :Q], train["pred_boxes"][:, :Q])
    assert not torch.allclose(again["pred_boxes"][:, Q:], train["pred_boxes"][:, Q:])
    # the loss is the mean over groups of each group's set loss against the image's objects
    losses = model.train()(images, targets)
    norm = model._normalize(targets, x)
    out = model.predict_sets(x)
    per_group = []
    for g in range(3):
        sl = slice(g * Q, (g + 1) * Q)
        sub = {"pred_logits": out["pred_logits"][:, sl], "pred_boxes": out["pred_boxes"][:, sl]}
        per_group.append(model.criterion.layer_loss(sub, norm)["loss_ce"])
    torch.testing.assert_close(losses["loss_ce"], sum(per_group) / 3)


def test_query_selection_takes_the_most_confident_cells():
    """The reference points start at the box centres of the Q encoder cells whose best real
    class is most probable (a loop over the images and cells as the reference)."""
    torch.manual_seed(0)
    model = DETR(TINY.replace(box_refine=True, query_selection=True, groups=2)).eval()
    memory = torch.randn(2, 16, TINY.d_model)  # B = 2 images, a 4 x 4 map
    with torch.no_grad():
        enc, ref = model._select(memory, 4, 4, 2 * TINY.num_queries)
    Q = TINY.num_queries
    assert ref.shape == (2, 2 * Q, 2)
    for b in range(2):
        prob = enc["pred_logits"][b].softmax(-1)
        best = sorted(range(16), key=lambda i: -float(prob[i, :-1].max()))[:Q]
        expected = enc["pred_boxes"][b, best, :2]  # [Q, 2] (cx, cy)
        torch.testing.assert_close(ref[b, :Q].sigmoid(), expected)
        torch.testing.assert_close(ref[b, Q:], ref[b, :Q])  # every group starts there


def test_postprocess_label_mapping():
    """Score = best real class even when 'no object' is likelier; class index c -> label c + 1."""
    logits = torch.tensor([[[0.0, 2.0, 0.0, 0.0, 5.0], [3.0, 0.0, 0.0, 0.0, 0.0]]])  # [1, 2, 5]
    boxes = torch.tensor([[[0.5, 0.5, 0.5, 0.25], [0.25, 0.75, 0.1, 0.1]]])
    out = DETR.postprocess({"pred_logits": logits, "pred_boxes": boxes}, (64, 128))[0]
    assert out["labels"].tolist() == [2, 1]
    p = logits[0].softmax(-1)
    torch.testing.assert_close(out["scores"], torch.stack([p[0, 1], p[1, 0]]))
    torch.testing.assert_close(out["boxes"], torch.tensor([[32.0, 24.0, 96.0, 40.0],
                                                          [25.6, 44.8, 38.4, 51.2]]))


def test_model_errors():
    model = DETR(TINY)
    images, targets = scenes(2, 6)
    with pytest.raises(ValueError, match="needs targets"):
        model.train()(images)
    with pytest.raises(ValueError, match="1..4"):
        model.train()(images, [{**targets[0], "labels": targets[0]["labels"] * 0}, targets[1]])
    with pytest.raises(ValueError, match="one size"):
        model.eval()([images[0], images[1][:, :64]])
    with pytest.raises(ValueError, match="multiples of 8"):
        model.eval()([images[0][:, :100, :100]])
    with pytest.raises(ValueError, match="divisible"):
        TINY.replace(d_model=18)
    with pytest.raises(ValueError, match="reference_points"):
        TINY.replace(reference_points=False)  # the attention prior is centred on them
    with pytest.raises(ValueError, match="reference_points"):
        TINY.replace(reference_points=False, attention_sigma=0, box_refine=True)
    with pytest.raises(ValueError, match="groups"):
        TINY.replace(groups=0)
    with pytest.raises(ValueError, match="box_refine"):
        TINY.replace(query_selection=True)


def test_registered():
    assert "detr" in detector_names()


def matched_iou(predictions, targets):
    """Mean IoU of the best one-to-one pairing of predicted and true boxes, over the images."""
    ious = []
    for boxes, t in zip(predictions, targets):
        iou = tvo.box_iou(boxes, t["boxes"])  # [Q, G]
        rows, cols = linear_sum_assignment(-iou.numpy())
        ious.append(float(iou[rows, cols].mean()))
    return sum(ious) / len(ious)


@pytest.mark.parametrize("variant", ["default", "selection_groups"])
def test_briefly_trained_predictions_depend_on_the_image(variant):
    """DETR's failure on small data: every query predicts one constant box whatever the image.
    After 80 short steps the held-out boxes must fit the objects better than each query's
    average box over those images would (a collapsed model would tie with it); also with
    refinement, query selection and query groups on."""
    setup = DetectionSetup(size=64, max_objects=3, lr=3e-3)  # small scenes: a fast test
    images, targets = make_scenes(64, 0, setup)
    val, val_targets = make_scenes(32, 1, setup)
    torch.manual_seed(0)
    model = DETR(TINY.replace(**VARIANTS[variant]))
    opt = detr_optimizer(model, setup)
    model.train()
    for step in range(80):
        i = (step * 8) % 64
        loss = sum(model(images[i:i + 8], targets[i:i + 8]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        boxes = torch.stack([o["boxes"] for o in model(val)])  # [N, Q, 4]
    constant = boxes.mean(0, keepdim=True).expand_as(boxes)  # each query's average box
    fit, baseline = matched_iou(boxes, val_targets), matched_iou(constant, val_targets)
    assert fit > baseline + 0.05, f"held-out boxes barely depend on the image: IoU {fit:.3f} " \
        f"against {baseline:.3f} for constant boxes"
    spread = query_predictions(model, val)["centers"].std(0).mean()  # pixels
    assert spread > 1.0


def test_matching_example():
    torch.manual_seed(0)
    model = DETR(TINY)
    (image,), (target,) = scenes(1, 3)
    ex = matching_example(model, image, target)
    G = len(target["labels"])
    assert ex["cost"].shape == (TINY.num_queries, G)
    assert len(ex["rows"]) == min(TINY.num_queries, G)
    assert float(ex["cost"][ex["rows"], ex["cols"]].sum()) == pytest.approx(
        brute_force_min(ex["cost"]), abs=1e-4)
    assert model.training  # left as it was

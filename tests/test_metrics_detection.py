"""Detection metrics against pycocotools' COCOeval (the oracle), plain-loop
references, scikit-learn, and a hand-worked precision-recall example.

The COCO objects are built in memory (no files, nothing downloaded); box
coordinates are multiples of 1/4, so (x, y, w, h) -> (x1, y1, x2, y2) is exact
and every IoU is the same float64 number on both sides.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params
from sklearn.metrics import average_precision_score

from cv_course.metrics import MeanAveragePrecision, average_precision, mean_average_precision, precision_recall
from cv_course.metrics.detection import (
    box_iou_crowd,
    coco_linspace,
    evaluate,
    greedy_match,
    greedy_match_loop,
    mask_iou_crowd,
)
from cv_course.ops import box_iou

KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
        "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")


# ----------------------------------------------------------------------------- the oracle
def _rle(mask: torch.Tensor) -> dict:
    return mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))


def coco_eval(preds, targets, iou_type="bbox", iou_thresholds=None, max_dets=None) -> COCOeval:
    """pycocotools' COCOeval run (evaluate, accumulate, summarize) on our dicts, silently."""
    images, anns, dets, labels = [], [], [], set()
    for i, (p, t) in enumerate(zip(preds, targets)):
        image = {"id": i + 1}
        if iou_type == "segm":
            image["height"], image["width"] = t["masks"].shape[1:]
        images.append(image)
        crowd = t.get("iscrowd", torch.zeros(len(t["labels"])))
        for k in range(len(t["labels"])):
            ann = {"id": len(anns) + 1, "image_id": i + 1, "category_id": int(t["labels"][k]),
                   "iscrowd": int(crowd[k])}
            if iou_type == "bbox":
                x1, y1, x2, y2 = t["boxes"][k].double().tolist()
                ann["bbox"], ann["area"] = [x1, y1, x2 - x1, y2 - y1], (x2 - x1) * (y2 - y1)
            else:
                ann["segmentation"], ann["area"] = _rle(t["masks"][k]), float(t["masks"][k].sum())
            if t.get("area") is not None:
                ann["area"] = float(t["area"][k])
            anns.append(ann)
            labels.add(int(t["labels"][k]))
        for k in range(len(p["labels"])):
            det = {"image_id": i + 1, "category_id": int(p["labels"][k]), "score": float(p["scores"][k])}
            if iou_type == "bbox":
                x1, y1, x2, y2 = p["boxes"][k].double().tolist()
                det["bbox"] = [x1, y1, x2 - x1, y2 - y1]
            else:
                det["segmentation"] = _rle(p["masks"][k])
            dets.append(det)
            labels.add(int(p["labels"][k]))
    categories = [{"id": c} for c in sorted(labels)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": categories}
        gt.createIndex()
        if dets:
            dt = gt.loadRes(dets)
        else:  # loadRes cannot take an empty list
            dt = COCO()
            dt.dataset = {"images": images, "annotations": [], "categories": categories}
            dt.createIndex()
        E = COCOeval(gt, dt, iou_type)
        if iou_thresholds is not None:
            E.params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
        if max_dets is not None:
            E.params.maxDets = list(max_dets)
        E.evaluate()
        E.accumulate()
        E.summarize()
    return E


def assert_same_as_coco(preds, targets, iou_type="bbox", iou_thresholds=None, max_dets=None):
    """Our 12 numbers, precision / recall / scores tables and per-class AP equal COCOeval's."""
    E = coco_eval(preds, targets, iou_type, iou_thresholds, max_dets)
    kwargs = {"iou_thresholds": iou_thresholds}
    if max_dets is not None:
        kwargs["max_detection_thresholds"] = max_dets
    ours = evaluate(preds, targets, iou_type, **kwargs)
    np.testing.assert_allclose(ours.precision.cpu().numpy(), E.eval["precision"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.recall.cpu().numpy(), E.eval["recall"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.scores.cpu().numpy(), E.eval["scores"], rtol=0, atol=1e-6)
    summary = mean_average_precision(preds, targets, iou_type, class_metrics=True, **kwargs)
    m = E.params.maxDets
    keys = KEYS[:6] + (f"mar_{m[0]}", f"mar_{m[1]}", f"mar_{m[2]}") + KEYS[9:]
    stats = E.stats.copy()
    p = E.eval["precision"][:, :, :, 0, -1]  # [T, R, K]
    if 100 not in m:  # COCO's summarize hard-codes maxDets=100 for stats[0]; we use the largest
        stats[0] = p[p > -1].mean() if (p > -1).any() else -1
    np.testing.assert_allclose([float(summary[k]) for k in keys], stats, rtol=0, atol=1e-12)
    per_class = [np.mean(p[:, :, k][p[:, :, k] > -1]) if (p[:, :, k] > -1).any() else -1
                 for k in range(p.shape[2])]
    np.testing.assert_allclose(summary["map_per_class"].cpu().numpy(), per_class, rtol=0, atol=1e-12)
    assert summary["classes"].tolist() == E.params.catIds
    return summary, E


# ----------------------------------------------------------------------------- scenes
def _quarter(x: torch.Tensor) -> torch.Tensor:
    return (x * 4).round() / 4


def random_scene(g, n_images=8, n_classes=3, max_gt=8, max_det=30, crowd_p=0.1, ties=True):
    """Ground truths of every size, detections near them (some with the wrong class) and elsewhere."""
    preds, targets = [], []
    for _ in range(n_images):
        G = int(torch.randint(0, max_gt + 1, (1,), generator=g))
        wh = torch.exp(torch.empty(G, 2).uniform_(math.log(2), math.log(250), generator=g))
        xy = torch.rand(G, 2, generator=g) * 300
        boxes = _quarter(torch.cat([xy, xy + wh], 1))
        labels = torch.randint(0, n_classes, (G,), generator=g)
        crowd = (torch.rand(G, generator=g) < crowd_p).long()
        targets.append({"boxes": boxes, "labels": labels, "iscrowd": crowd})
        D = int(torch.randint(0, max_det + 1, (1,), generator=g))
        src = torch.randint(0, max(G, 1), (D,), generator=g)
        jitter = torch.randn(D, 4, generator=g) * torch.rand(D, 1, generator=g) * 20
        scattered = torch.rand(D, generator=g) < 0.3
        if G == 0:
            scattered[:] = True
        xy = torch.rand(D, 2, generator=g) * 300
        other = torch.cat([xy, xy + torch.rand(D, 2, generator=g) * 100], 1)
        det = torch.where(scattered[:, None], other, boxes[src] + jitter if G else other)
        det = _quarter(torch.cat([det[:, :2].minimum(det[:, 2:]), det[:, :2].maximum(det[:, 2:])], 1))
        wrong = torch.rand(D, generator=g) < 0.15
        det_labels = torch.randint(0, n_classes, (D,), generator=g)
        det_labels = torch.where(wrong | scattered | (G == 0), det_labels, labels[src] if G else det_labels)
        scores = torch.rand(D, generator=g)
        if ties:
            scores = (scores * 10).round() / 10  # many equal scores, within and across images
        preds.append({"boxes": det, "scores": scores, "labels": det_labels})
    return preds, targets


def _pred(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.long)}


def _target(boxes, labels, iscrowd=None, area=None):
    t = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
         "labels": torch.tensor(labels, dtype=torch.long)}
    if iscrowd is not None:
        t["iscrowd"] = torch.tensor(iscrowd)
    if area is not None:
        t["area"] = torch.tensor(area, dtype=torch.float64)
    return t


# ----------------------------------------------------------------------------- COCO conventions
def test_thresholds_are_built_bit_for_bit_as_pycocotools():
    p = Params(iouType="bbox")
    assert np.array_equal(coco_linspace(0.5, 0.95, 0.05).numpy(), p.iouThrs)
    assert np.array_equal(coco_linspace(0.0, 1.0, 0.01).numpy(), p.recThrs)
    # torch.linspace rounds differently in the last bit: the reason coco_linspace exists.
    assert not np.array_equal(torch.linspace(0, 1, 101, dtype=torch.float64).numpy(), p.recThrs)


@pytest.mark.parametrize("chunk", range(10))
def test_random_scenes_equal_cocoeval(chunk):
    """200 random scenes (8 images each): crowds, ties, wrong classes, empty images, all sizes."""
    for seed in range(chunk * 20, chunk * 20 + 20):
        g = torch.Generator().manual_seed(seed)
        preds, targets = random_scene(g, n_classes=1 + seed % 4, max_det=5 + seed % 40)
        assert_same_as_coco(preds, targets)


@pytest.mark.parametrize("seed", range(5))
def test_more_than_100_detections_per_image(seed):
    preds, targets = random_scene(torch.Generator().manual_seed(seed), n_images=4, n_classes=2,
                                  max_det=260)
    assert max(len(p["scores"]) for p in preds) > 100
    assert_same_as_coco(preds, targets)


@pytest.mark.parametrize("seed", range(3))
def test_unrounded_float32_boxes_and_scores(seed):
    """Arbitrary float32 coordinates (x + w is then not always exactly x2 in float64,
    so an IoU can differ from COCO's in the last bit; no threshold falls in between)."""
    g = torch.Generator().manual_seed(100 + seed)
    preds, targets = random_scene(g, n_images=10, ties=False)
    for d in preds + targets:
        b = d["boxes"] + torch.rand(d["boxes"].shape, generator=g) * 0.1
        d["boxes"] = torch.cat([b[:, :2].minimum(b[:, 2:]), b[:, :2].maximum(b[:, 2:])], 1)
    assert_same_as_coco(preds, targets)


def test_custom_thresholds_and_max_detections():
    preds, targets = random_scene(torch.Generator().manual_seed(7), n_images=12, max_det=40)
    summary, _ = assert_same_as_coco(preds, targets, iou_thresholds=[0.3, 0.5, 0.9, 1.0], max_dets=(2, 5, 20))
    assert float(summary["map_75"]) == -1  # 0.75 is not among the thresholds: undefined, as COCO
    assert set(summary) >= {"mar_2", "mar_5", "mar_20", "mar_20_per_class"}


def test_images_without_ground_truth_and_classes_never_predicted():
    preds = [_pred([[0, 0, 10, 10], [50, 50, 90, 90]], [0.9, 0.8], [1, 1]),  # image without ground truth
             _pred([[0, 0, 10, 10]], [0.7], [1]),
             _pred([], [], [])]
    targets = [_target([], []),
               _target([[0, 0, 10, 10], [20, 20, 60, 60]], [1, 2]),  # class 2 never predicted
               _target([[5, 5, 200, 200]], [3])]  # class 3 never predicted either
    summary, _ = assert_same_as_coco(preds, targets)
    assert summary["classes"].tolist() == [1, 2, 3]
    assert summary["map_per_class"][1:].tolist() == [0.0, 0.0]  # present, missed: AP 0, not undefined


def test_class_only_predicted_is_undefined_not_zero():
    preds = [_pred([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], [1, 4])]
    targets = [_target([[0, 0, 10, 10]], [1])]
    summary, _ = assert_same_as_coco(preds, targets)
    assert summary["map_per_class"].tolist() == [1.0, -1.0]
    assert float(summary["map"]) == 1.0


def test_empty_predictions_and_empty_inputs():
    targets = [_target([[0, 0, 10, 10], [0, 0, 100, 100]], [0, 1]), _target([], [])]
    summary, _ = assert_same_as_coco([_pred([], [], []), _pred([], [], [])], targets)
    assert float(summary["map"]) == 0.0 and float(summary["map_medium"]) == -1
    for result in (mean_average_precision([], []),
                   mean_average_precision([_pred([], [], [])], [_target([], [])])):
        assert all(float(result[k]) == -1 for k in KEYS)


def test_ties_in_scores_across_and_within_images():
    """All scores equal: COCO keeps image order, then input order (stable sorts)."""
    box, far = [0, 0, 10, 10], [100, 100, 110, 110]
    preds = [_pred([far, box, box], [0.5] * 3, [0] * 3), _pred([box, far], [0.5] * 2, [0] * 2)]
    targets = [_target([box], [0]), _target([box], [0])]
    summary, E = assert_same_as_coco(preds, targets)
    # Order far(FP), box(TP), box(FP dup), box(TP), far(FP): precision 0, 1/2, 1/3, 2/4, 2/5.
    assert math.isclose(float(summary["map"]), E.stats[0]) and 0 < float(summary["map"]) < 1


def test_crowd_regions():
    """Detections inside a crowd are ignored (any number of them); crowd IoU is over the detection."""
    crowd_box = [0, 0, 100, 100]
    preds = [_pred([[10, 10, 30, 30], [40, 40, 60, 60], [0, 0, 50, 50], [200, 200, 240, 240]],
                   [0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0])]
    targets = [_target([crowd_box, [200, 200, 240, 240]], [0, 0], iscrowd=[1, 0])]
    summary, _ = assert_same_as_coco(preds, targets)
    assert float(summary["map"]) == 1.0  # the three in the crowd are not false positives
    iou = box_iou_crowd(preds[0]["boxes"].double(), targets[0]["boxes"].double(), torch.tensor([True, False]))
    assert iou[:3, 0].tolist() == [1.0, 1.0, 1.0]  # inside the crowd: intersection / own area = 1
    preds, targets = random_scene(torch.Generator().manual_seed(11), n_images=10, crowd_p=0.5)
    assert_same_as_coco(preds, targets)


def test_every_size_range_and_area_boundaries():
    """Areas 32**2 and 96**2 belong to both neighbouring ranges (COCO's bounds are inclusive);
    a zero-area box is small; an explicit ``area`` overrides the box area."""
    sides = [0, 5, 31, 32, 33, 95, 96, 97, 200]
    gts = [[300 * i, 0, 300 * i + s, s] for i, s in enumerate(sides)]  # squares, areas 0 ... 40000
    dets = [[b[0], b[1], b[2] + 1, b[3]] for b in gts] + [[5000, 0, 5000 + s, s] for s in sides]
    scores = torch.rand(len(dets), generator=torch.Generator().manual_seed(0)).tolist()
    preds = [_pred(dets, scores, [0] * len(dets))]
    targets = [_target(gts, [0] * len(gts))]
    assert_same_as_coco(preds, targets)
    targets[0]["area"] = torch.tensor([5000.0, 10, 1024, 9216, 20000, 1, 1024, 9216, 3], dtype=torch.float64)
    assert_same_as_coco(preds, targets)
    # Only some images give areas, fractional ones (an image without them comes first).
    areas = [1023.5, 1024.5] * 4 + [9216.25]
    targets = [_target(gts, [0] * len(gts)), _target(gts, [0] * len(gts), area=areas)]
    assert_same_as_coco(preds * 2, targets)


def test_equal_iou_with_two_ground_truths_takes_the_later_one():
    # The detection overlaps both ground truths by 1/3; COCO's loop keeps the later one on a tie,
    # so the second detection (which only overlaps the first ground truth) still finds it free.
    targets = [_target([[0, 0, 10, 10], [10, 0, 20, 10]], [0, 0])]
    preds = [_pred([[5, 0, 15, 10], [0, 0, 8, 10]], [0.9, 0.8], [0, 0])]
    summary, E = assert_same_as_coco(preds, targets, iou_thresholds=[0.3])
    assert float(summary["map"]) == 1.0


# ----------------------------------------------------------------------------- pieces
@pytest.mark.parametrize("seed", range(20))
def test_greedy_match_equals_cocos_loop(seed):
    g = torch.Generator().manual_seed(seed)
    I, D, G, A = 3, int(torch.randint(0, 12, (1,), generator=g)), int(torch.randint(0, 6, (1,), generator=g)), 2
    iou = (torch.rand(I, D, G, generator=g) * 10).round().double() / 10  # many equal IoUs
    iou[torch.rand(I, D, G, generator=g) < 0.2] = -1  # pairs that may never match
    thresholds = torch.tensor([0.0, 0.3, 0.5, 0.7, 1.0], dtype=torch.float64)
    ignore = torch.rand(I, A, G, generator=g) < 0.3
    crowd = torch.rand(I, G, generator=g) < 0.3
    ignore |= crowd[:, None]
    matched, matched_ignored = greedy_match(iou, thresholds, ignore, crowd)
    assert matched.shape == (I, D, A, len(thresholds))
    for i in range(I):
        for a in range(A):
            for t, thr in enumerate(thresholds.tolist()):
                m, mi = greedy_match_loop(iou[i], thr, ignore[i, a], crowd[i])
                assert torch.equal(matched[i, :, a, t], m) and torch.equal(matched_ignored[i, :, a, t], mi)


def test_box_iou_crowd_vs_box_iou_and_pycocotools():
    g = torch.Generator().manual_seed(0)
    a = _quarter(torch.rand(7, 2, generator=g) * 50)
    b = _quarter(torch.rand(5, 2, generator=g) * 50)
    pred = torch.cat([a, a + _quarter(torch.rand(7, 2, generator=g) * 40)], 1).double()
    gt = torch.cat([b, b + _quarter(torch.rand(5, 2, generator=g) * 40)], 1).double()
    pred[0, 2] = pred[0, 0]  # a zero-width detection
    crowd = torch.tensor([False, True, False, True, False])
    ours = box_iou_crowd(pred, gt, crowd)
    assert torch.equal(ours[:, ~crowd], box_iou(pred, gt)[:, ~crowd])
    xywh = lambda x: torch.cat([x[:, :2], x[:, 2:] - x[:, :2]], 1).numpy()  # noqa: E731
    theirs = mask_utils.iou(xywh(pred), xywh(gt), crowd.int().tolist())
    np.testing.assert_array_equal(ours.numpy(), theirs)


def test_mask_iou_crowd_vs_pycocotools():
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(4, 20, 30, generator=g) < 0.3
    gt = torch.rand(3, 20, 30, generator=g) < 0.5
    pred[3] = False  # an empty mask
    crowd = torch.tensor([False, True, False])
    theirs = mask_utils.iou([_rle(m) for m in pred], [_rle(m) for m in gt], crowd.int().tolist())
    np.testing.assert_allclose(mask_iou_crowd(pred, gt, crowd).numpy(), theirs, rtol=0, atol=1e-15)


def _random_masks(g, n, H, W):
    """Rectangles and discs of random sizes (small to large on a 120 x 140 image)."""
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    cy, cx = torch.rand(n, generator=g) * H, torch.rand(n, generator=g) * W
    r = torch.exp(torch.empty(n).uniform_(math.log(2), math.log(70), generator=g))
    disc = (yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2 < r[:, None, None] ** 2
    dy, dx = (yy - cy[:, None, None]).abs(), (xx - cx[:, None, None]).abs()
    rect = (dy < r[:, None, None]) & (dx < r[:, None, None] / 2)
    return torch.where((torch.rand(n, generator=g) < 0.5)[:, None, None], disc, rect)


@pytest.mark.parametrize("seed", range(4))
def test_segm_equals_cocoeval_segm(seed):
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for _ in range(5):
        G, D = int(torch.randint(0, 6, (1,), generator=g)), int(torch.randint(0, 12, (1,), generator=g))
        H, W = 120, 140
        gt = _random_masks(g, G, H, W)
        shifted = torch.roll(gt, shifts=(int(torch.randint(-3, 4, (1,), generator=g)), 2), dims=(1, 2))
        det = torch.cat([shifted, _random_masks(g, D, H, W)])
        labels = torch.randint(0, 2, (G,), generator=g)
        targets.append({"masks": gt, "labels": labels, "iscrowd": (torch.rand(G, generator=g) < 0.2).long()})
        preds.append({"masks": det, "scores": (torch.rand(len(det), generator=g) * 10).round() / 10,
                      "labels": torch.cat([labels, torch.randint(0, 2, (D,), generator=g)])})
    assert_same_as_coco(preds, targets, iou_type="segm")


# ----------------------------------------------------------------------------- precision, recall, AP
def test_hand_worked_precision_recall_and_ap():
    """Five detections of one class in one image, three ground truths.

    The lecture's slides (seed 004) define precision = true detections / all detections,
    recall = true detections / ground truths, and AP = area under the curve; their text
    carries no numbers, so this example is worked by hand. By score: TP, TP, FP (a
    duplicate of the first object), FP (nothing there), TP. Precision 1, 1, 2/3, 1/2, 3/5;
    recall 1/3, 2/3, 2/3, 2/3, 1. Interpolated precision: 1 up to recall 2/3, 3/5 beyond.
    AP: all points 2/3 * 1 + 1/3 * 3/5 = 0.8667; COCO 101 points (67 * 1 + 34 * 0.6) / 101 =
    0.8653; VOC07 11 points (7 * 1 + 4 * 0.6) / 11 = 0.8545.
    """
    gt = torch.tensor([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], dtype=torch.float32)
    dets = torch.tensor([[0, 0, 10, 10], [20, 0, 30, 11], [1, 0, 10, 10], [60, 0, 70, 10], [40, 1, 50, 10]],
                        dtype=torch.float32)
    curve = precision_recall(dets, torch.tensor([0.99, 0.95, 0.90, 0.50, 0.10]), gt, iou_threshold=0.5)
    torch.testing.assert_close(curve.precision, torch.tensor([1, 1, 2 / 3, 1 / 2, 3 / 5], dtype=torch.float64))
    torch.testing.assert_close(curve.recall, torch.tensor([1 / 3, 2 / 3, 2 / 3, 2 / 3, 1], dtype=torch.float64))
    assert curve.scores.tolist() == pytest.approx([0.99, 0.95, 0.90, 0.50, 0.10])
    assert math.isclose(float(average_precision(curve.precision, curve.recall, "voc")), 2 / 3 + 1 / 5)
    assert math.isclose(float(average_precision(curve.precision, curve.recall, "coco")), 87.4 / 101)
    assert math.isclose(float(average_precision(curve.precision, curve.recall, "voc07")), 9.4 / 11)
    assert round(float(average_precision(curve.precision, curve.recall, "voc")), 4) == 0.8667


def _voc_devkit_ap(tp: list[bool], n_gt: int, eleven_point: bool) -> float:
    """The VOC devkit's AP as a plain loop (VOCevaldet / voc_eval.py)."""
    tp_sum = fp_sum = 0
    rec, prec = [], []
    for t in tp:
        tp_sum, fp_sum = tp_sum + t, fp_sum + (not t)
        rec.append(tp_sum / n_gt)
        prec.append(tp_sum / (tp_sum + fp_sum))
    if eleven_point:
        return sum(max([p for p, r in zip(prec, rec) if r >= i / 10], default=0) for i in range(11)) / 11
    mrec, mpre = [0.0] + rec + [1.0], [0.0] + prec + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])


@pytest.mark.parametrize("seed", range(30))
def test_average_precision_vs_devkit_loop_and_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 40, (1,), generator=g))
    tp = (torch.rand(n, generator=g) < torch.rand(1, generator=g)).tolist()
    missed = int(torch.randint(0, 4, (1,), generator=g))
    n_gt = max(sum(tp) + missed, 1)
    cum = torch.tensor(tp, dtype=torch.float64).cumsum(0)
    precision, recall = cum / torch.arange(1, n + 1), cum / n_gt
    for method, eleven in (("voc", False), ("voc07", True)):
        ours = float(average_precision(precision, recall, method))
        assert math.isclose(ours, _voc_devkit_ap(tp, n_gt, eleven), rel_tol=1e-12, abs_tol=1e-15)
    # scikit-learn's AP is sum (R_n - R_n-1) P_n without interpolation: it equals the VOC
    # all-points AP when every ground truth is found and precision never rises at a true positive.
    at_tp = precision[torch.tensor(tp)]
    if missed == 0 and any(tp) and bool((at_tp[1:] <= at_tp[:-1]).all()):
        scores = torch.linspace(1, 0.01, n).numpy()
        sk = average_precision_score(np.array(tp, dtype=int), scores)
        assert math.isclose(float(average_precision(precision, recall, "voc")), sk, rel_tol=1e-12)


def test_sklearn_agrees_on_a_case_it_applies_to():
    tp = [1, 1, 0, 1, 0, 0, 1]  # precision at the true positives: 1, 1, 3/4, 4/7, non-increasing
    cum = torch.tensor(tp, dtype=torch.float64).cumsum(0)
    ours = average_precision(cum / torch.arange(1, 8), cum / 4, "voc")
    assert math.isclose(float(ours), average_precision_score(tp, np.linspace(1, 0.1, 7)), rel_tol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_coco_ap_of_one_class_equals_cocoeval(seed):
    """precision_recall + average_precision('coco') at one threshold == COCOeval's AP of that class."""
    preds, targets = random_scene(torch.Generator().manual_seed(seed), n_classes=1, crowd_p=0.0)
    E = coco_eval(preds, targets, iou_thresholds=[0.5])
    curve = precision_recall([p["boxes"] for p in preds], [p["scores"] for p in preds],
                             [t["boxes"] for t in targets], iou_threshold=0.5)
    ap = average_precision(curve.precision, curve.recall, "coco")
    assert math.isclose(float(ap), E.eval["precision"][0, :, 0, 0, -1].mean(), abs_tol=1e-12)


def test_empty_curve_and_bad_curves():
    empty = torch.zeros(0, dtype=torch.float64)
    assert all(x.numel() == 0 for x in precision_recall([], [], []))
    curve = precision_recall(torch.zeros(0, 4), torch.zeros(0), torch.ones(2, 4))  # nothing detected
    assert curve.precision.numel() == 0 and float(average_precision(*curve[:2])) == 0.0
    for method in ("coco", "voc07", "voc"):
        assert float(average_precision(empty, empty, method)) == 0.0
    with pytest.raises(ValueError, match="must not decrease"):
        average_precision(torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.2]))
    with pytest.raises(ValueError, match="method must be one of"):
        average_precision(torch.tensor([1.0]), torch.tensor([1.0]), "auc")
    with pytest.raises(ValueError, match="same length"):
        average_precision(torch.tensor([1.0]), torch.tensor([0.5, 1.0]))


# ----------------------------------------------------------------------------- accumulator, devices
def test_accumulator_equals_one_call_and_resets():
    preds, targets = random_scene(torch.Generator().manual_seed(3), n_images=9)
    metric = MeanAveragePrecision(class_metrics=True)
    for i in range(0, 9, 4):
        metric.update(preds[i:i + 4], targets[i:i + 4])
    whole = mean_average_precision(preds, targets, class_metrics=True)
    got = metric.compute()
    assert got.keys() == whole.keys() and all(torch.equal(got[k], whole[k]) for k in whole)
    table = metric.evaluate().precision
    assert table.shape == (10, 101, len(whole["classes"]), 4, 3)
    metric.reset()
    assert float(metric.compute()["map"]) == -1


def test_curve_for_a_plot_is_cocos_precision_row():
    preds, targets = random_scene(torch.Generator().manual_seed(8), n_images=10)
    E = coco_eval(preds, targets)
    result = evaluate(preds, targets)
    k = 1
    recall, precision = result.curve(E.params.catIds[k], iou_threshold=0.75, area="all")
    np.testing.assert_array_equal(recall.numpy(), E.params.recThrs)
    np.testing.assert_allclose(precision.numpy(), E.eval["precision"][5, :, k, 0, 2], rtol=0, atol=1e-12)
    _, small10 = result.curve(E.params.catIds[k], 0.5, "small", max_detections=10)
    np.testing.assert_allclose(small10.numpy(), E.eval["precision"][0, :, k, 1, 1], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="no curve for label 99"):
        result.curve(99)


def test_accumulator_checks_each_batch():
    metric = MeanAveragePrecision()
    with pytest.raises(ValueError, match=r"predictions\[0\] has no 'scores'"):
        metric.update([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}],
                      [_target([], [])])
    assert metric.predictions == []


def test_float32_and_float64_inputs_agree(device):
    preds, targets = random_scene(torch.Generator().manual_seed(5), n_images=6)
    expected = mean_average_precision(preds, targets)
    def to64(d):
        return {k: (v.double() if v.is_floating_point() else v).to(device) for k, v in d.items()}

    got = mean_average_precision([to64(p) for p in preds], [to64(t) for t in targets])
    for k in KEYS:
        assert got[k].device.type == device.type
        assert float(got[k]) == float(expected[k]), k


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("pred, target, message", [
    (_pred([[10, 0, 5, 10]], [0.5], [0]), _target([[0, 0, 1, 1]], [0]), r"predictions\[0\]\['boxes'\]\[0\].*x2 < x1"),
    (_pred([[0, 0, 5, 10]], [0.5], [0]), _target([[0, 0, 1, -1]], [0]), r"targets\[0\]\['boxes'\]\[0\].*y2 < y1"),
    (_pred([[0, 0, 5, 10]], [0.5, 0.4], [0]), _target([], []), r"'scores'\] must be a Tensor\[1\]"),
    (_pred([[0, 0, 5, 10]], [0.5], [0, 1]), _target([], []), r"'labels'\] must be a Tensor\[1\]"),
    ({"bbox": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}, _target([], []),
     r"predictions\[0\] has no 'boxes'"),
    (_pred([], [], []), {"boxes": torch.zeros(0, 4), "label": torch.zeros(0)}, r"targets\[0\] has no 'labels'"),
    ({"boxes": torch.zeros(1, 4), "scores": torch.zeros(1), "labels": torch.zeros(1)}, _target([], []),
     "integer class labels"),
    (_pred([[0, 0, 5, 10]], [float("nan")], [0]), _target([], []), "NaN or infinite"),
    (_pred([], [], []), _target([[0, 0, 1, 1]], [0], iscrowd=[2]), "must be 0 or 1"),
    (_pred([], [], []), _target([[0, 0, 1, 1]], [0], iscrowd=[0.5]), "must be 0 or 1"),
    (_pred([], [], []), _target([[0, 0, 1, 1]], [0], area=[-1.0]), "negative"),
    ({"boxes": torch.zeros(2, 5), "scores": torch.zeros(2), "labels": torch.zeros(2)}, _target([], []), r"\[N, 4\]"),
])
def test_bad_input_says_what_to_fix(pred, target, message):
    with pytest.raises(ValueError, match=message):
        mean_average_precision([pred], [target])


def test_bad_lists_and_types():
    p, t = _pred([], [], []), _target([], [])
    with pytest.raises(ValueError, match="one dict per image"):
        mean_average_precision([p, p], [t])
    with pytest.raises(TypeError, match="list of dicts"):
        mean_average_precision(p, t)
    with pytest.raises(ValueError, match="iou_type must be one of"):
        mean_average_precision([p], [t], iou_type="keypoints")
    with pytest.raises(ValueError, match="iou_thresholds"):
        mean_average_precision([p], [t], iou_thresholds=[0.5, 1.5])
    masks = {"masks": torch.zeros(1, 1, 4, 4), "scores": torch.zeros(1),
             "labels": torch.zeros(1, dtype=torch.long)}
    with pytest.raises(ValueError, match=r"masks\[:, 0\] > 0.5"):
        mean_average_precision([masks], [{"masks": torch.zeros(0, 4, 4, dtype=torch.bool),
                                          "labels": torch.zeros(0, dtype=torch.long)}], iou_type="segm")
    masks = {"masks": torch.zeros(1, 4, 5, dtype=torch.bool), "scores": torch.zeros(1),
             "labels": torch.zeros(1, dtype=torch.long)}
    with pytest.raises(ValueError, match="masks of the same image"):
        mean_average_precision([masks], [{"masks": torch.zeros(1, 4, 4, dtype=torch.bool),
                                          "labels": torch.zeros(1, dtype=torch.long)}], iou_type="segm")
    with pytest.raises(ValueError, match="one entry per image"):
        precision_recall([torch.zeros(0, 4)], [], [torch.zeros(0, 4)])

"""Tests for cv_course.metrics.panoptic: PQ = SQ x RQ.

Oracles: a plain loop over pixels and segment pairs that follows the paper's
reference code (panopticapi's ``pq_compute_single_core``), torchmetrics'
``PanopticQuality`` (where predictions have no void: there the two conventions
agree), and hand-made cases with their numbers worked out.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from cv_course.metrics import PanopticQuality, panoptic_quality
from cv_course.metrics.panoptic import panoptic_stats

THINGS, STUFFS = {1, 2, 3}, {5, 6}
VOID = ("void",)


def pq_loop(preds, target, things, stuffs, allow_unknown=False):
    """Slow, obviously-correct reference: per image, count pixels per segment and pair."""
    cats = sorted(things) + sorted(stuffs)
    tp, fp, fn, iou_sum = Counter(), Counter(), Counter(), Counter()
    for pm, tm in zip(preds.tolist(), target.tolist()):  # image by image

        def segment(cat, inst):
            if cat not in cats:
                return VOID
            return (cat, 0) if cat in stuffs else (cat, inst)

        pix = [(segment(*p), segment(*t)) for prow, trow in zip(pm, tm)
               for p, t in zip(prow, trow)]
        p_area = Counter(p for p, _ in pix if p != VOID)
        g_area = Counter(g for _, g in pix if g != VOID)
        inter = Counter(pix)
        p_matched, g_matched = set(), set()
        for (p, g), n in inter.items():
            if p == VOID or g == VOID or p[0] != g[0]:
                continue
            union = p_area[p] - inter[(p, VOID)] + g_area[g] - n
            if n / union > 0.5:
                tp[g[0]] += 1
                iou_sum[g[0]] += n / union
                p_matched.add(p)
                g_matched.add(g)
        for g in g_area:
            if g not in g_matched:
                fn[g[0]] += 1
        for p in p_area:
            if p not in p_matched and inter[(p, VOID)] / p_area[p] <= 0.5:
                fp[p[0]] += 1
    per = {}
    for c in cats:
        d = tp[c] + fp[c] / 2 + fn[c] / 2
        if d:
            sq = iou_sum[c] / tp[c] if tp[c] else 0.0
            per[c] = (sq * tp[c] / d, sq, tp[c] / d)
    out = {}
    for suffix, group in (("", cats), ("_things", things), ("_stuff", stuffs)):
        vals = [per[c] for c in group if c in per]
        for k, name in enumerate(("pq", "sq", "rq")):
            out[name + suffix] = sum(v[k] for v in vals) / len(vals) if vals else math.nan
    return out, (tp, fp, fn, iou_sum)


def random_maps(B, H, W, gen, void_in_target=True, void_in_preds=False):
    """Blocky ground truth (2x2 blocks) and a prediction that copies it with errors."""
    cats = torch.tensor(sorted(THINGS) + sorted(STUFFS) + ([0] if void_in_target else []))
    t_cat = cats[torch.randint(len(cats), (B, H // 2, W // 2), generator=gen)]
    t_inst = torch.randint(1, 4, (B, H // 2, W // 2), generator=gen)
    target = torch.stack([t_cat, t_inst], -1).repeat_interleave(2, 1).repeat_interleave(2, 2)
    preds = target.clone()
    preds[..., 0][preds[..., 0] == 0] = 5  # predictions cover the void pixels too
    flip = torch.rand(B, H, W, generator=gen) < 0.2  # 20 % of pixels get another segment
    pred_cats = torch.tensor(sorted(THINGS) + sorted(STUFFS) + ([9] if void_in_preds else []))
    preds[..., 0][flip] = pred_cats[torch.randint(len(pred_cats), (int(flip.sum()),),
                                                   generator=gen)]
    preds[..., 1][flip] = torch.randint(1, 4, (int(flip.sum()),), generator=gen)
    return preds, target


def _close(ours: dict, ref: dict):
    for k, v in ref.items():
        a = float(ours[k])
        assert (math.isnan(a) and math.isnan(v)) or a == pytest.approx(v, abs=1e-12), k


@pytest.mark.parametrize("seed", range(6))
def test_matches_loop_reference_on_random_maps(seed):
    gen = torch.Generator().manual_seed(seed)
    preds, target = random_maps(3, 12, 14, gen, void_in_preds=seed % 2 == 1)
    ours = panoptic_quality(preds, target, THINGS, STUFFS, allow_unknown_preds_category=True,
                            per_class=True)
    ref, (tp, fp, fn, _) = pq_loop(preds, target, THINGS, STUFFS)
    _close(ours, ref)
    cats = ours["categories"].tolist()
    assert cats == [1, 2, 3, 5, 6]
    assert ours["tp"].tolist() == [tp[c] for c in cats] and sum(tp.values()) > 0
    assert ours["fp"].tolist() == [fp[c] for c in cats]
    assert ours["fn"].tolist() == [fn[c] for c in cats]


@pytest.mark.parametrize("seed", range(4))
def test_matches_torchmetrics_without_predicted_void(seed):
    tm = pytest.importorskip("torchmetrics.detection")
    gen = torch.Generator().manual_seed(100 + seed)
    preds, target = random_maps(4, 16, 16, gen)  # void only in the target
    ours = panoptic_quality(preds, target, THINGS, STUFFS, per_class=True)
    metric = tm.PanopticQuality(things=THINGS, stuffs=STUFFS, return_sq_and_rq=True,
                                return_per_class=True)
    per_class = metric(preds, target)  # [C, 3]: pq, sq, rq
    torch.testing.assert_close(
        torch.stack([ours["pq_per_class"], ours["sq_per_class"], ours["rq_per_class"]], 1),
        per_class.double())
    overall = tm.PanopticQuality(things=THINGS, stuffs=STUFFS, return_sq_and_rq=True)(
        preds, target)
    torch.testing.assert_close(torch.stack([ours["pq"], ours["sq"], ours["rq"]]), overall.double())


def worked_example():
    """10 x 10 scene, one thing class (1) and one stuff class (5), printed by the chapter."""
    target = torch.zeros(1, 10, 10, 2, dtype=torch.long)
    target[..., 0] = 5
    target[0, 0:4, 0:5] = torch.tensor([1, 1])  # A: 20 pixels
    target[0, 6:10, 0:5] = torch.tensor([1, 2])  # B: 20 pixels
    target[0, 0:2, 7:9] = torch.tensor([1, 3])  # C: 4 pixels, missed
    preds = torch.zeros(1, 10, 10, 2, dtype=torch.long)
    preds[..., 0] = 5
    preds[0, 0:4, 0:4] = torch.tensor([1, 7])  # inside A: IoU 16 / 20 = 0.8
    preds[0, 6:10, 0:6] = torch.tensor([1, 8])  # around B: IoU 20 / 24 = 0.833
    preds[0, 7:9, 7:9] = torch.tensor([1, 9])  # on stuff: a false positive
    return preds, target


def test_worked_example_pq_is_sq_times_rq():
    preds, target = worked_example()
    r = panoptic_quality(preds, target, {1}, {5}, per_class=True)
    # Things: TP = 2 (IoU 0.8 and 0.8333), FP = 1, FN = 1.
    assert r["tp"].tolist() == [2, 1] and r["fp"].tolist() == [1, 0] and r["fn"].tolist() == [1, 0]
    assert float(r["sq_things"]) == pytest.approx((0.8 + 20 / 24) / 2)  # 0.8167
    assert float(r["rq_things"]) == pytest.approx(2 / (2 + 0.5 + 0.5))  # 0.6667
    assert float(r["pq_things"]) == pytest.approx(0.8167 * 0.6667, abs=1e-4)  # 0.5444
    # Stuff: 56 pixels each side, 48 shared: IoU 48 / 64 = 0.75, one match.
    assert float(r["pq_stuff"]) == pytest.approx(0.75) and float(r["rq_stuff"]) == 1.0
    assert float(r["pq"]) == pytest.approx((0.5444 + 0.75) / 2, abs=1e-4)  # 0.6472
    torch.testing.assert_close(r["pq_per_class"], r["sq_per_class"] * r["rq_per_class"])


def test_void_pixels_leave_the_prediction_and_mostly_void_predictions_are_not_fp():
    target = torch.zeros(1, 4, 10, 2, dtype=torch.long)  # category 0: void
    target[0, :, 0:5] = torch.tensor([1, 1])  # one thing, 20 pixels
    preds = torch.zeros_like(target)
    preds[..., 0] = 5  # stuff on the void part: more than half void, not a false positive
    preds[0, :, 0:7] = torch.tensor([1, 1])  # 28 pixels, 8 of them on void
    r = panoptic_quality(preds, target, {1}, {5}, per_class=True)
    assert float(r["pq_things"]) == 1.0  # IoU 20 / (28 - 8 + 20 - 20) = 1
    assert r["fp"].tolist() == [0, 0] and r["fn"].tolist() == [0, 0]
    assert math.isnan(float(r["pq_stuff"]))  # no stuff in the target, none counted
    preds[0, :, 5:7] = torch.tensor([2, 1])  # 8 pixels of class 2, all on void: not a FP
    r = panoptic_quality(preds, target, {1, 2}, {5}, per_class=True)
    assert r["fp"].tolist() == [0, 0, 0] and float(r["pq"]) == pytest.approx(1.0)


def test_predicted_void_counts_against_the_ground_truth_segment():
    # panopticapi: predicted void is no prediction, the target keeps its full area.
    # torchmetrics 1.9 drops it from the target's area; here the two differ (documented).
    target = torch.full((1, 1, 10, 2), 5)
    target[0, 0, :, 1] = 0
    target[0, 0, :6] = torch.tensor([1, 1])
    preds = target.clone()
    preds[0, 0, 4:6] = torch.tensor([0, 0])  # void (unknown category 0) on 2 of the 6 pixels
    r = panoptic_quality(preds, target, {1}, {5}, allow_unknown_preds_category=True)
    assert float(r["pq_things"]) == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match=r"\[0\].*allow_unknown_preds_category"):
        panoptic_quality(preds, target, {1}, {5})


def test_perfect_prediction_and_permuted_instance_ids():
    gen = torch.Generator().manual_seed(3)
    _, target = random_maps(2, 8, 8, gen, void_in_target=False)
    preds = target.clone()
    preds[..., 1] = (preds[..., 1] * 7 + 3) % 11  # renamed instances, same segments
    stuff = torch.isin(preds[..., 0], torch.tensor(sorted(STUFFS)))
    preds[..., 1][stuff] = torch.randint(0, 50, (int(stuff.sum()),), generator=gen)  # ignored
    r = panoptic_quality(preds, target, THINGS, STUFFS)
    assert all(float(v) == 1.0 for v in r.values())


def test_batch_is_not_matched_across_images_and_accumulator_adds_stats():
    gen = torch.Generator().manual_seed(7)
    preds, target = random_maps(4, 10, 10, gen)
    whole = panoptic_quality(preds, target, THINGS, STUFFS)
    acc = PanopticQuality(THINGS, STUFFS)
    for b in range(4):
        acc.update(preds[b:b + 1], target[b:b + 1])
    _close(acc.compute(), {k: float(v) for k, v in whole.items()})
    # The same segment ids in two images are two segments, not one.
    one = panoptic_stats(preds[:1].repeat(2, 1, 1, 1), target[:1].repeat(2, 1, 1, 1),
                         THINGS, STUFFS)
    single = panoptic_stats(preds[:1], target[:1], THINGS, STUFFS)
    assert torch.equal(one.tp, 2 * single.tp)


def test_empty_and_degenerate_inputs():
    empty = torch.zeros(2, 0, 5, 2, dtype=torch.long)
    r = panoptic_quality(empty, empty, THINGS, STUFFS)
    assert all(math.isnan(float(v)) for v in r.values())
    neg = torch.tensor([[[[1, -3], [1, -3], [1, 4]]]])  # negative instance ids are ids too
    assert float(panoptic_quality(neg, neg, {1}, {5})["pq"]) == 1.0
    with pytest.raises(RuntimeError, match="update"):
        PanopticQuality(THINGS, STUFFS).compute()


@pytest.mark.parametrize("preds, target, match", [
    (torch.zeros(4, 4, 2, dtype=torch.long), torch.zeros(4, 4, 2, dtype=torch.long), r"\[B, H, W, 2\]"),
    (torch.zeros(1, 4, 4, 3, dtype=torch.long), torch.zeros(1, 4, 4, 3, dtype=torch.long), "2"),
    (torch.zeros(1, 4, 4, 2, dtype=torch.long), torch.zeros(1, 4, 5, 2, dtype=torch.long), "same shape"),
    (torch.zeros(1, 4, 4, 2), torch.zeros(1, 4, 4, 2), "integer"),
])
def test_bad_maps_raise(preds, target, match):
    with pytest.raises(ValueError, match=match):
        panoptic_quality(preds, target, THINGS, STUFFS)


def test_bad_categories_raise():
    m = torch.full((1, 2, 2, 2), 1)
    with pytest.raises(ValueError, match="disjoint"):
        panoptic_quality(m, m, {1, 5}, {5})
    with pytest.raises(ValueError, match="non-empty"):
        panoptic_quality(m, m, set(), set())
    with pytest.raises(ValueError, match=r"\[1\].*neither"):
        panoptic_quality(m, m, {2}, {5})


@pytest.mark.cuda
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(11)
    preds, target = random_maps(3, 16, 16, gen, void_in_preds=True)
    cpu = panoptic_quality(preds, target, THINGS, STUFFS, allow_unknown_preds_category=True)
    gpu = panoptic_quality(preds.cuda(), target.cuda(), THINGS, STUFFS,
                           allow_unknown_preds_category=True)
    for k in cpu:
        assert gpu[k].device.type == "cuda"
        torch.testing.assert_close(gpu[k].cpu(), cpu[k], equal_nan=True)

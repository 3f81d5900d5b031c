"""Matcher and balanced sampling against torchvision and loop references."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler
from torchvision.models.detection._utils import Matcher as TVMatcher

from cv_course.grading.boxes import random_boxes
from cv_course.ops import Matcher, box_iou, sample_labels


def loop_match(iou, high, low, low_quality):
    G, N = iou.shape
    out = []
    for n in range(N):
        col = iou[:, n].tolist()
        best = max(col)
        g = col.index(best)  # first maximum
        label = g if best >= high else (-1 if best < low else -2)
        if low_quality and any(iou[j, n] == iou[j].max() for j in range(G)):
            label = g
        out.append(label)
    return torch.tensor(out, dtype=torch.int64)


def iou_matrices(gen, device):
    """Random IoU matrices, ones with many ties, and a box no prediction overlaps."""
    gt = random_boxes(6, gen, device=device, clustered=True)
    pred = random_boxes(300, gen, device=device, clustered=True)
    iou = box_iou(gt, pred)  # [6, 300]
    tied = (iou * 5).round() / 5  # few distinct values: ties within columns and rows
    lonely = torch.cat([iou[:3], torch.zeros(1, 300, device=device)])  # a box nothing overlaps
    single = iou[:1]
    return [iou, tied, lonely, single]


@pytest.mark.parametrize("high,low", [(0.7, 0.3), (0.5, 0.5), (0.5, 0.4)])
@pytest.mark.parametrize("low_quality", [False, True])
def test_matches_torchvision_and_loop(high, low, low_quality, device):
    gen = torch.Generator().manual_seed(0)
    for iou in iou_matrices(gen, device):
        ours = Matcher(high, low, low_quality)(iou)
        assert ours.dtype == torch.int64 and ours.device == iou.device and ours.shape == (iou.shape[1],)
        assert torch.equal(ours, TVMatcher(high, low, low_quality)(iou))
        assert torch.equal(ours.cpu(), loop_match(iou.cpu(), high, low, low_quality))


def test_low_quality_matches_keep_every_box_matched():
    iou = torch.tensor([[0.9, 0.2, 0.1, 0.0, 0.1],
                        [0.1, 0.4, 0.4, 0.0, 0.2],  # best 0.4, tied between predictions 1 and 2
                        [0.0, 0.0, 0.5, 0.6, 0.0]])
    assert Matcher(0.7, 0.3)(iou).tolist() == [0, -2, -2, -2, -1]
    # predictions 1 and 2 are best for box 1: both matched, 2 to its own best box (2, IoU 0.5)
    assert Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou).tolist() == [0, 1, 2, 2, -1]


def test_no_ground_truth_means_all_background(device):
    # torchvision raises here; an image without objects must still train the RPN
    out = Matcher(0.7, 0.3, True)(torch.zeros(0, 5, device=device))
    assert out.tolist() == [-1] * 5 and out.dtype == torch.int64 and out.device.type == device.type
    assert Matcher(0.7, 0.3)(torch.zeros(3, 0, device=device)).shape == (0,)


def test_matcher_errors():
    with pytest.raises(ValueError, match="must not exceed"):
        Matcher(0.3, 0.7)
    with pytest.raises(ValueError, match=r"Tensor\[G, N\]"):
        Matcher(0.7, 0.3)(torch.rand(5))


def _labels(gen, n_pos, n_neg, n_ignore, device):
    labels = torch.cat([torch.randint(1, 4, (n_pos,), generator=gen), torch.zeros(n_neg, dtype=torch.int64),
                        torch.full((n_ignore,), -1)])
    return labels[torch.randperm(len(labels), generator=gen)].to(device)


@pytest.mark.parametrize("n_pos,n_neg,n_ignore", [(40, 1000, 50), (300, 1000, 0), (5, 10, 3), (0, 0, 7), (0, 20, 0)])
def test_sample_counts_and_subsets(n_pos, n_neg, n_ignore, device):
    gen = torch.Generator().manual_seed(1)
    labels = _labels(gen, n_pos, n_neg, n_ignore, device)
    pos, neg = sample_labels(labels, 256, 0.5, generator=torch.Generator().manual_seed(2))
    assert pos.dtype == torch.bool and pos.shape == labels.shape and pos.device == labels.device
    expected_pos = min(n_pos, 128)
    assert int(pos.sum()) == expected_pos and int(neg.sum()) == min(n_neg, 256 - expected_pos)
    assert bool((labels[pos] >= 1).all()) and bool((labels[neg] == 0).all()) and not bool((pos & neg).any())


def test_sample_equals_torchvision_with_the_same_global_seed():
    gen = torch.Generator().manual_seed(3)
    labels = [_labels(gen, 30, 500, 40, "cpu"), _labels(gen, 200, 300, 10, "cpu")]
    torch.manual_seed(4)
    theirs = BalancedPositiveNegativeSampler(128, 0.25)(labels)
    torch.manual_seed(4)
    ours = [sample_labels(lab, 128, 0.25) for lab in labels]
    for (pos, neg), tv_pos, tv_neg in zip(ours, *theirs):
        assert torch.equal(pos, tv_pos.bool()) and torch.equal(neg, tv_neg.bool())


def test_sample_is_seeded_and_uniform():
    labels = torch.tensor([1] * 20 + [0] * 20)
    draw = lambda seed: sample_labels(labels, 20, 0.25, torch.Generator().manual_seed(seed))  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(draw(5), draw(5)))
    picks = torch.stack([pos | neg for pos, neg in map(draw, range(400))]).float().mean(0)  # [40]
    # each positive is taken with probability 5/20, each negative with 15/20
    assert (picks[:20] - 0.25).abs().max() < 0.1 and (picks[20:] - 0.75).abs().max() < 0.1


def test_sample_errors():
    with pytest.raises(ValueError, match="integer"):
        sample_labels(torch.zeros(4), 2, 0.5)
    with pytest.raises(ValueError, match="positive_fraction"):
        sample_labels(torch.zeros(4, dtype=torch.int64), 2, 1.5)

"""cv_course.viz.detection: the RoI bins it draws are the ops' bins, the anchor
labels are Faster R-CNN's rule, and the viewer redraws when a slider moves."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # no display in tests

import matplotlib.pyplot as plt
import pytest
import torch

from cv_course.ops import grid_anchors
from cv_course.viz import (
    anchor_labels,
    draw_bilinear_sample,
    draw_cell_anchors,
    draw_roi_align,
    draw_roi_pool,
    roi_pool_bins,
)


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def pool_bins_loop(box, P, scale, H, W):
    """Fast R-CNN's RoI Pool bins, written out: round the box, then floor/ceil each bin."""
    rnd = [math.floor(v * scale + 0.5) for v in box]  # half away from zero (v >= 0)
    x0, y0, x1, y1 = rnd
    roi_w, roi_h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
    bins = []
    for ph in range(P):
        row = []
        for pw in range(P):
            top = min(max(math.floor(ph * roi_h / P) + y0, 0), H)
            bottom = min(max(math.ceil((ph + 1) * roi_h / P) + y0, 0), H)
            left = min(max(math.floor(pw * roi_w / P) + x0, 0), W)
            right = min(max(math.ceil((pw + 1) * roi_w / P) + x0, 0), W)
            row.append([left, top, right, bottom])
        bins.append(row)
    return torch.tensor(bins, dtype=torch.float64)


def test_roi_pool_bins_match_the_definition():
    g = torch.Generator().manual_seed(0)
    corner = 8 + torch.rand(50, 2, generator=g) * 300
    boxes = torch.cat([corner, corner + 20 + torch.rand(50, 2, generator=g) * 150], dim=1)
    for P in (2, 7):
        got = roi_pool_bins(boxes, P, 1 / 32, (15, 20))  # [50, P, P, 4]
        for k, box in enumerate(boxes.tolist()):
            assert torch.equal(got[k], pool_bins_loop(box, P, 1 / 32, 15, 20)), (P, box)


def test_roi_pool_bins_of_the_chapter_example_overlap():
    bins = roi_pool_bins((100.0, 70.0, 360.0, 300.0), 2, 1 / 32, (15, 20))
    assert bins[0, 0].tolist() == [3, 2, 8, 6] and bins[0, 1].tolist() == [7, 2, 12, 6]


def test_draw_roi_pool_returns_its_bins(ax):
    bins = draw_roi_pool(ax, (100.0, 70.0, 360.0, 300.0), 2, 1 / 32, (15, 20))
    assert torch.equal(bins, roi_pool_bins((100.0, 70.0, 360.0, 300.0), 2, 1 / 32, (15, 20)))


def test_roi_align_samples_lie_inside_their_bins(ax):
    box = (100.0, 70.0, 360.0, 300.0)
    points = draw_roi_align(ax, box, 2, 1 / 32, (15, 20), sampling_ratio=2)  # [16, 2]
    assert points.shape == (16, 2)
    x1, y1, x2, y2 = (v / 32 for v in box)
    assert bool(((points[:, 0] > x1) & (points[:, 0] < x2)).all())
    assert bool(((points[:, 1] > y1) & (points[:, 1] < y2)).all())
    # the mean of the samples is the box centre
    assert torch.allclose(points.mean(0), torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2],
                                                       dtype=points.dtype))


def test_bilinear_weights_of_the_lecture_example(ax):
    weights = draw_bilinear_sample(ax, 6.5, 5.8)
    assert weights == pytest.approx([0.1, 0.1, 0.4, 0.4])


def test_anchor_labels_follow_the_rpn_rule():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0],  # IoU 1 with box 0: positive
                            [0.0, 0.0, 10.0, 12.0],  # IoU 0.83: positive
                            [0.0, 0.0, 10.0, 20.0],  # IoU 0.5: ignored
                            [50.0, 50.0, 60.0, 60.0],  # IoU 0: negative
                            [30.0, 30.0, 42.0, 42.0]])  # best for box 1 at IoU 0.44: positive
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [30.0, 30.0, 38.0, 38.0]])
    labels, best = anchor_labels(anchors, gt)
    assert labels == ["positive", "positive", "ignored", "negative", "positive"]
    assert best[3] == 0 and best[4] == pytest.approx(64 / 144)
    labels, best = anchor_labels(anchors, torch.zeros(0, 4))  # no objects: all background
    assert labels == ["negative"] * 5 and bool((best == 0).all())


def test_draw_cell_anchors_reports_the_cell(ax):
    image = torch.rand(3, 64, 64)
    gt = torch.tensor([[20.0, 20.0, 44.0, 44.0]])
    found = draw_cell_anchors(ax, image, 16, (16, 32), (0.5, 1.0, 2.0), 1, 1, gt)
    assert len(found) == 6
    anchors = grid_anchors((4, 4), 16, (16, 32), (0.5, 1.0, 2.0))[(1 * 4 + 1) * 6:(1 * 4 + 2) * 6]
    labels, best = anchor_labels(grid_anchors((4, 4), 16, (16, 32), (0.5, 1.0, 2.0)), gt)
    assert [iou for _, iou in found] == pytest.approx(
        best[(1 * 4 + 1) * 6:(1 * 4 + 2) * 6].tolist())
    assert anchors.shape == (6, 4)


def test_anchor_viewer_updates_readout():
    pytest.importorskip("ipywidgets")
    from cv_course.viz import anchor_viewer

    image = torch.rand(3, 64, 64)
    panel = anchor_viewer(image, torch.tensor([[20.0, 20.0, 44.0, 44.0]]), stride=16,
                          sizes=(16, 32), row=0, col=0)
    before = panel.readout.value
    assert before.count("<br>") == 5  # six anchors listed
    panel.sliders[0].value, panel.sliders[1].value = 1, 1
    assert panel.readout.value != before
    with pytest.raises(ValueError, match="outside"):
        anchor_viewer(image, stride=16, row=4, col=0)

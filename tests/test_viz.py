"""Tests for cv_course.viz: the drawings put what they claim where they claim."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display in tests

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from cv_course.ops import box_iou
from cv_course.viz import (
    class_colors,
    colorize_labels,
    draw_boxes,
    draw_iou_pair,
    instance_colors,
    overlay_masks,
    show_image,
    to_hwc,
)


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_to_hwc_layouts_agree():
    g = torch.Generator().manual_seed(0)
    chw = torch.rand(3, 5, 7, generator=g)
    hwc = chw.permute(1, 2, 0)
    np.testing.assert_allclose(to_hwc(chw), hwc.numpy())
    np.testing.assert_allclose(to_hwc(hwc.numpy()), hwc.numpy())
    u8 = (chw * 255).round().to(torch.uint8)
    np.testing.assert_allclose(to_hwc(u8), u8.permute(1, 2, 0).numpy() / 255.0)
    assert to_hwc(torch.zeros(1, 4, 6)).shape == (4, 6)
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        to_hwc(torch.zeros(2, 4, 6, 5))


def test_class_colors_prefix_and_background():
    c5, c12 = class_colors(5), class_colors(12)
    np.testing.assert_array_equal(c12[:5], c5)
    assert c5.shape == (5, 3) and class_colors(0).shape == (0, 3)
    # background differs from every object class, and the first 10 classes are distinct
    assert len({tuple(r) for r in class_colors(11)}) == 11
    assert instance_colors(3).shape == (3, 3)


def test_draw_boxes_geometry_and_tags(ax):
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 5.0, 5.0]], dtype=torch.float64)
    patches = draw_boxes(ax, boxes, labels=torch.tensor([2, 1]), scores=torch.tensor([0.951, 0.5]),
                         class_names=["bg", "circle", "square"])
    assert len(patches) == 2 and len(ax.patches) == 2
    r = patches[0]
    assert (r.get_x(), r.get_y(), r.get_width(), r.get_height()) == (10, 20, 40, 20)
    # colour follows the class palette
    np.testing.assert_allclose(mcolors.to_rgb(r.get_edgecolor()), class_colors(3)[2], atol=1e-6)
    assert [t.get_text() for t in ax.texts] == ["square 0.95", "circle 0.50"]


def test_draw_boxes_options_and_errors(ax):
    boxes = np.array([[0, 0, 1, 1], [2, 2, 3, 3], [1, 1, 4, 4]])
    patches = draw_boxes(ax, boxes, colors="red", tags=["A", "", "C"], linestyle="--")
    assert all(mcolors.to_rgb(p.get_edgecolor()) == (1.0, 0.0, 0.0) for p in patches)
    assert [t.get_text() for t in ax.texts] == ["A", "C"]
    assert patches[0].get_linestyle() == "--"
    assert draw_boxes(ax, torch.zeros(0, 4)) == []
    with pytest.raises(ValueError, match="one entry per box"):
        draw_boxes(ax, boxes, scores=[0.5])
    with pytest.raises(ValueError, match="one colour or one per box"):
        draw_boxes(ax, boxes, colors=["red", "blue"])


@pytest.mark.parametrize("b1, b2, inter, union", [
    ((10, 10, 50, 50), (30, 30, 70, 70), 400, 2800),   # lecture example, IoU 0.143
    ((0, 0, 10, 10), (1, 1, 11, 11), 81, 119),         # lecture example, IoU 0.681
    ((0, 0, 10, 10), (20, 20, 30, 30), 0, 200),        # disjoint
])
def test_draw_iou_pair_value_and_title(ax, b1, b2, inter, union):
    iou = draw_iou_pair(ax, b1, b2, canvas=(100, 80))
    expected = box_iou(torch.tensor([b1], dtype=torch.float64), torch.tensor([b2], dtype=torch.float64))
    assert iou == pytest.approx(float(expected[0, 0])) == pytest.approx(inter / union)
    assert ax.get_title() == f"IoU = {inter} / {union} = {inter / union:.3f}"
    assert len(ax.patches) == (3 if inter else 2)  # the intersection is filled only if non-empty
    assert ax.get_xlim() == (0, 100) and ax.get_ylim() == (80, 0)  # image coordinates


def test_colorize_labels_matches_palette():
    g = torch.Generator().manual_seed(1)
    lab = torch.randint(0, 4, (6, 9), generator=g)
    lab[0, 0] = 255
    out = colorize_labels(lab, num_classes=4)
    pal = class_colors(4)
    for y in range(6):  # slow reference: pixel by pixel
        for x in range(9):
            want = (1.0, 1.0, 1.0) if lab[y, x] == 255 else pal[lab[y, x]]
            np.testing.assert_allclose(out[y, x], want)
    with pytest.raises(ValueError, match="must lie in"):
        colorize_labels(torch.full((2, 2), 7), num_classes=4)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        colorize_labels(torch.zeros(1, 2, 2, dtype=torch.long))


def test_overlay_masks_blend_formula():
    g = torch.Generator().manual_seed(2)
    img = torch.rand(3, 8, 8, generator=g)
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True
    masks[1, 2:6, 2:6] = True  # overlaps mask 0; drawn on top
    colors = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    out = overlay_masks(img, masks, colors=colors, alpha=0.25)
    base = img.permute(1, 2, 0).numpy()
    np.testing.assert_allclose(out[7, 7], base[7, 7])                       # no mask
    np.testing.assert_allclose(out[0, 0], 0.75 * base[0, 0] + 0.25 * colors[0])
    np.testing.assert_allclose(out[3, 3], 0.75 * base[3, 3] + 0.25 * colors[1])  # later on top
    with pytest.raises(ValueError, match="masks must have shape"):
        overlay_masks(img, masks[:, :4])
    with pytest.raises(ValueError, match="alpha"):
        overlay_masks(img, masks, alpha=1.5)


def test_show_image_extent_matches_pixels(ax):
    show_image(ax, torch.zeros(3, 10, 20), title="t")
    assert ax.images[0].get_extent() == [0, 20, 10, 0]
    assert ax.get_title() == "t"


def test_iou_calculator_updates_readout():
    pytest.importorskip("ipywidgets")
    from cv_course.viz import iou_calculator

    w = iou_calculator((10, 10, 50, 50), (30, 30, 70, 70))
    assert "IoU = 0.143" in w.iou_readout.value
    ax_slider, ay_slider, bx_slider, by_slider = w.sliders
    bx_slider.value, by_slider.value = (0, 10), (0, 10)  # B = (0, 0, 10, 10) touches A at a corner
    assert "IoU = 0.000" in w.iou_readout.value
    bx_slider.value, by_slider.value = (10, 50), (10, 50)  # B == A
    assert "IoU = 1.000" in w.iou_readout.value
    with pytest.raises(ValueError, match="must satisfy"):
        iou_calculator((50, 10, 10, 50))
    plt.close("all")

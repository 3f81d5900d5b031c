"""Tests for the chapter helpers added to cv_course.viz for the segmentation and
upsampling chapters: show_values, overlay_classes, class_mask_viewer."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display in tests

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from cv_course.viz import class_colors, overlay_classes, overlay_masks, show_values


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_show_values_writes_every_cell(ax):
    v = torch.tensor([[1.0, 2.5], [-3.0, 40.0], [0.0, 7.0]])
    show_values(ax, v, title="m", fmt="{:g}", highlight=v > 5)
    texts = {(round(t.get_position()[0], 1), round(t.get_position()[1], 1)): t.get_text()
             for t in ax.texts}
    for (i, j), value in np.ndenumerate(v.numpy()):  # cell (i, j) centred at (j + .5, i + .5)
        assert texts[(j + 0.5, i + 0.5)] == f"{value:g}"
    assert len(ax.patches) == 2  # the two highlighted cells
    assert ax.images[0].get_extent() == [0, 2, 3, 0] and ax.get_title() == "m"
    # Darkest cell gets white text, lightest black (Blues: high values are dark).
    color = {t.get_text(): t.get_color() for t in ax.texts}
    assert color["40"] == "white" and color["-3"] == "black"


def test_show_values_1d_constant_and_errors(ax):
    show_values(ax, torch.ones(4))  # constant: no division by zero
    assert ax.images[0].get_extent() == [0, 4, 1, 0] and len(ax.texts) == 4
    with pytest.raises(ValueError, match=r"\[H, W\] or \[L\]"):
        show_values(ax, torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="highlight"):
        show_values(ax, torch.zeros(2, 2), highlight=torch.ones(3, 3, dtype=torch.bool))


def test_overlay_classes_equals_masks_per_class():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 6, 7, generator=g)
    lab = torch.randint(0, 4, (6, 7), generator=g)
    out = overlay_classes(img, lab, [1, 3], alpha=0.3, num_classes=4)
    pal = class_colors(4)
    base = img.permute(1, 2, 0).numpy()
    for y in range(6):  # slow reference, pixel by pixel
        for x in range(7):
            c = int(lab[y, x])
            want = 0.7 * base[y, x] + 0.3 * pal[c] if c in (1, 3) else base[y, x]
            np.testing.assert_allclose(out[y, x], want)
    masks = torch.stack([lab == 1, lab == 3])
    np.testing.assert_allclose(out, overlay_masks(img, masks, colors=pal[[1, 3]], alpha=0.3))
    np.testing.assert_allclose(overlay_classes(img, lab, []), base)
    with pytest.raises(ValueError, match="classes must lie"):
        overlay_classes(img, lab, [5], num_classes=4)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        overlay_classes(img, lab[None], [1])


def test_class_mask_viewer_toggles_classes():
    pytest.importorskip("ipywidgets")
    from cv_course.viz import class_mask_viewer

    lab = torch.zeros(8, 8, dtype=torch.long)
    lab[:2] = 1  # 16 pixels of class 1
    lab[5:, :3] = 2  # 9 pixels of class 2
    w = class_mask_viewer(torch.rand(3, 8, 8), lab, ["bg", "a", "b"])
    assert [b.value for b in w.checkboxes] == [False, True, True]  # background off by default
    assert w.readout.value.startswith("25 of 64")
    w.checkboxes[2].value = False
    assert w.readout.value.startswith("16 of 64")
    w.checkboxes[0].value = True
    assert w.readout.value.startswith("55 of 64")
    with pytest.raises(ValueError, match="labels must lie"):
        class_mask_viewer(torch.rand(3, 8, 8), lab, ["bg", "a"])
    plt.close("all")

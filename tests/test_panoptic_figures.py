"""The panoptic chapter's helpers: colour maps and the merge's overlap fractions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cv_course.experiments.panoptic_figures import (
    category_palette,
    colorize_instances,
    colorize_panoptic,
    colorize_semantic,
    taken_before,
)
from cv_course.models.detection.panoptic_fpn import panoptic_merge
from cv_course.viz import class_colors, instance_colors


def test_semantic_colours_are_the_palette():
    palette = category_palette()
    assert palette.shape == (8, 3)
    assert np.allclose(palette[1:5], class_colors(5)[1:])  # things as in detection chapters
    sem = torch.tensor([[0, 1, 5], [7, 6, 4]])
    out = colorize_semantic(sem)
    assert out.shape == (2, 3, 3)
    for (r, c), cat in np.ndenumerate(sem.numpy()):
        assert np.allclose(out[r, c], palette[cat])
    with pytest.raises(ValueError, match="category ids"):
        colorize_semantic(torch.tensor([[8]]))


def test_panoptic_colours_things_by_instance_and_stuff_by_category():
    pan = torch.zeros(2, 4, 2, dtype=torch.long)
    pan[..., 0] = 5  # sky
    pan[0, 0] = torch.tensor([2, 7])  # square, instance 7 (appears first)
    pan[0, 1] = torch.tensor([2, 3])  # another square
    pan[1, 0] = torch.tensor([2, 7])
    pan[1, 3] = torch.tensor([0, 0])  # void
    out = colorize_panoptic(pan)
    colors = instance_colors(2)
    assert np.allclose(out[0, 0], colors[0]) and np.allclose(out[1, 0], colors[0])
    assert np.allclose(out[0, 1], colors[1])  # same class, another instance: another colour
    assert np.allclose(out[0, 3], category_palette()[5])
    assert np.allclose(out[1, 3], 0.0)
    with pytest.raises(ValueError, match=r"\[H, W, 2\]"):
        colorize_panoptic(torch.zeros(2, 4, dtype=torch.long))


def test_instances_later_on_top_and_empty():
    masks = torch.zeros(2, 3, 3, dtype=torch.bool)
    masks[0, :2, :2] = True
    masks[1, 1:, 1:] = True
    out = colorize_instances(masks)
    assert np.allclose(out[1, 1], instance_colors(2)[1]) and np.allclose(out[0, 0],
                                                                        instance_colors(2)[0])
    assert np.allclose(out[2, 0], 0.0)
    assert colorize_instances(torch.zeros(0, 3, 5, dtype=torch.bool)).shape == (3, 5, 3)


def test_taken_before_reads_the_merge_decisions():
    H, W = 8, 10
    semantic = torch.full((H, W), 6)
    masks = torch.zeros(4, H, W, dtype=torch.bool)
    for k, (r0, r1, c0, c1) in enumerate([(2, 6, 1, 5), (4, 8, 4, 8), (2, 6, 2, 5),
                                           (1, 3, 7, 10)]):
        masks[k, r0:r1, c0:c1] = True
    scores = torch.tensor([0.95, 0.9, 0.8, 0.3])
    merged = panoptic_merge(masks, scores, torch.tensor([1, 2, 1, 3]), semantic, (5, 6, 7))
    fractions = taken_before(merged, masks, [0, 1, 2, 3])
    assert fractions == pytest.approx([0.0, 2 / 16, 1.0, 0.0])
    # a loop reference: union of the masks placed before, placed = appears in the output
    taken = torch.zeros(H, W, dtype=torch.bool)
    for k, f in zip([0, 1, 2, 3], fractions):
        assert f == pytest.approx((masks[k] & taken).sum().item() / masks[k].sum().item())
        if ((merged[..., 1] > 0) & masks[k] & ~taken).any():
            taken |= masks[k]

"""Pictures for the panoptic chapter: category maps, instance maps, panoptic maps.

Kirillov et al., "Panoptic Segmentation", CVPR 2019. The three tasks give three
kinds of map, drawn here with one palette so that a figure can set them side by
side: a *semantic* map colours every pixel by its category (things in the
course's class colours, stuff in fixed muted colours), an *instance* map
colours each thing by its own instance colour and leaves the rest dark, and a
*panoptic* map does both: stuff by category, things by instance.
All functions return plain ``[H, W, 3]`` float arrays in [0, 1].
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from ..data.panoptic import STUFF_IDS, THING_IDS
from ..viz.images import as_numpy, class_colors, instance_colors

# Stuff colours (sky, ground, wall): muted, so that the things stand out on them.
STUFF_COLORS = np.array([[0.68, 0.82, 0.93], [0.72, 0.62, 0.45], [0.62, 0.55, 0.55]])
VOID_COLOR = np.array([0.0, 0.0, 0.0])  # unlabelled pixels (category 0)


def category_palette() -> np.ndarray:
    """Colour of each category id 0..7: void black, things ``class_colors``, stuff muted.

    Returns:
        np.ndarray[1 + len(THING_IDS) + len(STUFF_IDS), 3].
    """
    things = class_colors(1 + len(THING_IDS))[1:]  # [4, 3] the detection chapters' colours
    return np.concatenate([VOID_COLOR[None], things, STUFF_COLORS[: len(STUFF_IDS)]])


def colorize_semantic(semantic) -> np.ndarray:
    """Category map Tensor[H, W] (ids 0..7) -> RGB [H, W, 3] with :func:`category_palette`."""
    cat = as_numpy(semantic).astype(np.int64)
    palette = category_palette()
    if cat.ndim != 2 or cat.min() < 0 or cat.max() >= len(palette):
        raise ValueError(f"semantic must be an [H, W] map of category ids in [0, "
                         f"{len(palette) - 1}], got shape {list(cat.shape)}")
    return palette[cat]


def colorize_instances(masks, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Instance masks [K, H, W] -> RGB [H, W, 3]: mask k in ``instance_colors(K)[k]``, else black.

    Where masks overlap, the later one is drawn on top. ``shape`` (H, W) is needed
    only when K = 0 and the masks tensor has no size.
    """
    m = as_numpy(masks).astype(bool)
    H, W = m.shape[1:] if m.ndim == 3 else shape
    out = np.zeros((H, W, 3))
    for mask, color in zip(m, instance_colors(len(m))):  # K is small; later on top
        out[mask] = color
    return out


def colorize_panoptic(panoptic) -> np.ndarray:
    """Panoptic map Tensor[H, W, 2] (category id, instance id) -> RGB [H, W, 3].

    Stuff and void pixels take their category's colour (:func:`category_palette`);
    thing pixels take the colour of their (category, instance) segment, segments
    numbered in order of first appearance, so two touching things of one class
    get different colours.
    """
    p = as_numpy(panoptic).astype(np.int64)
    if p.ndim != 3 or p.shape[-1] != 2:
        raise ValueError(f"panoptic must be [H, W, 2] (category id, instance id), "
                         f"got {list(p.shape)}")
    out = colorize_semantic(p[..., 0])
    thing = np.isin(p[..., 0], THING_IDS)  # [H, W]
    if thing.any():
        keys = p[..., 0] * (p[..., 1].max() + 1) + p[..., 1]  # [H, W] one key per segment
        _, first, inverse = np.unique(keys[thing], return_index=True, return_inverse=True)
        rank = np.argsort(np.argsort(first))  # segment -> its order of first appearance
        out[thing] = instance_colors(len(first))[rank[inverse.reshape(-1)]]
    return out


def taken_before(panoptic: Tensor, masks: Tensor, order: list[int]) -> list[float]:
    """For each instance in merge order, the fraction of its mask that earlier ones took.

    Reads the decisions of :func:`cv_course.models.detection.panoptic_fpn.panoptic_merge`
    from its output: the j-th placed instance has instance id j. For instance
    ``order[i]``, the pixels taken before it are those of the instances placed
    before it (ids below the next free id at that point).

    Args:
        panoptic (Tensor[H, W, 2]): the merged map.
        masks (Tensor[K, H, W] bool): the instances' masks.
        order (list[int]): the instances in the order the merge visits them.
    Returns:
        list of float, one per entry of ``order``.
    """
    inst = panoptic[..., 1]
    placed = 0
    fractions = []
    for k in order:  # sequential: what was taken depends on the instances before
        taken = (inst > 0) & (inst <= placed)
        area = max(int(masks[k].sum()), 1)
        fractions.append(int((masks[k] & taken).sum()) / area)
        if bool(((inst == placed + 1) & masks[k]).any()):
            placed += 1
    return fractions


__all__ = ["STUFF_COLORS", "category_palette", "colorize_semantic", "colorize_instances",
           "colorize_panoptic", "taken_before"]

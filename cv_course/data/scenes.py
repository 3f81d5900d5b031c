"""Synthetic scenes of overlapping shapes on textured backgrounds, with exact labels.

Every scene is a deterministic function of one integer seed (a local
``torch.Generator``; the global RNG is never touched), so a dataset of scenes is
reproducible on any machine without downloading anything. One scene gives the
labels of every task in the course at once: a semantic map (segmentation),
boxes and labels (detection) and one visible-pixel mask per instance (instance
segmentation).

Design choices that keep the tasks honest:

* Objects are painted in order, so later objects occlude earlier ones; masks,
  the semantic map and boxes all describe the *visible* pixels. An instance that
  ends up fully hidden is dropped.
* Backgrounds are never flat (low-frequency colour noise + stripes + pixel noise).
* Object colour is drawn independently of the class (and offset from the local
  background so the object is visible), so a model must learn shape, not colour.
* All shapes have about the same area for the same scale (see ``shapes.py``).

Box convention (the COCO / pycocotools one): pixel (row i, column j) covers the
square [j, j+1) x [i, i+1), and a box is the tight box of the mask's pixels in
those continuous coordinates. So ``x2 = last column + 1`` and
``boxes == torchvision.ops.masks_to_boxes(masks) + [0, 0, 1, 1]``; a one-pixel
object has a 1 x 1 box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .shapes import shape_sdf

CLASSES: tuple[str, ...] = ("background", "circle", "square", "triangle", "star")
NUM_CLASSES: int = len(CLASSES)  # including background

_SEED_STRIDE = 1_000_003  # see scene_seed


@dataclass
class Scene:
    """One generated scene and all of its labels (K = number of visible instances)."""

    image: Tensor  # [3, H, W] float32 in [0, 1]
    semantic: Tensor  # [H, W] int64, 0 = background, else class id
    masks: Tensor  # [K, H, W] bool, visible pixels of each instance, pairwise disjoint
    boxes: Tensor  # [K, 4] float32 (x1, y1, x2, y2), tight box of the mask, x2 = last col + 1
    labels: Tensor  # [K] int64 in 1..NUM_CLASSES-1


def scene_seed(seed: int, index: int) -> int:
    """Seed of scene ``index`` in a collection made with ``seed``.

    ``(seed * 1_000_003 + index) mod 2**32``: torch's CPU generator keeps only 32 bits of
    a seed. Collections with different seeds below 4,000 share no scene as long as
    each has fewer than a million scenes, so ``seed=0`` for training and ``seed=1``
    for validation never overlap (``seed + index`` would share all but one scene).
    """
    return (seed * _SEED_STRIDE + index) % 2**32


def _parse_size(size) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or any(not isinstance(s, int) or s < 8 for s in size):
        raise ValueError(f"size must be an int or (H, W) of ints >= 8, got {size!r}")
    return int(size[0]), int(size[1])


def _check_args(seed, min_objects, max_objects, min_scale, max_scale) -> None:
    if not 0 <= seed < 2**32:
        raise ValueError(
            f"seed must be in [0, 2**32) (torch's CPU generator keeps 32 bits), got {seed}"
        )
    if not 0 <= min_objects <= max_objects:
        raise ValueError(
            f"need 0 <= min_objects <= max_objects, got {min_objects} and {max_objects}"
        )
    if not 0 < min_scale <= max_scale <= 1:
        raise ValueError(f"need 0 < min_scale <= max_scale <= 1, got {min_scale} and {max_scale}")


def _uniform(lo: float, hi: float, shape, gen: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen)


def _background(H: int, W: int, gen: torch.Generator) -> Tensor:
    """Textured background [3, H, W]: smooth colour noise + oriented stripes."""
    g = int(torch.randint(2, 7, (1,), generator=gen))  # coarse grid of g x g colours
    coarse = torch.rand(1, 3, g, g, generator=gen)
    smooth = F.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=False)[0]
    # Stripes: a sinusoid along a random direction, 1.5 to 8 cycles across the image.
    theta, phase = _uniform(0, math.pi, 2, gen) * torch.tensor([1.0, 2.0])
    freq = float(_uniform(1.5, 8.0, 1, gen))
    amp = _uniform(0.05, 0.2, 1, gen) * (2 * torch.rand(3, generator=gen) - 1)  # [3]
    ys = torch.arange(H, dtype=torch.float32)[:, None]
    xs = torch.arange(W, dtype=torch.float32)[None, :]
    t = (xs * torch.cos(theta) + ys * torch.sin(theta)) / min(H, W)  # [H, W]
    stripes = torch.sin(2 * math.pi * freq * t + phase)  # [H, W]
    return 0.15 + 0.7 * smooth + amp[:, None, None] * stripes  # [3, H, W]


def _paint_objects(bg: Tensor, top: Tensor, cx, cy, radius, gen: torch.Generator) -> Tensor:
    """Paint the objects over the background [3, H, W].

    ``top`` [H, W] is 0 on the background and k + 1 where object k is the topmost.
    Each object gets a flat colour plus a soft linear shading in a random direction.
    """
    K = cx.shape[0]
    _, H, W = bg.shape
    # Colour independent of the class, but each channel offset by 0.25-0.75 (mod 1)
    # from the background under the object's centre so that the object is visible.
    local = bg[:, cy.long().clamp(0, H - 1), cx.long().clamp(0, W - 1)].T  # [K, 3]
    colour = torch.remainder(local.clamp(0, 1) + _uniform(0.25, 0.75, (K, 3), gen), 1.0)
    beta = _uniform(0, 2 * math.pi, K, gen)  # shading direction
    shade = _uniform(0.0, 0.15, K, gen)  # shading strength
    if K == 0:
        return bg
    # Look up the parameters of the topmost object at every pixel, so that the
    # texture is computed once per pixel rather than once per object and pixel.
    k = (top - 1).clamp(min=0)  # [H, W]
    ys = torch.arange(H, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(W, dtype=torch.float32)[None, :] + 0.5
    along = ((xs - cx[k]) * torch.cos(beta)[k] + (ys - cy[k]) * torch.sin(beta)[k]) / radius[k]
    painted = colour[k].permute(2, 0, 1) + shade[k] * along  # [3, H, W]
    return torch.where(top > 0, painted, bg)


def _tight_boxes(masks: Tensor) -> Tensor:
    """Tight (x1, y1, x2, y2) boxes of non-empty masks [K, H, W], x2 = last col + 1."""
    K, H, W = masks.shape
    cols = masks.any(dim=1)  # [K, W]
    rows = masks.any(dim=2)  # [K, H]
    # argmax of a bool row finds the first True; on the flipped row, the last one.
    x1 = cols.int().argmax(dim=1)
    x2 = W - cols.flip(1).int().argmax(dim=1)
    y1 = rows.int().argmax(dim=1)
    y2 = H - rows.flip(1).int().argmax(dim=1)
    return torch.stack([x1, y1, x2, y2], dim=1).float()  # [K, 4]


def make_scene(
    seed: int,
    size: int | tuple[int, int] = 128,
    min_objects: int = 1,
    max_objects: int = 4,
    min_scale: float = 0.15,
    max_scale: float = 0.4,
) -> Scene:
    """Generate one scene, a deterministic function of its arguments.

    Args:
        seed (int): in [0, 2**32); the same seed always gives identical tensors.
        size (int or (H, W)): image size in pixels (>= 8).
        min_objects, max_objects (int): the number of objects drawn is uniform in
            this range (inclusive); fewer may be visible after occlusion.
        min_scale, max_scale (float): an object's circumscribed-circle diameter is
            uniform in [min_scale, max_scale] * min(H, W). Every object lies fully
            inside the image before occlusion.
    Returns:
        Scene: image [3, H, W] float32 in [0, 1], semantic [H, W] int64,
        masks [K, H, W] bool, boxes [K, 4] float32 (x1, y1, x2, y2), labels [K] int64.
    """
    _check_args(seed, min_objects, max_objects, min_scale, max_scale)
    H, W = _parse_size(size)
    gen = torch.Generator().manual_seed(seed)
    bg = _background(H, W, gen)  # [3, H, W]

    K = int(torch.randint(min_objects, max_objects + 1, (1,), generator=gen))
    labels = torch.randint(1, NUM_CLASSES, (K,), generator=gen)  # [K]
    radius = _uniform(min_scale, max_scale, K, gen) * min(H, W) / 2  # [K]
    cx = radius + torch.rand(K, generator=gen) * (W - 2 * radius)  # [K]
    cy = radius + torch.rand(K, generator=gen) * (H - 2 * radius)  # [K]
    angle = _uniform(0, 2 * math.pi, K, gen)  # [K]
    inside = shape_sdf(labels - 1, cx, cy, radius, angle, H, W) <= 0  # [K, H, W]

    # Painter's algorithm without a loop: the topmost object at a pixel is the
    # largest k whose shape covers it. top = k + 1 there, 0 on the background.
    order = torch.arange(1, K + 1)[:, None, None]  # [K, 1, 1]
    top = (inside * order).amax(dim=0) if K else torch.zeros(H, W, dtype=torch.long)  # [H, W]
    masks = top[None] == order  # [K, H, W]
    image = _paint_objects(bg, top, cx, cy, radius, gen)  # [3, H, W]
    image = (image + 0.03 * torch.randn(3, H, W, generator=gen)).clamp(0, 1)

    semantic = torch.cat([torch.zeros(1, dtype=torch.long), labels])[top]  # [H, W]
    keep = masks.flatten(1).any(dim=1)  # [K] drop fully occluded instances
    masks, labels = masks[keep], labels[keep]
    return Scene(image=image, semantic=semantic, masks=masks, boxes=_tight_boxes(masks),
                 labels=labels)


def make_scenes(n: int, seed: int = 0, size: int | tuple[int, int] = 128, **kwargs) -> list[Scene]:
    """Generate ``n`` scenes: scene i is ``make_scene(scene_seed(seed, i), size, **kwargs)``.

    With ``seed=0`` that is simply ``make_scene(i)``. Other keyword arguments go to
    :func:`make_scene`.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [make_scene(scene_seed(seed, i), size, **kwargs) for i in range(n)]

"""Shapes as signed functions on a pixel grid: the drawing primitive of the scene generator.

Each shape is a function ``f(u, v)`` of local coordinates (centred on the object,
rotated, divided by its circumradius ``R``) that is negative inside the shape and
positive outside, so ``f <= 0`` is the shape's pixel mask. For the circle and the
square ``f`` is the exact (Euclidean / Chebyshev) distance to the outline; for the
triangle and the star it is the largest signed distance to an edge line, which has
the same sign as the true distance. Everything is one tensor expression over all
objects and all pixels at once; no Python loop touches a pixel.

All four shapes fit in the unit circle and have about the same area (~1.3 R^2),
so the size of an object says nothing about its class.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Chosen so that every shape has area ~1.32 R^2 (triangle: 3*sqrt(3)/4 = 1.30).
_CIRCLE_RADIUS = 0.65  # pi * 0.65^2 = 1.33
_SQUARE_HALF_SIDE = 0.58  # 4 * 0.58^2 = 1.35
_STAR_INNER_RADIUS = 0.45  # 10 * (1/2) * 0.45 * sin(36 deg) = 1.32
_STAR_POINTS = 5


def circle_sdf(u: Tensor, v: Tensor) -> Tensor:
    """Signed distance to a circle of radius 0.65 centred at the origin."""
    return torch.sqrt(u * u + v * v) - _CIRCLE_RADIUS


def square_sdf(u: Tensor, v: Tensor) -> Tensor:
    """Signed Chebyshev distance to an axis-aligned square of half-side 0.58."""
    return torch.maximum(u.abs(), v.abs()) - _SQUARE_HALF_SIDE


def triangle_sdf(u: Tensor, v: Tensor) -> Tensor:
    """Equilateral triangle inscribed in the unit circle, pointing up (-v)."""
    # Image coordinates: v points down. Outward edge normals at 90, 210 and 330
    # degrees: the bottom edge is v = 1/2 and the apex is at (0, -1).
    out = None
    for k in range(3):  # three half-planes n . p <= 1/2 (inradius of a unit triangle)
        a = math.pi / 2 + 2 * math.pi * k / 3
        d = u * math.cos(a) + v * math.sin(a) - 0.5
        out = d if out is None else torch.maximum(out, d)
    return out


def star_sdf(u: Tensor, v: Tensor) -> Tensor:
    """Five-pointed star with outer radius 1 and inner radius 0.45, a tip at +u."""
    sector = 2 * math.pi / _STAR_POINTS
    phi = torch.atan2(v, u)
    # Fold every point into the half-sector [0, pi/5] next to the tip at angle 0:
    # the star is symmetric, so one edge (tip P0 -> notch P1) is the whole outline.
    a = (phi - sector * torch.round(phi / sector)).abs()
    rho = torch.sqrt(u * u + v * v)
    qx, qy = rho * torch.cos(a), rho * torch.sin(a)
    half = sector / 2
    p1x, p1y = _STAR_INNER_RADIUS * math.cos(half), _STAR_INNER_RADIUS * math.sin(half)
    # Outward unit normal of the edge P0 = (1, 0) -> P1.
    nx, ny = p1y, 1.0 - p1x
    norm = math.hypot(nx, ny)
    return ((qx - 1.0) * nx + qy * ny) / norm


# Order matches CLASSES[1:] in scenes.py.
SHAPE_SDFS = (circle_sdf, square_sdf, triangle_sdf, star_sdf)


def shape_sdf(
    kinds: Tensor, cx: Tensor, cy: Tensor, radius: Tensor, angle: Tensor, height: int, width: int
) -> Tensor:
    """Signed function of K shapes evaluated on an H x W pixel grid.

    Pixel (row i, column j) is sampled at its centre (j + 0.5, i + 0.5).

    Args:
        kinds (Tensor[K] int64): shape index into ``SHAPE_SDFS`` (class id - 1).
        cx, cy (Tensor[K]): centres in pixels.
        radius (Tensor[K]): circumradius R in pixels (> 0).
        angle (Tensor[K]): rotation in radians.
        height, width (int): grid size.
    Returns:
        Tensor[K, H, W]: negative inside object k, positive outside, in units of R.
    """
    K = kinds.shape[0]
    dev, dt = cx.device, cx.dtype
    ys = torch.arange(height, device=dev, dtype=dt) + 0.5  # [H]
    xs = torch.arange(width, device=dev, dtype=dt) + 0.5  # [W]
    dx = xs[None, None, :] - cx[:, None, None]  # [K, 1, W]
    dy = ys[None, :, None] - cy[:, None, None]  # [K, H, 1]
    c, s = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    r = radius[:, None, None]
    u = (c * dx + s * dy) / r  # [K, H, W]
    v = (c * dy - s * dx) / r  # [K, H, W]
    out = torch.empty(K, height, width, device=dev, dtype=dt)
    # A loop over the four shape kinds (not over pixels or objects).
    for k, sdf in enumerate(SHAPE_SDFS):
        sel = kinds == k  # [K]
        if bool(sel.any()):
            out[sel] = sdf(u[sel], v[sel])
    return out

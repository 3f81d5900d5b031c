"""Figures for the two-stage detection chapters: RoI Pool and RoI Align bins on a
feature grid, one bilinear sample, and the anchors of one feature-map cell
(with an ipywidgets viewer that moves between cells).

Coordinates: boxes are ``(x1, y1, x2, y2)`` in image pixels. Feature-map
drawings use *cell units*: cell ``(i, j)`` of a stride-s map covers image pixels
``[j s, (j + 1) s) x [i s, (i + 1) s)``, so a box is drawn at its image
coordinates times ``spatial_scale = 1 / s``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from matplotlib.patches import Rectangle
from torch import Tensor

from ..ops import Matcher, box_iou, grid_anchors, roi_pool
from .boxes import draw_boxes
from .images import show_image

LABEL_COLORS = {"positive": "lime", "ignored": "tab:orange", "negative": "0.55"}


def draw_feature_grid(ax, feature_size: tuple[int, int], color: str = "0.8") -> None:
    """Thin lines between the cells of an (H, W) feature map, in cell units, y down."""
    H, W = feature_size
    for x in range(W + 1):
        ax.plot([x, x], [0, H], color=color, linewidth=0.6, zorder=0)
    for y in range(H + 1):
        ax.plot([0, W], [y, y], color=color, linewidth=0.6, zorder=0)
    ax.set_xlim(-0.2, W + 0.2)
    ax.set_ylim(H + 0.2, -0.2)
    ax.set_aspect("equal")


def roi_pool_bins(boxes, output_size: int, spatial_scale: float,
                  feature_size: tuple[int, int]) -> Tensor:
    """The cells each RoI Pool bin takes its maximum over, asked of ``roi_pool`` itself.

    Max-pooling a map whose value is the column index gives each bin's last
    column, pooling minus the column index its first (and the same for rows),
    so the bins are exactly those of :func:`cv_course.ops.roi_pool`.

    Args:
        boxes (Tensor[K, 4] or 4 numbers): (x1, y1, x2, y2) in image pixels.
    Returns:
        Tensor[K, P, P, 4] (or [P, P, 4] for one box): (x1, y1, x2, y2) of bin
        (row, col) in cell units, ends exclusive.
    """
    H, W = feature_size
    b = torch.as_tensor(boxes, dtype=torch.float64)
    single = b.dim() == 1
    b = b.reshape(-1, 4)  # [K, 4]
    cols = torch.arange(W, dtype=torch.float64).expand(H, W)  # [H, W]
    rows = torch.arange(H, dtype=torch.float64)[:, None].expand(H, W)
    maps = torch.stack([-cols, -rows, cols, rows])[None]  # [1, 4, H, W]
    edges = roi_pool(maps, [b], output_size, spatial_scale)  # [K, 4, P, P]
    x1, y1, x2, y2 = -edges[:, 0], -edges[:, 1], edges[:, 2] + 1, edges[:, 3] + 1
    bins = torch.stack([x1, y1, x2, y2], dim=-1)  # [K, P, P, 4]
    return bins[0] if single else bins


def draw_roi_pool(ax, box, output_size: int, spatial_scale: float,
                  feature_size: tuple[int, int]) -> Tensor:
    """RoI Pool on a feature grid: the true box (dashed) and the snapped bins (filled).

    Returns:
        Tensor[P, P, 4]: the bins, as :func:`roi_pool_bins`.
    """
    draw_feature_grid(ax, feature_size)
    bins = roi_pool_bins(box, output_size, spatial_scale, feature_size)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]
    for k, (x1, y1, x2, y2) in enumerate(bins.reshape(-1, 4).tolist()):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, facecolor=colors[k % 4],
                               alpha=0.3, edgecolor=colors[k % 4], linewidth=1.5))
    scaled = torch.as_tensor(box, dtype=torch.float64) * spatial_scale
    draw_boxes(ax, scaled[None], colors="black", linestyle="--", linewidth=1.5)
    return bins


def draw_roi_align(ax, box, output_size: int, spatial_scale: float,
                   feature_size: tuple[int, int], sampling_ratio: int = 2) -> Tensor:
    """RoI Align (``aligned=True``) on a feature grid: equal bins and their sample points.

    Returns:
        Tensor[P * P * g * g, 2]: (x, y) of every bilinear sample, in cell units.
    """
    draw_feature_grid(ax, feature_size)
    x1, y1, x2, y2 = (float(v) * spatial_scale for v in box)
    P, g = output_size, sampling_ratio
    bw, bh = (x2 - x1) / P, (y2 - y1) / P
    for k in range(P + 1):  # bin edges
        ax.plot([x1 + k * bw] * 2, [y1, y2], color="black", linewidth=1.2)
        ax.plot([x1, x2], [y1 + k * bh] * 2, color="black", linewidth=1.2)
    steps = (torch.arange(P * g, dtype=torch.float64) + 0.5) / g  # [P g], in bins
    ys, xs = torch.meshgrid(y1 + steps * bh, x1 + steps * bw, indexing="ij")
    points = torch.stack([xs.flatten(), ys.flatten()], dim=1)  # [P g P g, 2]
    ax.plot(points[:, 0], points[:, 1], "o", color="tab:red", markersize=3)
    return points


def draw_bilinear_sample(ax, x: float, y: float) -> list[float]:
    """One bilinear sample at (x, y) between four grid points (features at integer (i, j)).

    Each neighbour is labelled with its weight ``(1 - |x - i|) (1 - |y - j|)``.

    Returns:
        list[float]: the four weights, for (floor x, floor y), (ceil x, floor y),
        (floor x, ceil y), (ceil x, ceil y).
    """
    import math

    i0, j0 = math.floor(x), math.floor(y)
    weights = []
    for dj in (0, 1):
        for di in (0, 1):
            i, j = i0 + di, j0 + dj
            w = (1 - abs(x - i)) * (1 - abs(y - j))
            weights.append(w)
            ax.plot([x, i], [y, j], color="0.6", linewidth=1, zorder=1)
            ax.plot(i, j, "s", color="tab:blue", markersize=8, zorder=2)
            ax.text(i + (0.08 if di else -0.08), j + (0.12 if dj else -0.1),
                    f"$f_{{{i},{j}}}$ × {w:.2f}", ha="left" if di else "right",
                    va="top" if dj else "bottom", fontsize=11)
    ax.plot(x, y, "o", color="tab:red", markersize=8, zorder=3)
    ax.text(x, y - 0.08, f"({x}, {y})", ha="center", va="bottom", color="tab:red",
            fontsize=11)
    ax.set_xlim(i0 - 0.9, i0 + 1.9)
    ax.set_ylim(j0 + 1.45, j0 - 0.45)
    ax.set_aspect("equal")
    ax.set_xticks([i0, i0 + 1])
    ax.set_yticks([j0, j0 + 1])
    return weights


def anchor_labels(anchors: Tensor, gt_boxes: Tensor, high: float = 0.7,
                  low: float = 0.3) -> tuple[list[str], Tensor]:
    """The RPN label of every anchor: "positive", "negative" or "ignored".

    Faster R-CNN's rule with :class:`cv_course.ops.Matcher`: positive at IoU >= high
    with some box, or as the best anchor of a box (low-quality matches); negative
    below ``low`` with every box; ignored in between.

    Args:
        anchors (Tensor[N, 4]), gt_boxes (Tensor[G, 4]): (x1, y1, x2, y2) boxes.
    Returns:
        (list of N str, Tensor[N]): labels and each anchor's best IoU (0 without boxes).
    """
    iou = box_iou(gt_boxes, anchors)  # [G, N]
    matches = Matcher(high, low, allow_low_quality_matches=True)(iou)  # [N]
    best = iou.amax(dim=0) if len(gt_boxes) else torch.zeros(len(anchors))
    names = {Matcher.BELOW_LOW_THRESHOLD: "negative", Matcher.BETWEEN_THRESHOLDS: "ignored"}
    return [names.get(int(m), "positive") for m in matches], best


def draw_cell_anchors(ax, image, stride: int, sizes: Sequence[float],
                      aspect_ratios: Sequence[float], row: int, col: int,
                      gt_boxes: Tensor | None = None) -> list[tuple[str, float]]:
    """The image, every anchor centre of a stride-``stride`` grid, and one cell's anchors.

    The cell's anchors are coloured by their RPN label against ``gt_boxes``
    (:func:`anchor_labels`: positive bright green, ignored orange, negative grey dashed);
    the ground-truth boxes are white and dashed.

    Returns:
        list of (label, IoU), one per anchor of the cell, ordered as ``grid_anchors``.
    """
    H, W = image.shape[-2:]
    size = (H // stride, W // stride)
    anchors = grid_anchors(size, stride, sizes, aspect_ratios)  # [h * w * A, 4]
    A = len(sizes) * len(aspect_ratios)
    gt = gt_boxes if gt_boxes is not None else torch.zeros(0, 4)
    labels, best = anchor_labels(anchors, gt)
    show_image(ax, image)
    centres = (anchors[::A, :2] + anchors[::A, 2:]) / 2  # [h * w, 2]
    ax.plot(centres[:, 0], centres[:, 1], ".", color="white", markersize=2.5)
    if len(gt):
        draw_boxes(ax, gt, colors="white", linestyle="--", linewidth=1.2)
    first = (row * size[1] + col) * A
    cell = list(range(first, first + A))
    for n in cell:
        style = "--" if labels[n] == "negative" else "-"
        width = 2.4 if labels[n] == "positive" else 1.6
        draw_boxes(ax, anchors[n:n + 1], colors=LABEL_COLORS[labels[n]], linestyle=style,
                   linewidth=width)
    cx, cy = centres[row * size[1] + col].tolist()
    ax.plot(cx, cy, "o", color="yellow", markersize=5)
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    return [(labels[n], float(best[n])) for n in cell]


def anchor_viewer(image, gt_boxes: Tensor | None = None, stride: int = 16,
                  sizes: Sequence[float] = (32, 64), aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                  row: int = 3, col: int = 3, figsize: tuple[float, float] = (4.5, 4.5)):
    """Sliders that move between the cells of a feature grid and show each cell's anchors.

    Each position redraws :func:`draw_cell_anchors` and lists the cell's anchors
    with their size, aspect ratio, best IoU and RPN label.

    Args:
        image (Tensor[3, H, W]): the scene; gt_boxes (Tensor[G, 4], optional): its boxes.
        stride (int): image pixels per feature cell; sizes, aspect_ratios: as ``grid_anchors``.
        row, col (int): the cell shown first.
    Returns:
        ipywidgets.VBox: display it in a notebook; attributes ``sliders`` (row, column)
        and ``readout`` (ipywidgets.HTML).
    """
    # Imported here, not at module level: importing cv_course.viz must not need a notebook stack.
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from .widgets import _show_in

    H, W = image.shape[-2:]
    h, w = H // stride, W // stride
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"cell ({row}, {col}) is outside the {h} x {w} grid of stride {stride}")
    sliders = [widgets.IntSlider(value=row, min=0, max=h - 1, description="row"),
               widgets.IntSlider(value=col, min=0, max=w - 1, description="column")]
    readout = widgets.HTML()
    out = widgets.Output()
    shapes = [(s, r) for r in aspect_ratios for s in sizes]  # grid_anchors' order

    def redraw(_change=None):
        fig, ax = plt.subplots(figsize=figsize)
        found = draw_cell_anchors(ax, image, stride, sizes, aspect_ratios, sliders[0].value,
                                  sliders[1].value, gt_boxes)
        lines = [f"size {s}, h/w {r}: IoU {iou:.2f}, <b>{label}</b>"
                 for (s, r), (label, iou) in zip(shapes, found)]
        readout.value = "<br>".join(lines)
        _show_in(out, fig)

    for s in sliders:
        s.observe(redraw, names="value")
    redraw()
    panel = widgets.VBox([widgets.HBox(sliders), widgets.HBox([out, readout])])
    panel.sliders, panel.readout = sliders, readout
    return panel

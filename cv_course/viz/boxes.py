"""Drawing boxes with matplotlib: detections with class names and scores, and
the intersection and union of two boxes (the picture behind IoU).

Boxes are ``(x1, y1, x2, y2)`` in absolute pixels, the convention of
``cv_course.ops``; y grows downwards, as in an image.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.colors as mcolors
import numpy as np
import torch
from matplotlib.patches import Rectangle

from ..ops import box_area, box_iou
from .images import as_numpy, class_colors, instance_colors


def _box_colors(colors, labels, n: int) -> list:
    """One matplotlib colour per box: given, by class label, or by position."""
    if colors is None:
        if labels is None:
            return list(instance_colors(n))
        labels = as_numpy(labels).astype(int)
        palette = class_colors(int(labels.max()) + 1 if n else 0)
        return [palette[k] for k in labels]
    if mcolors.is_color_like(colors):  # one colour for every box
        return [colors] * n
    if len(colors) != n:
        raise ValueError(f"colors must be one colour or one per box ({n}), got {len(colors)}")
    return list(colors)


def _box_tags(labels, scores, class_names, n: int) -> list[str | None]:
    """The text drawn at each box: "name 0.95", "name", "0.95" or nothing."""
    tags = []
    for i in range(n):
        parts = []
        if labels is not None:
            k = int(labels[i])
            parts.append(class_names[k] if class_names is not None else str(k))
        if scores is not None:
            parts.append(f"{float(scores[i]):.2f}")
        tags.append(" ".join(parts) if parts else None)
    return tags


def draw_boxes(
    ax,
    boxes,
    labels=None,
    scores=None,
    class_names: Sequence[str] | None = None,
    colors=None,
    tags: Sequence[str] | None = None,
    linestyle: str = "-",
    linewidth: float = 2.0,
    fill_alpha: float = 0.0,
    fontsize: float = 10.0,
) -> list[Rectangle]:
    """Draw boxes on ``ax``, each with an optional tag such as ``"circle 0.95"``.

    Call ``show_image`` first to draw on an image; the boxes use the same pixel
    coordinates. The tag sits on the top edge of its box, or on the bottom edge
    when that spot is taken by an earlier box's tag (two overlapping objects).

    Args:
        ax (matplotlib Axes): where to draw.
        boxes (Tensor or array [N, 4]): (x1, y1, x2, y2) boxes in pixels.
        labels (Tensor or array [N], int, optional): class of each box; picks the
            colour (``class_colors``) and the name in the tag.
        scores (Tensor or array [N], optional): score of each box, shown with 2 decimals.
        class_names (sequence of str, optional): name of class 0, 1, ...; without
            it the tag shows the class index.
        colors (optional): one matplotlib colour for all boxes, or one per box;
            default: by class label, or a different colour per box without labels.
        tags (sequence of str, optional): text per box, replacing the label/score tag.
        linestyle, linewidth: outline style (e.g. ``"--"`` for suppressed boxes).
        fill_alpha (float): opacity of a fill in the box colour (0: outline only).
        fontsize (float): size of the tag text.
    Returns:
        list[Rectangle]: the N patches added to ``ax``, in the order of ``boxes``.
    """
    b = as_numpy(boxes).astype(np.float64).reshape(-1, 4)  # [N, 4]
    n = b.shape[0]
    for name, x in (("labels", labels), ("scores", scores), ("tags", tags)):
        if x is not None and len(x) != n:
            raise ValueError(f"{name} must have one entry per box ({n}), got {len(x)}")
    labels = None if labels is None else as_numpy(labels)
    scores = None if scores is None else as_numpy(scores)
    color_per_box = _box_colors(colors, labels, n)
    text_per_box = list(tags) if tags is not None else _box_tags(labels, scores, class_names, n)

    patches = []
    for (x1, y1, x2, y2), color, text in zip(b, color_per_box, text_per_box):
        rect = Rectangle((x1, y1), x2 - x1, y2 - y1, edgecolor=color, linewidth=linewidth,
                         linestyle=linestyle, facecolor=mcolors.to_rgba(color, fill_alpha))
        ax.add_patch(rect)
        patches.append(rect)
        if text:
            tag = ax.text(x1, y1, text, fontsize=fontsize, color="white", va="bottom", ha="left",
                          bbox=dict(facecolor=color, edgecolor="none", pad=1.0, alpha=0.85),
                          clip_on=True)
            _place_tag(tag, (x1, y2))
    return patches


def _place_tag(tag, fallback_xy) -> None:
    """Move ``tag`` to ``fallback_xy`` (below its box) if it covers a tag drawn before it."""
    renderer = tag.figure.canvas.get_renderer()
    others = [t.get_bbox_patch().get_window_extent(renderer) for t in tag.axes.texts
              if t is not tag and t.get_bbox_patch() is not None]
    tag.draw(renderer)  # lays out the tag's bbox patch, so that its extent is final
    if any(tag.get_bbox_patch().get_window_extent(renderer).overlaps(o) for o in others):
        tag.set_position(fallback_xy)
        tag.set_verticalalignment("top")


def draw_iou_pair(
    ax,
    box1,
    box2,
    names: tuple[str, str] = ("A", "B"),
    canvas: tuple[int, int] | None = None,
) -> float:
    """Draw two boxes, fill their intersection, and title the axes with the IoU.

    The title reads ``IoU = intersection / union = value``, all computed with
    ``cv_course.ops``.

    Args:
        ax (matplotlib Axes): where to draw.
        box1, box2 (sequence or Tensor[4]): (x1, y1, x2, y2) boxes in pixels.
        names (tuple[str, str]): tags of the two boxes.
        canvas (tuple[int, int], optional): (width, height) of the drawing area,
            with (0, 0) at the top left; default: the two boxes plus a margin.
    Returns:
        float: ``box_iou(box1, box2)``.
    """
    pair = torch.tensor([list(map(float, box1)), list(map(float, box2))],
                        dtype=torch.float64)  # [2, 4]
    iou = float(box_iou(pair[:1], pair[1:])[0, 0])
    # Intersection rectangle: the larger top-left corner, the smaller bottom-right.
    inter_box = torch.cat([pair[:, :2].max(dim=0).values, pair[:, 2:].min(dim=0).values])
    inter = float(box_area(inter_box))
    union = float(box_area(pair).sum()) - inter

    draw_boxes(ax, pair, colors=["tab:blue", "tab:green"], tags=list(names), fill_alpha=0.12)
    if inter > 0:
        x1, y1, x2, y2 = inter_box.tolist()
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, facecolor="tab:red",
                               alpha=0.45, edgecolor="none", label="intersection"))
    if canvas is not None:
        width, height = canvas
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
    else:
        lo, hi = pair[:, :2].min().item(), pair[:, 2:].max().item()
        margin = 0.1 * max(hi - lo, 1.0)
        ax.set_xlim(lo - margin, hi + margin)
        ax.set_ylim(hi + margin, lo - margin)
    ax.set_aspect("equal")
    ax.set_title(f"IoU = {inter:g} / {union:g} = {iou:.3f}")
    return iou

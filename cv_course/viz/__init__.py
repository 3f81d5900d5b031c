"""Plotting helpers shared by the book's chapters (matplotlib; widgets need ipywidgets).

- ``images``: tensor-to-image conversion, the class palette, ``show_image``;
- ``boxes``: ``draw_boxes`` (labels and scores), ``draw_iou_pair``;
- ``masks``: ``colorize_labels`` (class maps), ``overlay_masks`` (instance masks),
  ``overlay_classes`` (chosen classes of a class map over the image);
- ``grids``: ``show_values`` (a small matrix with its numbers in the cells);
- ``style``: ``book_style`` (legible 2x figures), ``glue_figure`` (a checked, numbered book figure);
- ``widgets``: ``iou_calculator``, ``class_mask_viewer`` (import ipywidgets only when called).
"""

from .boxes import draw_boxes, draw_iou_pair
from .grids import show_values
from .images import as_numpy, class_colors, class_legend, instance_colors, show_image, to_hwc
from .masks import colorize_labels, overlay_classes, overlay_masks
from .style import book_style, glue_figure
from .widgets import class_mask_viewer, iou_calculator

__all__ = [
    "as_numpy",
    "book_style",
    "class_colors",
    "class_mask_viewer",
    "class_legend",
    "colorize_labels",
    "draw_boxes",
    "draw_iou_pair",
    "glue_figure",
    "instance_colors",
    "iou_calculator",
    "overlay_classes",
    "overlay_masks",
    "show_image",
    "show_values",
    "to_hwc",
]

# Two-stage detection figures (issue 9, section 5).
from .detection import (
    anchor_labels,
    anchor_viewer,
    draw_bilinear_sample,
    draw_cell_anchors,
    draw_feature_grid,
    draw_roi_align,
    draw_roi_pool,
    roi_pool_bins,
)

__all__ += [
    "anchor_labels",
    "anchor_viewer",
    "draw_bilinear_sample",
    "draw_cell_anchors",
    "draw_feature_grid",
    "draw_roi_align",
    "draw_roi_pool",
    "roi_pool_bins",
]

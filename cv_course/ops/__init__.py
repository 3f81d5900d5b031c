"""Operators the course teaches, in pure PyTorch, with torchvision-compatible
signatures. Boxes are (x1, y1, x2, y2) unless a name says otherwise."""

from .boxes import (
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    generalized_box_iou,
    remove_small_boxes,
)
from .nms import batched_nms, nms, soft_nms

__all__ = [
    "box_area",
    "box_convert",
    "box_iou",
    "clip_boxes_to_image",
    "generalized_box_iou",
    "remove_small_boxes",
    "nms",
    "batched_nms",
    "soft_nms",
]

# Upsampling: unpooling and transposed convolution (issue 3, part 2).
from .conv_transpose import ConvTranspose2d, bilinear_kernel, conv_matrix, conv_transpose2d
from .upsample import bed_of_nails_unpool, max_unpool2d, nearest_unpool

__all__ += [
    "nearest_unpool",
    "bed_of_nails_unpool",
    "max_unpool2d",
    "conv_transpose2d",
    "ConvTranspose2d",
    "conv_matrix",
    "bilinear_kernel",
]

# Region features for two-stage detection (issue 9, part 1).
from .poolers import MultiScaleRoIAlign, assign_fpn_levels
from .roi_align import RoIAlign, roi_align
from .roi_pool import RoIPool, roi_pool

__all__ += ["roi_align", "RoIAlign", "roi_pool", "RoIPool", "assign_fpn_levels", "MultiScaleRoIAlign"]

# Labelling and box coding for detectors (issue 9, part 1).
from .anchors import AnchorGenerator, cell_anchors, grid_anchors
from .box_coder import BoxCoder
from .matcher import Matcher, sample_labels

__all__ += ["BoxCoder", "Matcher", "sample_labels", "grid_anchors", "cell_anchors", "AnchorGenerator"]

# Single-stage detectors and DETR: focal loss, bipartite matching (issue 10, part 1).
from .focal_loss import focal_loss_at, sigmoid_focal_loss
from .hungarian import HungarianMatcher, hungarian_match

__all__ += ["sigmoid_focal_loss", "focal_loss_at", "hungarian_match", "HungarianMatcher"]

# Instance masks (issue 12, part 1).
from .masks import masks_to_boxes, paste_masks_in_image

__all__ += ["masks_to_boxes", "paste_masks_in_image"]

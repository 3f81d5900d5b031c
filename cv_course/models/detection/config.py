"""The settings of a Faster R-CNN, in one place (nanoGPT's ``GPTConfig`` pattern).

Every part of the detector (backbone, FPN, RPN, RoI heads, pre-processing) reads
its settings from one :class:`FasterRCNNConfig`, so a setting has one default and
one comment, and a config (hashed) names a trained model in the disk cache.

The defaults suit the course's 128 x 128 scenes, whose objects are 10-60 pixels
across: three FPN levels (strides 4, 8, 16) with one anchor size each (16, 32, 64
pixels), and far fewer proposals and sampled RoIs than torchvision's defaults for
800-pixel COCO images (2000 / 1000 proposals, 512 RoIs per image).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class FasterRCNNConfig:
    num_classes: int = 5  # classes including background (scenes: background + 4 shapes)
    # Backbone and FPN
    pretrained: bool = True  # start from the trained shape classifier's conv body (transfer)
    fpn_channels: int = 64  # channels of every FPN output map
    # Anchors: one tuple of sizes per FPN level (level i has stride 4 * 2**i)
    anchor_sizes: tuple[tuple[int, ...], ...] = ((16,), (32,), (64,))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # anchor height / width
    # Region proposal network (Ren et al. 2015, section 3.1)
    rpn_fg_iou_thresh: float = 0.7  # anchor is positive at IoU >= this with a ground-truth box
    rpn_bg_iou_thresh: float = 0.3  # anchor is negative at IoU < this with every box
    rpn_batch_size_per_image: int = 256  # anchors sampled per image for the RPN losses
    rpn_positive_fraction: float = 0.5  # at most this fraction of them positive
    rpn_pre_nms_top_n: tuple[int, int] = (600, 300)  # (train, test) best anchors per level
    rpn_post_nms_top_n: tuple[int, int] = (300, 100)  # (train, test) proposals per image
    rpn_nms_thresh: float = 0.7  # NMS IoU threshold among proposals
    rpn_min_size: float = 1e-3  # drop proposals narrower or lower than this (pixels)
    # RoI heads (Girshick 2015, "Fast R-CNN")
    roi_output_size: int = 7  # RoI Align output is roi_output_size x roi_output_size
    roi_sampling_ratio: int = 2  # bilinear samples per bin side (-1: adaptive)
    # FPN level of a RoI: floor(canonical_level + log2(sqrt(area) / canonical_scale)),
    # clamped to the levels there are (Lin et al. 2017, eq. 1, with 224 -> 64 for small images)
    canonical_scale: int = 64
    canonical_level: int = 3
    representation_size: int = 256  # width of the two fully connected layers
    box_fg_iou_thresh: float = 0.5  # proposal is foreground at IoU >= this
    box_bg_iou_thresh: float = 0.5  # ... and background below this
    box_batch_size_per_image: int = 128  # proposals sampled per image for the head losses
    box_positive_fraction: float = 0.25  # at most this fraction of them foreground
    bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)  # (wx, wy, ww, wh)
    # Post-processing
    box_score_thresh: float = 0.01  # drop detections below this (low: COCO AP rewards recall)
    box_nms_thresh: float = 0.5  # class-aware NMS IoU threshold
    detections_per_img: int = 100  # keep at most this many detections per image
    # Pre-processing: (image - mean) / std per channel; the shape classifier was
    # trained on raw [0, 1] images, so the identity keeps its features meaningful
    image_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    image_std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def strides(self) -> tuple[int, ...]:
        """Stride of each FPN level: 4, 8, 16, ... (one per entry of ``anchor_sizes``)."""
        return tuple(4 * 2**i for i in range(len(self.anchor_sizes)))

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location, A (the same on every level)."""
        return len(self.anchor_sizes[0]) * len(self.aspect_ratios)

    def __post_init__(self):
        if self.num_classes < 2:
            raise ValueError(f"num_classes counts the background, so it must be >= 2, "
                             f"got {self.num_classes}")
        if not 1 <= len(self.anchor_sizes) <= 4:
            raise ValueError(f"anchor_sizes needs one tuple per FPN level (1 to 4 levels), "
                             f"got {self.anchor_sizes!r}")
        if len({len(s) for s in self.anchor_sizes}) != 1:
            raise ValueError("every FPN level needs the same number of anchor sizes (the RPN "
                             f"head is shared across levels), got {self.anchor_sizes!r}")

    def replace(self, **changes) -> "FasterRCNNConfig":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

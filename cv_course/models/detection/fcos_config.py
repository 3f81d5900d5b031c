"""The settings of an FCOS detector, in one place (nanoGPT's ``GPTConfig`` pattern).

The defaults suit the course's 128 x 128 scenes, whose objects are 10-60 pixels
across, and a training budget of a few single-thread CPU minutes:

- Three FPN levels, strides 4, 8, 16 (the same backbone + FPN as Faster R-CNN).
- Size ranges: a location on level l is trained on a box only when the largest of
  its four distances, max(l, t, r, b), lies in ``size_ranges[l]``. For a w-pixel box
  that distance runs from w / 2 (the centre) to w (the edges). The FCOS paper ends
  each range at 8 strides (64, 128, ... pixels for strides 8, 16, ... on 800-pixel
  COCO images); for our strides 4, 8, 16 that is 0-32, 32-64, 64-inf, which gives
  the stride-16 level no object at all (no distance exceeds 60) and puts the centres
  of all our objects on the stride-4 map. Ranges ending at 4 strides,
  0-16, 16-32, 32-inf, spread them over all three levels: the centres of
  objects up to 32 pixels on stride 4, of larger ones on stride 8, the outer ring of
  the largest on stride 16. Measured on the 500 held-out scenes: 37% / 57% / 6% of
  the positive locations on strides 4 / 8 / 16, a median of 13 per box, and 6 of
  2,218 boxes (slivers of hidden objects, under 6 pixels wide) with none.
- A light head: 32 channels and two conv layers per tower instead of FCOS's 256 and
  four. It runs at all 1,344 locations; at 64 channels and four layers it cost twice
  the backbone's time per training step on one CPU thread.
- ``topk_candidates`` 200 per level, not 1,000: a scene has at most 8 objects, and
  NMS time grows with the candidates.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

INF = math.inf


@dataclass(frozen=True)
class FCOSConfig:
    num_classes: int = 5  # classes including background; the head has num_classes - 1 sigmoids
    # Backbone and FPN (cv_course.experiments.fcos.fcos_backbone)
    pretrained: bool = True  # start from the trained shape classifier's conv body (transfer)
    fpn_channels: int = 32  # channels of every FPN map and of the head (Faster R-CNN: 64)
    strides: tuple[int, ...] = (4, 8, 16)  # one FPN level per stride, finest first: 4 * 2**l
    # Target assignment (Tian et al. 2019, section 3.2): max(l, t, r, b) range per level,
    # inclusive at both ends (see the module docstring for why 4 strides wide)
    size_ranges: tuple[tuple[float, float], ...] = ((0.0, 16.0), (16.0, 32.0), (32.0, INF))
    # Head: shared by every level (section 3.1)
    num_convs: int = 2  # conv 3x3 + GroupNorm + ReLU layers per tower (FCOS, torchvision: 4)
    norm_groups: int = 32  # GroupNorm groups (torchvision: 32); must divide fpn_channels
    prior_probability: float = 0.01  # initial P(object) of every class: bias -log((1 - pi) / pi)
    # Classification loss: sigmoid focal loss (Lin et al. 2017)
    focal_alpha: float = 0.25  # weight of positives; negatives get 1 - alpha
    focal_gamma: float = 2.0  # focusing exponent
    # Post-processing; score = sqrt(P(class) * centre-ness)
    score_thresh: float = 0.05  # drop candidates below this (low: COCO AP rewards recall)
    topk_candidates: int = 200  # best candidates per level and image before NMS (torchvision: 1000)
    nms_thresh: float = 0.6  # class-aware NMS IoU threshold (FCOS, torchvision: 0.6)
    detections_per_img: int = 100  # keep at most this many detections per image
    # Pre-processing: the shape classifier saw raw [0, 1] images, so the identity
    image_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    image_std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self):
        if self.num_classes < 2:
            raise ValueError(f"num_classes counts the background, so it must be >= 2, "
                             f"got {self.num_classes}")
        if not 2 <= len(self.strides) <= 4 or any(
                s != 4 * 2**i for i, s in enumerate(self.strides)):
            raise ValueError("strides must be 2 to 4 FPN levels 4, 8, 16, 32 (finest first), "
                             f"got {self.strides!r}")
        if len(self.size_ranges) != len(self.strides):
            raise ValueError(f"size_ranges needs one (lo, hi) per level ({len(self.strides)}), "
                             f"got {len(self.size_ranges)}")
        if any(len(r) != 2 or not 0 <= r[0] <= r[1] for r in self.size_ranges):
            raise ValueError(f"each size range must be (lo, hi) with 0 <= lo <= hi, "
                             f"got {self.size_ranges!r}")
        if self.fpn_channels % self.norm_groups:
            raise ValueError(f"norm_groups ({self.norm_groups}) must divide fpn_channels "
                             f"({self.fpn_channels})")
        if not 0 < self.prior_probability < 1:
            raise ValueError(f"prior_probability must be in (0, 1), got {self.prior_probability}")

    def replace(self, **changes) -> "FCOSConfig":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

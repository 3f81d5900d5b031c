"""FCOS on generated scenes: ours and torchvision's ``FCOS`` class, same backbone and budget.

Registers two detectors with :mod:`cv_course.experiments.detection` (``SPECS``), so
``train_detector("fcos")``, ``trained_detector("torchvision_fcos")`` and
``benchmarks/detection.py --models fcos,torchvision_fcos`` work by name:

- ``"fcos"``: :class:`cv_course.models.detection.FCOS`.
- ``"torchvision_fcos"``: ``torchvision.models.detection.FCOS`` (``weights=None``,
  nothing downloaded) around the *same* backbone + FPN, with the same head depth,
  GroupNorm, focal loss, size ranges and post-processing settings, trained by the
  same loop, data, batch order and schedule (:func:`torchvision_fcos`).

Where the two still differ, and so where a gap in mAP can come from:

- Centre sampling: torchvision only makes a location positive when it is also
  within 1.5 strides of the box's centre (FCOS's later "centre sampling"
  improvement); ours makes every location inside the box positive, the rule of the
  paper's first version and of :func:`cv_course.models.detection.fcos.fcos_targets`.
- Range ends: torchvision's size ranges are open (lo < max(l, t, r, b) < hi), ours
  closed, so a location exactly on a range end is positive on both levels for us
  and on neither for torchvision (on our integer boxes this happens).
- Box regression: torchvision predicts relu(x) times its anchor size, ours
  exp(s_l * x) times the stride with a learned scale s_l per level.
- Classes: torchvision's classifier has a column for the background class too
  (never positive, it learns to stay low); ours has the 4 object classes only.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor, nn

from ..models.classifier import shapes_classifier
from ..models.detection import BackboneWithFPN, ShapeBackbone
from ..models.detection.fcos import FCOS, fcos_locations
from ..models.detection.fcos_config import FCOSConfig
from .detection import DetectionSetup, DetectorSpec


def fcos_backbone(config: FCOSConfig) -> BackboneWithFPN:
    """Backbone + FPN at ``config.strides``; with ``config.pretrained`` the shape classifier's body.

    The same network as :func:`cv_course.experiments.detection.build_backbone` builds
    for Faster R-CNN (one FPN level per stride, ``config.fpn_channels`` channels).
    """
    classifier = shapes_classifier(seed=0) if config.pretrained else None
    return BackboneWithFPN(ShapeBackbone(len(config.strides), classifier), config.fpn_channels)


def torchvision_fcos(config: FCOSConfig, backbone: BackboneWithFPN, image_size: int = 128,
                     center_sampling_radius: float = 1.5) -> nn.Module:
    """torchvision's ``FCOS`` with our backbone + FPN and the settings of ``config``.

    torchvision derives everything per level from one "anchor" per location of
    size a_l (it asks for exactly one): the box coding divides distances by a_l,
    centre sampling uses a radius of ``center_sampling_radius`` x a_l, and the size
    range of level l is (4 a_l, 8 a_l), open at 0 and infinity on the first and
    last level. We choose a_l = hi_l / 8 so those ranges are ``config.size_ranges``
    (a_l = stride / 2 for the default ranges), and scale the centre-sampling radius
    so that it is ``center_sampling_radius`` *strides*, torchvision's default
    meaning. The anchors are centred on our locations ((k + 0.5) * stride, where
    torchvision puts k * stride). ``min_size = max_size = image_size``: no resizing.
    Nothing is downloaded.

    Raises:
        ValueError: if ``config.size_ranges`` are not of the form (4 a, 8 a) that
        torchvision's FCOS can express.
    """
    from torchvision.models.detection import FCOS as TVFCOS
    from torchvision.models.detection.fcos import (FCOSClassificationHead, FCOSHead,
                                                   FCOSRegressionHead)

    c = config
    sizes = _anchor_sizes(c)
    norm = partial(nn.GroupNorm, c.norm_groups)  # torchvision's default is GroupNorm(32)
    head = FCOSHead(c.fpn_channels, 1, c.num_classes, num_convs=0)  # its box coder; towers next
    head.classification_head = FCOSClassificationHead(
        c.fpn_channels, 1, c.num_classes, c.num_convs, c.prior_probability, norm_layer=norm)
    head.regression_head = FCOSRegressionHead(c.fpn_channels, 1, c.num_convs, norm_layer=norm)
    ratio = c.strides[0] / sizes[0]  # stride / a_l, the same on every level
    model = TVFCOS(backbone, c.num_classes, min_size=image_size, max_size=image_size,
                   image_mean=list(c.image_mean), image_std=list(c.image_std),
                   size_divisible=c.strides[-1], anchor_generator=_location_anchors(c, sizes),
                   head=head, center_sampling_radius=center_sampling_radius * ratio,
                   score_thresh=c.score_thresh, nms_thresh=c.nms_thresh,
                   detections_per_img=c.detections_per_img, topk_candidates=c.topk_candidates)
    return model


def _anchor_sizes(config: FCOSConfig) -> tuple[float, ...]:
    """torchvision's a_l such that (4 a_l, 8 a_l) are the config's ranges; checked."""
    ranges, strides = config.size_ranges, config.strides
    sizes = tuple(hi / 8 if math.isfinite(hi) else lo / 4 for lo, hi in ranges)
    expected = [(0.0 if l == 0 else 4 * a, math.inf if l == len(ranges) - 1 else 8 * a)
                for l, a in enumerate(sizes)]
    if [tuple(map(float, r)) for r in ranges] != expected or len(
            {s / a for s, a in zip(strides, sizes)}) != 1:
        raise ValueError(f"torchvision's FCOS ties its size ranges to one anchor size a per level, "
                         f"(4a, 8a) with a proportional to the stride; {ranges} is not of that "
                         "form (e.g. ((0, 16), (16, 32), (32, inf)))")
    return sizes


def _location_anchors(config: FCOSConfig, sizes: tuple[float, ...]) -> nn.Module:
    """torchvision's ``AnchorGenerator`` (its type is checked) returning one a_l-sized
    square per location, centred on :func:`fcos_locations`."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    class LocationAnchors(AnchorGenerator):
        def forward(self, image_list, feature_maps: list[Tensor]) -> list[Tensor]:
            f = feature_maps[0]
            points, levels = fcos_locations([tuple(m.shape[-2:]) for m in feature_maps],
                                            config.strides, f.device, f.dtype)  # [P, 2], [P]
            half = torch.tensor(sizes, device=f.device, dtype=f.dtype)[levels, None] / 2
            anchors = torch.cat((points - half, points + half), dim=1)  # [P, 4]
            return [anchors] * len(image_list.image_sizes)

    return LocationAnchors(tuple((s,) for s in sizes), ((1.0,),) * len(sizes))


# Twice Faster R-CNN's 4 epochs: an FCOS step costs a fifth of one (0.2 s against 1-1.8 s
# on one thread). Held-out mAP@0.5 0.864 after 4 epochs (101 s), 0.904 after 8 (285 s on a
# loaded machine; benchmarks/results/fcos.json).
SETUP = DetectionSetup(epochs=8)

SPECS = {
    "fcos": DetectorSpec(lambda c: FCOS(c, fcos_backbone(c)), FCOSConfig(), SETUP),
    "torchvision_fcos": DetectorSpec(lambda c: torchvision_fcos(c, fcos_backbone(c)),
                                     FCOSConfig(), SETUP),
}

__all__ = ["SPECS", "fcos_backbone", "torchvision_fcos"]

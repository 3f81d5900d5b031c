"""RoI Align over a feature pyramid: each RoI is pooled from one level.

Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017, eq. (1):
a RoI of width w and height h is pooled from level

    k = floor(k0 + log2(sqrt(w * h) / 224)),  clamped to [k_min, k_max],

so that a 224 x 224 RoI (an ImageNet-sized object) goes to level k0 = 4 and a
RoI half as large goes one level finer, where the stride is halved too. Our
images are 128 x 128, so the canonical scale is a parameter.

Same numbers as ``torchvision.ops.MultiScaleRoIAlign``, in pure PyTorch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._bags import check_feature_map, pair
from ._checks import check_boxes
from .boxes import box_area
from .roi_align import roi_align


def assign_fpn_levels(boxes: Tensor, k_min: int, k_max: int, canonical_scale: float = 224,
                      canonical_level: int = 4, eps: float = 1e-6) -> Tensor:
    """Pyramid level of each box, FPN eq. (1).

    Args:
        boxes (Tensor[K, 4]): (x1, y1, x2, y2) boxes in image pixels.
        k_min, k_max (int): finest and coarsest level (level k has stride 2**k).
        canonical_scale (float): box size sqrt(w * h) that maps to ``canonical_level``.
        canonical_level (int): level of a box of the canonical size.
        eps (float): added before the floor, as torchvision, so that a box of exactly
            twice the canonical size is not sent one level down by rounding.
    Returns:
        Tensor[K] int64: levels in [k_min, k_max]; ``level - k_min`` equals
        torchvision's ``LevelMapper`` output (an index into the list of levels).
    """
    check_boxes(boxes)
    size = box_area(boxes).sqrt()  # [K]
    level = torch.floor(canonical_level + torch.log2(size / canonical_scale) + eps)  # [K]
    return level.clamp(min=k_min, max=k_max).to(torch.int64)


def infer_scale(feature_size: int, image_size: int) -> float:
    """``feature_size / image_size`` rounded to a power of two (1/4, 1/8, ...), as torchvision.

    A stride-s layer gives ``ceil(image / s)`` pixels, not exactly ``image / s``;
    rounding the log2 recovers s.
    """
    # log2 in float32 and round half to even, exactly as torchvision's _infer_scale.
    return 2.0 ** float(torch.tensor(feature_size / image_size).log2().round())


class MultiScaleRoIAlign(nn.Module):
    """RoI Align on the pyramid level FPN assigns to each RoI.

    Args:
        featmap_names (list[str]): keys of the levels to pool from, finest first.
        output_size (int or (int, int)): (PH, PW) bins per RoI.
        sampling_ratio (int): as in ``roi_align`` (-1: adaptive).
        canonical_scale (float), canonical_level (int): as in ``assign_fpn_levels``.

    Each level's scale is inferred from its size and the largest image size
    (``infer_scale``), and the range of levels from the finest and coarsest scale.
    """

    def __init__(self, featmap_names: list[str], output_size, sampling_ratio: int,
                 canonical_scale: float = 224, canonical_level: int = 4):
        super().__init__()
        if isinstance(featmap_names, str) or not featmap_names:
            raise ValueError(f"featmap_names must be a non-empty list of keys, got {featmap_names!r}")
        self.featmap_names = list(featmap_names)
        self.output_size = pair(output_size)
        self.sampling_ratio = sampling_ratio
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level

    def forward(self, features: dict[str, Tensor], boxes: list[Tensor],
                image_sizes: list[tuple[int, int]]) -> Tensor:
        """Pool every box from its level.

        Args:
            features (dict[str, Tensor[N, C, H_l, W_l]]): the pyramid; only
                ``featmap_names`` are used.
            boxes (list[Tensor[L_i, 4]]): (x1, y1, x2, y2) boxes of each image, in image pixels.
            image_sizes (list[(int, int)]): (height, width) of each image.
        Returns:
            Tensor[sum L_i, C, PH, PW]: pooled features, in the order of the boxes.
        """
        missing = [name for name in self.featmap_names if name not in features]
        if missing:
            raise KeyError(f"features has no level(s) {missing}; it has {list(features)}")
        levels = [features[name] for name in self.featmap_names]
        for x in levels:
            check_feature_map(x)
        if not image_sizes:
            raise ValueError("image_sizes must list the (height, width) of each image")
        max_size = (max(s[0] for s in image_sizes), max(s[1] for s in image_sizes))
        # As torchvision, the scale comes from the height alone.
        scales = [infer_scale(x.shape[-2], max_size[0]) for x in levels]
        if len(levels) == 1:
            return roi_align(levels[0], boxes, self.output_size, scales[0], self.sampling_ratio)

        k_min, k_max = int(-math.log2(scales[0])), int(-math.log2(scales[-1]))
        flat = torch.cat([b.to(levels[0]) for b in boxes]) if boxes else levels[0].new_zeros(0, 4)
        level = assign_fpn_levels(flat, k_min, k_max, self.canonical_scale, self.canonical_level) - k_min
        image = torch.cat([torch.full((len(b),), i, device=flat.device, dtype=flat.dtype)
                           for i, b in enumerate(boxes)]) if boxes else flat.new_zeros(0)
        rois = torch.cat([image[:, None], flat], 1)  # [K, 5]
        C = levels[0].shape[1]
        out = levels[0].new_zeros((len(rois), C) + self.output_size)  # [K, C, PH, PW]
        for i, (x, scale) in enumerate(zip(levels, scales)):  # one roi_align per level, not per RoI
            here = torch.where(level == i)[0]
            out[here] = roi_align(x, rois[here], self.output_size, scale, self.sampling_ratio)
        return out

    def extra_repr(self) -> str:
        return (f"featmap_names={self.featmap_names}, output_size={self.output_size}, "
                f"sampling_ratio={self.sampling_ratio}, canonical_scale={self.canonical_scale}")

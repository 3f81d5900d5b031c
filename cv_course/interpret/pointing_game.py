"""The pointing game: does a heatmap's peak land on the object?

Zhang, Bargal, Lin, Brandt, Shen and Sclaroff, "Top-down Neural Attention by
Excitation Backprop", ECCV 2016. A hit is counted when the maximum of the
(upsampled) heatmap falls inside the object's mask, optionally grown by a
tolerance of a few pixels (the paper uses 15 pixels on ~224-pixel images).
It checks localisation only, not how sharp or complete the map is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .heatmap import upsample_heatmap


def pointing_hits(heatmaps: Tensor, masks: Tensor, tolerance: int = 0) -> Tensor:
    """Whether each heatmap's maximum lies on its object.

    Args:
        heatmaps (Tensor[N, h, w]): any resolution; bilinearly resized to the mask's.
        masks (Tensor[N, H, W]): bool (or 0/1) object masks.
        tolerance (int): grow each mask by this many pixels (square neighbourhood).
    Returns:
        Tensor[N] (bool): hit per image. An empty mask is never hit. Ties at the
        maximum resolve to the first pixel in row-major order.
    """
    if not isinstance(heatmaps, Tensor) or heatmaps.dim() != 3:
        raise ValueError(f"heatmaps must have shape [N, h, w], got {getattr(heatmaps, 'shape', heatmaps)}")
    if not isinstance(masks, Tensor) or masks.dim() != 3 or masks.shape[0] != heatmaps.shape[0]:
        raise ValueError(
            f"masks must have shape [N, H, W] with N = {heatmaps.shape[0]}, "
            f"got {list(getattr(masks, 'shape', []))}"
        )
    N, H, W = masks.shape
    masks = masks.to(heatmaps.device).bool()
    if N == 0:
        return masks.new_zeros(0)
    if tolerance > 0:
        grown = F.max_pool2d(masks[:, None].float(), 2 * tolerance + 1, stride=1, padding=tolerance)
        masks = grown[:, 0] > 0  # [N, H, W]
    up = upsample_heatmap(heatmaps, (H, W), normalize=False)  # [N, H, W]
    peak = up.flatten(1).argmax(dim=1)  # [N]
    return masks.flatten(1).gather(1, peak[:, None])[:, 0]  # [N]


def pointing_game(heatmaps: Tensor, masks: Tensor, tolerance: int = 0) -> float:
    """Fraction of images whose heatmap peak lies inside the object mask.

    Args:
        heatmaps (Tensor[N, h, w]): e.g. Grad-CAM, saliency or occlusion maps.
        masks (Tensor[N, H, W]): bool object masks; images with an empty mask
            (nothing to point at) are left out of the count.
        tolerance (int): grow each mask by this many pixels.
    Returns:
        float: hits / images with a non-empty mask (NaN if there are none).
    """
    hits = pointing_hits(heatmaps, masks, tolerance)  # [N]
    valid = masks.to(hits.device).flatten(1).bool().any(dim=1)  # [N]
    n = int(valid.sum())
    return float((hits & valid).sum()) / n if n > 0 else float("nan")

"""Resizing heatmaps to image size for display and evaluation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def upsample_heatmap(heatmaps: Tensor, size, normalize: bool = True) -> Tensor:
    """Bilinearly resize heatmaps, optionally rescaling each to [0, 1].

    Args:
        heatmaps (Tensor[N, h, w]): e.g. Grad-CAM, CAM or occlusion maps.
        size (int or (H, W)): output size.
        normalize (bool): min-max rescale each map to [0, 1]; a constant map
            (up to rounding) becomes all zeros (never 0/0 = NaN).
    Returns:
        Tensor[N, H, W]: the resized maps (``align_corners=False``: each heatmap
        cell is treated as covering an equal share of the image).
    """
    if not isinstance(heatmaps, Tensor) or heatmaps.dim() != 3:
        shape = list(heatmaps.shape) if isinstance(heatmaps, Tensor) else type(heatmaps).__name__
        raise ValueError(f"heatmaps must have shape [N, h, w], got {shape}")
    if not heatmaps.is_floating_point():
        heatmaps = heatmaps.float()
    H, W = (size, size) if isinstance(size, int) else tuple(size)
    if heatmaps.shape[0] == 0:
        return heatmaps.new_zeros(0, H, W)
    up = F.interpolate(heatmaps[:, None], size=(H, W), mode="bilinear", align_corners=False)
    up = up[:, 0]  # [N, H, W]
    if not normalize:
        return up
    lo = up.amin(dim=(1, 2), keepdim=True)  # [N, 1, 1]
    span = up.amax(dim=(1, 2), keepdim=True) - lo  # [N, 1, 1]
    # Interpolating a constant map is constant only up to rounding; a spread of
    # a few ulps is not a pattern worth stretching to [0, 1].
    tiny = 16 * torch.finfo(up.dtype).eps * up.abs().amax(dim=(1, 2), keepdim=True)
    varies = span > tiny
    safe = torch.where(varies, span, torch.ones_like(span))
    return torch.where(varies, (up - lo) / safe, torch.zeros_like(up))

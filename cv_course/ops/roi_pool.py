"""RoI Pool: a fixed-size feature for every region, by max pooling.

Girshick, "Fast R-CNN", ICCV 2015, section 2.1: round the region to the
feature map's pixel grid, split it into ``PH x PW`` bins (rounded outwards to
whole pixels) and take the maximum of each bin. The rounding is what RoI Align
(``roi_align.py``) removes.

Same signature and numbers as ``torchvision.ops.roi_pool``, forward and
backward (the gradient goes to the first maximum of each bin in row-major
order), in pure PyTorch (see ``_bags.py`` for the one fused gather).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._bags import check_feature_map, pair, pool_bags, ragged_arange, rois_from_boxes


def round_half_away(x: Tensor) -> Tensor:
    """C's ``round``: halves go away from zero (``torch.round`` sends them to even)."""
    whole = x.trunc()
    # x - trunc(x) is exact, so the test for a half is exact too.
    return torch.where((x - whole).abs() >= 0.5, whole + x.sign(), whole)


def _bin_edges(start: Tensor, length: Tensor, bins: int, size: int,
               dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """First and one-past-last pixel of each bin along one axis, as torchvision's kernel.

    Args:
        start (Tensor[K] int64): first pixel of each RoI; length (Tensor[K] int64) its length.
        bins (int): bins along the axis; size (int): pixels along the axis.
        dtype: the feature map's dtype, in which torchvision computes the bin size.
    Returns:
        (Tensor[K, bins], Tensor[K, bins]) int64, clamped to [0, size].
    """
    bin_len = (length.to(dtype) / bins)[:, None]  # [K, 1]
    i = torch.arange(bins, device=start.device, dtype=bin_len.dtype)  # [bins]
    lo = (i * bin_len).floor().long() + start[:, None]  # [K, bins]
    hi = ((i + 1) * bin_len).ceil().long() + start[:, None]  # [K, bins]
    return lo.clamp(0, size), hi.clamp(0, size)


def _pool_bags(H: int, W: int, batch: Tensor, top: Tensor, bottom: Tensor, left: Tensor, right: Tensor):
    """The bag of every bin: its window's pixels, row by row.

    Returns:
        (Tensor[E] int64 flat pixel indices, Tensor[K*PH*PW] entries per bin, None).
    """
    K, PH = top.shape
    PW = left.shape[1]
    rows, cols = bottom - top, right - left  # [K, PH], [K, PW]; an empty bin has 0 of one
    pixels = (rows[:, :, None] * cols[:, None, :]).clamp(min=0).flatten()  # [K*PH*PW]
    bin_id, s = ragged_arange(pixels)  # [E], [E]: pixel s of bin bin_id
    k, ph, pw = bin_id // (PH * PW), bin_id % (PH * PW) // PW, bin_id % PW
    width = cols[k, pw]  # [E]
    # Row-major order inside the window: ties then go to the first maximum, as torchvision's scan.
    y, x = top[k, ph] + s // width, left[k, pw] + s % width  # [E]
    return batch[k] * (H * W) + y * W + x, pixels, None


def roi_pool(input: Tensor, boxes, output_size, spatial_scale: float = 1.0) -> Tensor:
    """RoI Pool (Girshick, 2015): maximum over each bin of the rounded region.

    Args:
        input (Tensor[N, C, H, W]): feature map.
        boxes (Tensor[K, 5] or list[Tensor[L_i, 4]]): (batch index, x1, y1, x2, y2)
            rows, or one tensor of (x1, y1, x2, y2) boxes per image; image coordinates,
            with x1 <= x2 and y1 <= y2.
        output_size (int or (int, int)): (PH, PW) bins per RoI.
        spatial_scale (float): feature-map pixels per image pixel (1 / stride).
    Returns:
        Tensor[K, C, PH, PW]: the maximum of each bin, 0 for a bin that falls
        outside the map; the gradient flows to the first maximum of each bin.
    """
    check_feature_map(input)
    PH, PW = pair(output_size)
    rois = rois_from_boxes(boxes, input)  # [K, 5]
    N, C, H, W = input.shape
    # The region in whole pixels, both ends included, at least one pixel.
    x0, y0, x1, y1 = round_half_away(rois[:, 1:] * spatial_scale).long().unbind(1)  # [K] each
    top, bottom = _bin_edges(y0, (y1 - y0 + 1).clamp(min=1), PH, H, input.dtype)  # [K, PH] each
    left, right = _bin_edges(x0, (x1 - x0 + 1).clamp(min=1), PW, W, input.dtype)  # [K, PW] each
    rows, cols = (bottom - top).clamp(min=0), (right - left).clamp(min=0)
    entries = rows.sum(1) * cols.sum(1)  # [K]

    def make_bags(*chunk):
        return _pool_bags(H, W, *chunk)

    per_roi = (rois[:, 0].long(), top, bottom, left, right)
    return pool_bags(input, per_roi, entries, make_bags, "max", (PH, PW))


class RoIPool(nn.Module):
    """``roi_pool`` as a module, as ``torchvision.ops.RoIPool``."""

    def __init__(self, output_size, spatial_scale: float):
        super().__init__()
        self.output_size = pair(output_size)
        self.spatial_scale = spatial_scale

    def forward(self, input: Tensor, rois) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"

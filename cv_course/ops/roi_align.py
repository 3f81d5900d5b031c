"""RoI Align: a fixed-size feature for every region, by bilinear sampling.

He et al., "Mask R-CNN", ICCV 2017, section 3: RoI Pool rounds the region and
its bins to the pixel grid, which misaligns the pooled feature with the region
by up to a pixel of the feature map (16 image pixels at stride 16). RoI Align
keeps every coordinate real: each of the ``PH x PW`` bins averages a regular
``grid_h x grid_w`` grid of samples, and each sample is bilinearly interpolated
from its four neighbouring pixels.

Same signature and numbers as ``torchvision.ops.roi_align``, forward and
backward, in pure PyTorch (see ``_bags.py`` for the one fused gather).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._bags import check_feature_map, pair, pool_bags, ragged_arange, rois_from_boxes


def bilinear_taps(coord: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The two pixels a sample reads along one axis, and their weights.

    Follows torchvision's kernel (and Detectron's): a sample more than one
    pixel outside the map reads nothing; one in [-1, 0] is moved to 0; one past
    the last pixel centre reads the last pixel only. Along both axes, the
    four weights of a sample are the products of these per-axis weights.

    Args:
        coord (Tensor[S]): sample coordinates in pixels (pixel i is centred at i).
        size (int): length of the axis (H or W).
    Returns:
        (lo, hi, w_lo, w_hi): Tensor[S] int64 pixel indices in [0, size) and
        Tensor[S] weights with ``w_lo + w_hi`` 1 inside the map, 0 outside.
    """
    inside = ((coord >= -1) & (coord <= size)).to(coord.dtype)  # [S]
    coord = coord.clamp(min=0)
    lo = coord.floor().long()  # coord >= 0, so floor is C's truncation
    last = lo >= size - 1
    lo = lo.clamp(max=size - 1)
    hi = torch.where(last, lo, lo + 1)
    frac = torch.where(last, torch.zeros_like(coord), coord - lo.to(coord.dtype))  # [S]
    return lo, hi, (1 - frac) * inside, frac * inside


def _geometry(rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
              sampling_ratio: int, aligned: bool) -> tuple[Tensor, ...]:
    """Per RoI: batch index, top-left corner, bin size and sampling grid, each Tensor[K]."""
    PH, PW = output_size
    # aligned=True shifts by half a pixel so that pixel i covers [i, i + 1) and
    # its centre sits at i + 0.5, the convention of the boxes (Wu et al., Detectron2).
    offset = 0.5 if aligned else 0.0
    x0, y0, x1, y1 = (rois[:, 1:] * spatial_scale - offset).unbind(1)  # [K] each
    roi_w, roi_h = x1 - x0, y1 - y0
    if not aligned:  # the original RoI Align forced regions at least 1 x 1
        roi_w, roi_h = roi_w.clamp(min=1), roi_h.clamp(min=1)
    bin_h, bin_w = roi_h / PH, roi_w / PW  # [K]
    if sampling_ratio > 0:
        grid_h = torch.full_like(bin_h, sampling_ratio, dtype=torch.int64)
        grid_w = grid_h
    else:  # adaptive: about one sample per pixel of the bin
        grid_h, grid_w = bin_h.ceil().long().clamp(min=0), bin_w.ceil().long().clamp(min=0)
    return rois[:, 0].long(), y0, x0, bin_h, bin_w, grid_h, grid_w


def _align_bags(H: int, W: int, output_size: tuple[int, int], batch: Tensor, y0: Tensor,
                x0: Tensor, bin_h: Tensor, bin_w: Tensor, grid_h: Tensor, grid_w: Tensor):
    """The bag of every bin: the four bilinear taps of each of its samples,
    weighted so that the bag's sum is the mean of the samples (0 for no samples).

    Returns:
        (Tensor[E] int64 flat pixel indices, Tensor[K*PH*PW] entries per bin,
        Tensor[E] weights), E = 4 * samples.
    """
    PH, PW = output_size
    samples = (grid_h * grid_w).repeat_interleave(PH * PW)  # [K*PH*PW] samples per bin
    bin_id, s = ragged_arange(samples)  # [S], [S]: sample s of bin bin_id
    k, ph, pw = bin_id // (PH * PW), bin_id % (PH * PW) // PW, bin_id % PW
    gh, gw = grid_h[k], grid_w[k]  # [S]
    iy, ix = s // gw, s % gw  # [S]
    dt = y0.dtype
    # Same arithmetic, in the same order, as torchvision's kernel, so float32 agrees to the last bits.
    y = y0[k] + ph.to(dt) * bin_h[k] + (iy.to(dt) + 0.5) * bin_h[k] / gh.to(dt)  # [S]
    x = x0[k] + pw.to(dt) * bin_w[k] + (ix.to(dt) + 0.5) * bin_w[k] / gw.to(dt)  # [S]
    ylo, yhi, wy_lo, wy_hi = bilinear_taps(y, H)
    xlo, xhi, wx_lo, wx_hi = bilinear_taps(x, W)
    base = batch[k] * (H * W)  # [S]
    index = torch.stack([ylo * W + xlo, ylo * W + xhi, yhi * W + xlo, yhi * W + xhi], 1)  # [S, 4]
    weight = torch.stack([wy_lo * wx_lo, wy_lo * wx_hi, wy_hi * wx_lo, wy_hi * wx_hi], 1)  # [S, 4]
    weight = weight / (gh * gw).to(dt)[:, None]  # the bin is the mean of its samples
    return (index + base[:, None]).flatten(), 4 * samples, weight.flatten()


def roi_align(input: Tensor, boxes, output_size, spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """RoI Align (He et al., 2017): average of bilinear samples in each bin.

    Args:
        input (Tensor[N, C, H, W]): feature map.
        boxes (Tensor[K, 5] or list[Tensor[L_i, 4]]): (batch index, x1, y1, x2, y2)
            rows, or one tensor of (x1, y1, x2, y2) boxes per image; image coordinates,
            with x1 <= x2 and y1 <= y2.
        output_size (int or (int, int)): (PH, PW) bins per RoI.
        spatial_scale (float): feature-map pixels per image pixel (1 / stride).
        sampling_ratio (int): samples per bin along each axis; -1 (adaptive) uses
            ``ceil(roi_size / output_size)``, about one per feature-map pixel.
        aligned (bool): shift the box by -0.5 pixel so that pixel centres sit at
            i + 0.5 (Detectron2's fix); False reproduces the original RoI Align.
    Returns:
        Tensor[K, C, PH, PW]: pooled features, in input's dtype and device;
        differentiable with respect to ``input`` (not to ``boxes``, as torchvision).
    """
    check_feature_map(input)
    output_size = pair(output_size)
    rois = rois_from_boxes(boxes, input)  # [K, 5]
    N, C, H, W = input.shape
    per_roi = _geometry(rois, output_size, spatial_scale, sampling_ratio, aligned)
    grid_h, grid_w = per_roi[-2:]
    entries = 4 * output_size[0] * output_size[1] * grid_h * grid_w  # [K]

    def make_bags(*chunk):
        return _align_bags(H, W, output_size, *chunk)

    return pool_bags(input, per_roi, entries, make_bags, "sum", output_size)  # [K, C, PH, PW]


class RoIAlign(nn.Module):
    """``roi_align`` as a module, as ``torchvision.ops.RoIAlign``."""

    def __init__(self, output_size, spatial_scale: float, sampling_ratio: int, aligned: bool = False):
        super().__init__()
        self.output_size = pair(output_size)
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: Tensor, rois) -> Tensor:
        return roi_align(input, rois, self.output_size, self.spatial_scale,
                         self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")

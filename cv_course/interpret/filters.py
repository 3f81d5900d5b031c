"""Looking at the first layer's filters as images.

The first convolution works directly on RGB pixels, so each of its kernels is a
tiny colour image; trained networks learn oriented edges, colour blobs and
colour-opponent patterns there (Krizhevsky et al., NeurIPS 2012, Figure 3).
Deeper kernels act on feature maps, not colours, and cannot be read this way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The first ``nn.Conv2d`` in ``model.modules()`` order."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m
    raise ValueError(f"{type(model).__name__} has no nn.Conv2d layer")


def first_layer_filters(
    model: nn.Module, nrow: int = 8, padding: int = 1, per_filter: bool = True
) -> Tensor:
    """Tile the first convolution's kernels into one displayable image.

    Args:
        model (nn.Module): a network whose first ``nn.Conv2d`` sees 1 or 3 channels.
        nrow (int): kernels per row of the grid.
        padding (int): white pixels between kernels.
        per_filter (bool): rescale each kernel to [0, 1] on its own (shows every
            kernel's pattern); False rescales all kernels together (keeps their
            relative strength visible).
    Returns:
        Tensor[3, rows * (kh + padding) + padding, cols * (kw + padding) + padding]:
        the grid, values in [0, 1] (grey kernels from 1-channel inputs are
        repeated to RGB). Show it with ``plt.imshow(grid.permute(1, 2, 0))``.
    """
    w = first_conv(model).weight.detach()  # [O, C, kh, kw]
    O, C, kh, kw = w.shape
    if C not in (1, 3):
        raise ValueError(f"the first conv sees {C} channels; only 1 or 3 can be shown as images")
    if nrow < 1 or padding < 0:
        raise ValueError(f"nrow must be >= 1 and padding >= 0, got {nrow}, {padding}")
    dims = (1, 2, 3) if per_filter else (0, 1, 2, 3)
    lo = w.amin(dim=dims, keepdim=True)
    span = w.amax(dim=dims, keepdim=True) - lo
    w = torch.where(span > 0, (w - lo) / torch.where(span > 0, span, 1.0), 0.5)  # [O, C, kh, kw]
    w = w.expand(O, 3, kh, kw)
    cols = min(nrow, O)
    rows = math.ceil(O / cols)
    blank = w.new_ones(rows * cols - O, 3, kh, kw)  # fill the last row
    tiles = torch.cat([w, blank])  # [rows * cols, 3, kh, kw]
    tiles = F.pad(tiles, (padding, 0, padding, 0), value=1.0)  # white border left/top
    th, tw = kh + padding, kw + padding
    grid = tiles.reshape(rows, cols, 3, th, tw).permute(2, 0, 3, 1, 4)  # [3, rows, th, cols, tw]
    grid = grid.reshape(3, rows * th, cols * tw)
    return F.pad(grid, (0, padding, 0, padding), value=1.0)  # close the right/bottom edge

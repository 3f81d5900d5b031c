"""Anchors: the reference boxes a region proposal network scores and refines.

Ren et al., "Faster R-CNN", NeurIPS 2015, section 3.1.1: at every position of a
stride-s feature map sit A = len(sizes) * len(aspect_ratios) boxes of area
size**2 and height / width = ratio, centred on the position.

Where the centre of position (i, j) sits is a convention courses disagree on.
torchvision puts it at (j * s, i * s); EECS 498 and d2l at ((j + 0.5) * s,
(i + 0.5) * s). We use the second: it is the centre of the s x s cell of image
pixels the feature vector stands for, so the anchors cover the image
symmetrically. On our 128 x 128 images this matters: at stride 32 the whole
map is 4 x 4, and torchvision's centres (0, 32, 64, 96) leave the right and
bottom edges 32 pixels from the nearest centre while the top-left corner has
one exactly on it. torchvision also rounds each anchor's half-size to a whole
pixel; we keep areas exactly size**2.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


def _pair(value, name: str) -> tuple:
    pair = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if len(pair) != 2 or not all(v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive number or a (height, width) pair, got {value!r}")
    return pair


def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float], device=None,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """The A anchors of one position, centred on (0, 0).

    Args:
        sizes (sequence of float): square root of each anchor's area, in pixels.
        aspect_ratios (sequence of float): height / width of each anchor.
    Returns:
        Tensor[A, 4]: (x1, y1, x2, y2), A = len(aspect_ratios) * len(sizes), ordered
        ratio-major as torchvision: anchor ``r * len(sizes) + s`` has ratio r and size s.
    """
    if len(sizes) == 0 or len(aspect_ratios) == 0 or min(sizes) <= 0 or min(aspect_ratios) <= 0:
        raise ValueError(f"sizes and aspect_ratios must be non-empty and positive, got {sizes!r} "
                         f"and {aspect_ratios!r}")
    sizes = torch.as_tensor(sizes, dtype=dtype, device=device)  # [S]
    ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)  # [R]
    h = (ratios.sqrt()[:, None] * sizes[None, :]).flatten()  # [A]: h * w = size**2, h / w = ratio
    w = (sizes[None, :] / ratios.sqrt()[:, None]).flatten()  # [A]
    return torch.stack((-w, -h, w, h), dim=1) / 2  # [A, 4]


def grid_anchors(feature_size: tuple[int, int], stride, sizes: Sequence[float],
                 aspect_ratios: Sequence[float], device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Every anchor of a feature map, in image pixels.

    Args:
        feature_size ((int, int)): (H, W) of the feature map.
        stride (int or (int, int)): image pixels per feature-map pixel, (sy, sx) if a pair.
        sizes (sequence of float): square root of each anchor's area, in pixels.
        aspect_ratios (sequence of float): height / width of each anchor.
    Returns:
        Tensor[H * W * A, 4]: (x1, y1, x2, y2) anchors; row ``(i * W + j) * A + a`` is
        anchor a (ordered as ``cell_anchors``) centred at ((j + 0.5) * sx, (i + 0.5) * sy),
        so one position's A anchors are contiguous, the order of an RPN head's
        ``[N, A, H, W]`` output permuted to ``[N, H, W, A]``.
    """
    H, W = feature_size
    if H < 0 or W < 0:
        raise ValueError(f"feature_size must be (H, W) >= 0, got {feature_size!r}")
    sy, sx = _pair(stride, "stride")
    cell = cell_anchors(sizes, aspect_ratios, device, dtype)  # [A, 4]
    cy = (torch.arange(H, device=device, dtype=dtype) + 0.5) * sy  # [H]
    cx = (torch.arange(W, device=device, dtype=dtype) + 0.5) * sx  # [W]
    cy, cx = torch.meshgrid(cy, cx, indexing="ij")  # [H, W] each
    centres = torch.stack((cx, cy, cx, cy), dim=-1).reshape(-1, 1, 4)  # [H*W, 1, 4]
    return (centres + cell[None]).reshape(-1, 4)  # [H*W*A, 4]


class AnchorGenerator(nn.Module):
    """Anchors of every level of a feature pyramid (one set of sizes per level).

    Args:
        sizes_per_level (sequence of sequences of float): anchor sizes of each level,
            e.g. ``((16,), (32,), (64,))``.
        aspect_ratios (sequence of float, or one sequence per level): height / width.

    Each level's stride is ``image_size // feature_size`` per axis, as torchvision.
    """

    def __init__(self, sizes_per_level: Sequence[Sequence[float]], aspect_ratios=(0.5, 1.0, 2.0)):
        super().__init__()
        self.sizes = [tuple(s) for s in sizes_per_level]
        per_level = len(aspect_ratios) > 0 and isinstance(aspect_ratios[0], (list, tuple))
        self.aspect_ratios = [tuple(r) for r in aspect_ratios] if per_level \
            else [tuple(aspect_ratios)] * len(self.sizes)
        if len(self.aspect_ratios) != len(self.sizes):
            raise ValueError(f"{len(self.sizes)} levels of sizes but {len(self.aspect_ratios)} of aspect ratios")

    def num_anchors_per_location(self) -> list[int]:
        """A of each level: the channels per position an RPN head must output."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def forward(self, image_size: tuple[int, int], feature_shapes: Sequence[Sequence[int]],
                device=None, dtype: torch.dtype = torch.float32) -> list[Tensor]:
        """Anchors of each level.

        Args:
            image_size ((int, int)): (height, width) of the (padded) input batch.
            feature_shapes (sequence of (H_l, W_l)): each level's spatial size
                (a feature map's ``shape[-2:]`` will do).
        Returns:
            list[Tensor[H_l * W_l * A_l, 4]]: (x1, y1, x2, y2) anchors per level;
            ``torch.cat`` them for one ``[sum, 4]`` tensor.
        """
        if len(feature_shapes) != len(self.sizes):
            raise ValueError(f"got {len(feature_shapes)} feature maps for {len(self.sizes)} levels of sizes")
        anchors = []
        for shape, sizes, ratios in zip(feature_shapes, self.sizes, self.aspect_ratios):
            H, W = shape[-2:]
            stride = (image_size[0] // H, image_size[1] // W)
            anchors.append(grid_anchors((H, W), stride, sizes, ratios, device, dtype))
        return anchors

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, aspect_ratios={self.aspect_ratios}"

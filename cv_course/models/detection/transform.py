"""Pre-processing shared by the course's detectors: check, normalise, pad to a batch.

Images of different sizes go into one batch by zero-padding them at the bottom
and right to a common size (a multiple of the coarsest stride, so that every
feature map lines up with the image); each image's true ``(height, width)`` is
kept, because anchors and proposals outside it must be clipped to the image,
not to the padding. Unlike torchvision's ``GeneralizedRCNNTransform``, images
are not resized: the course's scenes are already the size the model wants, so
boxes come back in the input's pixel coordinates unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class DetectionTransform(nn.Module):
    """``(images, targets) -> (batch, image_sizes, targets)``.

    Args:
        image_mean, image_std (3 floats): per-channel normalisation.
        size_divisible (int): pad the batch's height and width to multiples of this.
    Shapes:
        images: list of Tensor[3, H_i, W_i] floats in [0, 1].
        Returns batch Tensor[B, 3, H, W] (H = max H_i rounded up), image_sizes
        list of (H_i, W_i), and the targets unchanged (checked).
    """

    def __init__(self, image_mean, image_std, size_divisible: int = 16):
        super().__init__()
        self.register_buffer("mean", torch.tensor(image_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(image_std).view(3, 1, 1), persistent=False)
        self.size_divisible = size_divisible

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        _check_inputs(images, targets)
        image_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        H = _round_up(max(h for h, _ in image_sizes), self.size_divisible)
        W = _round_up(max(w for _, w in image_sizes), self.size_divisible)
        batch = images[0].new_zeros(len(images), 3, H, W)  # [B, 3, H, W]
        for i, im in enumerate(images):  # one copy per image; sizes differ
            h, w = image_sizes[i]
            batch[i, :, :h, :w] = (im - self.mean) / self.std
        return batch, image_sizes, targets


def _round_up(x: int, multiple: int) -> int:
    return int(math.ceil(x / multiple) * multiple)


def _check_inputs(images, targets) -> None:
    """Errors that say what to fix, for the mistakes the detection interface invites."""
    if isinstance(images, Tensor) and images.dim() == 4:
        raise TypeError("images must be a list of Tensor[3, H, W], not one batched tensor; "
                        "pass list(images)")
    if not isinstance(images, (list, tuple)) or len(images) == 0:
        raise TypeError(f"images must be a non-empty list of Tensor[3, H, W], got {type(images)}")
    for i, im in enumerate(images):
        if not isinstance(im, Tensor) or im.dim() != 3 or im.shape[0] != 3:
            shape = list(im.shape) if isinstance(im, Tensor) else type(im).__name__
            raise ValueError(f"images[{i}] must be a Tensor[3, H, W], got {shape}")
    if targets is None:
        return
    if len(targets) != len(images):
        raise ValueError(f"got {len(images)} images but {len(targets)} targets")
    for i, t in enumerate(targets):
        if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
            raise ValueError(f"targets[{i}] must be a dict with 'boxes' and 'labels'")
        boxes, labels = t["boxes"], t["labels"]
        if boxes.dim() != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
            raise ValueError(f"targets[{i}]['boxes'] must be a float Tensor[K, 4] "
                             f"(x1, y1, x2, y2), got {boxes.dtype} {list(boxes.shape)}")
        if labels.shape != boxes.shape[:1] or labels.is_floating_point():
            raise ValueError(f"targets[{i}]['labels'] must be an int64 Tensor[K] matching "
                             f"the {boxes.shape[0]} boxes, got {labels.dtype} {list(labels.shape)}")
        if boxes.numel() and bool(((boxes[:, 2:] <= boxes[:, :2]).any())):
            raise ValueError(f"targets[{i}] has a box with x2 <= x1 or y2 <= y1; boxes must "
                             "be (x1, y1, x2, y2) with positive width and height")

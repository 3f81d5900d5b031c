"""Instance masks and boxes: the tight box of a mask, and a small mask pasted into the image.

He et al., "Mask R-CNN", ICCV 2017, section 3: the mask head predicts an
``M x M`` mask (M = 28) inside each detected box; at inference the mask is
resized to the box and placed in the image. ``paste_masks_in_image`` does that
for all objects at once, with the same numbers as torchvision's
``torchvision.models.detection.roi_heads.paste_masks_in_image``;
``masks_to_boxes`` equals ``torchvision.ops.masks_to_boxes``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_boxes, check_same_length, check_tensor


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight box of each mask, in torchvision's convention: x2 is the last column.

    The box of a mask whose pixels span columns 3..7 and rows 2..4 is
    ``(3, 2, 7, 4)``: corners are the first and last pixel *indices*, so a
    one-pixel mask has ``x1 == x2``. The scenes of ``cv_course.data`` use the
    COCO convention instead (pixel j covers [j, j + 1), so x2 = last column + 1):
    ``scene.boxes == masks_to_boxes(scene.masks) + [0, 0, 1, 1]``.

    torchvision returns ``(0, 0, 0, 0)`` for an all-zero mask, which is also the
    box of a mask holding only pixel (0, 0); we raise instead, so that an empty
    mask cannot pass for a real object.

    Args:
        masks (Tensor[N, H, W]): bool, integer or float masks; nonzero = inside.
    Returns:
        Tensor[N, 4] float32: (x1, y1, x2, y2) with 0 <= x1 <= x2 < W, 0 <= y1 <= y2 < H.
    Raises:
        ValueError: on a shape other than [N, H, W], or if a mask is all zero.
    """
    check_tensor(masks, "masks")
    if masks.dim() != 3:
        raise ValueError(f"masks must have shape [N, H, W], got {list(masks.shape)}")
    N, H, W = masks.shape
    if N == 0:
        return torch.zeros(0, 4, dtype=torch.float32, device=masks.device)
    rows = (masks != 0).any(dim=2)  # [N, H] rows holding a pixel of the mask
    cols = (masks != 0).any(dim=1)  # [N, W]
    empty = ~rows.any(dim=1)  # [N]
    if bool(empty.any()):
        i = int(empty.nonzero()[0, 0])
        raise ValueError(f"masks[{i}] is all zero and has no box; drop empty masks first, "
                         "e.g. masks = masks[masks.flatten(1).any(dim=1)]")
    y = torch.arange(H, device=masks.device)  # [H]
    x = torch.arange(W, device=masks.device)  # [W]
    # first / last index of a True: min / max over the indices, the others pushed out of the way
    y1 = torch.where(rows, y, H).amin(dim=1)  # [N]
    y2 = torch.where(rows, y, -1).amax(dim=1)
    x1 = torch.where(cols, x, W).amin(dim=1)
    x2 = torch.where(cols, x, -1).amax(dim=1)
    return torch.stack([x1, y1, x2, y2], dim=1).float()  # [N, 4]


def expand_boxes_and_masks(masks: Tensor, boxes: Tensor, padding: int) -> tuple[Tensor, Tensor]:
    """Pad each mask by ``padding`` zero pixels and grow its box to match, as torchvision.

    The zero border lets the resized mask fade out at the box edge instead of
    ending in a hard step. The box grows by ``(M + 2 * padding) / M`` about its
    centre, then its corners are truncated to integers (``.long()``, toward zero).

    Returns:
        (Tensor[N, M + 2p, M + 2p] padded masks, Tensor[N, 4] int64 boxes
        (x1, y1, x2, y2) whose corners are the first and last pixel rows/columns).
    """
    M = masks.shape[-1]
    padded = F.pad(masks[:, 0], (padding,) * 4)  # [N, Mp, Mp], Mp = M + 2 * padding
    scale = float(M + 2 * padding) / M
    # torchvision's arithmetic, in the same order, so that the truncated corners agree exactly
    half = (boxes[:, 2:] - boxes[:, :2]) * 0.5  # [N, 2] half width, half height
    half = half * scale
    centre = (boxes[:, 2:] + boxes[:, :2]) * 0.5  # [N, 2]
    return padded, torch.cat([centre - half, centre + half], dim=1).long()  # [N, 4]


def resize_taps(first: Tensor, last: Tensor, image_size: int, mask_size: int, dtype: torch.dtype):
    """Along one axis: which two mask pixels each image pixel reads, and their weights.

    The mask (``mask_size`` pixels) is resized bilinearly to the box's
    ``last - first + 1`` pixels with ``F.interpolate(..., align_corners=False)``'s
    rule: output pixel r reads the mask at ``max(scale * (r + 0.5) - 0.5, 0)``,
    ``scale = mask_size / box_size``. Image pixels outside [first, last] get weight 0.

    Args:
        first, last (Tensor[N] int64): first and last image pixel of each box on this axis.
    Returns:
        (lo, hi, w_lo, w_hi): Tensor[N, image_size] int64 indices into the mask and weights.
    """
    pos = torch.arange(image_size, device=first.device)  # [L] image pixels
    r = pos[None, :] - first[:, None]  # [N, L] pixel of the resized mask
    size = (last - first + 1).clamp(min=1)  # [N] box size in pixels
    scale = mask_size / size.to(dtype)  # [N]
    src = (scale[:, None] * (r.to(dtype) + 0.5) - 0.5).clamp(min=0)  # [N, L] position in the mask
    lo = src.floor().long().clamp(max=mask_size - 1)
    hi = (lo + 1).clamp(max=mask_size - 1)
    frac = (src - lo.to(dtype)).clamp(0, 1)  # [N, L]
    inside = (pos[None, :] >= first[:, None]) & (pos[None, :] <= last[:, None])  # [N, L]
    inside = inside.to(dtype)
    return lo, hi, (1 - frac) * inside, frac * inside


def resize_matrix(first: Tensor, last: Tensor, image_size: int, mask_size: int,
                  dtype: torch.dtype) -> Tensor:
    """Bilinear resizing along one axis as a matrix: row i holds image pixel i's two weights.

    Args:
        first, last (Tensor[N] int64): first and last image pixel of each box on this axis.
    Returns:
        Tensor[N, image_size, mask_size]: ``R @ v`` resizes a mask column ``v`` to the
        box and places it in the image (rows outside the box are zero).
    """
    lo, hi, w_lo, w_hi = resize_taps(first, last, image_size, mask_size, dtype)  # [N, L] each
    R = torch.zeros(len(first), image_size, mask_size, dtype=dtype, device=first.device)
    R.scatter_add_(2, lo[..., None], w_lo[..., None])  # lo == hi at the last pixel: weights add
    return R.scatter_add_(2, hi[..., None], w_hi[..., None])  # [N, L, mask_size]


def paste_masks_in_image(masks: Tensor, boxes: Tensor, img_shape: tuple[int, int],
                         padding: int = 1) -> Tensor:
    """Resize each M x M mask to its box and place it in an empty H x W image.

    Same numbers as ``torchvision.models.detection.roi_heads.paste_masks_in_image``
    (pad, grow the box, truncate it to integers, bilinear resize, clip to the image),
    but vectorized over objects. Bilinear resizing is linear and separable, so
    resizing and placing mask ``P`` is two matrix products, ``Ry @ P @ Rx^T``
    (:func:`resize_matrix`), one batched product for all N objects at once.
    Boxes partly or wholly outside the image are clipped (wholly outside: a zero
    image; torchvision raises for some of those).

    Args:
        masks (Tensor[N, 1, M, M]): float masks (probabilities or logits), one per box.
        boxes (Tensor[N, 4]): (x1, y1, x2, y2) boxes in image pixels, x1 <= x2, y1 <= y2.
        img_shape ((int, int)): (H, W) of the image.
        padding (int): zero pixels added around each mask before resizing.
    Returns:
        Tensor[N, 1, H, W] in masks' dtype and device; 0 outside each (grown) box.
    """
    check_tensor(masks, "masks")
    if masks.dim() != 4 or masks.shape[1] != 1 or masks.shape[2] != masks.shape[3]:
        raise ValueError(f"masks must have shape [N, 1, M, M], got {list(masks.shape)}")
    if not masks.is_floating_point():
        raise ValueError(f"masks must be a floating-point tensor, got {masks.dtype}")
    check_boxes(boxes)
    check_same_length(masks, boxes, "masks", "boxes")
    H, W = img_shape
    padded, ibox = expand_boxes_and_masks(masks, boxes, padding)  # [N, Mp, Mp], [N, 4]
    Mp = padded.shape[-1]
    Ry = resize_matrix(ibox[:, 1], ibox[:, 3], H, Mp, masks.dtype)  # [N, H, Mp]
    Rx = resize_matrix(ibox[:, 0], ibox[:, 2], W, Mp, masks.dtype)  # [N, W, Mp]
    cols = padded @ Rx.transpose(1, 2)  # [N, Mp, W] along x first, as torchvision's kernel
    return (Ry @ cols)[:, None]  # [N, 1, H, W]


def paste_masks_in_image_loop(masks: Tensor, boxes: Tensor, img_shape: tuple[int, int],
                              padding: int = 1) -> Tensor:
    """The textbook version of :func:`paste_masks_in_image`: one ``F.interpolate`` per mask.

    Slow (a Python loop over objects) and kept as the reference the fast path is tested against.
    """
    H, W = img_shape
    padded, ibox = expand_boxes_and_masks(masks, boxes, padding)
    out = masks.new_zeros(len(masks), 1, H, W)
    for i, (x1, y1, x2, y2) in enumerate(ibox.tolist()):
        h, w = max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1)
        resized = F.interpolate(padded[i][None, None], size=(h, w), mode="bilinear",
                                align_corners=False)[0, 0]  # [h, w]
        top, bottom, left, right = max(y1, 0), min(y2 + 1, H), max(x1, 0), min(x2 + 1, W)
        if top < bottom and left < right:  # some of the box is inside the image
            out[i, 0, top:bottom, left:right] = resized[top - y1:bottom - y1, left - x1:right - x1]
    return out

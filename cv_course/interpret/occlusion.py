"""Occlusion sensitivity: hide one patch at a time and watch the score drop.

Zeiler and Fergus, "Visualizing and Understanding Convolutional Networks",
ECCV 2014. Unlike gradient methods this measures what happens when a region is
actually removed, at the price of one forward pass per patch position. The
occluded copies are independent, so they are built and scored in batches.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from ._checks import check_images, check_logits, evaluating, model_device, target_indices


def occlusion_masks(height: int, width: int, patch, stride, device=None) -> Tensor:
    """One boolean mask per patch position, in row-major order.

    Args:
        height, width (int): image size.
        patch (int or (ph, pw)): patch size in pixels.
        stride (int or (sh, sw)): step between patch positions.
    Returns:
        Tensor[nh, nw, H, W] (bool): ``masks[i, j]`` is True on rows
        ``i*sh .. i*sh+ph-1`` and columns ``j*sw .. j*sw+pw-1``, with
        ``nh = (H - ph) // sh + 1`` and ``nw = (W - pw) // sw + 1``.
    """
    (ph, pw), (sh, sw) = _pair(patch), _pair(stride)
    if min(ph, pw, sh, sw) < 1:
        raise ValueError(f"patch and stride must be positive, got patch={patch}, stride={stride}")
    if ph > height or pw > width:
        raise ValueError(f"patch {ph}x{pw} does not fit in a {height}x{width} image")
    top = torch.arange(0, height - ph + 1, sh, device=device)  # [nh]
    left = torch.arange(0, width - pw + 1, sw, device=device)  # [nw]
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + ph)  # [nh, H]
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + pw)  # [nw, W]
    return in_rows[:, None, :, None] & in_cols[None, :, None, :]  # [nh, nw, H, W]


def occlusion(
    model: nn.Module,
    images: Tensor,
    target,
    patch,
    stride,
    baseline=0.0,
    batch_size: int = 256,
) -> Tensor:
    """Drop of the class score when each patch is replaced by ``baseline``.

    Args:
        model (nn.Module): maps Tensor[N, C, H, W] to class scores Tensor[N, K].
        images (Tensor[N, C, H, W]): input images (moved to the model's device).
        target (int or Tensor[N]): class index per image.
        patch (int or (ph, pw)): side of the occluding square (or rectangle).
        stride (int or (sh, sw)): step between patch positions.
        baseline (float or Tensor broadcastable to [C, H, W]): the fill value,
            e.g. 0 (black), 0.5 (grey) or a per-channel colour ``mean[:, None, None]``.
        batch_size (int): occluded copies scored per forward pass.
    Returns:
        Tensor[N, nh, nw]: ``score(image) - score(image with patch (i, j) hidden)``;
        positive where hiding the patch hurts the class. The patch of cell
        ``(i, j)`` starts at pixel ``(i * sh, j * sw)`` (see :func:`occlusion_masks`).
    """
    check_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = model_device(model, images.device)
    x = images.detach().to(device)
    N, C, H, W = x.shape
    masks = occlusion_masks(H, W, patch, stride, device=device)  # [nh, nw, H, W]
    nh, nw = masks.shape[:2]
    P = nh * nw
    masks = masks.reshape(P, 1, H, W)
    try:
        fill = torch.as_tensor(baseline, dtype=x.dtype, device=device).expand(C, H, W)
    except RuntimeError:
        raise ValueError(
            f"baseline must be a number or broadcastable to [C, H, W] = {[C, H, W]} "
            "(a per-channel colour is mean[:, None, None])"
        ) from None
    with evaluating(model), torch.no_grad():
        logits = model(x)  # [N, K]
        check_logits(logits)
        t = target_indices(target, N, logits.shape[1], device)  # [N]
        clean = logits.gather(1, t[:, None])[:, 0]  # [N]
        drops = x.new_empty(N * P)
        # Copy k (of N * P) is image k // P with patch k % P hidden. The loop only
        # bounds memory: each pass scores batch_size copies at once.
        for start in range(0, N * P, batch_size):
            k = torch.arange(start, min(start + batch_size, N * P), device=device)  # [B]
            n, p = k // P, k % P
            occluded = torch.where(masks[p], fill, x[n])  # [B, C, H, W]
            scores = model(occluded).gather(1, t[n][:, None])[:, 0]  # [B]
            drops[start : start + k.numel()] = clean[n] - scores
    return drops.reshape(N, nh, nw)

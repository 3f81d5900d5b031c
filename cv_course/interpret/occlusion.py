"""Occlusion sensitivity: hide one patch at a time and watch the score drop.

Zeiler and Fergus, "Visualizing and Understanding Convolutional Networks",
ECCV 2014. Unlike gradient methods this measures what happens when a region is
actually removed, at the price of one forward pass per patch position. The
occluded copies are independent, so they are built and scored in batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
        ``(i, j)`` starts at pixel ``(i * sh, j * sw)`` (see :func:`occlusion_masks`);
        :func:`occlusion_to_image` puts the map back on the image's pixels.
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


def occlusion_to_image(heatmaps: Tensor, size, patch, stride) -> Tensor:
    """Resize occlusion maps to the image so that each cell sits on its patch's centre.

    The cells of an occlusion map do not tile the image the way the cells of a
    feature map do: cell ``i`` belongs to the patch centred on pixel
    ``i * stride + (patch - 1) / 2``. A plain resize (:func:`upsample_heatmap`)
    stretches the ``nh`` cells over the whole image instead, which shifts them by
    up to about half a patch. Here each pixel takes the bilinear interpolation
    between the two nearest patch centres on each axis; pixels outside the
    outermost centres take the value of the nearest one.

    Args:
        heatmaps (Tensor[N, nh, nw]): output of :func:`occlusion`.
        size (int or (H, W)): the size of the images the maps were made from.
        patch, stride (int or pair): the values passed to :func:`occlusion`.
    Returns:
        Tensor[N, H, W]: the maps at image resolution, in the heatmaps' units
        (not normalized).
    Raises:
        ValueError: if the map's shape does not match (size, patch, stride).
    """
    if not isinstance(heatmaps, Tensor) or heatmaps.dim() != 3:
        raise ValueError(f"heatmaps must have shape [N, nh, nw], got {getattr(heatmaps, 'shape', heatmaps)}")
    H, W = _pair(size)
    (ph, pw), (sh, sw) = _pair(patch), _pair(stride)
    expected = ((H - ph) // sh + 1, (W - pw) // sw + 1)
    if tuple(heatmaps.shape[1:]) != expected:
        raise ValueError(
            f"an occlusion map of a {H}x{W} image with patch {(ph, pw)} and stride {(sh, sw)} "
            f"has {expected[0]}x{expected[1]} cells, got {tuple(heatmaps.shape[1:])}: pass the "
            "size, patch and stride used for occlusion()"
        )
    if not heatmaps.is_floating_point():
        heatmaps = heatmaps.float()
    N, nh, nw = heatmaps.shape
    if N == 0:
        return heatmaps.new_zeros(0, H, W)

    def grid(n_pixels, n_cells, p, s):  # pixel -> position in [-1, 1] between first and last centre
        centre = (torch.arange(n_pixels, dtype=heatmaps.dtype, device=heatmaps.device) - (p - 1) / 2) / s
        return (2 * centre / (n_cells - 1) - 1) if n_cells > 1 else torch.zeros_like(centre)

    gy, gx = grid(H, nh, ph, sh), grid(W, nw, pw, sw)  # [H], [W]
    coords = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1)  # [H, W, 2] as (x, y)
    out = F.grid_sample(heatmaps[:, None], coords.expand(N, H, W, 2), mode="bilinear",
                        padding_mode="border", align_corners=True)  # [N, 1, H, W]
    return out[:, 0]

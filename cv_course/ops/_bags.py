"""What RoI Pool and RoI Align share: RoIs as ``Tensor[K, 5]``, and output bins
as *bags* of feature-map pixels.

Every value RoI Pool or RoI Align outputs is a reduction over a few pixels of
one channel plane: RoI Align takes a weighted sum of bilinear taps, RoI Pool the
maximum of a window. Both ops therefore only have to list, for every output bin,
the flat indices (and weights) of its pixels. ``F.embedding_bag`` then gathers
the C-channel vector of each listed pixel and reduces each bag in one fused call:
vectorized over RoIs, bins and channels, differentiable, on any device, and
without materialising a ``[bins, pixels, C]`` tensor.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_tensor

# Bag entries built at once. Building them takes ~50 bytes an entry for a moment
# and keeps ~12 for the backward pass, so 2M entries stay near 100 MB at a time.
MAX_ENTRIES = 1 << 21


def pair(output_size, name: str = "output_size") -> tuple[int, int]:
    """``7`` -> ``(7, 7)``; ``(7, 5)`` stays; anything else is an error."""
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"{name} must be a positive int or a pair (height, width), got {output_size!r}")
    return size


def check_feature_map(input) -> None:
    check_tensor(input, "input")
    if input.dim() != 4:
        raise ValueError(f"input must be a feature map Tensor[N, C, H, W], got shape {list(input.shape)}")
    if not input.is_floating_point():
        raise ValueError(f"input must be a floating-point tensor, got {input.dtype}")


def rois_from_boxes(boxes, input: Tensor) -> Tensor:
    """RoIs as one ``Tensor[K, 5]`` of (batch index, x1, y1, x2, y2).

    Args:
        boxes (Tensor[K, 5] or list[Tensor[L_i, 4]]): (batch index, x1, y1, x2, y2)
            rows, or one (x1, y1, x2, y2) tensor per image of the batch.
        input (Tensor[N, C, H, W]): the feature map, for dtype, device and N.
    Returns:
        Tensor[K, 5] in input's dtype and device.
    Raises:
        ValueError: on a wrong shape, a batch index outside [0, N), or x2 < x1.
    """
    N = input.shape[0]
    if isinstance(boxes, (list, tuple)):
        for i, b in enumerate(boxes):
            check_tensor(b, f"boxes[{i}]")
            if b.dim() != 2 or b.shape[-1] != 4:
                raise ValueError(f"boxes[{i}] must have shape [L, 4] as (x1, y1, x2, y2), "
                                 f"got {list(b.shape)}")
        if len(boxes) > N:
            raise ValueError(f"boxes has {len(boxes)} per-image tensors but input has only N = {N} images")
        batch = [torch.full((len(b), 1), i, dtype=input.dtype, device=input.device)
                 for i, b in enumerate(boxes)]
        rois = torch.cat([torch.cat([i, b.to(input)], 1) for i, b in zip(batch, boxes)]) if boxes \
            else input.new_zeros(0, 5)
    else:
        check_tensor(boxes, "boxes")
        if boxes.dim() != 2 or boxes.shape[-1] != 5:
            raise ValueError(
                f"boxes must be a Tensor[K, 5] of (batch index, x1, y1, x2, y2) or a list of "
                f"Tensor[L, 4], got shape {list(boxes.shape)}")
        rois = boxes.to(input)
    rois = rois.detach()  # as torchvision: the ops have no gradient with respect to the boxes
    if rois.numel() > 0:
        batch = rois[:, 0]
        if bool(((batch < 0) | (batch >= N) | (batch != batch.floor())).any()):
            raise ValueError(f"boxes[:, 0] must hold integer batch indices in [0, {N}), "
                             f"got values in [{batch.min().item()}, {batch.max().item()}]")
        bad = (rois[:, 3] < rois[:, 1]) | (rois[:, 4] < rois[:, 2])  # [K]
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"RoI {i} = {rois[i, 1:].tolist()} has x2 < x1 or y2 < y1; boxes must be "
                             "(x1, y1, x2, y2). Convert (x, y, w, h) boxes with cv_course.ops.box_convert.")
    return rois


def ragged_arange(counts: Tensor) -> tuple[Tensor, Tensor]:
    """``owner, local`` for ``counts = [2, 0, 3]``: ``[0, 0, 2, 2, 2]`` and ``[0, 1, 0, 1, 2]``.

    Lists item ``local`` of group ``owner`` for every group at once, the
    vectorized form of ``for owner, n in enumerate(counts): for local in range(n)``.
    """
    owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)  # [S]
    first = counts.cumsum(0) - counts  # [G], where each group starts
    local = torch.arange(len(owner), device=counts.device) - first[owner]  # [S]
    return owner, local


def _chunk_bounds(entries: Tensor) -> list[int]:
    """RoI indices ``[0, ..., K]`` splitting the RoIs into runs of at most
    MAX_ENTRIES bag entries (a RoI larger than that forms a run of its own)."""
    if entries.numel() == 0:
        return [0, 0]
    end = entries.cumsum(0)  # [K]
    chunk = (end - entries) // MAX_ENTRIES  # [K], the run each RoI starts in
    sizes = torch.unique_consecutive(chunk, return_counts=True)[1]
    return [0] + sizes.cumsum(0).tolist()


def pool_bags(input: Tensor, per_roi: Sequence[Tensor], entries: Tensor,
              make_bags: Callable, mode: str, output_size: tuple[int, int]) -> Tensor:
    """Reduce the bag of every output bin of every RoI.

    Args:
        input (Tensor[N, C, H, W]): the feature map.
        per_roi (sequence of Tensor[K, ...]): per-RoI geometry, sliced into chunks.
        entries (Tensor[K] int64): bag entries of each RoI, to size the chunks.
        make_bags: ``make_bags(*chunk_of_per_roi) -> (index, counts, weights)``:
            flat pixel indices into [N * H * W] (Tensor[E]), entries of each of
            the chunk's ``K_c * PH * PW`` bins (Tensor[K_c * PH * PW]), and the
            weight of each entry (Tensor[E], or None for ``mode="max"``).
        mode (str): ``"sum"`` or ``"max"`` (an empty bag gives 0 in both).
    Returns:
        Tensor[K, C, PH, PW].
    """
    N, C, H, W = input.shape
    PH, PW = output_size
    # Pixels as rows of C channels: a view for channels_last input, else one copy.
    table = input.permute(0, 2, 3, 1).reshape(N * H * W, C)  # [N*H*W, C]
    # int32 positions where they fit: half the memory kept for the backward pass.
    index_dtype = torch.int32 if N * H * W < 2**31 else torch.int64
    bounds = _chunk_bounds(entries)
    out = []
    for start, stop in zip(bounds[:-1], bounds[1:]):  # memory chunks of many RoIs each
        index, counts, weights = make_bags(*(t[start:stop] for t in per_roi))
        offsets = counts.cumsum(0) - counts  # [K_c * PH * PW], where each bag starts
        bins = F.embedding_bag(index.to(index_dtype), table, offsets.to(index_dtype), mode=mode,
                               per_sample_weights=weights)  # [K_c * PH * PW, C]
        out.append(bins.view(-1, PH, PW, C).permute(0, 3, 1, 2).contiguous())  # [K_c, C, PH, PW]
    return torch.cat(out) if len(out) > 1 else out[0]  # [K, C, PH, PW]

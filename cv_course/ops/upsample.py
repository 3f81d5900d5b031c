"""Unpooling: fixed (not learned) in-network upsampling for segmentation.

A fully convolutional segmentation network downsamples with pooling or strided
convolution and must upsample back to the input resolution. The three fixed
rules here are the "unpooling" half of that story:

- nearest-neighbour unpooling copies each value into a ``scale x scale`` block;
- "bed of nails" unpooling puts each value at the top-left of its block and
  zeros everywhere else;
- max unpooling puts each value back where the max of the paired max-pooling
  layer came from (Noh et al., "Learning Deconvolution Network for Semantic
  Segmentation", ICCV 2015), which keeps the spatial detail pooling threw away.

The learnable counterpart, the transposed convolution, is in ``conv_transpose.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_tensor


def _pair(v, name: str) -> tuple[int, int]:
    """``v`` as a (height, width) pair of ints; an int means the same for both."""
    pair = (v, v) if isinstance(v, int) else tuple(v)
    if len(pair) != 2 or not all(isinstance(p, int) for p in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return pair  # type: ignore[return-value]


def _check_nchw(x, name: str = "x") -> None:
    check_tensor(x, name)
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape [N, C, H, W], got {list(x.shape)}")


def _check_scale(scale) -> tuple[int, int]:
    sh, sw = _pair(scale, "scale")
    if sh < 1 or sw < 1:
        raise ValueError(f"scale must be >= 1, got {scale!r}")
    return sh, sw


def nearest_unpool(x: Tensor, scale: int | tuple[int, int] = 2) -> Tensor:
    """Nearest-neighbour unpooling: copy each value into a ``scale x scale`` block.

    ``[[1, 2], [3, 4]]`` becomes ``[[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4],
    [3, 3, 4, 4]]``. Equal to ``F.interpolate(x, scale_factor=scale,
    mode="nearest")`` for integer scales.

    Args:
        x (Tensor[N, C, H, W]): feature map.
        scale (int or (int, int)): upsampling factor, per axis if a pair.
    Returns:
        Tensor[N, C, H * sh, W * sw]: ``out[..., i, j] == x[..., i // sh, j // sw]``.
    """
    _check_nchw(x)
    sh, sw = _check_scale(scale)
    N, C, H, W = x.shape
    # A broadcast view [N, C, H, sh, W, sw]: block (h, w) repeats x[..., h, w].
    blocks = x[:, :, :, None, :, None].expand(N, C, H, sh, W, sw)
    return blocks.reshape(N, C, H * sh, W * sw)


def bed_of_nails_unpool(x: Tensor, scale: int | tuple[int, int] = 2) -> Tensor:
    """"Bed of nails" unpooling: each value at the top-left of its block, zeros elsewhere.

    ``[[1, 2], [3, 4]]`` becomes ``[[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0],
    [0, 0, 0, 0]]``. It is max unpooling with every max assumed at the top-left,
    and a stride-``scale`` transposed convolution whose kernel is a single 1.

    Args:
        x (Tensor[N, C, H, W]): feature map.
        scale (int or (int, int)): upsampling factor, per axis if a pair.
    Returns:
        Tensor[N, C, H * sh, W * sw]: ``out[..., ::sh, ::sw] == x`` and zero elsewhere.
    """
    _check_nchw(x)
    sh, sw = _check_scale(scale)
    N, C, H, W = x.shape
    out = x.new_zeros(N, C, H, sh, W, sw)
    out[:, :, :, 0, :, 0] = x  # the "nail" at offset (0, 0) of every block
    return out.reshape(N, C, H * sh, W * sw)


def _unpool_output_size(
    in_hw: tuple[int, int], kernel, stride, padding, output_size
) -> tuple[int, int]:
    """Output (H, W) of max unpooling, with the same rules as PyTorch.

    The default inverts the max-pooling size formula,
    ``(H_in - 1) * stride - 2 * padding + kernel``. Pooling floors, so several
    input sizes pool to the same size; ``output_size`` picks one of them and
    must lie strictly within ``stride`` of the default.
    """
    default = tuple((n - 1) * s - 2 * p + k for n, k, s, p in zip(in_hw, kernel, stride, padding))
    if output_size is None:
        size = default
    else:
        size = tuple(output_size)
        if len(size) == 4:  # [N, C, H, W] is accepted, as in torch
            size = size[2:]
        if len(size) != 2:
            raise ValueError(f"output_size must have 2 or 4 elements, got {list(output_size)}")
        for d in range(2):
            lo, hi = default[d] - stride[d], default[d] + stride[d]
            if not lo < size[d] < hi:
                raise ValueError(
                    f"invalid output_size {list(output_size)}: dim {d} must be strictly "
                    f"between {lo} and {hi} for an input of spatial size {list(in_hw)}"
                )
    if min(size) < 0:
        raise ValueError(f"max unpooling output size must be non-negative, got {list(size)}")
    return size  # type: ignore[return-value]


def max_unpool2d(
    input: Tensor,
    indices: Tensor,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    output_size: list[int] | tuple[int, ...] | None = None,
) -> Tensor:
    """Max unpooling: scatter each value to where its max-pooling window's max was.

    The paired max-pooling layer "remembers" the position of each max
    (``F.max_pool2d(..., return_indices=True)``); unpooling writes value
    ``input[n, c, i, j]`` to output position ``indices[n, c, i, j]`` and leaves
    every other position zero. Same semantics and arguments as
    ``torch.nn.functional.max_unpool2d``.

    Args:
        input (Tensor[N, C, H, W] or Tensor[C, H, W]): values to unpool.
        indices (Tensor[N, C, H, W], int64): flat index ``y * W_out + x`` into each
            channel's output plane, as returned by ``max_pool2d``.
        kernel_size, stride, padding: those of the max pooling (``stride``
            defaults to ``kernel_size``); they only set the output size.
        output_size (sequence of 2 or 4 ints, optional): exact output size, to
            undo the flooring of pooling on odd sizes.
    Returns:
        Tensor[N, C, H_out, W_out]: ``H_out = (H - 1) * stride - 2 * padding +
        kernel_size`` unless ``output_size`` says otherwise; for non-overlapping
        pooling, ``max_pool2d(max_unpool2d(p, i, k), k) == p`` where ``p, i`` came
        from ``max_pool2d(x, k, return_indices=True)``.
    Raises:
        ValueError: wrong ndim, ``indices`` not int64 or not the shape of
        ``input``, a bad ``output_size`` or an index outside the output plane.
    """
    check_tensor(input, "input")
    check_tensor(indices, "indices")
    if input.dim() not in (3, 4):
        raise ValueError(f"input must have shape [N, C, H, W] or [C, H, W], got {list(input.shape)}")
    if indices.shape != input.shape:
        raise ValueError(
            f"indices must have the shape of input, got {list(indices.shape)} and {list(input.shape)}; "
            "pass the indices that max_pool2d(..., return_indices=True) returned with these values"
        )
    if indices.dtype != torch.int64:
        raise ValueError(f"indices must be int64, got {indices.dtype}")
    if input.dim() == 3:  # unbatched, as torch allows
        return max_unpool2d(input[None], indices[None], kernel_size, stride, padding, output_size)[0]

    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else _pair(stride, "stride")
    N, C, H, W = input.shape
    H_out, W_out = _unpool_output_size((H, W), kernel, stride, _pair(padding, "padding"), output_size)
    flat_idx = indices.reshape(N, C, H * W)  # [N, C, H*W]
    # One check per call (a device sync on GPU), not per element: a bad index
    # would otherwise write outside the plane or fail deep inside scatter.
    if flat_idx.numel() > 0 and bool(((flat_idx < 0) | (flat_idx >= H_out * W_out)).any()):
        raise ValueError(
            f"indices must lie in [0, {H_out * W_out}) for an output plane of {H_out} x {W_out}; "
            "check kernel_size, stride, padding and output_size against the max pooling"
        )
    out = input.new_zeros(N, C, H_out * W_out)
    out = out.scatter(2, flat_idx, input.reshape(N, C, H * W))  # [N, C, H_out*W_out]
    return out.view(N, C, H_out, W_out)

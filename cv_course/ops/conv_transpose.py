"""Transposed convolution: learnable upsampling, written as scatter-and-sum.

A convolution slides the kernel over the input and takes one dot product per
output pixel. A *transposed convolution* runs the other way: every input pixel
multiplies the whole kernel, and the weighted copies are added into the output
at ``stride`` steps, summing where they overlap. Written as matrices, if a
convolution is ``y = X @ a`` then its transposed convolution is ``X.T @ y``
(``conv_matrix`` builds ``X``), hence the name. It is sometimes called
"deconvolution", a misnomer: it does not undo a convolution (that would need
the inverse of ``X``, not its transpose); it only maps the output shape back to
the input shape. Other names: upconvolution, fractionally strided convolution.

Used for upsampling in FCN (Long, Shelhamer and Darrell, "Fully Convolutional
Networks for Semantic Segmentation", CVPR 2015), which initializes it to
bilinear interpolation (``bilinear_kernel``), and in U-Net.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_tensor
from .upsample import _pair


def _output_hw(in_hw, kernel, stride, padding, output_padding) -> tuple[int, int]:
    """``(H_in - 1) * stride - 2 * padding + kernel + output_padding`` per axis."""
    return tuple(
        (n - 1) * s - 2 * p + k + op
        for n, k, s, p, op in zip(in_hw, kernel, stride, padding, output_padding)
    )  # type: ignore[return-value]


def conv_transpose2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    output_padding: int | tuple[int, int] = 0,
) -> Tensor:
    """2-D transposed convolution (groups=1, dilation=1), as scatter-and-sum.

    Input pixel ``(h, w)`` adds ``input[n, c, h, w] * weight[c, o, i, j]`` to
    output pixel ``(s*h + i - padding, s*w + j - padding)``. Same results and
    gradients as ``torch.nn.functional.conv_transpose2d``.

    Args:
        input (Tensor[N, C_in, H, W] or Tensor[C_in, H, W]): feature map.
        weight (Tensor[C_in, C_out, kH, kW]): kernel, laid out as torch's
            (input channels first, the reverse of a convolution's weight).
        bias (Tensor[C_out], optional): added to every output pixel.
        stride (int or (int, int)): step between the kernel copies in the output,
            i.e. the upsampling factor.
        padding (int or (int, int)): rows/columns cropped from each border of the
            full output; it undoes the ``padding`` of the matching convolution.
        output_padding (int or (int, int)): extra rows/columns at the bottom/right,
            ``< stride``; picks among the input sizes that a stride-``s``
            convolution maps to the same size.
    Returns:
        Tensor[N, C_out, H_out, W_out] with ``H_out = (H - 1) * stride
        - 2 * padding + kH + output_padding`` (and likewise ``W_out``).
    Raises:
        ValueError: wrong ndim, ``weight``/``input`` channel mismatch, a bias of
        the wrong shape, different dtypes, ``output_padding >= stride``, or an
        empty output.
    """
    check_tensor(input, "input")
    check_tensor(weight, "weight")
    if input.dim() not in (3, 4):
        raise ValueError(f"input must have shape [N, C_in, H, W] or [C_in, H, W], got {list(input.shape)}")
    if input.dim() == 3:  # unbatched, as torch allows
        return conv_transpose2d(input[None], weight, bias, stride, padding, output_padding)[0]
    if weight.dim() != 4:
        raise ValueError(f"weight must have shape [C_in, C_out, kH, kW], got {list(weight.shape)}")
    N, C_in, H, W = input.shape
    _, C_out, kH, kW = weight.shape
    if weight.shape[0] != C_in:
        raise ValueError(
            f"weight must be [C_in, C_out, kH, kW] with C_in = {C_in} (input channels), got "
            f"{list(weight.shape)}; note a transposed convolution's weight is a convolution's "
            "weight with the first two dimensions swapped"
        )
    if bias is not None and (not isinstance(bias, Tensor) or bias.shape != (C_out,)):
        got = list(bias.shape) if isinstance(bias, Tensor) else bias
        raise ValueError(f"bias must be a Tensor[C_out] with C_out = {C_out}, got {got}")
    if weight.dtype != input.dtype:
        raise ValueError(f"input and weight must have the same dtype, got {input.dtype} and {weight.dtype}")
    s, p, op = _pair(stride, "stride"), _pair(padding, "padding"), _pair(output_padding, "output_padding")
    if min(s) < 1 or min(p) < 0 or min(op) < 0:
        raise ValueError(f"need stride >= 1, padding >= 0, output_padding >= 0; got {s}, {p}, {op}")
    if op[0] >= s[0] or op[1] >= s[1]:
        raise ValueError(
            f"output_padding must be smaller than stride, got output_padding={op} and stride={s}; "
            "a larger value would add rows that no input pixel reaches"
        )
    H_out, W_out = _output_hw((H, W), (kH, kW), s, p, op)
    if H_out < 1 or W_out < 1:
        raise ValueError(f"output would be {H_out} x {W_out}: padding {p} is too large for this input")

    # Every input pixel times the whole kernel, for all pixels at once: one
    # matmul over input channels. Viewed as [N, C_out, kH, kW, H, W], entry
    # (n, o, i, j, h, w) is what input pixel (h, w) adds at kernel tap (i, j).
    # (An explicit bmm with the weight expanded over the batch -- a view, no
    # copy -- is ~2x faster on CPU than `@` broadcasting when autograd is on.)
    w_t = weight.reshape(C_in, C_out * kH * kW).T.expand(N, -1, -1)  # [N, C_out*kH*kW, C_in]
    cols = torch.bmm(w_t, input.reshape(N, C_in, H * W))  # [N, C_out*kH*kW, H*W]
    # Scatter-and-sum: put pixel (h, w)'s kH x kW block at (s*h, s*w) and add
    # where blocks overlap. ``fold`` (col2im) does that in one op; it is the loop
    #   for i, j in kernel taps: full[..., i:i + s*H:s, j:j + s*W:s] += c[:, :, i, j]
    # with c = cols.view(N, C_out, kH, kW, H, W), without kH*kW in-place slice
    # updates (forward + backward measured about 2x slower that way on CPU).
    # The canvas is ``output_padding`` larger than the blocks cover: those extra
    # rows/columns receive nothing (only the bias below).
    H_full, W_full = (H - 1) * s[0] + kH + op[0], (W - 1) * s[1] + kW + op[1]
    full = F.fold(cols, (H_full, W_full), (kH, kW), stride=s)  # [N, C_out, H_full, W_full]
    out = full[:, :, p[0]:p[0] + H_out, p[1]:p[1] + W_out]  # crop `padding` from each border
    if bias is not None:
        out = out + bias[None, :, None, None]
    return out


class ConvTranspose2d(nn.Module):
    """Transposed-convolution layer running ``conv_transpose2d``.

    Same constructor arguments (groups=1, dilation=1, zero padding only),
    parameter shapes and initialization as ``torch.nn.ConvTranspose2d``: with the
    same random seed both layers start with identical weights.

    Args:
        in_channels, out_channels (int): C_in and C_out.
        kernel_size (int or (int, int)): kH, kW.
        stride, padding, output_padding: as in ``conv_transpose2d``.
        bias (bool): learn a per-channel bias.
    Shape:
        weight (Tensor[C_in, C_out, kH, kW]), bias (Tensor[C_out]);
        input [N, C_in, H, W] -> output [N, C_out, H_out, W_out].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, *, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.output_padding = _pair(output_padding, "output_padding")
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's default: Kaiming-uniform weight (a = sqrt(5)), bias U(-1/sqrt(fan_in), +)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]  # torch's fan_in
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor, output_size: list[int] | None = None) -> Tensor:
        """Apply the layer; ``output_size`` ((H, W) or (N, C, H, W)), if given,
        chooses ``output_padding`` so the output has that size, as in torch."""
        op = self.output_padding
        if output_size is not None:
            size = tuple(output_size)[-2:]
            smallest = _output_hw(input.shape[-2:], self.kernel_size, self.stride, self.padding, (0, 0))
            op = tuple(n - m for n, m in zip(size, smallest))
            if any(not 0 <= o < s for o, s in zip(op, self.stride)):
                raise ValueError(
                    f"output_size {list(output_size)} is not reachable: valid sizes range from "
                    f"{list(smallest)} to {[m + s - 1 for m, s in zip(smallest, self.stride)]}"
                )
        return conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, op)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, output_padding={self.output_padding}, "
                f"bias={self.bias is not None}")


def bilinear_kernel(in_channels: int, out_channels: int, kernel_size: int, *,
                    dtype: torch.dtype | None = None, device=None) -> Tensor:
    """Weight that makes a transposed convolution upsample bilinearly (FCN's init).

    The 2-D kernel is the outer product of a 1-D "tent" ``1 - |i - centre| / f``
    with ``f = (kernel_size + 1) // 2`` the upsampling factor; each channel is
    upsampled on its own (the kernel sits on the channel diagonal). Use it with
    ``stride=f``, ``kernel_size=2*f - f % 2``, ``padding=f // 2`` (e.g. 4, 2, 1
    for 2x): away from the borders the result then equals
    ``F.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)``.

    Args:
        in_channels, out_channels (int): must be equal (one kernel per channel).
        kernel_size (int): side of the square kernel.
        dtype, device: of the returned tensor.
    Returns:
        Tensor[C, C, kernel_size, kernel_size]: ``weight[c, c]`` is the bilinear
        kernel and ``weight[c, d] == 0`` for ``c != d``.
    """
    if in_channels != out_channels:
        raise ValueError(
            f"bilinear upsampling maps each channel to itself, so in_channels must equal "
            f"out_channels, got {in_channels} and {out_channels}"
        )
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
    factor = (kernel_size + 1) // 2
    centre = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    pos = torch.arange(kernel_size, dtype=dtype, device=device)  # [k]
    if not pos.is_floating_point():  # default dtype when none is given
        pos = pos.to(torch.get_default_dtype())
    tent = 1 - (pos - centre).abs() / factor  # [k]
    kernel = tent[:, None] * tent[None, :]  # [k, k]
    eye = torch.eye(in_channels, dtype=pos.dtype, device=device)  # [C, C]
    return eye[:, :, None, None] * kernel  # [C, C, k, k]


def _taps(n_in: int, k: int, s: int, p: int, device) -> tuple[Tensor, Tensor]:
    """For one axis: which kernel tap links output ``o`` to input ``i``.

    Output ``o`` reads the padded input at ``o*s + t`` for taps ``t = 0..k-1``,
    i.e. unpadded input ``i = o*s + t - p``, so ``t = i + p - o*s``.
    Returns the taps Tensor[n_out, n_in] (clamped into range) and where valid.
    """
    n_out = (n_in + 2 * p - k) // s + 1
    o = torch.arange(n_out, device=device)[:, None]  # [n_out, 1]
    i = torch.arange(n_in, device=device)[None, :]  # [1, n_in]
    tap = i + p - o * s  # [n_out, n_in]
    valid = (tap >= 0) & (tap < k)
    return tap.clamp(0, k - 1), valid


def conv_matrix(kernel: Tensor, input_size: int | tuple[int, int], stride=1, padding=0) -> Tensor:
    """The matrix ``X`` of a convolution, so that convolving is ``X @ a``.

    For a 1-D kernel ``(x, y, z)``, input size 6, stride 1, the rows are
    ``[x y z 0 0 0], [0 x y z 0 0], ...``: each row is the kernel shifted by
    ``stride``. Zero padding adds no columns (padded entries are zero, so their
    columns are dropped); ``a`` is the unpadded input. The transposed
    convolution is ``X.T @ y``.

    Args:
        kernel (Tensor[k] or Tensor[kH, kW]): single-channel kernel.
        input_size (int or (int, int)): L, or (H, W) for a 2-D kernel.
        stride, padding (int or (int, int)): of the convolution.
    Returns:
        Tensor[L_out, L] or Tensor[H_out * W_out, H * W] (row-major flattening),
        such that ``X @ a.flatten() == F.conv{1,2}d(a, kernel, stride=stride,
        padding=padding).flatten()`` (cross-correlation, as in deep learning) and
        ``X.T @ y.flatten() == F.conv_transpose{1,2}d(y, kernel, stride=stride,
        padding=padding, output_padding=op).flatten()`` with
        ``op = (L + 2 * padding - k) % stride``, the size that gets back to L.
        Differentiable with respect to ``kernel``.
    """
    check_tensor(kernel, "kernel")
    if kernel.dim() not in (1, 2):
        raise ValueError(f"kernel must be Tensor[k] or Tensor[kH, kW], got {list(kernel.shape)}")
    if kernel.dim() == 1:  # a 1-D convolution is a 2-D one on a 1-row image
        if not isinstance(input_size, int):
            raise ValueError(f"a 1-D kernel needs an int input_size, got {input_size!r}")
        return conv_matrix(kernel[None], (1, input_size), (1, stride), (0, padding))
    (H, W), (sh, sw), (ph, pw) = (_pair(input_size, "input_size"), _pair(stride, "stride"),
                                  _pair(padding, "padding"))
    kH, kW = kernel.shape
    if H + 2 * ph < kH or W + 2 * pw < kW:
        raise ValueError(f"kernel {kH} x {kW} is larger than the padded input {H + 2*ph} x {W + 2*pw}")
    tap_y, ok_y = _taps(H, kH, sh, ph, kernel.device)  # [H_out, H]
    tap_x, ok_x = _taps(W, kW, sw, pw, kernel.device)  # [W_out, W]
    # X[(oy, ox), (iy, ix)] = kernel[tap_y[oy, iy], tap_x[ox, ix]] where both taps are valid.
    vals = kernel[tap_y[:, None, :, None], tap_x[None, :, None, :]]  # [H_out, W_out, H, W]
    ok = ok_y[:, None, :, None] & ok_x[None, :, None, :]  # [H_out, W_out, H, W]
    X = torch.where(ok, vals, torch.zeros((), dtype=kernel.dtype, device=kernel.device))
    return X.reshape(tap_y.shape[0] * tap_x.shape[0], H * W)

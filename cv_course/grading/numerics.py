"""How closely an answer must match the reference: one tolerance rule, one TF32 rule.

Two honest implementations of the same formula rarely agree to the last bit:
they sum in another order, or fuse other operations. How far they drift
depends on the dtype and on how many operations feed each value, so the rule
has one row per *kind* of computation:

* ``"exact"``: indexing, scattering, comparisons; nothing is rounded.
* ``"arithmetic"``: a few operations per value (an IoU, a loss, a step along a sign).
* ``"network"``: long sums (convolutions, whole models, gradients through them).

``atol`` is ``rtol`` times the largest expected magnitude, so that values near
zero are held to the precision of the computation that produced them, not to
their own (a heatmap of 1e-5 is compared at 1e-5's scale, an IoU at 1's).

TF32: on recent GPUs PyTorch may run float32 convolutions and matrix products
with a 10-bit mantissa (about 3 significant digits). Every check runs the
student's code *and* the reference inside :func:`exact_float32`, so float32
means float32 on every device and one tolerance serves CPU and GPU alike.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

# rtol per kind and dtype; measured drift of honest answers is 10-100x below these.
RTOL = {
    "exact": {},  # 0 for every dtype
    "arithmetic": {torch.float16: 1e-2, torch.bfloat16: 3e-2, torch.float32: 1e-4, torch.float64: 1e-9},
    "network": {torch.float16: 3e-2, torch.bfloat16: 1e-1, torch.float32: 1e-3, torch.float64: 1e-7},
}


def tolerance(expected: Tensor, kind: str) -> dict:
    """``dict(rtol=..., atol=...)`` for comparing with ``expected`` (see the module's rule)."""
    if kind not in RTOL:
        raise ValueError(f"unknown kind of computation {kind!r}; one of {sorted(RTOL)}")
    if kind == "exact" or not expected.is_floating_point():
        return dict(rtol=0.0, atol=0.0)
    rtol = RTOL[kind].get(expected.dtype, RTOL[kind][torch.float32])
    finite = expected.detach()[torch.isfinite(expected.detach())]
    scale = float(finite.abs().max()) if finite.numel() else 0.0
    return dict(rtol=rtol, atol=max(rtol * scale, torch.finfo(expected.dtype).tiny))


def dtype_name(dtype: torch.dtype) -> str:
    """torch.float32 -> 'float32'."""
    return str(dtype).replace("torch.", "")


@contextlib.contextmanager
def exact_float32():
    """No TF32 inside the block (cuDNN convolutions and CUDA matrix products);
    the previous settings come back afterwards. A no-op on the CPU."""
    matmul = torch.backends.cuda.matmul
    new_api = hasattr(matmul, "fp32_precision")  # torch >= 2.9: the legacy flag is deprecated
    before = matmul.fp32_precision if new_api else matmul.allow_tf32
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
        if new_api:
            matmul.fp32_precision = "ieee"
        else:
            matmul.allow_tf32 = False
        try:
            yield
        finally:
            if new_api:
                matmul.fp32_precision = before
            else:
                matmul.allow_tf32 = before

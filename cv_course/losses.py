"""Losses for dense prediction.

Per-pixel cross-entropy is the loss of FCN (Long, Shelhamer, Darrell, CVPR 2015)
and U-Net (Ronneberger et al., MICCAI 2015): classification cross-entropy
applied independently at every pixel and averaged over the pixels,
``L = -(1 / #pixels) * sum_{n,h,w} log softmax(logits[n, :, h, w])[target[n, h, w]]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def pixel_cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = 255,
                        weight: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """Cross-entropy between per-pixel class scores and per-pixel labels.

    Same result as ``F.cross_entropy(logits, target, weight, ignore_index=...)``,
    written out so that each step can be read: log-softmax over the class
    dimension, pick the log-probability of the true class, weight, average.

    Args:
        logits (Tensor[N, C, H, W]): unnormalised class scores.
        target (Tensor[N, H, W], int64): class of each pixel in ``[0, C)``, or
            ``ignore_index`` for pixels that must not count (e.g. void borders).
        ignore_index (int): label to skip.
        weight (Tensor[C], optional): a weight per class, e.g. to up-weight rare classes.
        reduction (str): ``"mean"`` (weighted mean over the counted pixels),
            ``"sum"``, or ``"none"`` (``Tensor[N, H, W]``, zero at ignored pixels).
    Returns:
        Tensor[] (or Tensor[N, H, W] for ``"none"``). With every pixel ignored the
        mean is 0, not 0/0 = NaN, so one void image does not poison a batch.
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must have shape [N, C, H, W], got {list(logits.shape)}")
    N, C, H, W = logits.shape
    if target.shape != (N, H, W):
        raise ValueError(f"target must have shape [N, H, W] = {[N, H, W]}, "
                         f"got {list(target.shape)}")
    if target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got {target.dtype}")
    if weight is not None and weight.shape != (C,):
        raise ValueError(f"weight must have shape [C] = [{C}], got {list(weight.shape)}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    valid = target != ignore_index  # [N, H, W]
    if bool(((target < 0) | (target >= C))[valid].any()):
        raise ValueError(f"target has labels outside [0, {C}) that are not "
                         f"ignore_index={ignore_index}")

    safe = torch.where(valid, target, torch.zeros_like(target)).long()  # any index in range
    log_p = logits.log_softmax(dim=1)  # [N, C, H, W]
    nll = -log_p.gather(1, safe[:, None]).squeeze(1)  # [N, H, W]
    w = valid.to(logits.dtype)  # [N, H, W]
    if weight is not None:
        w = w * weight.to(logits.dtype)[safe]
    loss = nll * w  # [N, H, W], 0 at ignored pixels
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    total = w.sum()
    return loss.sum() / torch.where(total > 0, total, torch.ones_like(total))

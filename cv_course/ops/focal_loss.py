"""Sigmoid focal loss: cross-entropy that fades out the easy examples.

Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object Detection"
(RetinaNet), ICCV 2017, equation (5):

    FL(p_t) = -alpha_t * (1 - p_t) ** gamma * log(p_t)

where p_t is the probability the model gives to the true answer (p for a
positive, 1 - p for a negative) and alpha_t is ``alpha`` for positives and
``1 - alpha`` for negatives. With gamma = 0 and no alpha it is plain binary
cross-entropy; gamma = 2 turns an easy example (p_t = 0.99) down by 10^4 and a
hard one (p_t = 0.1) only by 0.81, which is what lets a dense detector train on
~100k anchors of which a handful are objects.

Same signature and values as ``torchvision.ops.sigmoid_focal_loss``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_tensor

_REDUCTIONS = ("none", "mean", "sum")


def sigmoid_focal_loss(inputs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2,
                       reduction: str = "none") -> Tensor:
    """Focal loss of independent sigmoid (one-vs-all) classifiers.

    Args:
        inputs (Tensor[...]): logits, one per (anchor, class); any shape.
        targets (Tensor[...], float): same shape; 1 for a positive, 0 for a
            negative (soft labels in [0, 1] follow the same formula).
        alpha (float): weight of the positives in [0, 1]; negatives get
            ``1 - alpha`` (RetinaNet's convention: 0.25 / 0.75). Any ``alpha < 0``
            turns the weighting off (torchvision uses -1).
        gamma (float): focusing exponent >= 0 of ``(1 - p_t)``; 0 gives BCE.
        reduction (str): ``"none"`` (Tensor[...]), ``"mean"`` or ``"sum"`` (Tensor[]).
    Returns:
        Tensor[...] or Tensor[]: the loss. Finite, with a finite gradient, for
        any finite logits (also +-100 and beyond), in float32 and float64.
    """
    check_tensor(inputs, "inputs")
    check_tensor(targets, "targets")
    if targets.shape != inputs.shape:
        raise ValueError(f"targets must have the shape of inputs {list(inputs.shape)}, got "
                         f"{list(targets.shape)}; for class labels build one-hot targets first")
    if not (inputs.is_floating_point() and targets.is_floating_point()):
        raise ValueError(f"inputs and targets must be floating point, got {inputs.dtype} and "
                         f"{targets.dtype}; use targets.to(inputs.dtype) for 0/1 labels")
    if alpha > 1:
        raise ValueError(f"alpha must be in [0, 1], or negative to switch weighting off; "
                         f"got {alpha}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0 (0 is plain cross-entropy), got {gamma}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")

    # Work with log-sigmoids: sigmoid(100) is exactly 1.0 in float32, so
    # log(1 - sigmoid(x)) would be log(0) = -inf; logsigmoid(-x) is -100.
    log_p = F.logsigmoid(inputs)  # log p
    log_q = F.logsigmoid(-inputs)  # log(1 - p)
    ce = -(targets * log_p + (1 - targets) * log_q)  # -log p_t: BCE with logits
    # 1 - p_t from sigmoid(-x) = 1 - p, never as 1 - p, which rounds to 0 for x > 17 in float32.
    one_minus_pt = targets * torch.sigmoid(-inputs) + (1 - targets) * torch.sigmoid(inputs)
    # x ** gamma has an infinite slope at x = 0 when gamma < 1; the smallest
    # normal number instead of an underflowed 0 keeps the gradient finite.
    tiny = torch.finfo(one_minus_pt.dtype).tiny
    loss = ce * one_minus_pt.clamp(min=tiny) ** gamma
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)  # 0.25 positives, 0.75 negatives
        loss = alpha_t * loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def focal_loss_at(pt: float, alpha: float = 0.25, gamma: float = 2, positive: bool = True) -> float:
    """Focal loss of one example whose true answer has probability ``pt``.

    Goes through ``sigmoid_focal_loss`` (in float64), so the numbers printed in
    the book are those of the op a detector trains with. ``alpha_t`` is
    ``alpha`` for a positive and ``1 - alpha`` for a negative, as in RetinaNet
    and torchvision. ``focal_loss_at(pt, alpha=-1, gamma=0) == -log(pt)``, the
    cross-entropy.

    Lecture worked example (gamma = 2):

    - easy negative, pt = 0.99: cross-entropy 0.01; the lecture weights it by
      0.25 -> 2.5e-7 (``focal_loss_at(0.99, alpha=0.75, positive=False)``);
      RetinaNet's 1 - alpha = 0.75 for negatives -> 7.5e-7
      (``focal_loss_at(0.99, positive=False)``).
    - hard positive, pt = 0.1: cross-entropy 2.30, focal 0.47
      (``focal_loss_at(0.1)``).

    Args:
        pt (float): probability of the true answer, in (0, 1).
        alpha (float): as in ``sigmoid_focal_loss``.
        gamma (float): as in ``sigmoid_focal_loss``.
        positive (bool): whether the example is a positive (target 1).
    Returns:
        float: the loss.
    """
    if not 0 < pt < 1:
        raise ValueError(f"pt must be a probability in (0, 1), got {pt}")
    logit = math.log(pt) - math.log1p(-pt)  # sigmoid(logit) = pt
    x = torch.tensor([logit if positive else -logit], dtype=torch.float64)
    t = torch.tensor([1.0 if positive else 0.0], dtype=torch.float64)
    return float(sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma)[0])

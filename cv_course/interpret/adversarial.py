"""Adversarial examples: FGSM and PGD under an L-infinity budget.

FGSM: Goodfellow, Shlens and Szegedy, "Explaining and Harnessing Adversarial
Examples", ICLR 2015. One step of size ``eps`` along the sign of the loss
gradient, the steepest ascent direction for an L-infinity-bounded change.

PGD: Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep Learning Models
Resistant to Adversarial Attacks", ICLR 2018. Many small FGSM steps, each
followed by a projection back onto the ``eps`` ball around the clean image and
onto the valid pixel range [0, 1].

Both leave the model's parameters, gradients and train/eval mode, and the
caller's images, untouched; the returned images are new, detached tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_images, check_logits, evaluating, model_device, target_indices


def _loss_grad(model: nn.Module, x: Tensor, labels) -> Tensor:
    """Gradient of the cross-entropy loss with respect to the images, Tensor[N, C, H, W]."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)  # [N, K]
        check_logits(logits)
        y = target_indices(labels, x.shape[0], logits.shape[1], x.device, "labels")  # [N]
        # Summed, not averaged, so the gradient does not shrink with the batch
        # size (only its sign is used, but a tiny gradient can underflow to 0).
        loss = F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def _check_eps(**values: float) -> None:
    for name, v in values.items():
        if not v >= 0:
            raise ValueError(f"{name} must be >= 0 (pixels are in [0, 1]), got {v}")


def fgsm(model: nn.Module, images: Tensor, labels, eps: float) -> Tensor:
    """Fast gradient sign method.

    Args:
        model (nn.Module): maps Tensor[N, C, H, W] in [0, 1] to class scores [N, K].
        images (Tensor[N, C, H, W]): clean images with values in [0, 1].
        labels (int or Tensor[N]): the true classes, whose loss is increased.
        eps (float): L-infinity budget, in pixel units (8/255 is a common choice).
    Returns:
        Tensor[N, C, H, W]: ``clamp(images + eps * sign(grad_x CE(model(x), labels)), 0, 1)``,
        on the model's device.
    """
    check_images(images)
    _check_eps(eps=eps)
    x = images.detach().to(model_device(model, images.device))
    with evaluating(model):
        grad = _loss_grad(model, x, labels)
    return (x + eps * grad.sign()).clamp(0, 1)


def pgd(
    model: nn.Module,
    images: Tensor,
    labels,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient descent (ascent on the loss) in the L-infinity ball.

    Args:
        model (nn.Module): maps Tensor[N, C, H, W] in [0, 1] to class scores [N, K].
        images (Tensor[N, C, H, W]): clean images with values in [0, 1].
        labels (int or Tensor[N]): the true classes.
        eps (float): L-infinity budget.
        alpha (float): step size of each signed-gradient step (e.g. eps / 4).
        steps (int): number of steps.
        random_start (bool): start from a uniform random point of the eps ball
            (Madry et al.) instead of the clean image.
        generator (torch.Generator, optional): for a reproducible random start;
            must live on the model's device.
    Returns:
        Tensor[N, C, H, W]: adversarial images with ``|x_adv - images| <= eps``
        and ``0 <= x_adv <= 1`` everywhere. With ``random_start=False``,
        ``steps=1`` and ``alpha=eps`` this is exactly :func:`fgsm`.
    """
    check_images(images)
    _check_eps(eps=eps, alpha=alpha)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    x = images.detach().to(model_device(model, images.device))
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)  # the feasible box
    adv = x.clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        adv = torch.min(torch.max(x + eps * (2 * noise - 1), lo), hi)
    with evaluating(model):
        for _ in range(steps):  # sequential: each step starts where the last ended
            grad = _loss_grad(model, adv, labels)
            adv = torch.min(torch.max(adv + alpha * grad.sign(), lo), hi)
    return adv

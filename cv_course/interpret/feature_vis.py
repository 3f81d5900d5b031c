"""Feature visualization by gradient ascent on the input image.

Activation maximization: Erhan, Bengio, Courville and Vincent, "Visualizing
Higher-Layer Features of a Deep Network", 2009; with the image priors of
Simonyan et al. (ICLR workshop 2014, an L2 penalty), Mahendran and Vedaldi
(CVPR 2015, total variation) and Mordvintsev et al. (2015, random jitter).
Without a prior the "best" image is high-frequency noise that no person would
recognise; each prior removes a different kind of that noise.

DeepDream: Mordvintsev, Olah and Tyka, "Inceptionism: Going Deeper into Neural
Networks", Google Research blog, 2015. Start from a photograph and amplify
whatever a whole layer already responds to. (The original also works over
several image scales, "octaves"; this single-scale version keeps the idea.)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from ._checks import capture_output, check_images, evaluating, model_device, resolve_layer


@dataclass
class Regularizer:
    """Image prior for activation maximization; set a weight to 0 to switch it off."""

    l2: float = 1e-2  # weight of mean((x - 0.5)^2): keeps pixels near mid-grey
    tv: float = 1e-1  # weight of the total variation: penalises pixel-to-pixel jumps
    jitter: int = 4  # shift the image by up to this many pixels before each step


def total_variation(x: Tensor) -> Tensor:
    """Mean squared difference between neighbouring pixels, Tensor[] (scalar).

    Args:
        x (Tensor[N, C, H, W]): images.
    """
    dy = x[..., 1:, :] - x[..., :-1, :]  # [N, C, H-1, W]
    dx = x[..., :, 1:] - x[..., :, :-1]  # [N, C, H, W-1]
    return dy.pow(2).mean() + dx.pow(2).mean()


def _layer_output(model: nn.Module, module: nn.Module, x: Tensor) -> Tensor:
    """Run ``model`` on ``x`` and return what ``module`` produced (graph kept)."""
    with capture_output(module) as captured:
        model(x)
    return captured.single()


def _ascent_step(x: Tensor, grad: Tensor, lr: float) -> Tensor:
    """Move each image by ``lr`` (mean absolute change per pixel) up its gradient."""
    scale = grad.abs().mean(dim=(1, 2, 3), keepdim=True)  # [N, 1, 1, 1]
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # no 0/0
    return (x + lr * grad / scale).clamp(0, 1)


def _jitter(x: Tensor, rng: random.Random, pixels: int) -> Tensor:
    if pixels <= 0:
        return x
    dy, dx = rng.randint(-pixels, pixels), rng.randint(-pixels, pixels)
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))  # gradients roll back by themselves


def activation_maximization(
    model: nn.Module,
    layer,
    channel: int,
    steps: int = 100,
    lr: float = 0.02,
    size=64,
    reg: Regularizer | None = None,
    channels: int = 3,
    seed: int = 0,
) -> Tensor:
    """An image that strongly activates one channel (or one unit) of a layer.

    Maximises ``mean(A[channel]) - reg.l2 * mean((x - 0.5)^2) - reg.tv * TV(x)``
    by normalised gradient ascent from grey noise, with a random shift of up to
    ``reg.jitter`` pixels before each step and pixels kept in [0, 1].

    Args:
        model (nn.Module): any network taking Tensor[1, channels, H, W].
        layer (nn.Module or str): submodule (or dotted name) whose output is
            Tensor[1, K, h, w] (a feature map) or Tensor[1, K] (e.g. class scores).
        channel (int): which of the K channels to maximise.
        steps (int): number of ascent steps.
        lr (float): mean absolute change of a pixel per step.
        size (int or (H, W)): image size.
        reg (Regularizer, optional): image prior; default ``Regularizer()``.
        channels (int): number of input channels of the model.
        seed (int): seeds the starting noise and the jitter.
    Returns:
        Tensor[channels, H, W]: the image, values in [0, 1], on the model's
        device and in its dtype.
    """
    reg = Regularizer() if reg is None else reg
    module = resolve_layer(model, layer)
    H, W = _pair(size)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    gen = torch.Generator().manual_seed(seed)
    x = (0.5 + 0.05 * torch.randn(1, channels, H, W, generator=gen)).to(device, dtype)
    rng = random.Random(seed)
    with evaluating(model), torch.enable_grad():
        for step in range(steps):  # sequential: each step starts from the last image
            x = x.detach().requires_grad_(True)
            acts = _layer_output(model, module, _jitter(x, rng, reg.jitter))
            if step == 0 and not 0 <= channel < acts.shape[1]:
                raise ValueError(
                    f"channel must be in [0, {acts.shape[1]}) for this layer, got {channel}"
                )
            objective = (
                acts[:, channel].mean()
                - reg.l2 * (x - 0.5).pow(2).mean()
                - reg.tv * total_variation(x)
            )
            (grad,) = torch.autograd.grad(objective, x)
            x = _ascent_step(x.detach(), grad, lr)
    return x[0]


def deepdream(
    model: nn.Module,
    layer,
    image: Tensor,
    steps: int = 20,
    lr: float = 0.01,
    jitter: int = 0,
    seed: int = 0,
) -> Tensor:
    """Amplify what a layer sees: gradient ascent on ``mean(A^2)`` of its output.

    Args:
        model (nn.Module): any network taking Tensor[N, C, H, W].
        layer (nn.Module or str): submodule (or dotted name) to excite.
        image (Tensor[N, C, H, W]): starting images, values in [0, 1]; not modified.
        steps (int): number of ascent steps.
        lr (float): mean absolute change of a pixel per step.
        jitter (int): random shift of up to this many pixels before each step.
        seed (int): seeds the jitter.
    Returns:
        Tensor[N, C, H, W]: the dreamed images, in [0, 1], on the model's device.
    """
    check_images(image, "image")
    module = resolve_layer(model, layer)
    x = image.detach().to(model_device(model, image.device))
    rng = random.Random(seed)
    with evaluating(model), torch.enable_grad():
        for _ in range(steps):  # sequential: each step starts from the last image
            x = x.detach().requires_grad_(True)
            acts = _layer_output(model, module, _jitter(x, rng, jitter))
            # Summing the per-image means keeps the images of a batch independent.
            objective = acts.pow(2).flatten(1).mean(dim=1).sum()
            (grad,) = torch.autograd.grad(objective, x)
            x = _ascent_step(x.detach(), grad, lr)
    return x

"""Vanilla gradient saliency maps.

Simonyan, Vedaldi and Zisserman, "Deep Inside Convolutional Networks:
Visualising Image Classification Models and Saliency Maps", ICLR workshop 2014.
The saliency of a pixel is how strongly the class score reacts to a small
change of that pixel: ``|d S_c / d x|``, maximised over the colour channels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import check_images, check_logits, evaluating, model_device, target_indices


def saliency(model: nn.Module, images: Tensor, target) -> Tensor:
    """Gradient saliency map of the class score with respect to the input pixels.

    Args:
        model (nn.Module): maps Tensor[N, C, H, W] to class scores Tensor[N, K]
            (scores before the softmax, as in the paper). Run in eval mode; its
            mode, parameters and gradients are left as they were.
        images (Tensor[N, C, H, W]): input images (moved to the model's device).
        target (int or Tensor[N]): class index per image, in [0, K).
    Returns:
        Tensor[N, H, W]: ``max_c |d score_target / d images[:, c]|``, >= 0.
    """
    check_images(images)
    x = images.detach().to(model_device(model, images.device)).requires_grad_(True)
    with evaluating(model), torch.enable_grad():
        logits = model(x)  # [N, K]
        check_logits(logits)
        t = target_indices(target, x.shape[0], logits.shape[1], x.device)  # [N]
        # In eval mode the images of a batch do not interact, so the gradient of
        # the summed scores gives every image the gradient of its own score.
        score = logits.gather(1, t[:, None]).sum()
        (grad,) = torch.autograd.grad(score, x)  # [N, C, H, W]
    return grad.abs().amax(dim=1)  # [N, H, W]

"""Grad-CAM: class activation maps for any layer of any network.

Selvaraju, Cogswell, Das, Vedantam, Parikh and Batra, "Grad-CAM: Visual
Explanations from Deep Networks via Gradient-based Localization", ICCV 2017.

For a layer with activations ``A`` of shape [K, h, w] and a class score ``S_c``:

    alpha_k = mean_{i,j} dS_c / dA[k, i, j]            (channel importance)
    M_c     = ReLU( sum_k alpha_k * A[k] )              (shape [h, w])

On a network ending in global average pooling + linear, taken at the last
feature map, ``dS_c / dA[k, i, j] = w[c, k] / (h w)`` at every position, so
Grad-CAM = ReLU(CAM) / (h w): the two methods agree up to the ReLU and a scale.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import (
    capture_output,
    check_images,
    check_logits,
    evaluating,
    model_device,
    resolve_layer,
    target_indices,
)


def grad_cam(model: nn.Module, layer, images: Tensor, target) -> Tensor:
    """Grad-CAM heatmap at the resolution of ``layer``'s output.

    Args:
        model (nn.Module): maps Tensor[N, C, H, W] to class scores Tensor[N, K].
            Run in eval mode; mode, parameters and gradients are left as they were.
        layer (nn.Module or str): a submodule of ``model`` (or its dotted name,
            e.g. ``"features.3"``) that returns Tensor[N, K', h, w] and runs once
            per forward pass.
        images (Tensor[N, C, H, W]): input images (moved to the model's device).
        target (int or Tensor[N]): class index per image.
    Returns:
        Tensor[N, h, w]: ``ReLU(sum_k alpha_k A_k)``, >= 0; not resized and not
        normalized (use :func:`upsample_heatmap` for display). No hook is left
        on the model, also when the forward pass raises.
    """
    check_images(images)
    module = resolve_layer(model, layer)
    # The input requires grad only so that a graph is built even when every
    # parameter is frozen; the backward pass stops at the activations.
    x = images.detach().to(model_device(model, images.device)).requires_grad_(True)
    with evaluating(model), torch.enable_grad():
        with capture_output(module) as captured:
            logits = model(x)  # [N, K]
        check_logits(logits)
        acts = captured.single()  # [N, K', h, w]
        if acts.dim() != 4:
            raise ValueError(
                f"the layer must output a feature map [N, K, h, w], got {list(acts.shape)}"
            )
        t = target_indices(target, x.shape[0], logits.shape[1], x.device)  # [N]
        score = logits.gather(1, t[:, None]).sum()
        (grads,) = torch.autograd.grad(score, acts, allow_unused=True)  # [N, K', h, w]
    if grads is None:  # the layer ran but the score does not depend on it
        grads = torch.zeros_like(acts)
    alpha = grads.mean(dim=(2, 3), keepdim=True)  # [N, K', 1, 1]
    return (alpha * acts.detach()).sum(dim=1).relu()  # [N, h, w]

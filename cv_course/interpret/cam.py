"""Class activation maps (CAM) for networks that end in global average pooling
and one linear layer.

Zhou, Khosla, Lapedriza, Oliva and Torralba, "Learning Deep Features for
Discriminative Localization", CVPR 2016. For such a network the class score is

    S_c = sum_k w[c, k] * mean_{i,j} f[k, i, j] + b[c]
        = mean_{i,j} ( sum_k w[c, k] * f[k, i, j] ) + b[c],

so the map ``M_c[i, j] = sum_k w[c, k] f[k, i, j]`` says how much each position
adds to the score: its spatial mean plus the bias is exactly ``S_c``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import check_images, evaluating, model_device, target_indices


def cam(features: nn.Module, fc: nn.Linear, images: Tensor, target) -> Tensor:
    """Class activation map at the resolution of the last feature map.

    Args:
        features (nn.Module): the convolutional body, Tensor[N, C, H, W] ->
            Tensor[N, K, h, w] (everything before the global average pooling).
        fc (nn.Linear): the classifier head, K inputs -> num_classes outputs.
        images (Tensor[N, C, H, W]): input images (moved to the model's device).
        target (int or Tensor[N]): class index per image.
    Returns:
        Tensor[N, h, w]: ``sum_k fc.weight[target, k] * features(images)[:, k]``;
        no ReLU, no bias, no resizing. ``cam(...).mean((1, 2)) + fc.bias[target]``
        equals the class score.
    """
    check_images(images)
    if not isinstance(fc, nn.Linear):
        raise ValueError(f"fc must be an nn.Linear (CAM needs GAP + linear), got {type(fc).__name__}")
    x = images.to(model_device(features, images.device))
    with evaluating(features), torch.no_grad():
        f = features(x)  # [N, K, h, w]
    if f.dim() != 4 or f.shape[1] != fc.in_features:
        raise ValueError(
            f"features must return [N, {fc.in_features}, h, w] to match fc.in_features, "
            f"got {list(f.shape)}"
        )
    t = target_indices(target, f.shape[0], fc.out_features, f.device)  # [N]
    w = fc.weight.detach()[t]  # [N, K]
    return torch.einsum("nk,nkhw->nhw", w, f)

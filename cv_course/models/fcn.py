"""Fully convolutional networks (FCN-32s, FCN-16s, FCN-8s) for semantic segmentation.

Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015.

A classification backbone without its fully connected layers keeps its spatial
layout: five conv stages, each ending in a 2x max pool, turn ``[N, 3, H, W]``
into features at ``H/32 x W/32``. A 1x1 conv scores every class at every
coarse position, and a learned upsampling (a transposed conv initialised to
bilinear interpolation) brings the scores back to ``H x W``.

Upsampling by 32 in one step gives blobby masks (FCN-32s). The *skip* variants
add finer scores before the last upsampling:

* FCN-16s: ``up2(score(pool5)) + score(pool4)`` at stride 16, then up x16;
* FCN-8s:  ``up2(that) + score(pool3)`` at stride 8, then up x8.

Differences from the paper, for a small course model trained from scratch: the
backbone is a narrow VGG-like net with BatchNorm and no pretrained weights, and
any input size is handled by zero-padding to a multiple of 32 and cropping (the
paper pads the input by 100 pixels and crops with per-layer offsets).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import bilinear_kernel

VARIANTS = ("32s", "16s", "8s")


@dataclass
class FCNConfig:
    num_classes: int  # C, background included
    variant: str = "8s"  # "32s", "16s" or "8s": the finest stride whose scores are fused
    in_channels: int = 3  # image channels
    channels: tuple[int, ...] = (32, 64, 128, 256, 256)  # width of the 5 stages (/2 each)
    convs_per_stage: int = 2  # 3x3 conv + BN + ReLU layers before each pool
    head_channels: int = 512  # width of the conv "fc6/fc7" layers on the stride-32 map


def bilinear_upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    """Learnable ``factor``-x upsampling, ``[N, c, h, w] -> [N, c, factor*h, factor*w]``,
    initialised to bilinear interpolation of each channel separately."""
    up = nn.ConvTranspose2d(channels, channels, kernel_size=2 * factor, stride=factor,
                            padding=factor // 2, bias=False)
    with torch.no_grad():  # channel c -> channel c; no mixing at init
        up.weight.copy_(bilinear_kernel(channels, channels, 2 * factor, dtype=up.weight.dtype,
                                        device=up.weight.device))
    return up


def _stage(in_channels: int, out_channels: int, n_convs: int) -> nn.Sequential:
    layers = []
    for i in range(n_convs):
        layers += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3,
                             padding=1, bias=False),
                   nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def _score(in_channels: int, num_classes: int) -> nn.Conv2d:
    # Zero init (as in the paper's staged training): a fresh skip adds nothing, so
    # FCN-16s/8s start out computing exactly what FCN-32s computes.
    score = nn.Conv2d(in_channels, num_classes, kernel_size=1)
    nn.init.zeros_(score.weight)
    nn.init.zeros_(score.bias)
    return score


class FCN(nn.Module):
    """Fully convolutional network, Long et al. 2015.

    Args:
        num_classes (int): number of classes C, background included.
        variant (str): ``"32s"``, ``"16s"`` or ``"8s"``.
        in_channels, channels, convs_per_stage, head_channels: see :class:`FCNConfig`.

    Shapes:
        input ``Tensor[N, in_channels, H, W]`` of any H, W >= 1;
        output ``Tensor[N, C, H, W]`` (logits, no softmax).
    """

    def __init__(self, num_classes: int, variant: str = "8s", in_channels: int = 3,
                 channels: tuple[int, ...] = (32, 64, 128, 256, 256), convs_per_stage: int = 2,
                 head_channels: int = 512):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if len(channels) != 5:
            raise ValueError(f"channels must give the widths of 5 stages, got {channels}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.config = FCNConfig(num_classes, variant, in_channels, tuple(channels),
                                convs_per_stage, head_channels)
        C = num_classes
        ins = (in_channels,) + tuple(channels[:-1])
        self.stages = nn.ModuleList(_stage(i, o, convs_per_stage) for i, o in zip(ins, channels))
        # "fc6"/"fc7" of the classifier, written as convolutions on the stride-32 map.
        self.head = nn.Sequential(
            nn.Conv2d(channels[4], head_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(head_channels), nn.ReLU(inplace=True),
            nn.Conv2d(head_channels, head_channels, 1, bias=False),
            nn.BatchNorm2d(head_channels), nn.ReLU(inplace=True),
        )
        self.score_pool5 = nn.Conv2d(head_channels, C, kernel_size=1)
        if variant == "32s":
            self.upsample_final = bilinear_upsampler(C, 32)
        else:
            self.score_pool4 = _score(channels[3], C)
            self.upsample_pool5 = bilinear_upsampler(C, 2)
            if variant == "16s":
                self.upsample_final = bilinear_upsampler(C, 16)
            else:
                self.score_pool3 = _score(channels[2], C)
                self.upsample_pool4 = bilinear_upsampler(C, 2)
                self.upsample_final = bilinear_upsampler(C, 8)

    def forward(self, x: Tensor, return_features: bool = False):
        """Logits ``Tensor[N, C, H, W]``; with ``return_features=True`` also a dict
        of the pooled features and the (fused) score maps, in network order."""
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected input [N, {self.config.in_channels}, H, W], "
                             f"got {list(x.shape)}")
        H, W = x.shape[-2:]
        x = F.pad(x, (0, (-W) % 32, 0, (-H) % 32))  # padded size P x Q, multiples of 32
        feats = {}
        for i, stage in enumerate(self.stages, start=1):
            x = stage(x)  # [N, channels[i-1], P / 2**i, Q / 2**i]
            feats[f"pool{i}"] = x
        score = self.score_pool5(self.head(x))  # [N, C, P/32, Q/32]
        feats["score32"] = score
        variant = self.config.variant
        if variant in ("16s", "8s"):
            # [N, C, P/16, Q/16]
            score = self.upsample_pool5(score) + self.score_pool4(feats["pool4"])
            feats["score16"] = score
        if variant == "8s":
            # [N, C, P/8, Q/8]
            score = self.upsample_pool4(score) + self.score_pool3(feats["pool3"])
            feats["score8"] = score
        logits = self.upsample_final(score)[..., :H, :W]  # [N, C, H, W]
        feats["logits"] = logits
        return (logits, feats) if return_features else logits

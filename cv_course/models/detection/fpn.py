"""Feature Pyramid Network: Lin et al., "Feature Pyramid Networks for Object
Detection", CVPR 2017.

A backbone's fine maps see small details but little context; its coarse maps
see context but blur small objects. FPN gives every level both: a top-down path
upsamples the coarser (semantically stronger) map and adds it to a 1x1
"lateral" projection of the finer one, then a 3x3 conv smooths the sum::

    P_top = conv3x3(lateral(C_top))
    P_i   = conv3x3(lateral(C_i) + upsample_2x(inner_{i+1}))

All outputs have the same channel count, so one RPN head and one RoI head serve
every level.
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import ShapeBackbone


class FeaturePyramidNetwork(nn.Module):
    """Top-down pathway with lateral connections.

    Args:
        in_channels (list[int]): channels of the backbone maps, finest first.
        out_channels (int): channels of every output map.
    Shapes:
        forward(list of Tensor[B, in_channels[i], H_i, W_i]) ->
        list of Tensor[B, out_channels, H_i, W_i], finest first.
    """

    def __init__(self, in_channels: list[int], out_channels: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        for m in self.modules():  # as in the paper's code: uniform init, zero bias
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        if len(features) != len(self.lateral):
            raise ValueError(f"expected {len(self.lateral)} feature maps, got {len(features)}")
        inner = self.lateral[-1](features[-1])  # [B, D, H_top, W_top]
        outputs = [self.output[-1](inner)]
        for i in range(len(features) - 2, -1, -1):  # coarse to fine: each level needs the last
            lateral = self.lateral[i](features[i])  # [B, D, H_i, W_i]
            inner = lateral + F.interpolate(inner, size=lateral.shape[-2:], mode="nearest")
            outputs.insert(0, self.output[i](inner))  # [B, D, H_i, W_i]
        return outputs


class BackboneWithFPN(nn.Module):
    """Backbone followed by FPN, returning the maps by name as torchvision's detectors expect.

    Args:
        backbone (ShapeBackbone): multi-scale features (``out_channels``, ``strides``).
        out_channels (int): FPN width.
    Shapes:
        forward(Tensor[B, 3, H, W]) -> OrderedDict {"0": Tensor[B, D, H/4, W/4],
        "1": Tensor[B, D, H/8, W/8], ...}, with D = ``self.out_channels``.
    """

    def __init__(self, backbone: ShapeBackbone, out_channels: int):
        super().__init__()
        self.body = backbone
        self.fpn = FeaturePyramidNetwork(backbone.out_channels, out_channels)
        self.out_channels = out_channels  # read by torchvision's FasterRCNN
        self.strides = backbone.strides

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        maps = self.fpn(self.body(x))
        return OrderedDict((str(i), m) for i, m in enumerate(maps))

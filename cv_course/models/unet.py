"""U-Net: an encoder-decoder for semantic segmentation with skip connections.

Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015.

The encoder halves the resolution ``depth`` times (double 3x3 conv, then 2x2 max
pool) while doubling the channels; the decoder doubles it back with 2x2
transposed convolutions and, at every level, concatenates the encoder's feature
map of the same size (the *skip connection*) before two more 3x3 convs. A 1x1
conv maps the last features to one score per class and pixel.

Unlike the paper (unpadded convs, 572 -> 388) the convs here are padded, so
the logits have the input's size: ``[N, 3, 256, 256] -> [N, C, 256, 256]``.
The lecture's worked example (``depth=4``, ``base_channels=64``)::

    3x256x256 -> 64x256x256 -> 128x128x128 -> 256x64x64 -> 512x32x32
              -> bottleneck 1024x16x16
              -> up 512x32x32, concat 1024x32x32, conv 512x32x32 -> ... -> 64x256x256
              -> 1x1 conv -> Cx256x256

``UNet(...).shapes(x)`` lists those shapes for any input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class UNetConfig:
    in_channels: int = 3  # image channels
    num_classes: int = 2  # output channels, one score map per class (incl. background)
    base_channels: int = 64  # channels of the first level; level i has base * 2**i
    depth: int = 4  # number of 2x poolings; the bottleneck is at 1 / 2**depth
    skip_connections: bool = True  # False: the decoder sees only the upsampled path


class DoubleConv(nn.Sequential):
    """(3x3 conv -> BatchNorm -> ReLU) twice; padded, so H and W are kept."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UpBlock(nn.Module):
    """One decoder level: 2x transposed conv, concatenate the skip, double conv.

    ``[N, 2c, h, w]`` (+ skip ``[N, c, 2h, 2w]``) -> ``[N, c, 2h, 2w]``.
    Without a skip the double conv takes the ``c`` upsampled channels only.
    """

    def __init__(self, in_channels: int, skip: bool):
        super().__init__()
        out_channels = in_channels // 2
        self.skip = skip
        # kernel 2, stride 2: every input pixel paints its own 2x2 block, no overlap
        # (so no checkerboard from uneven overlap).
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(2 * out_channels if skip else out_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor | None, features: dict | None = None,
                name: str = "") -> Tensor:
        x = self.up(x)  # [N, c, 2h, 2w]
        _record(features, f"up{name}", x)
        if self.skip:
            x = torch.cat([skip, x], dim=1)  # [N, 2c, 2h, 2w]
            _record(features, f"cat{name}", x)
        return self.conv(x)  # [N, c, 2h, 2w]


def _record(features: dict | None, name: str, x: Tensor) -> None:
    if features is not None:
        features[name] = x


class UNet(nn.Module):
    """U-Net for semantic segmentation (Ronneberger et al., 2015).

    Args:
        in_channels (int): image channels (3 for RGB).
        num_classes (int): number of classes C, background included.
        base_channels (int): channels after the first double conv (64 in the paper).
        depth (int): number of poolings (4 in the paper); bottleneck channels are
            ``base_channels * 2**depth``.
        skip_connections (bool): concatenate encoder features into the decoder.
            ``False`` is the ablation: the decoder must rebuild detail from the
            bottleneck alone.

    Shapes:
        input ``Tensor[N, in_channels, H, W]`` of any H, W >= 1;
        output ``Tensor[N, num_classes, H, W]`` (logits, no softmax).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 2, base_channels: int = 64,
                 depth: int = 4, skip_connections: bool = True):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("num_classes", num_classes),
                        ("base_channels", base_channels), ("depth", depth)):
            if int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v}")
        self.config = UNetConfig(in_channels, num_classes, base_channels, depth, skip_connections)
        widths = [base_channels * 2**i for i in range(depth + 1)]  # e.g. 64 ... 1024
        ins = [in_channels] + widths[:-2]
        self.down = nn.ModuleList(DoubleConv(i, o) for i, o in zip(ins, widths[:-1]))
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(widths[-2], widths[-1])
        self.up = nn.ModuleList(UpBlock(w, skip_connections) for w in reversed(widths[1:]))
        self.head = nn.Conv2d(base_channels, num_classes, kernel_size=1)

    def forward(self, x: Tensor, return_features: bool = False):
        """Logits ``Tensor[N, C, H, W]``; with ``return_features=True`` also a dict
        ``{name: Tensor}`` of the intermediate maps, in network order
        (``enc1``..., ``bottleneck``, ``up<k>``, ``cat<k>``, ``dec<k>``..., ``logits``)."""
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected input [N, {self.config.in_channels}, H, W], "
                             f"got {list(x.shape)}")
        H, W = x.shape[-2:]
        # Any input size: zero-pad bottom/right up to a multiple of 2**depth and crop
        # the logits back. Padding (rather than resizing the upsampled map to the
        # skip's size) keeps every up-step an exact 2x, so skip and upsampled maps
        # stay aligned pixel for pixel and no interpolation blurs the features; the
        # price is a little computation on the padded border.
        m = 2**self.config.depth
        x = F.pad(x, (0, (-W) % m, 0, (-H) % m))
        features = {} if return_features else None
        skips = []
        for i, block in enumerate(self.down, start=1):
            x = block(x)  # [N, base * 2**(i-1), H / 2**(i-1), W / 2**(i-1)]
            _record(features, f"enc{i}", x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)  # [N, base * 2**depth, H / 2**depth, W / 2**depth]
        _record(features, "bottleneck", x)
        for level, block in zip(range(self.config.depth, 0, -1), self.up):
            x = block(x, skips.pop(), features, str(level))
            _record(features, f"dec{level}", x)
        logits = self.head(x)[..., :H, :W]  # [N, C, H, W]
        _record(features, "logits", logits)
        return (logits, features) if return_features else logits

    @torch.no_grad()
    def shapes(self, x: Tensor) -> dict[str, tuple[int, ...]]:
        """Shape (without the batch dimension) of every intermediate map for ``x``.

        For an H or W that is not a multiple of ``2**depth`` the encoder/decoder
        shapes are those of the zero-padded input; ``logits`` is always ``(C, H, W)``.

        Works on a ``meta``-device model and input, so the full-size network can be
        walked through without any computation::

            with torch.device("meta"):
                net, x = UNet(3, 5), torch.empty(1, 3, 256, 256)
            net.shapes(x)["bottleneck"]  # (1024, 16, 16)
        """
        _, features = self.forward(x, return_features=True)
        return {k: tuple(v.shape[1:]) for k, v in features.items()}

"""The detectors' backbone: the shape classifier's conv body, plus stride-2 stages.

Transfer learning (Yosinski et al., "How transferable are features in deep
neural networks?", NeurIPS 2014; the R-CNN recipe of Girshick et al., CVPR 2014,
fine-tunes an ImageNet classifier the same way): the conv body of
:class:`cv_course.models.ShapeClassifier`, trained to tell circles, squares,
triangles and stars apart on 64 x 64 scenes, already computes the features a
detector of those shapes needs. We keep its weights and fine-tune them together
with the new detection layers; only the extra downsampling stages (strides 16
and 32, which the classifier does not have) start from random weights.

Shapes for a 128 x 128 input and the default three levels::

    image                      [B, 3, 128, 128]
    classifier body, stride 4  [B, 64, 32, 32]   -> feature "0"
    classifier body, stride 8  [B, 64, 16, 16]   -> feature "1"
    extra stage,     stride 16 [B, 64, 8, 8]     -> feature "2"
"""

from __future__ import annotations

from torch import Tensor, nn

from ..classifier import ClassifierConfig, ShapeClassifier


def _down(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 stride-2 conv + BatchNorm + ReLU: halves the resolution."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


def _split_by_stride(body: nn.Sequential) -> list[tuple[int, nn.Sequential]]:
    """Cut a conv body at its pooling layers: [(stride, layers ending at that stride)].

    For the classifier's body (stage, pool, stage, pool, stage, pool, stage, stage)
    that is strides 1, 2, 4, 8; each piece ends just before the next pool.
    """
    pieces, current, stride = [], [], 1
    for layer in body:
        if isinstance(layer, nn.MaxPool2d) and current:
            pieces.append((stride, nn.Sequential(*current)))
            current = []
        if isinstance(layer, nn.MaxPool2d):
            stride *= 2
        current.append(layer)
    pieces.append((stride, nn.Sequential(*current)))
    return pieces


class ShapeBackbone(nn.Module):
    """Multi-scale features at strides 4, 8, 16, ... (``num_levels`` of them).

    Args:
        num_levels (int): number of output maps, 2 to 4 (strides 4 .. 4 * 2**(num_levels-1)).
        classifier (ShapeClassifier, optional): a trained classifier whose body is
            copied (transfer learning); default: a freshly initialised one.
    Shapes:
        forward(Tensor[B, 3, H, W]) -> list of Tensor[B, C_i, H / s_i, W / s_i]
        with s_i = 4 * 2**i and C_i = ``out_channels[i]``; H and W multiples of
        the largest stride.
    """

    def __init__(self, num_levels: int = 3, classifier: ShapeClassifier | None = None):
        super().__init__()
        if not 2 <= num_levels <= 4:
            raise ValueError(f"num_levels must be 2, 3 or 4 (strides 4 to 32), got {num_levels}")
        if classifier is None:
            classifier = ShapeClassifier(ClassifierConfig())
        pieces = _split_by_stride(classifier.features)
        if [s for s, _ in pieces] != [1, 2, 4, 8]:
            raise ValueError("the classifier body must have 3 pools (strides 1, 2, 4, 8), got "
                             f"strides {[s for s, _ in pieces]}")
        self.stem = nn.Sequential(*(p for s, p in pieces if s <= 4))  # up to stride 4
        self.stage8 = pieces[-1][1]  # stride 4 -> 8
        widths = classifier.config.widths
        c4, c8 = widths[classifier.config.pools - 1], widths[-1]
        self.extra = nn.ModuleList(_down(c8, c8) for _ in range(num_levels - 2))
        self.out_channels = [c4, c8] + [c8] * (num_levels - 2)
        self.strides = [4 * 2**i for i in range(num_levels)]

    def forward(self, x: Tensor) -> list[Tensor]:
        f4 = self.stem(x)  # [B, C4, H/4, W/4]
        features = [f4, self.stage8(f4)]  # + [B, C8, H/8, W/8]
        for down in self.extra:
            features.append(down(features[-1]))  # [B, C8, H/2s, W/2s]
        return features

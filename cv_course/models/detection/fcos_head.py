"""FCOS's head and losses: per-location class scores, (l, t, r, b) distances, centre-ness.

Tian, Shen, Chen, He, "FCOS: Fully Convolutional One-Stage Object Detection",
ICCV 2019, sections 3.1 and 3.3. One head, shared by every FPN level, has two
towers of conv + GroupNorm + ReLU layers::

    feature [B, D, H, W] -> cls tower -> conv 3x3 -> class logits  [B, C, H, W]
                         -> box tower -> conv 3x3 -> exp(s_l * x) * stride = ltrb  [B, 4, H, W]
                                      -> conv 3x3 -> centre-ness logit [B, 1, H, W]

C = num_classes - 1 sigmoids (no background class: a location is background when
every sigmoid is low). The distances are predicted in units of the level's
stride, through ``exp`` so they stay positive, with one learned scale s_l per
level because the levels share the head but not the range of their distances
(the paper's "exp(s_i x)"). The centre-ness branch sits on the box tower, as in
the paper's later version and torchvision.

The losses, each divided by the number of positive locations in the batch:
sigmoid focal loss over every location and class, GIoU loss on the positives'
boxes, binary cross-entropy of the predicted centre-ness on the positives.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...ops import sigmoid_focal_loss
from .fcos_config import FCOSConfig

# exp(10) * 16 is 350,000 pixels, past any image: the clamp only keeps a wild early
# step from overflowing to inf.
_MAX_LOG_DISTANCE = 10.0


def _tower(channels: int, num_convs: int, groups: int) -> nn.Sequential:
    layers = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(groups, channels),
                   nn.ReLU()]
    return nn.Sequential(*layers)


def flatten_maps(x: Tensor) -> Tensor:
    """Tensor[B, V, H, W] -> Tensor[B, H * W, V]: row-major locations, as :func:`fcos_locations`."""
    B, V, H, W = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, H * W, V)


class FCOSHead(nn.Module):
    """Class logits, (l, t, r, b) distances and centre-ness logits at every location.

    Args:
        config (FCOSConfig): ``fpn_channels``, ``num_convs``, ``norm_groups``,
            ``num_classes``, ``prior_probability``, ``strides``.
    Shapes:
        forward(list of L Tensor[B, D, H_l, W_l]) -> (Tensor[B, P, C] class logits,
        Tensor[B, P, 4] distances (l, t, r, b) in pixels, > 0, Tensor[B, P]
        centre-ness logits), P = sum of H_l * W_l, levels in order, each row-major.
    """

    def __init__(self, config: FCOSConfig):
        super().__init__()
        c, D = config, config.fpn_channels
        self.strides = c.strides
        self.cls_tower = _tower(D, c.num_convs, c.norm_groups)
        self.box_tower = _tower(D, c.num_convs, c.norm_groups)
        self.cls_logits = nn.Conv2d(D, c.num_classes - 1, 3, padding=1)
        self.bbox_pred = nn.Conv2d(D, 4, 3, padding=1)
        self.centerness = nn.Conv2d(D, 1, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(len(c.strides)))  # s_l, one per level
        for m in self.modules():  # the paper's N(0, 0.01^2), zero bias
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        # Focal loss's prior (Lin et al. 2017, section 4.1): every class starts at
        # P = pi, so the ~10^4 background locations do not swamp the first steps.
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - c.prior_probability)
                                                          / c.prior_probability))

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        if len(features) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} feature levels, got {len(features)}")
        logits, distances, centerness = [], [], []
        for level, f in enumerate(features):  # a handful of levels, each its own size
            cls, box = self.cls_tower(f), self.box_tower(f)  # [B, D, H_l, W_l] each
            logits.append(flatten_maps(self.cls_logits(cls)))  # [B, H_l * W_l, C]
            log_d = (self.scales[level] * self.bbox_pred(box)).clamp(max=_MAX_LOG_DISTANCE)
            distances.append(flatten_maps(torch.exp(log_d) * self.strides[level]))  # [B, HW, 4]
            centerness.append(flatten_maps(self.centerness(box))[..., 0])  # [B, H_l * W_l]
        return torch.cat(logits, 1), torch.cat(distances, 1), torch.cat(centerness, 1)


def ltrb_giou(pred: Tensor, target: Tensor) -> Tensor:
    """Generalized IoU of two boxes given as distances from the same point.

    Both boxes contain the point, so their intersection does too, and every
    width is a sum of two distances (UnitBox, Yu et al. 2016): no corner
    coordinates, one pair at a time, O(N) rather than a pairwise [N, N] matrix.
    Equals the diagonal of ``cv_course.ops.generalized_box_iou`` of the boxes
    ``(x - l, y - t, x + r, y + b)``.

    Args:
        pred (Tensor[N, 4]), target (Tensor[N, 4]): (l, t, r, b) distances > 0.
    Returns:
        Tensor[N]: GIoU in (-1, 1].
    """
    pl, pt, pr, pb = pred.unbind(-1)
    tl, tt, tr, tb = target.unbind(-1)
    pred_area, target_area = (pl + pr) * (pt + pb), (tl + tr) * (tt + tb)  # [N]
    inter = (torch.min(pl, tl) + torch.min(pr, tr)) * (torch.min(pt, tt) + torch.min(pb, tb))
    union = pred_area + target_area - inter
    hull = (torch.max(pl, tl) + torch.max(pr, tr)) * (torch.max(pt, tt) + torch.max(pb, tb))
    return inter / union - (hull - union) / hull


def fcos_loss(logits: Tensor, distances: Tensor, centerness: Tensor, labels: Tensor,
              ltrb: Tensor, target_centerness: Tensor, config: FCOSConfig) -> dict[str, Tensor]:
    """Focal loss on every location, GIoU and centre-ness BCE on the positive ones.

    Args:
        logits (Tensor[B, P, C]), distances (Tensor[B, P, 4]), centerness
        (Tensor[B, P]): the head's outputs. labels (Tensor[B, P] int64, 0 =
        background), ltrb (Tensor[B, P, 4]), target_centerness (Tensor[B, P]):
        :func:`fcos_targets` of each image, stacked.
    Returns:
        dict: ``loss_classifier``, ``loss_box_reg``, ``loss_centerness``, each a sum
        divided by the number of positive locations in the batch (at least 1).
    """
    pos = labels > 0  # [B, P]
    num_pos = pos.sum().clamp(min=1).to(logits.dtype)  # no .item(): no device sync
    C = logits.shape[-1]
    onehot = F.one_hot(labels, C + 1)[..., 1:].to(logits.dtype)  # [B, P, C]: background = 0s
    loss_cls = sigmoid_focal_loss(logits, onehot, config.focal_alpha, config.focal_gamma,
                                  reduction="sum")
    loss_box = (1 - ltrb_giou(distances[pos], ltrb[pos])).sum()  # over the positives
    loss_ctr = F.binary_cross_entropy_with_logits(centerness[pos], target_centerness[pos],
                                                  reduction="sum")
    return {"loss_classifier": loss_cls / num_pos, "loss_box_reg": loss_box / num_pos,
            "loss_centerness": loss_ctr / num_pos}

"""RetinaNet: a single-stage detector trained with focal loss.

Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object Detection", ICCV
2017. No proposals and no second stage: one head, shared by every FPN level,
classifies and refines every anchor directly::

    images (list of [3, H_i, W_i])
      -> DetectionTransform   normalise, pad to a batch          [B, 3, H, W]
      -> BackboneWithFPN      shape-classifier body + FPN        {"0": [B, D, H/4, W/4], ...}
      -> RetinaNetHead        K class logits, 4 offsets / anchor [B, N, K], [B, N, 4]
      -> train: labels by IoU (>= 0.5 object, < 0.4 background), focal + box loss
         eval:  per level top-k, decode, class-aware NMS      B x dict(boxes, labels, scores)

Train mode returns ``loss_classifier`` and ``loss_box_reg``; eval mode one dict
per image, the interface of torchvision's detectors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...ops import BoxCoder, Matcher, batched_nms, box_iou, grid_anchors
from .backbone import ShapeBackbone
from .fpn import BackboneWithFPN
from . import retinanet_head
from .retinanet_head import BOX_LOSSES, CLS_LOSSES, RetinaNetHead, box_loss, classification_loss
from .transform import DetectionTransform


@dataclass(frozen=True)
class RetinaNetConfig:
    num_classes: int = 5  # classes including background (the head scores num_classes - 1)
    # Backbone and FPN
    pretrained: bool = True  # start from the trained shape classifier's conv body (transfer)
    fpn_channels: int = 32  # channels of every FPN output map (the head's width)
    # Anchors: one tuple of sizes per FPN level (level i has stride 4 * 2**i). The paper's
    # 3 octave scales (2**0, 2**(1/3), 2**(2/3)) per level; one aspect ratio, as the
    # scenes' shapes are nearly square (h / w in 0.86-1.2 for 90% of them), where the
    # paper adds ratios 0.5 and 2 for 9 anchors per position
    anchor_sizes: tuple[tuple[int, ...], ...] = ((16, 20, 25), (32, 40, 50), (64, 80, 101))
    aspect_ratios: tuple[float, ...] = (1.0,)  # anchor height / width
    # Head (section 4): the paper stacks 4 convs per subnet
    head_convs: int = 2  # 3x3 conv + ReLU layers in each subnet
    prior_probability: float = 0.01  # pi: every anchor starts as an object with p = pi
    # Matching (section 4): anchor is an object at IoU >= fg, background below bg
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.4  # between bg and fg: ignored
    low_quality_matches: bool = True  # each box also gets its best anchors (torchvision does)
    # Losses
    cls_loss: str = "focal"  # "focal", "bce" (plain) or "bce_hnm" (SSD's 3:1 mining)
    focal_alpha: float = 0.25  # weight of positives; negatives get 1 - alpha
    focal_gamma: float = 2.0  # focusing exponent of (1 - p_t)
    neg_pos_ratio: int = 3  # "bce_hnm": hardest negatives kept per positive
    box_loss: str = "smooth_l1"  # "smooth_l1" on offsets or "giou" on decoded boxes
    smooth_l1_beta: float = 0.0  # 0: plain L1, as torchvision's RetinaNet
    bbox_reg_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # (wx, wy, ww, wh)
    # Post-processing
    topk_candidates: int = 1000  # best (anchor, class) scores kept per level before NMS
    score_thresh: float = 0.05  # drop detections below this
    nms_thresh: float = 0.5  # class-aware NMS IoU threshold
    detections_per_img: int = 100  # keep at most this many detections per image
    # Pre-processing: identity, as the shape classifier was trained on raw [0, 1] images
    image_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    image_std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def strides(self) -> tuple[int, ...]:
        """Stride of each FPN level: 4, 8, 16, ... (one per entry of ``anchor_sizes``)."""
        return tuple(4 * 2**i for i in range(len(self.anchor_sizes)))

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location, A (the same on every level)."""
        return len(self.anchor_sizes[0]) * len(self.aspect_ratios)

    def __post_init__(self):
        if self.num_classes < 2:
            raise ValueError(f"num_classes counts the background, so it must be >= 2, "
                             f"got {self.num_classes}")
        if not 1 <= len(self.anchor_sizes) <= 4 or len({len(s) for s in self.anchor_sizes}) != 1:
            raise ValueError("anchor_sizes needs one tuple per FPN level (1 to 4 levels), each "
                             f"with the same number of sizes (one shared head), got "
                             f"{self.anchor_sizes!r}")
        if self.cls_loss not in CLS_LOSSES:
            raise ValueError(f"cls_loss must be one of {CLS_LOSSES}, got {self.cls_loss!r}")
        if self.box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {self.box_loss!r}")
        if not 0 <= self.bg_iou_thresh <= self.fg_iou_thresh <= 1:
            raise ValueError("need 0 <= bg_iou_thresh <= fg_iou_thresh <= 1, got "
                             f"{self.bg_iou_thresh} and {self.fg_iou_thresh}")

    def replace(self, **changes) -> "RetinaNetConfig":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


class RetinaNet(nn.Module):
    """Single-stage detector: FPN, dense anchors, focal loss, top-k + class-aware NMS.

    Args:
        config (RetinaNetConfig): every setting.
        backbone (BackboneWithFPN, optional): default a freshly initialised
            :class:`ShapeBackbone` + FPN (``cv_course.experiments.detection.build_backbone``
            makes the pretrained one).
    Shapes:
        forward(images: list of Tensor[3, H_i, W_i] in [0, 1], targets: list of
        dict(boxes=Tensor[G_i, 4] (x1, y1, x2, y2) pixels, labels=Tensor[G_i] int64 in
        1..num_classes-1)) -> dict(loss_classifier, loss_box_reg) scalars (train mode) or
        a list of dict(boxes=Tensor[D_i, 4], labels=Tensor[D_i] int64, scores=Tensor[D_i])
        (eval mode), boxes in the input images' pixel coordinates.
    """

    def __init__(self, config: RetinaNetConfig = RetinaNetConfig(),
                 backbone: BackboneWithFPN | None = None):
        super().__init__()
        self.config = config
        if backbone is None:
            backbone = BackboneWithFPN(ShapeBackbone(len(config.anchor_sizes)), config.fpn_channels)
        if list(backbone.strides) != list(config.strides):
            raise ValueError(f"backbone strides {backbone.strides} do not match the anchor "
                             f"levels' strides {config.strides}")
        self.transform = DetectionTransform(config.image_mean, config.image_std,
                                            size_divisible=config.strides[-1])
        self.backbone = backbone
        self.head = RetinaNetHead(backbone.out_channels, config.num_anchors,
                                  config.num_classes - 1, config.head_convs,
                                  config.prior_probability)
        self.box_coder = BoxCoder(config.bbox_reg_weights)
        self.matcher = Matcher(config.fg_iou_thresh, config.bg_iou_thresh,
                               allow_low_quality_matches=config.low_quality_matches)

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        if self.training and targets is None:
            raise ValueError("in train mode pass targets (a list of dicts with 'boxes' and "
                             "'labels'); for predictions call model.eval() first")
        logits, deltas, anchors, per_level, image_sizes, targets = self._outputs(
            images, targets if self.training else None)
        if not self.training:
            return self.postprocess(logits, deltas, anchors, per_level, image_sizes)
        labels, matched = self.assign_targets(anchors, targets)  # [B, N], [B, N, 4]
        c = self.config
        return {"loss_classifier": classification_loss(logits, labels, c.cls_loss, c.focal_alpha,
                                                       c.focal_gamma, c.neg_pos_ratio),
                "loss_box_reg": box_loss(deltas, anchors, matched, labels, self.box_coder,
                                         c.box_loss, c.smooth_l1_beta)}

    def _outputs(self, images, targets):
        """Head outputs [B, N, K], [B, N, 4], anchors [N, 4], anchors per level, sizes, targets."""
        batch, image_sizes, targets = self.transform(images, targets)
        features = list(self.backbone(batch).values())  # [B, D, H_l, W_l] per level
        if len(features) != len(self.config.strides):
            raise ValueError(f"the backbone gave {len(features)} feature maps for "
                             f"{len(self.config.strides)} anchor levels")
        logits, deltas = self.head(features)
        anchors, per_level = self.anchors(features)
        return logits, deltas, anchors, per_level, image_sizes, targets

    def anchors(self, features: list[Tensor]) -> tuple[Tensor, list[int]]:
        """All anchors of all levels, Tensor[N, 4] (x1, y1, x2, y2), and the count N_l of each."""
        c = self.config
        per_level = [grid_anchors(tuple(f.shape[-2:]), stride, sizes, c.aspect_ratios,
                                  device=f.device, dtype=f.dtype)  # [H_l * W_l * A, 4]
                     for f, stride, sizes in zip(features, c.strides, c.anchor_sizes)]
        return torch.cat(per_level), [a.shape[0] for a in per_level]

    def assign_targets(self, anchors: Tensor, targets: list[dict]) -> tuple[Tensor, Tensor]:
        """Label every anchor of every image by IoU with the ground truth.

        Args:
            anchors (Tensor[N, 4]): (x1, y1, x2, y2); targets: B dicts with ``boxes``
                Tensor[G_i, 4] (x1, y1, x2, y2) and ``labels`` Tensor[G_i] in 1..K.
        Returns:
            labels Tensor[B, N] int64: the matched box's class (1..K) at IoU >= fg,
            0 (background) below bg, -1 (ignored) in between; matched boxes
            Tensor[B, N, 4], the ground-truth box of each anchor (zeros where none).
        """
        labels, matched = [], []
        for t in targets:  # per image: each has its own number of ground-truth boxes
            gt = t["boxes"].to(anchors)
            m = self.matcher(box_iou(gt, anchors))  # [N]: gt index, -1 below, -2 between
            cls = t["labels"].to(anchors.device)[m.clamp(min=0)] if gt.shape[0] else m
            labels.append(torch.where(m >= 0, cls, torch.where(m == -2, -1, 0)))
            matched.append(gt[m.clamp(min=0)] if gt.shape[0] else torch.zeros_like(anchors))
        return torch.stack(labels), torch.stack(matched)

    @torch.no_grad()
    def postprocess(self, logits: Tensor, deltas: Tensor, anchors: Tensor, per_level: list[int],
                    image_sizes: list[tuple[int, int]]) -> list[dict]:
        """Per level the ``topk_candidates`` best (anchor, class) scores above ``score_thresh``;
        decode, clip, then class-aware NMS per image and the best ``detections_per_img``.

        Args:
            logits (Tensor[B, N, K]), deltas (Tensor[B, N, 4]), anchors (Tensor[N, 4]),
            per_level: anchors N_l of each level, image_sizes: B (height, width).
        Returns:
            B dicts: boxes Tensor[D, 4] (x1, y1, x2, y2), labels Tensor[D] in 1..K,
            scores Tensor[D], in decreasing score.
        """
        c, (B, N, K) = self.config, logits.shape
        scores, flat, start = [], [], 0
        for n in per_level:  # one top-k per level: a handful of levels
            level = logits[:, start:start + n].sigmoid().flatten(1)  # [B, n * K]
            top = level.topk(min(c.topk_candidates, n * K), dim=1)  # [B, k]
            scores.append(top.values)
            flat.append(top.indices + start * K)  # index into the [N * K] (anchor, class) pairs
            start += n
        scores, flat = torch.cat(scores, dim=1), torch.cat(flat, dim=1)  # [B, T]
        anchor_idx, labels = flat // K, flat % K + 1  # [B, T]
        boxes = self.box_coder.decode(deltas.gather(1, anchor_idx[..., None].expand(-1, -1, 4))
                                      .reshape(-1, 4), anchors[anchor_idx.flatten()])
        size = torch.tensor([[w, h, w, h] for h, w in image_sizes], dtype=boxes.dtype,
                            device=boxes.device)  # [B, 4]
        boxes = torch.min(boxes.view(B, -1, 4).clamp(min=0), size[:, None])  # [B, T, 4] clipped
        detections = []
        for b in range(B):  # per image: each keeps a different number of boxes
            keep = (scores[b] > c.score_thresh).nonzero().flatten()
            keep = keep[batched_nms(boxes[b, keep], scores[b, keep], labels[b, keep],
                                    c.nms_thresh)][:c.detections_per_img]
            detections.append({"boxes": boxes[b, keep], "labels": labels[b, keep],
                               "scores": scores[b, keep]})
        return detections

    @torch.no_grad()
    def loss_shares(self, images: list[Tensor], targets: list[dict], cls_loss: str | None = None,
                    easy_below: float = 0.1) -> dict:
        """Shares of the classification loss from easy negatives, hard negatives, positives.

        Runs the model (in its current mode) on a batch and splits the loss
        ``cls_loss`` (default the model's own) as :func:`retinanet_head.loss_shares`:
        an easy negative is a background anchor whose best class probability is
        below ``easy_below`` (p_t > 0.9 for every class).
        """
        logits, _, anchors, _, _, targets = self._outputs(images, targets)
        labels, _ = self.assign_targets(anchors, targets)
        c = self.config
        return retinanet_head.loss_shares(logits, labels, cls_loss or c.cls_loss, c.focal_alpha,
                                          c.focal_gamma, c.neg_pos_ratio, easy_below)

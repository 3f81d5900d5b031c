"""Mask R-CNN: Faster R-CNN plus a small network that paints a mask inside each box.

He, Gkioxari, Dollar, Girshick, "Mask R-CNN", ICCV 2017. The box detector is
unchanged; a third branch runs on the RoI features of each box::

    images -> transform -> backbone + FPN -> RPN -> proposals
                                  |                   |
                                  +--> RoI heads: box branch (classes, boxes)
                                  +--> mask branch: RoI Align 14 x 14 -> MaskHead -> [R, C, 28, 28]

Training: the mask branch sees the *positive* sampled RoIs only; each one's
target is its matched ground-truth mask cropped to the RoI at M x M
(:func:`project_masks_on_boxes`), and the loss is the binary cross-entropy of
the ground-truth class's mask alone (:func:`mask_loss`). Inference: the mask
branch runs on the final detections; each keeps the mask of its predicted
class, squashed by a sigmoid and pasted into the image
(:func:`cv_course.ops.paste_masks_in_image`), as torchvision's ``MaskRCNN``.

``MaskRCNNConfig.roi_pooler = "pool"`` swaps RoI Align for RoI Pool in both
branches: the paper's ablation (its Table 2c), which shows what the rounding
of RoI Pool costs a per-pixel task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...ops import MultiScaleRoIAlign, assign_fpn_levels, box_iou, roi_pool
from ...ops.masks import paste_masks_in_image
from ...ops.poolers import infer_scale
from .config import FasterRCNNConfig
from .faster_rcnn import FasterRCNN
from .fpn import BackboneWithFPN
from .mask_head import MaskHead, mask_loss, project_masks_on_boxes
from .roi_heads import RoIHeads, fastrcnn_loss


@dataclass(frozen=True)
class MaskRCNNConfig(FasterRCNNConfig):
    """:class:`FasterRCNNConfig` plus the mask branch's settings."""

    mask_roi_output_size: int = 14  # RoI features of the mask branch are D x S x S; masks M = 2S
    mask_sampling_ratio: int = 2  # bilinear samples per bin side for the mask RoI Align
    mask_head_convs: int = 2  # 3x3 conv + ReLU layers (4 in the paper, 2 in the lecture)
    mask_head_channels: int = 64  # their width (256 in the paper; our FPN is 64 wide)
    roi_pooler: str = "align"  # "align": RoI Align; "pool": RoI Pool (the paper's ablation)
    # Mask targets cut with RoI Align's half-pixel shift (Detectron2's aligned=True): pasted
    # back, a perfect target then covers its object (mean IoU 0.95 on our scenes' ground
    # truth); torchvision's aligned=False targets grow by about a pixel when pasted (0.89)
    mask_target_aligned: bool = True

    @property
    def mask_size(self) -> int:
        """M, the side of a predicted mask: twice the mask RoI size (the 2x2 transposed conv)."""
        return 2 * self.mask_roi_output_size

    def __post_init__(self):
        super().__post_init__()
        if self.roi_pooler not in ("align", "pool"):
            raise ValueError(f"roi_pooler must be 'align' or 'pool', got {self.roi_pooler!r}")


@dataclass(frozen=True)
class SampledMaskRCNNConfig(MaskRCNNConfig):
    """:class:`MaskRCNNConfig` plus a cap on the positive RoIs the mask branch trains on.

    A subclass rather than new fields of :class:`MaskRCNNConfig`, so that the configs
    built on that one (Panoptic FPN's) keep their fields, and so their disk-cache names.
    """

    # Positive RoIs per image the mask loss sees, drawn at random (0: all of them).
    # The mask branch costs ~4 ms per positive and training image (RoI Align 14 x 14, the
    # head, backward) and a trained RPN gives ~30 positives per image, mostly several
    # per object; a random 8 of them keep the signal at a quarter of the cost
    # (torchvision and Detectron2 use all; the box losses still see every sampled RoI)
    mask_positives_per_image: int = 0
    # Learning rate of the mask head's parameters (names starting "roi_heads.mask_") over
    # the setup's: the head starts from scratch on features trained for boxes and learns
    # slowest of the branches (read by cv_course.experiments.mask_rcnn's optimizer)
    mask_head_lr_scale: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.mask_head_lr_scale <= 0:
            raise ValueError(f"mask_head_lr_scale must be > 0, got {self.mask_head_lr_scale}")
        if self.mask_positives_per_image < 0:
            raise ValueError("mask_positives_per_image must be >= 0 (0: every positive RoI), "
                             f"got {self.mask_positives_per_image}")


class MultiScaleRoIPool(MultiScaleRoIAlign):
    """RoI Pool (Fast R-CNN's rounding max pool) on the FPN level of each RoI.

    The same level assignment as :class:`MultiScaleRoIAlign`; only the pooling
    op differs, so a comparison of the two measures RoI Align alone.
    Shapes: forward(features, boxes list of Tensor[L_i, 4], image_sizes) ->
    Tensor[sum L_i, C, PH, PW].
    """

    def forward(self, features: dict[str, Tensor], boxes: list[Tensor],
                image_sizes: list[tuple[int, int]]) -> Tensor:
        levels = [features[name] for name in self.featmap_names]
        max_height = max(s[0] for s in image_sizes)
        scales = [infer_scale(x.shape[-2], max_height) for x in levels]
        k_min, k_max = int(-math.log2(scales[0])), int(-math.log2(scales[-1]))
        flat = torch.cat([b.to(levels[0]) for b in boxes])  # [K, 4]
        level = assign_fpn_levels(flat, k_min, k_max, self.canonical_scale,
                                  self.canonical_level) - k_min  # [K]
        image = torch.cat([torch.full((len(b),), i, dtype=flat.dtype, device=flat.device)
                           for i, b in enumerate(boxes)])  # [K]
        rois = torch.cat([image[:, None], flat], dim=1)  # [K, 5]
        out = levels[0].new_zeros((len(rois), levels[0].shape[1]) + self.output_size)
        for i, (x, scale) in enumerate(zip(levels, scales)):  # one call per level
            here = torch.where(level == i)[0]
            out[here] = roi_pool(x, rois[here], self.output_size, scale)
        return out


def make_pooler(config: MaskRCNNConfig, output_size: int, sampling_ratio: int) -> nn.Module:
    """Multi-scale RoI Align (or RoI Pool, ``config.roi_pooler == "pool"``) over the FPN levels."""
    names = [str(i) for i in range(len(config.anchor_sizes))]
    if config.roi_pooler == "pool":
        return MultiScaleRoIPool(names, output_size, sampling_ratio,
                                 canonical_scale=config.canonical_scale,
                                 canonical_level=config.canonical_level)
    return MultiScaleRoIAlign(names, output_size, sampling_ratio,
                              canonical_scale=config.canonical_scale,
                              canonical_level=config.canonical_level)


def subsample_positives(positives: list[Tensor], matched: list[Tensor],
                        cap: int) -> tuple[list[Tensor], list[Tensor]]:
    """At most ``cap`` positive RoIs per image, a uniform random subset (torch's generator).

    Args:
        positives (list[Tensor[P_i, 4]]): positive RoIs of each image.
        matched (list[Tensor[P_i] int64]): the ground truth each one matched.
        cap (int): RoIs kept per image, >= 1.
    Returns:
        (list[Tensor[min(P_i, cap), 4]], list[Tensor[min(P_i, cap)]]): the same rows of both.
    """
    out_pos, out_matched = [], []
    for pos, m in zip(positives, matched):  # per image: each has its own count
        keep = torch.randperm(len(pos), device=pos.device)[:cap]  # [min(P_i, cap)]
        out_pos.append(pos[keep])
        out_matched.append(m[keep])
    return out_pos, out_matched


class MaskRoIHeads(RoIHeads):
    """:class:`RoIHeads` with the mask branch: box losses + ``loss_mask``, or detections + masks.

    Args:
        config (MaskRCNNConfig), box_roi_pool, in_features: as :class:`RoIHeads`.
        mask_roi_pool (nn.Module): pooler of the mask features, Tensor[R, D, S, S].
        in_channels (int): D, the FPN's width.
    Shapes:
        forward(features, proposals, image_sizes, targets) -> (detections: list of
        dict(boxes, labels, scores, masks=Tensor[K, 1, H_i, W_i] probabilities),
        losses: ``loss_classifier``, ``loss_box_reg``, ``loss_mask`` in training).
    """

    def __init__(self, config: MaskRCNNConfig, box_roi_pool: nn.Module, in_features: int,
                 mask_roi_pool: nn.Module, in_channels: int):
        super().__init__(config, box_roi_pool, in_features)
        self.mask_roi_pool = mask_roi_pool
        self.mask_head = MaskHead(in_channels, config.num_classes, config.mask_head_convs,
                                  config.mask_head_channels)

    def forward(self, features, proposals: list[Tensor], image_sizes: list[tuple[int, int]],
                targets: list[dict] | None = None):
        if not self.training:
            detections, _ = super().forward(features, proposals, image_sizes)
            return self.predict_masks(features, detections, image_sizes), {}
        if targets is None:
            raise ValueError("in training mode the RoI heads need targets")
        rois, labels, regression_targets = self.select_training_samples(proposals, targets)
        pooled = self.box_roi_pool(features, rois, image_sizes)  # [S, D, h, w]
        class_logits, box_regression = self.box_predictor(self.box_head(pooled))
        losses = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
        positives, matched = self.match_positives(rois, labels, targets)
        # only SampledMaskRCNNConfig has the cap (absent: every positive, as the paper)
        cap = getattr(self.config, "mask_positives_per_image", 0)
        if cap > 0:
            positives, matched = subsample_positives(positives, matched, cap)
        logits = self.mask_logits(features, positives, image_sizes)  # [P, C, M, M]
        losses.update(mask_loss(logits, positives, [t["masks"] for t in targets],
                                [t["labels"] for t in targets], matched,
                                self.config.mask_target_aligned))
        return [], losses

    def match_positives(self, rois: list[Tensor], labels: Tensor, targets: list[dict]):
        """The foreground sampled RoIs of each image and the ground truth each one matched.

        The matcher is run again on the positives alone: a RoI's match depends on its
        own IoUs only, so it picks the same object as in :meth:`select_training_samples`.

        Args:
            rois (list[Tensor[S_i, 4]]): sampled RoIs; labels (Tensor[sum S_i]): their classes.
        Returns:
            (list[Tensor[P_i, 4]] positive RoIs, list[Tensor[P_i] int64] ground-truth indices).
        """
        positives, matched = [], []
        for r, lab, t in zip(rois, labels.split([len(r) for r in rois]), targets):  # per image
            pos = r[lab > 0]  # [P_i, 4]
            gt = t["boxes"].to(pos)
            idx = (self.matcher(box_iou(gt, pos)) if len(pos)
                   else torch.zeros(0, dtype=torch.int64, device=pos.device))
            positives.append(pos)
            matched.append(idx)
        return positives, matched

    def mask_targets(self, positives: list[Tensor], matched: list[Tensor],
                     targets: list[dict]) -> Tensor:
        """Tensor[sum P_i, M, M]: each positive RoI's ground-truth mask, cropped and resized."""
        M, aligned = self.config.mask_size, self.config.mask_target_aligned
        return torch.cat([project_masks_on_boxes(t["masks"], p, m, M, aligned)
                          for p, m, t in zip(positives, matched, targets)])

    def mask_logits(self, features, boxes: list[Tensor],
                    image_sizes: list[tuple[int, int]]) -> Tensor:
        """Mask logits of every box, one M x M map per class: Tensor[sum R_i, C, M, M]."""
        x = self.mask_roi_pool(features, boxes, image_sizes)  # [R, D, S, S]
        return self.mask_head(x)  # [R, C, 2S, 2S]

    def predict_masks(self, features, detections: list[dict],
                      image_sizes: list[tuple[int, int]]) -> list[dict]:
        """Add ``masks`` Tensor[D_i, 1, H_i, W_i]: the predicted class's mask, pasted."""
        boxes = [d["boxes"] for d in detections]
        if sum(len(b) for b in boxes) == 0:  # nothing detected anywhere: no RoIs to pool
            logits = features["0"].new_zeros(0, self.config.num_classes, self.config.mask_size,
                                             self.config.mask_size)
        else:
            logits = self.mask_logits(features, boxes, image_sizes)  # [D, C, M, M]
        labels = torch.cat([d["labels"] for d in detections])  # [D]
        rows = torch.arange(len(labels), device=labels.device)
        probs = logits[rows, labels].sigmoid()[:, None]  # [D, 1, M, M]
        out = []
        for d, p, size in zip(detections, probs.split([len(b) for b in boxes]), image_sizes):
            out.append({**d, "masks": paste_masks_in_image(p, d["boxes"], size)})
        return out


class MaskRCNN(FasterRCNN):
    """Faster R-CNN + FPN with a mask branch; torchvision's detection interface.

    Args:
        num_classes (int, optional): classes including background; overrides the config's.
        config (MaskRCNNConfig): every setting (a :class:`FasterRCNNConfig` gets the
            mask branch's defaults).
        backbone (BackboneWithFPN, optional): as :class:`FasterRCNN`.
    Shapes:
        forward(images: list of Tensor[3, H_i, W_i], targets: list of dict(boxes
        Tensor[K_i, 4], labels Tensor[K_i] int64, masks Tensor[K_i, H_i, W_i] uint8 or
        bool)) -> dict of 5 scalar losses (train mode: Faster R-CNN's four +
        ``loss_mask``) or a list of dict(boxes, labels, scores, masks=Tensor[D_i, 1,
        H_i, W_i] probabilities in [0, 1]) (eval mode).

    :meth:`extract_features` and :meth:`detect` are the two halves of ``forward``,
    so that another head (e.g. Panoptic FPN's semantic head) can share the FPN.
    """

    def __init__(self, num_classes: int | None = None,
                 config: MaskRCNNConfig = MaskRCNNConfig(),
                 backbone: BackboneWithFPN | None = None):
        if not isinstance(config, MaskRCNNConfig):  # a plain FasterRCNNConfig: add mask defaults
            config = MaskRCNNConfig(**vars(config))
        super().__init__(num_classes, config, backbone)
        c, D = self.config, self.backbone.out_channels
        self.roi_heads = MaskRoIHeads(
            c, make_pooler(c, c.roi_output_size, c.roi_sampling_ratio), D * c.roi_output_size**2,
            make_pooler(c, c.mask_roi_output_size, c.mask_sampling_ratio), D)

    def extract_features(self, images: list[Tensor], targets: list[dict] | None = None):
        """Normalise, batch and run the backbone + FPN.

        Returns:
            (features dict {"0": Tensor[B, D, H/4, W/4], "1": ..., ...},
            image_sizes list of (H_i, W_i), targets checked (None in eval mode)).
        """
        if self.training and targets is None:
            raise ValueError("in train mode pass targets (a list of dicts with 'boxes', "
                             "'labels' and 'masks'); for predictions call model.eval() first")
        batch, image_sizes, targets = self.transform(images, targets if self.training else None)
        if self.training:  # boxes and labels were checked by the transform
            _check_masks(image_sizes, targets)
        return self.backbone(batch), image_sizes, targets

    def detect(self, features: dict[str, Tensor], image_sizes: list[tuple[int, int]],
               targets: list[dict] | None = None):
        """RPN and RoI heads on the FPN features.

        Returns:
            (proposals list of Tensor[P_i, 4], detections list of dicts (empty in
            training), losses dict (empty in eval)).
        """
        proposals, rpn_losses = self.rpn(list(features.values()), image_sizes, targets)
        detections, roi_losses = self.roi_heads(features, proposals, image_sizes, targets)
        return proposals, detections, {**rpn_losses, **roi_losses}

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        features, image_sizes, targets = self.extract_features(images, targets)
        _, detections, losses = self.detect(features, image_sizes, targets)
        return losses if self.training else detections


def _check_masks(image_sizes: list[tuple[int, int]], targets: list[dict]) -> None:
    """Every target needs ``masks`` Tensor[K, H, W]: one per box, the image's size."""
    for i, (t, (H, W)) in enumerate(zip(targets, image_sizes)):
        if "masks" not in t:
            raise ValueError(f"targets[{i}] has no 'masks': Mask R-CNN trains on instance masks "
                             "Tensor[K, H, W] (uint8 or bool), one per box; make the scenes with "
                             "DetectionScenes(..., include_masks=True)")
        masks, K = t["masks"], len(t["boxes"])
        if masks.dim() != 3 or masks.shape[0] != K or tuple(masks.shape[1:]) != (H, W):
            raise ValueError(f"targets[{i}]['masks'] must have shape [K, H, W] = [{K}, {H}, {W}] "
                             f"(one mask per box, the image's size), got {list(masks.shape)}")

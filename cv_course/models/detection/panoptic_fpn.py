"""Panoptic FPN: Mask R-CNN for things, a semantic head for stuff, one shared FPN.

Kirillov, Girshick, He, Dollar, "Panoptic Feature Pyramid Networks", CVPR 2019.
Mask R-CNN already computes an FPN; a light *semantic head* on the same maps
labels every pixel with a stuff class or "thing" (one class for all things: the
instance branch says which thing). Both branches train together,
``loss = Mask R-CNN's five losses + loss_semantic`` (weighted 0.5, the paper's
COCO setting). The semantic head (the paper's Fig. 3), for a 128 x 128 input::

    P2 [B, D, 32, 32] -> conv3x3 + GN + ReLU                              -> [B, E, 32, 32]
    P3 [B, D, 16, 16] -> (conv3x3 + GN + ReLU, 2x bilinear) x 1           -> [B, E, 32, 32]
    P4 [B, D,  8,  8] -> (conv3x3 + GN + ReLU, 2x bilinear) x 2           -> [B, E, 32, 32]
    sum -> 1x1 conv -> [B, 1 + S, 32, 32] -> 4x bilinear -> [B, 1 + S, 128, 128]

Inference combines the two outputs with the paper's heuristic
(:func:`panoptic_merge`): instances by decreasing score, each dropped if it
mostly overlaps pixels already taken, then stuff fills the pixels left, and stuff
regions smaller than an area threshold become void.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fpn import BackboneWithFPN
from .mask_rcnn import MaskRCNN, MaskRCNNConfig

IGNORE_INDEX = 255  # semantic-target value of unlabelled pixels (VOC's convention)


@dataclass(frozen=True)
class PanopticFPNConfig(MaskRCNNConfig):
    """:class:`MaskRCNNConfig` plus the semantic head and the merge (``num_classes`` = things + 1)."""

    stuff_ids: tuple[int, ...] = (5, 6, 7)  # stuff category ids (sky, ground, wall); class j + 1
    semantic_channels: int = 64  # E, width of the semantic head (128 in the paper)
    loss_semantic_weight: float = 0.5  # lambda_s: loss = instance losses + lambda_s * semantic
    # Merge (Kirillov et al. 2019, sec. 3 "Inference and training")
    instance_score_threshold: float = 0.5  # drop detections scoring below this
    overlap_threshold: float = 0.5  # drop an instance if this fraction of it is already taken
    stuff_area_threshold: int = 64  # stuff regions with fewer pixels become void
    mask_threshold: float = 0.5  # a mask probability above this is the object's pixel
    # Mask R-CNN keeps detections down to 0.01 for mAP; the merge uses none below
    # instance_score_threshold, so dropping them before their masks are pasted saves time.
    box_score_thresh: float = 0.5

    @property
    def num_semantic_classes(self) -> int:
        """1 + S: "thing" (index 0) and one class per stuff category."""
        return 1 + len(self.stuff_ids)


def semantic_targets(semantic: Tensor, stuff_ids, thing_ids) -> Tensor:
    """Category ids -> semantic-head classes: thing -> 0, ``stuff_ids[j]`` -> j + 1, else ignore.

    Args:
        semantic (Tensor[..., H, W] int64): category id per pixel.
        stuff_ids, thing_ids (sequences of int).
    Returns:
        Tensor[..., H, W] int64 in {0, ..., S} or ``IGNORE_INDEX`` (255).
    """
    table = torch.full((int(max(max(stuff_ids), max(thing_ids), int(semantic.max()))) + 1,),
                       IGNORE_INDEX, dtype=torch.long, device=semantic.device)
    table[torch.as_tensor(list(thing_ids), device=semantic.device)] = 0
    table[torch.as_tensor(list(stuff_ids), device=semantic.device)] = torch.arange(
        1, len(stuff_ids) + 1, device=semantic.device)
    return torch.where(semantic >= 0, table[semantic.clamp(min=0)], IGNORE_INDEX)


def _conv_gn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                         nn.GroupNorm(min(32, c_out // 4), c_out), nn.ReLU(inplace=True))


class SemanticHead(nn.Module):
    """FPN maps -> per-pixel logits at the image's resolution (Panoptic FPN, Fig. 3).

    Args:
        in_channels (int): D, the FPN width; num_levels (int): FPN maps used (strides 4, 8, ...).
        channels (int): E, the head's width; num_classes (int): 1 + S.
    Shapes:
        forward(features dict {"0": [B, D, H/4, W/4], "1": [B, D, H/8, W/8], ...},
        size (H, W)) -> Tensor[B, num_classes, H, W].
    """

    def __init__(self, in_channels: int, num_levels: int, channels: int, num_classes: int):
        super().__init__()
        # Level i (stride 4 * 2**i) takes max(i, 1) conv stages and i 2x upsamplings to stride 4.
        self.levels = nn.ModuleList(
            nn.ModuleList(_conv_gn_relu(in_channels if k == 0 else channels, channels)
                          for k in range(max(i, 1)))
            for i in range(num_levels))
        self.predictor = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: dict[str, Tensor], size: tuple[int, int]) -> Tensor:
        maps = list(features.values())
        out = 0
        for i, stages in enumerate(self.levels):  # one branch per FPN level
            x = maps[i]  # [B, D, H / 4 / 2**i, W / 4 / 2**i]
            for stage in stages:
                x = stage(x)
                if x.shape[-2:] != maps[0].shape[-2:]:
                    x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            out = out + x  # [B, E, H/4, W/4]
        logits = self.predictor(out)  # [B, 1 + S, H/4, W/4]
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def panoptic_merge(masks: Tensor, scores: Tensor, labels: Tensor, semantic: Tensor,
                   stuff_ids, overlap_threshold: float = 0.5, score_threshold: float = 0.5,
                   stuff_area_threshold: int = 64, mask_threshold: float = 0.5) -> Tensor:
    """Combine instance and semantic outputs into one panoptic map (Kirillov et al. 2019).

    1. Instances by decreasing score (those below ``score_threshold`` dropped): each
       takes its mask's pixels not taken yet, unless more than ``overlap_threshold``
       of its mask is taken already (then it is a duplicate, dropped).
    2. Stuff fills the pixels left: each stuff category of ``semantic`` there, unless it
       covers fewer than ``stuff_area_threshold`` of them (then they stay void).

    Args:
        masks (Tensor[K, H, W] or Tensor[K, 1, H, W]): mask probabilities (or bool).
        scores (Tensor[K]), labels (Tensor[K] int64): the detections' scores and thing ids.
        semantic (Tensor[H, W] int64): category id per pixel from the semantic branch;
            ids outside ``stuff_ids`` (e.g. "thing") are never used to fill.
        stuff_ids (sequence of int): the stuff category ids.
    Returns:
        Tensor[H, W, 2] int64: (category id, instance id); things get instance ids 1, 2, ...
        in placement order, stuff instance 0, void pixels (0, 0).
    """
    if masks.dim() == 4:
        masks = masks[:, 0]  # [K, H, W]
    if masks.dim() != 3 or masks.shape[1:] != semantic.shape:
        raise ValueError(f"masks must be [K, H, W] (or [K, 1, H, W]) with H, W = "
                         f"{list(semantic.shape)}, the semantic map's size; got {list(masks.shape)}")
    if not scores.shape == labels.shape == masks.shape[:1]:
        raise ValueError(f"need one score and one label per mask: {masks.shape[0]} masks, "
                         f"scores {list(scores.shape)}, labels {list(labels.shape)}")
    H, W = semantic.shape
    out = torch.zeros(H, W, 2, dtype=torch.long, device=semantic.device)
    taken = torch.zeros(H, W, dtype=torch.bool, device=semantic.device)
    binary = masks > mask_threshold if masks.is_floating_point() else masks.bool()  # [K, H, W]
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[scores[order] >= score_threshold]
    instance = 0
    for k in order.tolist():  # sequential: each decision depends on the pixels taken so far
        area = int(binary[k].sum())
        if area == 0 or int((binary[k] & taken).sum()) > overlap_threshold * area:
            continue
        free = binary[k] & ~taken
        instance += 1
        out[free] = torch.stack([labels[k].long(), labels.new_tensor(instance).long()])
        taken |= free
    stuff = torch.as_tensor(list(stuff_ids), dtype=torch.long, device=semantic.device)
    left = semantic.masked_fill(taken, -1)  # [H, W] category of the pixels still free
    area = (left[..., None] == stuff).sum(dim=(0, 1))  # [S] free pixels per stuff category
    fill = torch.isin(left, stuff[area >= stuff_area_threshold])  # [H, W]
    out[..., 0] = torch.where(fill, left, out[..., 0])
    return out


class PanopticFPN(MaskRCNN):
    """Mask R-CNN + a semantic head on its FPN; outputs panoptic maps.

    Args:
        config (PanopticFPNConfig); backbone (BackboneWithFPN, optional): as :class:`MaskRCNN`.
    Shapes:
        forward(images list of Tensor[3, H_i, W_i], targets: Mask R-CNN's plus
        ``semantic`` Tensor[H_i, W_i] int64 category ids) -> losses (train: Mask R-CNN's
        five + ``loss_semantic``) or one dict per image (eval): Mask R-CNN's ``boxes``,
        ``labels``, ``scores``, ``masks`` plus ``semantic`` Tensor[H_i, W_i] (category id
        per pixel, 0 where the head says "thing") and ``panoptic`` Tensor[H_i, W_i, 2].
    """

    def __init__(self, config: PanopticFPNConfig = PanopticFPNConfig(),
                 backbone: BackboneWithFPN | None = None):
        super().__init__(config=config, backbone=backbone)
        c = self.config
        self.semantic_head = SemanticHead(self.backbone.out_channels, len(c.anchor_sizes),
                                          c.semantic_channels, c.num_semantic_classes)
        # Semantic class j -> category id: 0 for "thing", stuff_ids[j - 1] for stuff.
        self.register_buffer("semantic_to_category", torch.tensor((0,) + tuple(c.stuff_ids)),
                             persistent=False)

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        if self.training and targets is not None:
            for i, t in enumerate(targets):
                if "semantic" not in t:
                    raise ValueError(f"targets[{i}] has no 'semantic': Panoptic FPN trains its "
                                     "semantic head on a category-id map Tensor[H, W] (make the "
                                     "scenes with cv_course.data.PanopticScenes)")
        features, image_sizes, targets = self.extract_features(images, targets)
        _, detections, losses = self.detect(features, image_sizes, targets)
        H, W = features["0"].shape[-2] * 4, features["0"].shape[-1] * 4  # the padded batch
        logits = self.semantic_head(features, (H, W))  # [B, 1 + S, H, W]
        if self.training:
            losses["loss_semantic"] = self.config.loss_semantic_weight * self.semantic_loss(
                logits, targets, image_sizes)
            return losses
        return [self.combine(d, logits[i, :, :h, :w]) for i, (d, (h, w))
                in enumerate(zip(detections, image_sizes))]

    def semantic_loss(self, logits: Tensor, targets: list[dict],
                      image_sizes: list[tuple[int, int]]) -> Tensor:
        """Per-pixel cross-entropy; padding and unknown categories are ignored."""
        c, (B, _, H, W) = self.config, logits.shape
        target = logits.new_full((B, H, W), IGNORE_INDEX, dtype=torch.long)
        things = range(1, c.num_classes)
        for i, (t, (h, w)) in enumerate(zip(targets, image_sizes)):  # sizes differ per image
            target[i, :h, :w] = semantic_targets(t["semantic"], c.stuff_ids, things)
        return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)

    def combine(self, detection: dict, logits: Tensor) -> dict:
        """One image's detection + semantic logits [1 + S, h, w] -> ``semantic`` and ``panoptic``."""
        c = self.config
        semantic = self.semantic_to_category[logits.argmax(0)]  # [h, w] category ids
        panoptic = panoptic_merge(detection["masks"], detection["scores"], detection["labels"],
                                  semantic, c.stuff_ids, c.overlap_threshold,
                                  c.instance_score_threshold, c.stuff_area_threshold,
                                  c.mask_threshold)
        return {**detection, "semantic": semantic, "panoptic": panoptic}

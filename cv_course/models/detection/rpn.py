"""Region Proposal Network: Ren, He, Girshick, Sun, "Faster R-CNN: Towards
Real-Time Object Detection with Region Proposal Networks", NeurIPS 2015, section 3.1.

A small conv head slides over every FPN level and, for each of the A anchors
at each position, predicts an objectness logit and a box offset (tx, ty, tw, th).
Training labels each anchor from its IoU with the ground truth: positive at
IoU >= 0.7 (and the best anchor of every ground-truth box, the "low-quality
matches", so no object is left without one), negative below 0.3, ignored in
between; 256 anchors per image, at most half positive, enter the two losses.
Inference decodes the offsets, clips to the image, drops tiny boxes, keeps the
best anchors per level, and runs NMS per level, keeping the top proposals.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...ops import (
    BoxCoder,
    Matcher,
    batched_nms,
    box_iou,
    clip_boxes_to_image,
    grid_anchors,
    remove_small_boxes,
    sample_labels,
)
from .config import FasterRCNNConfig


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then 1x1 convs to A objectness logits and 4A box offsets.

    Shapes:
        forward(list of Tensor[B, D, H_l, W_l]) -> (list of Tensor[B, A, H_l, W_l],
        list of Tensor[B, 4A, H_l, W_l]); the same weights on every level.
    """

    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):  # the paper's N(0, 0.01^2)
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        hidden = [F.relu(self.conv(f)) for f in features]  # [B, D, H_l, W_l] each
        return [self.cls_logits(h) for h in hidden], [self.bbox_pred(h) for h in hidden]


def flatten_anchor_maps(x: Tensor, values_per_anchor: int) -> Tensor:
    """Tensor[B, A * V, H, W] -> Tensor[B, H * W * A, V], anchor order (y, x, a).

    That is the order of :func:`cv_course.ops.grid_anchors` (one location's A
    anchors contiguous), so row n of the result belongs to anchor n.
    """
    B, AV, H, W = x.shape
    A = AV // values_per_anchor
    x = x.view(B, A, values_per_anchor, H, W).permute(0, 3, 4, 1, 2)  # [B, H, W, A, V]
    return x.reshape(B, H * W * A, values_per_anchor)


class RegionProposalNetwork(nn.Module):
    """Anchors, RPN head, anchor labelling and sampling, the two losses, proposals.

    Args:
        config (FasterRCNNConfig): anchors, thresholds, sample sizes, top-n.
    Shapes:
        forward(features, image_sizes, targets=None) with features a list of
        Tensor[B, D, H_l, W_l] (FPN levels, finest first, strides ``config.strides``),
        image_sizes a list of B (height, width) -> (proposals: list of B
        Tensor[P_i, 4] (x1, y1, x2, y2), P_i <= post_nms_top_n; losses: dict
        ``loss_objectness``, ``loss_rpn_box_reg`` in training, else empty).
    """

    def __init__(self, config: FasterRCNNConfig):
        super().__init__()
        self.config = config
        self.head = RPNHead(config.fpn_channels, config.num_anchors)
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(config.rpn_fg_iou_thresh, config.rpn_bg_iou_thresh,
                               allow_low_quality_matches=True)

    def anchors(self, features: list[Tensor]) -> tuple[Tensor, list[int]]:
        """All anchors of all levels, Tensor[N, 4], and the count N_l of each level."""
        c = self.config
        per_level = [grid_anchors(tuple(f.shape[-2:]), stride, sizes, c.aspect_ratios,
                                  device=f.device, dtype=f.dtype)  # [H_l * W_l * A, 4]
                     for f, stride, sizes in zip(features, c.strides, c.anchor_sizes)]
        return torch.cat(per_level), [a.shape[0] for a in per_level]

    def forward(self, features: list[Tensor], image_sizes: list[tuple[int, int]],
                targets: list[dict] | None = None) -> tuple[list[Tensor], dict[str, Tensor]]:
        if len(features) != len(self.config.strides):
            raise ValueError(f"expected {len(self.config.strides)} feature levels, got "
                             f"{len(features)}")
        logits, offsets = self.head(features)
        objectness = torch.cat([flatten_anchor_maps(o, 1) for o in logits], 1)[..., 0]  # [B, N]
        deltas = torch.cat([flatten_anchor_maps(d, 4) for d in offsets], 1)  # [B, N, 4]
        anchors, per_level = self.anchors(features)  # [N, 4]
        B, N = objectness.shape
        # Proposals are inputs of the second stage, not something to backpropagate
        # through (the paper's approximate joint training): detach.
        boxes = self.box_coder.decode(deltas.detach().reshape(B * N, 4),
                                      anchors.repeat(B, 1)).view(B, N, 4)
        proposals = self.filter_proposals(boxes, objectness.detach(), image_sizes, per_level)
        losses = {}
        if self.training:
            if targets is None:
                raise ValueError("in training mode the RPN needs targets")
            labels, matched = self.assign_targets(anchors, targets)  # [B, N], [B, N, 4]
            losses = self.loss(objectness, deltas, labels, matched, anchors)
        return proposals, losses

    def filter_proposals(self, boxes: Tensor, objectness: Tensor,
                         image_sizes: list[tuple[int, int]], per_level: list[int]) -> list[Tensor]:
        """Best ``pre_nms_top_n`` per level, clip, drop tiny boxes, NMS per level, top-n.

        Args:
            boxes (Tensor[B, N, 4]): decoded anchors; objectness (Tensor[B, N]) logits.
        Returns:
            list of B Tensor[P_i, 4]: proposals in decreasing objectness.
        """
        c = self.config
        pre_n = c.rpn_pre_nms_top_n[0 if self.training else 1]
        post_n = c.rpn_post_nms_top_n[0 if self.training else 1]
        top, start = [], 0
        for n in per_level:  # one top-k per level: a handful of levels
            k = min(pre_n, n)
            top.append(objectness[:, start:start + n].topk(k, dim=1).indices + start)  # [B, k]
            start += n
        top = torch.cat(top, dim=1)  # [B, K]
        level = torch.repeat_interleave(torch.arange(len(per_level), device=boxes.device),
                                        torch.tensor([min(pre_n, n) for n in per_level],
                                                     device=boxes.device))  # [K]
        scores = objectness.gather(1, top)  # [B, K]
        boxes = boxes.gather(1, top[..., None].expand(-1, -1, 4))  # [B, K, 4]
        proposals = []
        for b, size in enumerate(image_sizes):  # per image: each keeps a different number
            bx = clip_boxes_to_image(boxes[b], size)  # [K, 4]
            keep = remove_small_boxes(bx, c.rpn_min_size)
            keep = keep[batched_nms(bx[keep], scores[b, keep], level[keep], c.rpn_nms_thresh)]
            proposals.append(bx[keep[:post_n]])  # [P_b, 4]
        return proposals

    def assign_targets(self, anchors: Tensor, targets: list[dict]) -> tuple[Tensor, Tensor]:
        """Label every anchor of every image: 1 object, 0 background, -1 ignored.

        Args:
            anchors (Tensor[N, 4]); targets: B dicts with ``boxes`` Tensor[G_i, 4].
        Returns:
            labels Tensor[B, N] int64 (1 / 0 / -1) and, for each anchor, the
            ground-truth box it matched, Tensor[B, N, 4] (zeros where none).
        """
        labels, matched = [], []
        for t in targets:  # per image: each has its own number of ground-truth boxes
            gt = t["boxes"].to(anchors)
            if gt.shape[0] == 0:  # no object: every anchor is background
                labels.append(torch.zeros(anchors.shape[0], dtype=torch.int64,
                                          device=anchors.device))
                matched.append(torch.zeros_like(anchors))
                continue
            m = self.matcher(box_iou(gt, anchors))  # [N]: gt index, -1 below, -2 between
            labels.append(torch.where(m >= 0, 1, torch.where(m == -2, -1, 0)))
            matched.append(gt[m.clamp(min=0)])  # [N, 4]
        return torch.stack(labels), torch.stack(matched)

    def loss(self, objectness: Tensor, deltas: Tensor, labels: Tensor, matched: Tensor,
             anchors: Tensor) -> dict[str, Tensor]:
        """Binary cross-entropy on sampled anchors; smooth L1 on the positive ones.

        Both are normalised by the number of sampled anchors (the paper's
        N_cls; its lambda = 1 with N_reg ~ N_cls). Shapes: objectness [B, N],
        deltas [B, N, 4], labels [B, N], matched [B, N, 4], anchors [N, 4].
        """
        c = self.config
        pos, neg = zip(*(sample_labels(lab, c.rpn_batch_size_per_image, c.rpn_positive_fraction)
                         for lab in labels))  # per image: a budget of anchors each
        pos, neg = torch.stack(pos), torch.stack(neg)  # [B, N] bool
        sampled = pos | neg
        num_sampled = sampled.sum().clamp(min=1)
        loss_objectness = F.binary_cross_entropy_with_logits(
            objectness[sampled], labels[sampled].to(objectness), reduction="sum") / num_sampled
        b_idx, a_idx = pos.nonzero(as_tuple=True)  # positive anchors: (image, anchor)
        target = self.box_coder.encode(matched[b_idx, a_idx], anchors[a_idx])  # [P, 4]
        loss_box = F.smooth_l1_loss(deltas[b_idx, a_idx], target, beta=1 / 9,
                                    reduction="sum") / num_sampled
        return {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_box}

"""FCOS: an anchor-free one-stage detector that regresses boxes from pixel locations.

Tian, Shen, Chen, He, "FCOS: Fully Convolutional One-Stage Object Detection",
ICCV 2019. Instead of anchors, every location (x, y) of every FPN level that
falls inside a ground-truth box predicts the box directly, as its four
distances to the box's sides::

    l = x - x1,   t = y - y1,   r = x2 - x,   b = y2 - y

Three rules turn that into training targets (:func:`fcos_targets`):

1. Inside: a location is positive for a box when min(l, t, r, b) > 0.
2. Scale: level l only keeps boxes with lo_l <= max(l, t, r, b) <= hi_l, so small
   boxes go to fine levels and large ones to coarse levels (the FPN does the
   multi-scale work anchors of several sizes did).
3. Ambiguity: a location inside several boxes regresses the smallest one (the
   largest would be caught by a coarser level or by other locations).

A fourth output, centre-ness = sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)),
is 1 at the box's centre and falls to 0 at its edges; at inference the score is
sqrt(P(class) * centre-ness), which ranks the low-quality boxes predicted from
locations near an object's border below the central ones before NMS.

Shapes for a batch of B 128 x 128 images and the default config::

    images (list of [3, 128, 128]) -> DetectionTransform -> [B, 3, 128, 128]
      -> BackboneWithFPN   {"0": [B, 32, 32, 32], "1": [B, 32, 16, 16], "2": [B, 32, 8, 8]}
      -> FCOSHead          logits [B, 1344, 4], ltrb [B, 1344, 4], centre-ness [B, 1344]
      -> train: fcos_targets per image, fcos_loss      dict of 3 losses
      -> eval:  score, top-k per level, decode, clip, NMS per class  B x dict(boxes, labels, scores)

Where torchvision's ``FCOS`` class assigns targets differently (centre sampling,
open size ranges) is listed in :mod:`cv_course.experiments.fcos`, which trains both.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ...ops import batched_nms
from .backbone import ShapeBackbone
from .fcos_config import FCOSConfig
from .fcos_head import FCOSHead, fcos_loss
from .fpn import BackboneWithFPN
from .transform import DetectionTransform


def fcos_locations(feature_sizes: Sequence[tuple[int, int]], strides: Sequence[int], device=None,
                   dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Image coordinates of every feature-map location, level after level.

    Location (i, j) of a stride-s map stands for the s x s cell of pixels it sees,
    so it sits at the cell's centre, ((j + 0.5) * s, (i + 0.5) * s) (the same
    convention as :func:`cv_course.ops.grid_anchors`).

    Args:
        feature_sizes (sequence of (H_l, W_l)): size of each level's map, finest first.
        strides (sequence of int): image pixels per map pixel of each level.
    Returns:
        (Tensor[P, 2] (x, y) pixels, Tensor[P] int64 level index), P = sum of H_l * W_l,
        each level row-major (x varies fastest), as ``Tensor[B, V, H, W]`` maps flatten.
    """
    if len(feature_sizes) != len(strides):
        raise ValueError(f"need one stride per feature map, got {len(feature_sizes)} sizes "
                         f"and {len(strides)} strides")
    points, levels = [], []
    for level, ((H, W), s) in enumerate(zip(feature_sizes, strides)):  # a handful of levels
        ys = (torch.arange(H, device=device, dtype=dtype) + 0.5) * s  # [H]
        xs = (torch.arange(W, device=device, dtype=dtype) + 0.5) * s  # [W]
        y, x = torch.meshgrid(ys, xs, indexing="ij")  # [H, W] each
        points.append(torch.stack((x.flatten(), y.flatten()), dim=1))  # [H * W, 2]
        levels.append(torch.full((H * W,), level, dtype=torch.int64, device=device))
    return torch.cat(points), torch.cat(levels)


def fcos_targets(points: Tensor, boxes: Tensor, labels: Tensor,
                 size_ranges: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The class, (l, t, r, b) and centre-ness each location is trained on.

    A location is positive for a box when it lies strictly inside it
    (min(l, t, r, b) > 0) and lo <= max(l, t, r, b) <= hi for its own range.
    Among several such boxes the smallest area wins (ties: the earlier box).

    Args:
        points (Tensor[P, 2]): (x, y) locations in pixels (:func:`fcos_locations`).
        boxes (Tensor[K, 4]): (x1, y1, x2, y2) ground truth in pixels; K may be 0.
        labels (Tensor[K] int64): classes in 1..C.
        size_ranges (Tensor[P, 2]): (lo, hi) of each location's level.
    Returns:
        labels Tensor[P] int64 (0 = background), ltrb Tensor[P, 4] (zeros on
        background) and centerness Tensor[P] in (0, 1] (0 on background), in
        ``boxes``' dtype. On a positive, ``x - l, y - t, x + r, y + b`` is its box.
    """
    if points.dim() != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be Tensor[P, 2] (x, y), got {list(points.shape)}")
    if boxes.dim() != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
        raise ValueError(f"boxes must be a float Tensor[K, 4] (x1, y1, x2, y2), got "
                         f"{boxes.dtype} {list(boxes.shape)}")
    if labels.shape != boxes.shape[:1]:
        raise ValueError(f"labels must be Tensor[K] for the {boxes.shape[0]} boxes, got "
                         f"{list(labels.shape)}")
    if size_ranges.shape != points.shape:
        raise ValueError(f"size_ranges must be Tensor[P, 2] (lo, hi) like points "
                         f"{list(points.shape)}, got {list(size_ranges.shape)}")
    points, size_ranges = points.to(boxes.dtype), size_ranges.to(boxes.dtype)
    P = points.shape[0]
    if boxes.shape[0] == 0:  # no object: every location is background
        return (torch.zeros(P, dtype=torch.int64, device=points.device), points.new_zeros(P, 4),
                points.new_zeros(P))
    x, y = points[:, 0, None], points[:, 1, None]  # [P, 1] each
    ltrb = torch.stack((x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y),
                       dim=2)  # [P, K, 4]
    far = ltrb.max(dim=2).values  # [P, K]
    ok = ((ltrb.min(dim=2).values > 0) & (far >= size_ranges[:, :1])
          & (far <= size_ranges[:, 1:]))  # [P, K]: inside, and the right level
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # [K]
    # Smallest candidate area per location; argmin returns the first of equal minima.
    best = torch.where(ok, area, torch.inf).argmin(dim=1)  # [P]
    positive = ok.any(dim=1)  # [P]
    ltrb = ltrb[torch.arange(P, device=points.device), best]  # [P, 4]
    ltrb = torch.where(positive[:, None], ltrb, 0)
    labels = torch.where(positive, labels[best].to(torch.int64), 0)
    return labels, ltrb, centerness_of(ltrb)


def centerness_of(ltrb: Tensor) -> Tensor:
    """sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)): 1 at the centre, -> 0 at an edge.

    Args:
        ltrb (Tensor[N, 4]): distances >= 0.
    Returns:
        Tensor[N]: centre-ness in [0, 1]; 0 (not NaN) where a distance pair is all zeros.
    """
    lr, tb = ltrb[:, 0::2], ltrb[:, 1::2]  # [N, 2] each: (l, r) and (t, b)
    num = lr.min(dim=1).values * tb.min(dim=1).values  # [N]
    den = lr.max(dim=1).values * tb.max(dim=1).values
    ok = den > 0  # background rows are all zeros: 0/0 must become 0, and not NaN
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), 0).sqrt()


class FCOS(nn.Module):
    """Anchor-free one-stage detector: backbone + FPN, one shared FCOS head.

    Args:
        config (FCOSConfig): every setting.
        backbone (BackboneWithFPN, optional): default a freshly initialised
            :class:`ShapeBackbone` + FPN (``cv_course.experiments.fcos.fcos_backbone``
            makes the pretrained one).
    Shapes:
        forward(images: list of Tensor[3, H_i, W_i] in [0, 1], targets: list of
        dict(boxes=Tensor[K_i, 4] (x1, y1, x2, y2) pixels, labels=Tensor[K_i] int64
        in 1..num_classes-1)) -> dict ``loss_classifier``, ``loss_box_reg``,
        ``loss_centerness`` (train mode) or a list of dict(boxes=Tensor[D_i, 4],
        labels=Tensor[D_i] int64, scores=Tensor[D_i]) (eval mode), boxes in the
        input images' pixel coordinates.
    """

    def __init__(self, config: FCOSConfig = FCOSConfig(), backbone: BackboneWithFPN | None = None):
        super().__init__()
        self.config = config
        if backbone is None:
            backbone = BackboneWithFPN(ShapeBackbone(len(config.strides)), config.fpn_channels)
        if list(backbone.strides) != list(config.strides):
            raise ValueError(f"backbone strides {backbone.strides} do not match the config's "
                             f"strides {config.strides}")
        if backbone.out_channels != config.fpn_channels:
            raise ValueError(f"backbone has {backbone.out_channels} output channels but "
                             f"config.fpn_channels is {config.fpn_channels}")
        self.transform = DetectionTransform(config.image_mean, config.image_std,
                                            size_divisible=config.strides[-1])
        self.backbone = backbone
        self.head = FCOSHead(config)

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        if self.training and targets is None:
            raise ValueError("in train mode pass targets (a list of dicts with 'boxes' and "
                             "'labels'); for predictions call model.eval() first")
        batch, image_sizes, targets = self.transform(images, targets if self.training else None)
        features = list(self.backbone(batch).values())  # L x [B, D, H_l, W_l]
        logits, distances, centerness = self.head(features)  # [B, P, C], [B, P, 4], [B, P]
        points, levels = fcos_locations([tuple(f.shape[-2:]) for f in features],
                                        self.config.strides, batch.device, batch.dtype)
        if self.training:
            return self.loss(logits, distances, centerness, points, levels, targets)
        return self.postprocess(logits, distances, centerness, points, levels, image_sizes)

    def loss(self, logits, distances, centerness, points, levels, targets) -> dict[str, Tensor]:
        """:func:`fcos_targets` for each image, then :func:`fcos_loss` over the batch."""
        ranges = torch.tensor(self.config.size_ranges, dtype=points.dtype,
                              device=points.device)[levels]  # [P, 2]
        per_image = [fcos_targets(points, t["boxes"].to(points), t["labels"], ranges)
                     for t in targets]  # per image: each has its own number of boxes
        labels, ltrb, ctr = (torch.stack(x) for x in zip(*per_image))  # [B, P], [B, P, 4], [B, P]
        return fcos_loss(logits, distances, centerness, labels, ltrb, ctr, self.config)

    def postprocess(self, logits: Tensor, distances: Tensor, centerness: Tensor, points: Tensor,
                    levels: Tensor, image_sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        """Score, best ``topk_candidates`` per level and image, decode, clip, class-aware NMS."""
        c = self.config
        B, P, C = logits.shape
        # sqrt(P(class) * centre-ness): the geometric mean stays a probability-like
        # number, so one score threshold means the same thing as without centre-ness.
        scores = (logits.sigmoid() * centerness.sigmoid()[..., None]).sqrt()  # [B, P, C]
        cand = []
        for level in range(len(c.strides)):  # per level: the paper's top-k per level
            idx = (levels == level).nonzero().flatten()  # [P_l]: a contiguous block
            s = scores[:, idx].reshape(B, -1)  # [B, P_l * C]
            top = s.topk(min(c.topk_candidates, s.shape[1]), dim=1)  # [B, k]
            cand.append((top.values, idx[top.indices // C], top.indices % C))
        score, loc, label = (torch.cat(x, dim=1) for x in zip(*cand))  # [B, N] each
        image = torch.arange(B, device=logits.device)[:, None].expand_as(loc)  # [B, N]
        keep = score > c.score_thresh
        score, loc, label, image = score[keep], loc[keep], label[keep], image[keep]  # [M]
        d, xy = distances[image, loc], points[loc]  # [M, 4], [M, 2]
        boxes = torch.cat((xy - d[:, :2], xy + d[:, 2:]), dim=1)  # (x - l, y - t, x + r, y + b)
        hw = torch.tensor(image_sizes, device=boxes.device, dtype=boxes.dtype)[image]  # [M, 2]
        boxes = torch.minimum(boxes.clamp(min=0), hw.flip(1).repeat(1, 2))  # clip to own image
        out = []
        for i in range(B):  # NMS per image: a few hundred boxes each, never [M, M] for the batch
            k = (image == i).nonzero().flatten()
            k = k[batched_nms(boxes[k], score[k], label[k], c.nms_thresh)]  # decreasing score
            k = k[: c.detections_per_img]
            out.append({"boxes": boxes[k], "labels": label[k] + 1, "scores": score[k]})
        return out

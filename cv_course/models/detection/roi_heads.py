"""The second stage: classify each proposal and refine its box.

Girshick, "Fast R-CNN", ICCV 2015: pool a fixed-size feature from each region
(here RoI Align, He et al., "Mask R-CNN", ICCV 2017, which samples bilinearly
instead of rounding), run a two-layer MLP, and predict class scores and one box
offset per class. Training samples proposals (plus the ground-truth boxes) as
foreground at IoU >= 0.5 with an object, background below; 25% foreground at
most. Losses: cross-entropy over classes, smooth L1 on the offsets of the true
class. Inference: softmax, decode every class's box, drop low scores, NMS per
class, keep the best ``detections_per_img``.

The same :class:`RoIHeads` serves the three detectors of the chapter; only the
``box_roi_pool`` differs (R-CNN: warp image crops and run the CNN on each;
Fast R-CNN: RoI Pool on one feature map; Faster R-CNN: multi-scale RoI Align).
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
    remove_small_boxes,
    sample_labels,
)
from .config import FasterRCNNConfig


class TwoMLPHead(nn.Module):
    """flatten -> fc -> ReLU -> fc -> ReLU: Tensor[R, D, h, w] -> Tensor[R, representation]."""

    def __init__(self, in_features: int, representation_size: int):
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))


class FastRCNNPredictor(nn.Module):
    """Class logits Tensor[R, C] and class-specific box offsets Tensor[R, 4C]."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes)
        self.bbox_pred = nn.Linear(in_features, 4 * num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


def fastrcnn_loss(class_logits: Tensor, box_regression: Tensor, labels: Tensor,
                  regression_targets: Tensor) -> dict[str, Tensor]:
    """Cross-entropy over classes and smooth L1 on the true class's offsets (Fast R-CNN eq. 1).

    Args:
        class_logits (Tensor[R, C]), box_regression (Tensor[R, 4C]),
        labels (Tensor[R] int64, 0 = background), regression_targets (Tensor[R, 4]).
    Returns:
        dict: ``loss_classifier`` and ``loss_box_reg`` (summed over foreground
        RoIs, divided by R, so background RoIs count in the normaliser).
    """
    R, C = class_logits.shape
    fg = (labels > 0).nonzero().flatten()  # [P]
    deltas = box_regression.view(R, C, 4)[fg, labels[fg]]  # [P, 4]: the true class's offsets
    loss_box = F.smooth_l1_loss(deltas, regression_targets[fg], beta=1 / 9, reduction="sum")
    return {"loss_classifier": F.cross_entropy(class_logits, labels),
            "loss_box_reg": loss_box / max(R, 1)}


class RoIHeads(nn.Module):
    """Sample RoIs, pool their features, classify and regress; losses or detections.

    Args:
        config (FasterRCNNConfig): sampling, box coding and post-processing settings.
        box_roi_pool (nn.Module): ``box_roi_pool(features, boxes, image_sizes)`` ->
            Tensor[R, D, h, w] for R = total boxes over the batch.
        in_features (int): D * h * w.
    Shapes:
        forward(features, proposals (list of B Tensor[P_i, 4]), image_sizes,
        targets=None) -> (detections: list of B dicts with ``boxes`` Tensor[K, 4],
        ``labels`` Tensor[K] int64, ``scores`` Tensor[K] (empty list in training);
        losses: ``loss_classifier``, ``loss_box_reg`` in training, else {}).
    """

    def __init__(self, config: FasterRCNNConfig, box_roi_pool: nn.Module, in_features: int):
        super().__init__()
        self.config = config
        self.box_roi_pool = box_roi_pool
        self.box_head = TwoMLPHead(in_features, config.representation_size)
        self.box_predictor = FastRCNNPredictor(config.representation_size, config.num_classes)
        self.box_coder = BoxCoder(weights=config.bbox_reg_weights)
        self.matcher = Matcher(config.box_fg_iou_thresh, config.box_bg_iou_thresh,
                               allow_low_quality_matches=False)

    def forward(self, features, proposals: list[Tensor], image_sizes: list[tuple[int, int]],
                targets: list[dict] | None = None):
        if self.training:
            if targets is None:
                raise ValueError("in training mode the RoI heads need targets")
            proposals, labels, regression_targets = self.select_training_samples(proposals,
                                                                                 targets)
        pooled = self.box_roi_pool(features, proposals, image_sizes)  # [R, D, h, w]
        class_logits, box_regression = self.box_predictor(self.box_head(pooled))  # [R, C], [R, 4C]
        if self.training:
            return [], fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
        return self.postprocess(class_logits, box_regression, proposals, image_sizes), {}

    def select_training_samples(self, proposals: list[Tensor], targets: list[dict]):
        """Add the ground truth to the proposals, label them, sample a balanced subset.

        Returns:
            (list of B Tensor[S_i, 4] sampled RoIs, Tensor[S] int64 class labels
            with 0 = background, Tensor[S, 4] regression targets of the matched
            boxes), S = sum of S_i, images in order.
        """
        c = self.config
        rois, labels, matched = [], [], []
        for props, t in zip(proposals, targets):  # per image: each has its own ground truth
            gt, gt_labels = t["boxes"].to(props), t["labels"]
            props = torch.cat([props, gt])  # [P + G, 4]: the ground truth is a perfect RoI
            if gt.shape[0] == 0:
                lab = torch.zeros(props.shape[0], dtype=torch.int64, device=props.device)
                box = torch.zeros_like(props)
            else:
                m = self.matcher(box_iou(gt, props))  # [P + G]
                lab = torch.where(m >= 0, gt_labels[m.clamp(min=0)], torch.where(m == -2, -1, 0))
                box = gt[m.clamp(min=0)]  # [P + G, 4]
            pos, neg = sample_labels(torch.where(lab > 0, 1, lab), c.box_batch_size_per_image,
                                     c.box_positive_fraction)
            keep = (pos | neg).nonzero().flatten()  # [S_i]
            rois.append(props[keep])
            labels.append(lab[keep])
            matched.append(box[keep])
        labels, matched, all_rois = torch.cat(labels), torch.cat(matched), torch.cat(rois)
        fg = labels > 0  # only foreground RoIs have a box to regress to
        regression_targets = torch.zeros_like(all_rois)  # [S, 4]
        regression_targets[fg] = self.box_coder.encode(matched[fg], all_rois[fg])
        return rois, labels, regression_targets

    def postprocess(self, class_logits: Tensor, box_regression: Tensor, proposals: list[Tensor],
                    image_sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        """Scores, per-class boxes, score threshold, class-aware NMS, top detections per image.

        One NMS call for the whole batch: a box's group is (image, class), so
        boxes of different images or classes never suppress each other.
        """
        c = self.config
        R, C = class_logits.shape
        counts = [p.shape[0] for p in proposals]
        rois = torch.cat(proposals)  # [R, 4]
        image = torch.repeat_interleave(torch.arange(len(proposals), device=rois.device),
                                        torch.tensor(counts, device=rois.device))  # [R]
        boxes = self.box_coder.decode(box_regression, rois).view(R, C, 4)  # one box per class
        # Clip to each RoI's own image: (x, y) <= (width, height) of that image.
        hw = torch.tensor(image_sizes, device=rois.device, dtype=rois.dtype)[image]  # [R, 2]
        boxes = torch.minimum(boxes.clamp(min=0), hw.flip(1).repeat(1, 2)[:, None])  # [R, C, 4]
        scores = F.softmax(class_logits, dim=-1)  # [R, C]
        labels = torch.arange(C, device=rois.device).expand(R, C)  # [R, C]
        image = image[:, None].expand(R, C)
        # Drop the background column, then flatten: one candidate per (RoI, class).
        boxes, scores = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1)
        labels, image = labels[:, 1:].reshape(-1), image[:, 1:].reshape(-1)
        keep = (scores > c.box_score_thresh).nonzero().flatten()
        keep = keep[remove_small_boxes(boxes[keep], 1e-2)]
        keep = keep[batched_nms(boxes[keep], scores[keep], image[keep] * C + labels[keep],
                                c.box_nms_thresh)]  # decreasing score
        out = []
        for i in range(len(proposals)):  # split the kept candidates by image
            k = keep[image[keep] == i][: c.detections_per_img]
            out.append({"boxes": boxes[k], "labels": labels[k], "scores": scores[k]})
        return out

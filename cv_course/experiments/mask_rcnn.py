"""Mask R-CNN on generated scenes: ours, its RoI Pool ablation, and torchvision's.

Three named detectors for :func:`cv_course.experiments.detection.train_detector`
(and ``trained_detector``), trained by the same loop on the same scenes, now
with their instance masks (:func:`make_mask_scenes`):

* ``"mask_rcnn"``: :class:`cv_course.models.detection.mask_rcnn.MaskRCNN`, RoI
  Align for the box and mask features, 28 x 28 masks (14 x 14 RoI features),
  trained cheaply (:data:`MASK_RCNN_CONFIG`: 8 positives per image for the mask
  loss, 300 anchors per level before the RPN's NMS, the mask head at 3 x the lr,
  four 3 x 3 convs in it) for 5 epochs at lr 3e-3 (:data:`MASK_RCNN_SETUP`);
* ``"mask_rcnn_roi_pool"``: the same model with RoI Pool in both branches, the
  paper's ablation (He et al. 2017, Table 2c): rounding costs most at strict IoUs;
* ``"torchvision_mask_rcnn"``: ``torchvision.models.detection.MaskRCNN`` around the
  same backbone + FPN, our anchors, every setting matched, nothing downloaded.

Augmentation turns the masks with the image and boxes (:func:`dihedral_augment_masks`).
:func:`evaluate_instance_segmentation` scores boxes and masks with COCO mAP.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn

from ..data import DetectionScenes
from ..models.detection.mask_rcnn import MaskRCNN, MaskRCNNConfig, SampledMaskRCNNConfig
from .detection import (
    DetectionSetup,
    DetectorSpec,
    build_backbone,
    detection_map,
    dihedral_augment,
    torchvision_faster_rcnn,
)


def make_mask_scenes(n: int, seed: int, setup: DetectionSetup) -> tuple[list[Tensor], list[dict]]:
    """``n`` scenes in memory with instance masks: (images, targets with boxes, labels, masks).

    Returns:
        (list of Tensor[3, S, S], list of dict(boxes Tensor[K, 4], labels Tensor[K] int64,
        masks Tensor[K, S, S] uint8)), the scenes of
        :func:`cv_course.experiments.detection.make_scenes` plus their masks.
    """
    ds = DetectionScenes(n, seed=seed, include_masks=True, **setup.scene_kwargs)
    items = [ds[i] for i in range(n)]
    return [im for im, _ in items], [{k: t[k] for k in ("boxes", "labels", "masks")}
                                     for _, t in items]


def dihedral_augment_masks(images: list[Tensor], targets: list[dict], gen: torch.Generator):
    """:func:`dihedral_augment` that turns each image's masks with it.

    The masks ride along as extra image channels, so that they get exactly the
    flip and quarter turns of their image (and its boxes). Masks come back in their dtype.
    """
    stacked = [torch.cat([im, t["masks"].to(im.dtype)]) for im, t in zip(images, targets)]
    stacked, out_targets = dihedral_augment(stacked, targets, gen)  # [3 + K, S, S] each
    out_images = []
    for x, t, old in zip(stacked, out_targets, targets):
        out_images.append(x[:3])
        t["masks"] = x[3:].to(old["masks"].dtype)  # [K, S, S]: 0/1 survive the round trip
    return out_images, out_targets


def torchvision_mask_rcnn(config: MaskRCNNConfig, backbone, image_size: int = 128) -> nn.Module:
    """torchvision's ``MaskRCNN`` with our backbone + FPN, anchors and settings.

    The box part is :func:`torchvision_faster_rcnn`'s (its modules and settings are
    passed on), the mask part torchvision's ``MaskRCNNHeads`` and ``MaskRCNNPredictor``
    with our widths. Nothing is downloaded. RoI Align in both branches
    (torchvision has no RoI Pool option).
    """
    from torchvision.models.detection import MaskRCNN as TVMaskRCNN
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    c = config
    box = torchvision_faster_rcnn(c, backbone, image_size)  # the matched box detector
    rpn, heads = box.rpn, box.roi_heads
    names = [str(i) for i in range(len(c.anchor_sizes))]
    model = TVMaskRCNN(
        backbone, None, min_size=image_size, max_size=image_size, image_mean=list(c.image_mean),
        image_std=list(c.image_std), size_divisible=c.strides[-1],
        rpn_anchor_generator=rpn.anchor_generator, rpn_head=rpn.head,
        rpn_pre_nms_top_n_train=c.rpn_pre_nms_top_n[0], rpn_pre_nms_top_n_test=c.rpn_pre_nms_top_n[1],
        rpn_post_nms_top_n_train=c.rpn_post_nms_top_n[0],
        rpn_post_nms_top_n_test=c.rpn_post_nms_top_n[1], rpn_nms_thresh=c.rpn_nms_thresh,
        rpn_fg_iou_thresh=c.rpn_fg_iou_thresh, rpn_bg_iou_thresh=c.rpn_bg_iou_thresh,
        rpn_batch_size_per_image=c.rpn_batch_size_per_image,
        rpn_positive_fraction=c.rpn_positive_fraction,
        box_roi_pool=heads.box_roi_pool, box_head=heads.box_head, box_predictor=heads.box_predictor,
        box_score_thresh=c.box_score_thresh, box_nms_thresh=c.box_nms_thresh,
        box_detections_per_img=c.detections_per_img, box_fg_iou_thresh=c.box_fg_iou_thresh,
        box_bg_iou_thresh=c.box_bg_iou_thresh, box_batch_size_per_image=c.box_batch_size_per_image,
        box_positive_fraction=c.box_positive_fraction, bbox_reg_weights=c.bbox_reg_weights,
        mask_roi_pool=MultiScaleRoIAlign(names, c.mask_roi_output_size, c.mask_sampling_ratio,
                                         canonical_scale=c.canonical_scale,
                                         canonical_level=c.canonical_level),
        mask_head=MaskRCNNHeads(c.fpn_channels, [c.mask_head_channels] * c.mask_head_convs, 1),
        mask_predictor=MaskRCNNPredictor(c.mask_head_channels, c.mask_head_channels,
                                         c.num_classes))
    return model


def _ours(config: MaskRCNNConfig) -> nn.Module:
    return MaskRCNN(config=config, backbone=build_backbone(config))


def _torchvision(config: MaskRCNNConfig) -> nn.Module:
    model = torchvision_mask_rcnn(config, build_backbone(config))
    model.config = config  # read by mask_head_optimizer, as ours
    return model


def mask_head_optimizer(model: nn.Module, setup: DetectionSetup) -> torch.optim.Optimizer:
    """AdamW with the mask head's parameters at ``config.mask_head_lr_scale`` times the lr.

    The mask head's parameters are those named ``roi_heads.mask_*`` (ours:
    ``mask_head``; torchvision's: ``mask_head`` and ``mask_predictor``); the
    schedule (warmup, cosine) scales both groups alike.
    """
    scale = getattr(model.config, "mask_head_lr_scale", 1.0)
    named = list(model.named_parameters())
    head = [p for n, p in named if n.startswith("roi_heads.mask_")]
    rest = [p for n, p in named if not n.startswith("roi_heads.mask_")]
    return torch.optim.AdamW([{"params": rest}, {"params": head, "lr": setup.lr * scale}],
                             lr=setup.lr, weight_decay=setup.weight_decay)


# Cheaper training than MaskRCNNConfig's defaults (a step cost 2.5 times Faster R-CNN's):
# the mask loss trains on 8 random positive RoIs per image (of ~30; the mask branch was
# 60% of a step with all of them), and the RPN keeps the 300 best anchors per level
# before NMS in training too (its NMS was 20% of a step with 600); the mask head
# learns at 3 times the lr (its mask IoU on ground-truth boxes was 0.78 after 4 epochs)
# and has the paper's four 3 x 3 convs. Measured on the 500 held-out scenes, one thread
# (mask mAP@0.5 / mask mAP): two convs, 4 epochs at lr 1e-3 0.862 / 0.604 in 338 s;
# four convs 0.875 / 0.644 in 381 s, 5 epochs 0.887 / 0.664, 6 epochs 0.895 / 0.680 in
# 559 s; four convs, 5 epochs at lr 2e-3 0.901 / 0.691, at lr 3e-3 (the default)
# 0.910 / 0.696 (box mAP@0.5 0.932) in 439 s alone, 483 s beside another training
MASK_RCNN_CONFIG = SampledMaskRCNNConfig(mask_positives_per_image=8, mask_head_lr_scale=3.0,
                                         rpn_pre_nms_top_n=(300, 300), mask_head_convs=4)
MASK_RCNN_SETUP = DetectionSetup(epochs=5, lr=3e-3)
_mask = dict(optimizer=mask_head_optimizer, augment=dihedral_augment_masks,
             scenes=make_mask_scenes)

SPECS = {
    "mask_rcnn": DetectorSpec(_ours, MASK_RCNN_CONFIG, MASK_RCNN_SETUP, **_mask),
    "mask_rcnn_roi_pool": DetectorSpec(_ours, MASK_RCNN_CONFIG.replace(roi_pooler="pool"),
                                       MASK_RCNN_SETUP, **_mask),
    # the same settings; torchvision's MaskRCNN has no cap: its mask loss sees every positive
    "torchvision_mask_rcnn": DetectorSpec(
        _torchvision, MASK_RCNN_CONFIG.replace(mask_positives_per_image=0), MASK_RCNN_SETUP,
        **_mask),
}


def binary_masks(predictions: list[dict], threshold: float = 0.5) -> list[dict]:
    """Detections with ``masks`` Tensor[D, 1, H, W] probabilities -> Tensor[D, H, W] bool."""
    return [{**p, "masks": p["masks"][:, 0] > threshold} for p in predictions]


def evaluate_instance_segmentation(model: nn.Module, images: list[Tensor], targets: list[dict],
                                   batch_size: int = 16) -> dict[str, float]:
    """Held-out COCO box and mask mAP and the inference time of an instance segmenter.

    Args:
        model: eval-mode outputs with ``masks`` Tensor[D, 1, H, W] probabilities
            (ours or torchvision's Mask R-CNN); thresholded at 0.5 for the metric.
        images (list[Tensor[3, H, W]]), targets (list of dict(boxes, labels, masks
            Tensor[K, H, W])): held-out scenes (:func:`make_mask_scenes`).
    Returns:
        dict: ``box_map``, ``box_map_50``, ``box_map_75``, ``mask_map``, ``mask_map_50``,
        ``mask_map_75`` (and the other COCO entries, prefixed), ``seconds_per_image``
        (inference wall time per image, pasting included, metric excluded).
    """
    from ..metrics import mean_average_precision

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    predictions, seconds = [], 0.0
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                batch = [im.to(device) for im in images[i:i + batch_size]]
                start = time.perf_counter()
                out = model(batch)
                seconds += time.perf_counter() - start
                # bool masks at once: 100 float masks per image would not fit for 500 images
                predictions += [{k: v.cpu() for k, v in p.items()} for p in binary_masks(out)]
    finally:
        model.train(was_training)
    result = {f"box_{k}": v for k, v in detection_map(predictions, targets).items()}
    segm = mean_average_precision(predictions, [{**t, "masks": t["masks"].bool()} for t in targets],
                                  iou_type="segm")
    result.update({f"mask_{k}": float(v) for k, v in segm.items()
                   if isinstance(v, Tensor) and v.numel() == 1})
    result["seconds_per_image"] = seconds / max(1, len(images))
    return result


__all__ = ["SPECS", "make_mask_scenes", "dihedral_augment_masks", "torchvision_mask_rcnn",
           "binary_masks", "evaluate_instance_segmentation", "mask_head_optimizer",
           "MASK_RCNN_CONFIG", "MASK_RCNN_SETUP"]

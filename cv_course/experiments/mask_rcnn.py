"""Mask R-CNN on generated scenes: ours, its RoI Pool ablation, and torchvision's.

Three named detectors for :func:`cv_course.experiments.detection.train_detector`
(and ``trained_detector``), trained by the same loop on the same scenes, now
with their instance masks (:func:`make_mask_scenes`):

* ``"mask_rcnn"``: :class:`cv_course.models.detection.mask_rcnn.MaskRCNN`, RoI
  Align for the box and mask features, 28 x 28 masks (14 x 14 RoI features);
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
from ..models.detection.mask_rcnn import MaskRCNN, MaskRCNNConfig
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


SPECS = {
    "mask_rcnn": DetectorSpec(_ours, MaskRCNNConfig(), augment=dihedral_augment_masks,
                              scenes=make_mask_scenes),
    "mask_rcnn_roi_pool": DetectorSpec(_ours, MaskRCNNConfig(roi_pooler="pool"),
                                       augment=dihedral_augment_masks, scenes=make_mask_scenes),
    "torchvision_mask_rcnn": DetectorSpec(
        lambda c: torchvision_mask_rcnn(c, build_backbone(c)), MaskRCNNConfig(),
        augment=dihedral_augment_masks, scenes=make_mask_scenes),
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
           "binary_masks", "evaluate_instance_segmentation"]

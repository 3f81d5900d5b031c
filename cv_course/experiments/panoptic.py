"""Panoptic FPN on generated scenes with stuff: its registry entry, data and evaluation.

``"panoptic_fpn"`` (:class:`cv_course.models.detection.panoptic_fpn.PanopticFPN`:
our Mask R-CNN plus a semantic head on the shared FPN) trains with
:func:`cv_course.experiments.detection.train_detector` and caches with
``trained_detector`` like every detector of the course, on its own scenes:
:class:`cv_course.data.PanopticScenes` (sky / ground / wall behind the shapes),
whose targets add a ``semantic`` category map to the boxes, labels and masks.

Augmentation: a horizontal mirror (half of the images), applied to the image,
boxes, masks and semantic map together. Only the mirror: a quarter turn would
put the sky beside the ground, a layout the scenes never show.

:func:`evaluate_panoptic` scores the merged outputs with panoptic quality
(Kirillov et al. 2019) on held-out scenes (seed ``data_seed + 1``).
"""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn

from ..data.panoptic import STUFF_IDS, THING_IDS, PanopticScenes
from ..metrics.panoptic import PanopticQuality
from ..models.detection.panoptic_fpn import PanopticFPN, PanopticFPNConfig
from .detection import DetectionSetup, DetectorSpec, build_backbone

PANOPTIC_SETUP = DetectionSetup(min_objects=1, max_objects=6, epochs=3)


def make_panoptic_data(n: int, seed: int, setup: DetectionSetup) -> tuple[list[Tensor], list[dict]]:
    """``n`` panoptic training scenes in memory: (images, targets).

    Returns:
        (list of Tensor[3, S, S], list of dict(boxes [K, 4], labels [K] int64, masks
        [K, S, S] uint8, semantic [S, S] int64 category ids)).
    """
    ds = PanopticScenes(n, seed=seed, **setup.scene_kwargs)
    items = [ds[i] for i in range(n)]
    keys = ("boxes", "labels", "masks", "semantic")
    return [im for im, _ in items], [{k: t[k] for k in keys} for _, t in items]


def make_panoptic_eval(n: int, seed: int, setup: DetectionSetup):
    """``n`` held-out scenes: (images, panoptic ground truth, instance targets).

    Returns:
        (list of Tensor[3, S, S], list of Tensor[S, S, 2] (category id, instance id),
        list of dict(boxes [K, 4], labels [K], masks [K, S, S] bool)) for box and mask mAP.
    """
    ds = PanopticScenes(n, seed=seed, **setup.scene_kwargs)
    scenes = [ds.scene(i) for i in range(n)]
    return ([s.image for s in scenes], [s.panoptic for s in scenes],
            [{"boxes": s.boxes, "labels": s.labels, "masks": s.masks} for s in scenes])


def mirror_augment(images: list[Tensor], targets: list[dict], gen: torch.Generator):
    """Mirror half of the images left-right, with their boxes, masks and semantic maps.

    A mirror maps x to W - x, so box (x1, y1, x2, y2) becomes (W - x2, y1, W - x1, y2).
    Returns new lists; the inputs are not modified.
    """
    flips = (torch.rand(len(images), generator=gen) < 0.5).tolist()
    out_images, out_targets = [], []
    for im, t, flip in zip(images, targets, flips):  # per image: each draws its own flip
        if flip:
            W = im.shape[-1]
            b = t["boxes"]
            t = {**t, "boxes": torch.stack([W - b[:, 2], b[:, 1], W - b[:, 0], b[:, 3]], dim=1),
                 "masks": t["masks"].flip(-1), "semantic": t["semantic"].flip(-1)}
            im = im.flip(-1)
        out_images.append(im)
        out_targets.append(t)
    return out_images, out_targets


def _build(config: PanopticFPNConfig) -> nn.Module:
    return PanopticFPN(config, backbone=build_backbone(config))


SPECS = {
    "panoptic_fpn": DetectorSpec(_build, PanopticFPNConfig(), PANOPTIC_SETUP,
                                 augment=mirror_augment, scenes=make_panoptic_data),
}


def evaluate_panoptic(model: nn.Module, images: list[Tensor], panoptic: list[Tensor],
                      targets: list[dict] | None = None, batch_size: int = 16) -> dict[str, float]:
    """Held-out panoptic quality and inference time of a Panoptic FPN.

    Args:
        model: eval-mode outputs with ``panoptic`` Tensor[H, W, 2] per image.
        images (list[Tensor[3, H, W]]), panoptic (list[Tensor[H, W, 2]]): held-out scenes
            (:func:`make_panoptic_eval`); void pixels of the output (category 0) are
            void predictions.
    Returns:
        dict: ``pq``, ``sq``, ``rq`` and the ``_things`` / ``_stuff`` ones, plus
        ``seconds_per_image`` (inference and merge, metric excluded).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    metric = PanopticQuality(THING_IDS, STUFF_IDS, allow_unknown_preds_category=True)
    seconds, detections = 0.0, []
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch_size):  # batches: bounded memory
                batch = [im.to(device) for im in images[i:i + batch_size]]
                start = time.perf_counter()
                outputs = model(batch)
                seconds += time.perf_counter() - start
                preds = torch.stack([o["panoptic"] for o in outputs])  # [b, H, W, 2]
                metric.update(preds, torch.stack(panoptic[i:i + batch_size]).to(preds.device))
                if targets is not None:
                    detections += [{"boxes": o["boxes"].cpu(), "labels": o["labels"].cpu(),
                                    "scores": o["scores"].cpu(),
                                    "masks": o["masks"][:, 0].cpu() > 0.5} for o in outputs]
    finally:
        model.train(was_training)
    result = {k: float(v) for k, v in metric.compute().items()}
    result["seconds_per_image"] = seconds / max(1, len(images))
    if targets is not None:
        from ..metrics import mean_average_precision

        for prefix, iou_type in (("", "bbox"), ("mask_", "segm")):
            m = mean_average_precision(detections, targets, iou_type=iou_type)
            result.update({prefix + k: float(m[k]) for k in ("map", "map_50", "map_75")})
    return result


__all__ = ["PANOPTIC_SETUP", "SPECS", "make_panoptic_data", "make_panoptic_eval",
           "mirror_augment", "evaluate_panoptic"]

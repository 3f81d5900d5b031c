"""Train, cache and evaluate the course's detectors on generated scenes.

``benchmarks/detection.py``, the detection chapters and the tests call these
functions, so the book prints the benchmark's numbers. The data: 128 x 128
:class:`cv_course.data.DetectionScenes` with 1-8 objects (overlap allowed),
training scenes from seed ``data_seed``, held-out scenes from ``data_seed + 1``
(disjoint). The models: our :class:`cv_course.models.detection.FasterRCNN` and,
for comparison, torchvision's ``FasterRCNN`` class built around the *same*
backbone and FPN with the same settings (``build_detector("torchvision")``),
both trained by :func:`cv_course.train_detection.fit_detector`.

:func:`trained_detector` caches the trained weights on disk under a hash of the
setup and model config (like :func:`cv_course.models.shapes_classifier`), so the
book and the tests train at most once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..data import DetectionScenes, detection_collate
from ..device import one_thread
from ..models.classifier import default_cache_dir, shapes_classifier
from ..models.detection import BackboneWithFPN, FasterRCNN, FasterRCNNConfig, ShapeBackbone
from ..ops import grid_anchors
from ..train import predict
from ..train_detection import DetectionHistory, fit_detector


MODEL_NAMES = ("faster_rcnn", "torchvision")
_RECIPE_VERSION = 1  # bump when the training recipe changes: old cache files stop matching


@dataclass(frozen=True)
class DetectionSetup:
    """Data and training budget shared by every detector in a comparison."""

    size: int = 128  # scene height = width in pixels
    min_objects: int = 1  # objects drawn per scene (fewer may stay visible)
    max_objects: int = 8
    n_train: int = 1024  # training scenes (seed data_seed), augmented by the 8 square symmetries
    n_val: int = 500  # held-out scenes (seed data_seed + 1)
    data_seed: int = 0
    epochs: int = 4
    batch_size: int = 8
    lr: float = 1e-3  # peak AdamW learning rate (linear warmup, then cosine decay to 0)
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    seed: int = 0  # initial weights, batch order, augmentation and loss sampling

    @property
    def scene_kwargs(self) -> dict:
        return dict(size=self.size, min_objects=self.min_objects, max_objects=self.max_objects)


def make_scenes(n: int, seed: int, setup: DetectionSetup) -> tuple[list[Tensor], list[dict]]:
    """``n`` detection scenes in memory: (images list of Tensor[3, S, S], targets list)."""
    ds = DetectionScenes(n, seed=seed, **setup.scene_kwargs)
    items = [ds[i] for i in range(n)]
    return [im for im, _ in items], [{"boxes": t["boxes"], "labels": t["labels"]} for _, t in items]


def dihedral_augment(images: list[Tensor], targets: list[dict], gen: torch.Generator):
    """Apply one of the 8 symmetries of the square (rotations by 90 degrees, mirror) per image.

    Shape classes do not change under them, and boxes map exactly: a mirror maps
    x to W - x, a quarter turn (``torch.rot90``, counter-clockwise) maps the point
    (x, y) to (y, W - x). Returns new lists; the inputs are not modified.
    """
    out_images, out_targets = [], []
    draws = torch.randint(8, (len(images),), generator=gen).tolist()
    for im, t, d in zip(images, targets, draws):  # per image: each has its own symmetry
        boxes = t["boxes"]
        if d >= 4:  # mirror left-right
            W = im.shape[-1]
            im, boxes = im.flip(-1), torch.stack(
                [W - boxes[:, 2], boxes[:, 1], W - boxes[:, 0], boxes[:, 3]], dim=1)
        for _ in range(d % 4):  # quarter turns, counter-clockwise
            W = im.shape[-1]
            im, boxes = torch.rot90(im, 1, dims=(1, 2)), torch.stack(
                [boxes[:, 1], W - boxes[:, 2], boxes[:, 3], W - boxes[:, 0]], dim=1)
        out_images.append(im)
        out_targets.append({**t, "boxes": boxes})
    return out_images, out_targets


def build_backbone(config: FasterRCNNConfig) -> BackboneWithFPN:
    """Backbone + FPN; with ``config.pretrained`` the body is the trained shape classifier's."""
    classifier = shapes_classifier(seed=0) if config.pretrained else None
    return BackboneWithFPN(ShapeBackbone(len(config.anchor_sizes), classifier), config.fpn_channels)


def build_detector(name: str, config=None) -> nn.Module:
    """A fresh detector by name (see :func:`detector_names`), with ``config`` or the name's default.

    ``"faster_rcnn"`` is ours, ``"torchvision"`` torchvision's FasterRCNN class with the same
    backbone and settings; the other names come from the ``SPECS`` of the modules in
    ``_SPEC_MODULES`` (single-stage detectors, DETR, Mask R-CNN, ...).
    """
    spec = detector_spec(name)
    return spec.build(spec.config if config is None else config)


@dataclass(frozen=True)
class DetectorSpec:
    """How to build and train one named detector: what :func:`train_detector` needs.

    Attributes:
        build: ``config -> nn.Module``; with ``config.pretrained`` the backbone starts
            from the trained shape classifier (:func:`build_backbone`).
        config: the default config, a frozen dataclass with a ``pretrained`` field and a
            ``replace(**changes)`` method (its fields are hashed into the cache file name).
        setup: the default data and training budget.
        optimizer: optional ``(model, setup) -> torch.optim.Optimizer`` (default AdamW over
            all parameters with ``setup.lr`` and ``setup.weight_decay``).
        augment: optional ``(images, targets, generator) -> (images, targets)`` (default
            :func:`dihedral_augment`).
        scenes: optional ``(n, seed, setup) -> (images, targets)``, the training scenes
            when none are passed (default :func:`make_scenes`: boxes and labels only; e.g.
            Mask R-CNN's adds the instance masks).
    """

    build: Callable[[Any], nn.Module]
    config: Any
    setup: DetectionSetup = DetectionSetup()
    optimizer: Callable[[nn.Module, DetectionSetup], torch.optim.Optimizer] | None = None
    augment: Callable | None = None
    scenes: Callable[[int, int, DetectionSetup], tuple] | None = None


# Modules of cv_course.experiments that define ``SPECS: dict[str, DetectorSpec]``; a module
# that does not exist (yet) is skipped, so each detector family lives in its own file.
_SPEC_MODULES = ("yolo", "retinanet", "fcos", "detr", "mask_rcnn", "panoptic")


def _specs() -> dict[str, DetectorSpec]:
    import importlib

    specs = {"faster_rcnn": DetectorSpec(
                 lambda c: FasterRCNN(config=c, backbone=build_backbone(c)), FasterRCNNConfig()),
             "torchvision": DetectorSpec(
                 lambda c: torchvision_faster_rcnn(c, build_backbone(c)), FasterRCNNConfig())}
    for module in _SPEC_MODULES:
        try:
            mod = importlib.import_module(f"{__package__}.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{module}":
                raise  # the module exists but something it imports does not
            continue
        specs.update(mod.SPECS)
    return specs


def detector_names() -> list[str]:
    """Every detector :func:`build_detector` and :func:`trained_detector` know by name."""
    return list(_specs())


def detector_spec(name: str) -> DetectorSpec:
    """The :class:`DetectorSpec` registered under ``name``."""
    specs = _specs()
    if name not in specs:
        raise ValueError(f"unknown detector {name!r}; choose from {sorted(specs)}")
    return specs[name]


def torchvision_faster_rcnn(config: FasterRCNNConfig, backbone: BackboneWithFPN,
                            image_size: int = 128) -> nn.Module:
    """torchvision's ``FasterRCNN`` with our backbone + FPN and every setting of ``config``.

    Nothing is downloaded (no weights). ``min_size = max_size = image_size`` (the scene
    size), so torchvision does not resize the images to 800 pixels. Its anchor
    generator is swapped for one that returns our anchors
    (:func:`cv_course.ops.grid_anchors` centres them on ``(k + 0.5) * stride``,
    torchvision on ``k * stride``), so both detectors see the same anchors.
    """
    from torchvision.models.detection import FasterRCNN as TVFasterRCNN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.ops import MultiScaleRoIAlign

    c, levels = config, len(config.anchor_sizes)
    return TVFasterRCNN(
        backbone, None, min_size=image_size, max_size=image_size, image_mean=list(c.image_mean),
        image_std=list(c.image_std), size_divisible=c.strides[-1],
        rpn_anchor_generator=_same_anchors(c),
        rpn_head=RPNHead(c.fpn_channels, c.num_anchors),
        rpn_pre_nms_top_n_train=c.rpn_pre_nms_top_n[0], rpn_pre_nms_top_n_test=c.rpn_pre_nms_top_n[1],
        rpn_post_nms_top_n_train=c.rpn_post_nms_top_n[0],
        rpn_post_nms_top_n_test=c.rpn_post_nms_top_n[1], rpn_nms_thresh=c.rpn_nms_thresh,
        rpn_fg_iou_thresh=c.rpn_fg_iou_thresh, rpn_bg_iou_thresh=c.rpn_bg_iou_thresh,
        rpn_batch_size_per_image=c.rpn_batch_size_per_image,
        rpn_positive_fraction=c.rpn_positive_fraction,
        box_roi_pool=MultiScaleRoIAlign([str(i) for i in range(levels)], c.roi_output_size,
                                        c.roi_sampling_ratio, canonical_scale=c.canonical_scale,
                                        canonical_level=c.canonical_level),
        box_head=TwoMLPHead(c.fpn_channels * c.roi_output_size**2, c.representation_size),
        box_predictor=FastRCNNPredictor(c.representation_size, c.num_classes),
        box_score_thresh=c.box_score_thresh, box_nms_thresh=c.box_nms_thresh,
        box_detections_per_img=c.detections_per_img, box_fg_iou_thresh=c.box_fg_iou_thresh,
        box_bg_iou_thresh=c.box_bg_iou_thresh, box_batch_size_per_image=c.box_batch_size_per_image,
        box_positive_fraction=c.box_positive_fraction, bbox_reg_weights=c.bbox_reg_weights)


def _same_anchors(config: FasterRCNNConfig) -> nn.Module:
    """torchvision's ``AnchorGenerator`` made to return our anchors (its type is checked)."""
    from torchvision.models.detection.rpn import AnchorGenerator

    class SameAnchors(AnchorGenerator):
        def forward(self, image_list, feature_maps: list[Tensor]) -> list[Tensor]:
            c = config
            anchors = torch.cat([grid_anchors(tuple(f.shape[-2:]), s, sizes, c.aspect_ratios,
                                              device=f.device, dtype=f.dtype)
                                 for f, s, sizes in zip(feature_maps, c.strides, c.anchor_sizes)])
            return [anchors] * len(image_list.image_sizes)  # [N, 4] per image

    return SameAnchors(config.anchor_sizes, (config.aspect_ratios,) * len(config.anchor_sizes))


def detection_map(predictions: list[dict], targets: list[dict]) -> dict[str, float]:
    """COCO box mAP of ``predictions`` against ``targets`` (lists of dicts, one per image)."""
    from ..metrics import mean_average_precision

    result = mean_average_precision(predictions, targets, iou_type="bbox")
    return {k: float(v) for k, v in result.items() if isinstance(v, (float, int)) or (
        isinstance(v, Tensor) and v.numel() == 1)}


@dataclass
class DetectionResult:
    name: str
    history: DetectionHistory = field(repr=False)
    model: nn.Module = field(repr=False)
    train_seconds: float  # wall time of the training steps
    seconds_per_step: float  # mean wall time of one training step (batch_size images)
    parameters: int


def train_loader(images: list[Tensor], targets: list[dict], setup: DetectionSetup) -> DataLoader:
    """Shuffled batches of ``(images, targets)`` with its own generator seeded by ``setup.seed``."""
    data = list(zip(images, targets))
    g = torch.Generator().manual_seed(setup.seed)
    return DataLoader(data, batch_size=setup.batch_size, shuffle=True, generator=g,
                      collate_fn=detection_collate)


def warmup_cosine(optimizer, warmup_steps: int, total_steps: int):
    """Linear warmup from 1/warmup_steps of the peak, then cosine decay to 0, per step."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_detector(name: str, setup: DetectionSetup | None = None, config=None, data=None,
                   device="cpu", progress: bool = False, max_seconds: float | None = None,
                   val_fn=None) -> DetectionResult:
    """Train detector ``name`` (see :func:`build_detector`) with :func:`fit_detector`.

    Args:
        setup, config: default the name's :class:`DetectorSpec` ones.
        data: ``(images, targets)`` training scenes to reuse; default
            ``make_scenes(setup.n_train, setup.data_seed, setup)``.
        max_seconds: optional wall-time budget.
    Returns:
        DetectionResult: the trained model (eval mode), its history and timings.
    """
    spec = detector_spec(name)
    setup = spec.setup if setup is None else setup
    config = spec.config if config is None else config
    scenes = spec.scenes or make_scenes
    images, targets = data if data is not None else scenes(setup.n_train, setup.data_seed, setup)
    loader = train_loader(images, targets, setup)
    with torch.random.fork_rng(devices=[]):  # the same initial weights for every run
        torch.manual_seed(setup.seed)
        model = spec.build(config)
    gen = torch.Generator().manual_seed(setup.seed)
    if spec.optimizer is not None:
        optimizer = spec.optimizer(model, setup)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=setup.lr,
                                      weight_decay=setup.weight_decay)
    augment = spec.augment or dihedral_augment
    scheduler = warmup_cosine(optimizer, setup.warmup_steps, setup.epochs * len(loader))
    history = fit_detector(model, loader, optimizer, setup.epochs, scheduler, device=device,
                           max_seconds=max_seconds, seed=setup.seed, progress=progress,
                           augment=lambda ims, ts: augment(ims, ts, gen), val_fn=val_fn)
    return DetectionResult(
        name=name, history=history, model=model.eval(), train_seconds=history.train_seconds,
        seconds_per_step=history.train_seconds / max(1, len(history.step_loss)),
        parameters=sum(p.numel() for p in model.parameters()))


def evaluate_detector(model: nn.Module, images: list[Tensor], targets: list[dict],
                      batch_size: int = 16) -> dict[str, float]:
    """Held-out COCO mAP and inference time of a trained detector (eval mode, no gradients).

    Returns:
        dict: the :func:`detection_map` entries (``map``, ``map_50``, ``map_75``, ...)
        plus ``seconds_per_image`` (inference wall time per image).
    """
    batches = [(images[i:i + batch_size], None) for i in range(0, len(images), batch_size)]
    start = time.perf_counter()
    predictions = predict(model, batches, device=next(model.parameters()).device)
    seconds = time.perf_counter() - start
    result = detection_map(predictions, targets)
    result["seconds_per_image"] = seconds / max(1, len(images))
    return result


def _cache_key(name: str, setup: DetectionSetup, config) -> str:
    spec = {"recipe": _RECIPE_VERSION, "name": name, "setup": dataclasses.asdict(setup),
            "config": dataclasses.asdict(config)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def trained_detector(name: str = "faster_rcnn", setup: DetectionSetup | None = None,
                     config=None, cache_dir=None, progress: bool = False,
                     val_fn=None) -> nn.Module:
    """A trained detector, loaded from the disk cache or trained on one CPU thread (and cached).

    The file name is a hash of (name, setup, config, recipe version); the cache
    folder is ``cache_dir``, else ``$CV_COURSE_CACHE``, else ``~/.cache/cv_course``.
    Returns the model on the CPU in eval mode with attributes ``train_seconds``
    (the original training time, also when loaded) and ``history`` (its
    :class:`DetectionHistory` as a dict).

    ``val_fn``: optional ``val_fn(model) -> float`` called after each training epoch
    when the model is trained here (not when it is loaded), recorded in
    ``history["val_metric"]`` (e.g. a held-out convergence curve). It must not change
    the model or draw random numbers, so the cached weights are those trained without it.
    """
    spec = detector_spec(name)
    setup = spec.setup if setup is None else setup
    config = spec.config if config is None else config
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / f"detector_{name}_{_cache_key(name, setup, config)}.pt"
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        with torch.random.fork_rng(devices=[]):
            model = spec.build(config.replace(pretrained=False))  # weights come next
        model.load_state_dict(saved["state_dict"])
        model.train_seconds, model.history = float(saved["train_seconds"]), saved["history"]
        return model.eval()
    with one_thread():
        result = train_detector(name, setup, config, progress=progress, val_fn=val_fn)
    model = result.model
    model.train_seconds, model.history = result.train_seconds, dataclasses.asdict(result.history)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"state_dict": model.state_dict(), "train_seconds": model.train_seconds,
                "history": model.history}, tmp)
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return model


def time_two_stage(faster_rcnn: nn.Module, images: list[Tensor], rcnn_images: int = 1,
                   config: FasterRCNNConfig = FasterRCNNConfig()) -> list[dict]:
    """Inference time per image of R-CNN, Fast R-CNN and Faster R-CNN (eval mode, CPU).

    R-CNN and Fast R-CNN use the ~2,000 sliding-window proposals of
    :func:`cv_course.models.detection.sliding_window_proposals` and the shape
    classifier's body (untrained heads with a score threshold of 1, so no time goes
    into post-processing their arbitrary scores: what is timed is the network work).
    R-CNN runs on the first ``rcnn_images`` images only (it is that slow).

    Returns:
        list of dicts ``name``, ``seconds_per_image``, ``cnn_passes_per_image``,
        ``proposals_per_image``.
    """
    from ..models.detection import RCNN, FastRCNN, sliding_window_proposals

    size = tuple(images[0].shape[-2:])
    n_windows = sliding_window_proposals(size).shape[0]
    quiet = config.replace(box_score_thresh=1.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        models = [("R-CNN", RCNN(config.num_classes, quiet), images[:rcnn_images], n_windows),
                  ("Fast R-CNN", FastRCNN(config.num_classes, quiet), images, 1),
                  ("Faster R-CNN", faster_rcnn, images, 1)]
    rows = []
    for name, model, ims, passes in models:
        model.eval()
        with torch.no_grad():
            model(ims[:1])  # warm-up
            start = time.perf_counter()
            for im in ims:  # one image at a time: time per image, not per batch
                model([im])
            seconds = (time.perf_counter() - start) / len(ims)
        proposals = config.rpn_post_nms_top_n[1] if name == "Faster R-CNN" else n_windows
        rows.append({"name": name, "seconds_per_image": seconds,
                     "cnn_passes_per_image": passes, "proposals_per_image": proposals})
    return rows


__all__ = ["MODEL_NAMES", "DetectionSetup", "DetectorSpec", "detector_names", "detector_spec",
           "DetectionResult", "make_scenes", "dihedral_augment",
           "build_backbone", "build_detector", "torchvision_faster_rcnn", "detection_map",
           "train_loader", "warmup_cosine", "train_detector", "evaluate_detector",
           "trained_detector", "time_two_stage"]

"""Train and compare the course's segmentation models on generated scenes.

One function, :func:`train_and_evaluate`, builds a model by name, trains it with
:func:`cv_course.train.fit` and per-pixel cross-entropy, and scores it by mean IoU
on held-out scenes (a different scene seed, so no training scene is reused).
``benchmarks/segmentation.py`` and the segmentation chapter both call it, so the
numbers in the book are the numbers of the benchmark.

Models (``MODEL_NAMES``): FCN-32s/16s/8s (Long, Shelhamer, Darrell, CVPR 2015) and
U-Net with and without skip connections (Ronneberger et al., MICCAI 2015).

:func:`cached_train_and_evaluate` keeps each trained model on disk (weights,
history, scores), keyed by a hash of the setup, as
:func:`cv_course.models.shapes_classifier` does: the book's FCN/U-Net chapter
loads the models in seconds instead of training them for minutes inside the
notebook's execution timeout (``make book`` trains them first, outside it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..data import NUM_CLASSES, SegmentationScenes
from ..losses import pixel_cross_entropy
from ..metrics import MeanIoU, iou_from_confusion
from ..models import FCN, UNet
from ..models.classifier import default_cache_dir
from ..train import History, evaluate, fit

MODEL_NAMES = ("fcn32s", "fcn16s", "fcn8s", "unet", "unet-noskip")

# Bump when a model, the loss or the training loop changes in a way that changes
# the trained weights: old cache files then stop matching instead of being reused.
_RECIPE_VERSION = 1


@dataclass
class SegmentationSetup:
    """Data, model sizes and training budget shared by every model in a comparison.

    The defaults are small and quick (the segmentation chapter starts from them);
    ``BENCHMARK_SETUP`` is the larger budget of ``benchmarks/segmentation.py``.
    """

    size: int = 64  # scene height = width in pixels
    n_train: int = 1024  # training scenes (scene seed ``seed``)
    n_val: int = 128  # held-out scenes (scene seed ``seed + 1``: disjoint from training)
    min_scale: float = 0.25  # object diameter range, as a fraction of the image size
    max_scale: float = 0.5
    epochs: int = 8
    batch_size: int = 16
    lr: float = 3e-3  # peak learning rate of the one-cycle schedule (Adam)
    warmup: float = 0.3  # fraction of the steps spent raising the learning rate to its peak
    unet_channels: int = 16  # U-Net base_channels
    unet_depth: int = 3
    fcn_channels: tuple[int, ...] = (16, 32, 64, 128, 128)  # FCN backbone stage widths
    fcn_head_channels: int = 256
    seed: int = 0  # scenes, initialisation and shuffling
    amp: bool = False  # bfloat16 mixed precision for training (see cv_course.train.fit)


# The benchmark's budget: 64x64 scenes (objects 16-32 pixels across), 1024 steps of
# batch 16, bfloat16 autocast. U-Net (depth 4: a 4x4 bottleneck) reaches a held-out
# mIoU of about 0.92 in about two minutes on one core of a 2-core CPU.
BENCHMARK_SETUP = SegmentationSetup(n_train=2048, n_val=256, lr=1e-2, unet_depth=4, amp=True)


@dataclass
class SegmentationResult:
    name: str
    miou: float  # mean IoU on the held-out scenes
    per_class_iou: list[float]  # IoU per class (background first)
    train_seconds: float  # wall time of fit(), validation after each epoch included
    parameters: int
    history: History = field(repr=False)
    model: nn.Module = field(repr=False)
    from_cache: bool = False  # True when the weights were loaded, not trained by this call


def build_model(name: str, setup: SegmentationSetup | None = None,
                num_classes: int = NUM_CLASSES) -> nn.Module:
    """The model called ``name`` (one of ``MODEL_NAMES``) at the sizes of ``setup``."""
    s = setup or SegmentationSetup()
    if name in ("fcn32s", "fcn16s", "fcn8s"):
        return FCN(num_classes, name[3:], channels=s.fcn_channels,
                   head_channels=s.fcn_head_channels)
    if name in ("unet", "unet-noskip"):
        return UNet(3, num_classes, s.unet_channels, s.unet_depth, skip_connections=name == "unet")
    raise ValueError(f"unknown model {name!r}; choose from {MODEL_NAMES}")


def make_loaders(setup: SegmentationSetup | None = None) -> tuple[DataLoader, DataLoader]:
    """Training and held-out loaders of generated scenes, generated once into memory.

    The training loader shuffles with its own generator seeded by ``setup.seed``.
    """
    s = setup or SegmentationSetup()
    kw = dict(size=s.size, min_scale=s.min_scale, max_scale=s.max_scale)
    loaders = []
    for n, seed, shuffle in ((s.n_train, s.seed, True), (s.n_val, s.seed + 1, False)):
        scenes = SegmentationScenes(n, seed=seed, **kw)
        images = torch.stack([scenes[i][0] for i in range(n)])  # [n, 3, size, size]
        labels = torch.stack([scenes[i][1] for i in range(n)])  # [n, size, size]
        g = torch.Generator().manual_seed(s.seed)
        loaders.append(DataLoader(TensorDataset(images, labels), batch_size=s.batch_size,
                                  shuffle=shuffle, generator=g if shuffle else None))
    return loaders[0], loaders[1]


def train_and_evaluate(name: str, setup: SegmentationSetup | None = None, loaders=None,
                       device=None, progress: bool = False,
                       max_seconds: float | None = None) -> SegmentationResult:
    """Train model ``name`` on generated scenes and measure its held-out mean IoU.

    Args:
        name: one of ``MODEL_NAMES``.
        setup: data and budget; default :class:`SegmentationSetup`.
        loaders: ``(train_loader, val_loader)`` to reuse (e.g. across models);
            default ``make_loaders(setup)``.
        device: default :func:`cv_course.default_device`.
        progress: tqdm bars (to stdout).
        max_seconds: optional wall-time budget for training.
    Returns:
        SegmentationResult: mIoU, IoU per class, training time, history and the model.
    """
    s = setup or SegmentationSetup()
    train_loader, val_loader = loaders or make_loaders(s)
    if train_loader.generator is not None:
        # a reused loader would otherwise continue its shuffle where the previous
        # model left it: every model sees the same batches in the same order
        train_loader.generator.manual_seed(s.seed)
    torch.manual_seed(s.seed)  # the same initialisation on every run
    model = build_model(name, s)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=s.lr, epochs=s.epochs, steps_per_epoch=len(train_loader),
        pct_start=s.warmup)
    meter = MeanIoU(NUM_CLASSES)
    history = fit(model, train_loader, pixel_cross_entropy, optimizer, epochs=s.epochs,
                  device=device, val_loader=val_loader, metric_fn=meter, scheduler=scheduler,
                  scheduler_interval="step", progress=progress, max_seconds=max_seconds,
                  seed=s.seed, amp=s.amp)
    miou = evaluate(model, val_loader, meter)
    return SegmentationResult(
        name=name, miou=miou, per_class_iou=iou_from_confusion(meter.confusion).tolist(),
        train_seconds=history.total_seconds, history=history, model=model,
        parameters=sum(p.numel() for p in model.parameters()))


def cache_key(name: str, setup: SegmentationSetup | None = None) -> str:
    """A short hash of everything that determines the trained weights of model ``name``."""
    spec = {"recipe": _RECIPE_VERSION, "name": name,
            **dataclasses.asdict(setup or SegmentationSetup())}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def cached_train_and_evaluate(name: str, setup: SegmentationSetup | None = None,
                              cache_dir=None, **kwargs) -> SegmentationResult:
    """:func:`train_and_evaluate`, with the result kept on disk and loaded when it is there.

    The file ``segmentation_<name>_<hash>.pt`` under ``cache_dir`` (default
    ``$CV_COURSE_CACHE`` or ``~/.cache/cv_course``) holds the weights, the
    :class:`History`, the scores and the original training time; the hash covers
    ``name``, every field of ``setup`` and a recipe version. Loaded results have
    ``from_cache=True`` and report the ``train_seconds`` of the run that made them.
    Keyword arguments go to :func:`train_and_evaluate` on a cache miss (the device
    and progress bars; ``loaders`` must be ``make_loaders(setup)`` for the key to hold).
    """
    s = setup or SegmentationSetup()
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = base / f"segmentation_{name}_{cache_key(name, s)}.pt"
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model(name, s)
        model.load_state_dict(saved["state_dict"])
        return SegmentationResult(
            name=name, miou=saved["miou"], per_class_iou=saved["per_class_iou"],
            train_seconds=saved["train_seconds"], history=History(**saved["history"]),
            model=model.eval(), parameters=sum(p.numel() for p in model.parameters()),
            from_cache=True)
    r = train_and_evaluate(name, s, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in r.model.state_dict().items()}
    saved = {"state_dict": state, "miou": r.miou, "per_class_iou": r.per_class_iou,
             "train_seconds": r.train_seconds, "history": dataclasses.asdict(r.history)}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(saved, tmp)
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return r


def compare(names=MODEL_NAMES, setup: SegmentationSetup | None = None, device=None,
            progress: bool = False) -> list[SegmentationResult]:
    """Train every model in ``names`` on the same scenes with the same budget."""
    s = setup or SegmentationSetup()
    loaders = make_loaders(s)
    return [train_and_evaluate(n, s, loaders, device, progress) for n in names]


def format_table(results: list[SegmentationResult]) -> str:
    """A Markdown table of name, parameters, held-out mIoU and training time."""
    lines = ["| model | parameters | held-out mIoU | training time (s) |",
             "|---|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.name} | {r.parameters:,} | {r.miou:.3f} | {r.train_seconds:.1f} |")
    return "\n".join(lines)


# The four models and the budget of the book's FCN/U-Net chapter; `make book`
# trains them into the cache before the chapter runs (python -m cv_course.experiments.segmentation).
CHAPTER_MODELS = ("fcn32s", "fcn8s", "unet-noskip", "unet")
CHAPTER_SETUP = SegmentationSetup(size=64, n_train=512, n_val=64, epochs=8, batch_size=8)


def warm_chapter_cache() -> None:
    """Train (or find) the chapter's models in the cache, one line per model on stdout."""
    for name in CHAPTER_MODELS:
        r = cached_train_and_evaluate(name, CHAPTER_SETUP)
        how = "cached" if r.from_cache else "trained"
        print(f"{name}: {how}, mIoU {r.miou:.3f}, trained in {r.train_seconds:.0f} s", flush=True)


__all__ = ["MODEL_NAMES", "BENCHMARK_SETUP", "CHAPTER_MODELS", "CHAPTER_SETUP", "SegmentationSetup",
           "SegmentationResult", "build_model", "make_loaders", "train_and_evaluate",
           "cached_train_and_evaluate", "cache_key", "compare", "format_table", "warm_chapter_cache"]


if __name__ == "__main__":
    warm_chapter_cache()

"""A small shape classifier worth explaining: conv body, global average pooling, linear head.

The head follows Zhou et al., "Learning Deep Features for Discriminative
Localization" (CVPR 2016): with global average pooling (GAP) straight before
one linear layer, the class score is a spatial average of per-position scores,
so class activation maps (CAM) apply exactly. ``.features`` is the conv body
and ``.fc`` the head, the two pieces ``cv_course.interpret.cam`` takes.

:func:`shapes_classifier` trains it on ``cv_course.data.ClassificationScenes``
(circle / square / triangle / star on textured backgrounds) on the CPU, from
one seed, and caches the weights on disk, so the book and the tests get the
same trained model in a few seconds the second time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..device import one_thread

# Bump when the architecture or the training recipe changes: old cache files
# then stop matching instead of loading into a different model.
_RECIPE_VERSION = 1


@dataclass(frozen=True)
class ClassifierConfig:
    num_classes: int = 4  # output classes (ClassificationScenes: circle, square, triangle, star)
    in_channels: int = 3  # image channels
    widths: tuple[int, ...] = (16, 32, 64, 64, 64)  # output channels of each 3x3 conv stage
    pools: int = 3  # 2x max pools, before stages 2 .. pools + 1: output stride 2**pools
    image_size: int = 64  # training images are image_size x image_size
    n_train: int = 3000  # training scenes (ClassificationScenes with seed=data_seed)
    data_seed: int = 0  # seed of the training scenes (held-out sets use other seeds)
    epochs: int = 8  # passes over the training scenes
    batch_size: int = 64  # images per step
    lr: float = 4e-3  # peak learning rate of AdamW (one-cycle schedule)
    weight_decay: float = 1e-4  # AdamW weight decay


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 conv + BatchNorm + ReLU, the building block of the body (size-preserving)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


class ShapeClassifier(nn.Module):
    """``fc(mean over positions of features(x))``.

    ``features``: one conv stage per entry of ``widths``, with a 2x max pool
    before stages 2 .. ``pools`` + 1, so Tensor[N, C, H, W] ->
    Tensor[N, widths[-1], H / 2**pools, W / 2**pools] (8 x 8 for 64 x 64 input
    with the default 3 pools). The stages after the last pool cost little at
    that resolution and widen the receptive field, so that a position near the
    object's centre sees the whole object. ``fc``: nn.Linear(widths[-1], num_classes).
    Input: images in [0, 1]; output: class scores (logits) Tensor[N, num_classes].
    """

    def __init__(self, config: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = config.in_channels
        if not 0 <= config.pools < len(config.widths):
            raise ValueError(f"pools must be in [0, {len(config.widths)}), got {config.pools}")
        for i, c_out in enumerate(config.widths):
            if 0 < i <= config.pools:
                layers.append(nn.MaxPool2d(2))
            layers.append(_stage(c_in, c_out))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, config.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        f = self.features(x)  # [N, K, h, w]
        return self.fc(f.mean(dim=(2, 3)))  # GAP, then [N, num_classes]


def scene_tensors(n: int, seed: int, size: int = 64, return_mask: bool = False):
    """``n`` classification scenes stacked into tensors.

    Returns:
        (images Tensor[n, 3, size, size] float32 in [0, 1], labels Tensor[n] int64)
        and, with ``return_mask=True``, masks Tensor[n, size, size] bool as a third item.
    """
    from cv_course.data import ClassificationScenes  # keeps models importable on its own

    ds = ClassificationScenes(n, size=size, seed=seed, return_mask=return_mask)
    items = [ds[i] for i in range(n)]  # generation is per scene (about 1 ms each)
    return tuple(torch.stack(column) for column in zip(*items))


def augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """Random label-preserving changes to a batch Tensor[B, 3, H, W] (square images).

    Shape classes do not change under rotations by 90 degrees and mirroring (the
    8 symmetries of the square), and object colour is independent of the class,
    so the colour channels may be shuffled. Together they multiply the variety
    of a few thousand scenes many times over at no cost.
    """
    B = x.shape[0]
    k = int(torch.randint(4, (1,), generator=gen))  # one rotation for the batch
    x = torch.rot90(x, k, dims=(2, 3))
    flip = (torch.rand(B, generator=gen) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    perm = torch.argsort(torch.rand(B, 3, generator=gen), dim=1).to(x.device)  # [B, 3]
    return x.gather(1, perm[:, :, None, None].expand_as(x))


def train_classifier(config: ClassifierConfig = ClassifierConfig(), seed: int = 0) -> ShapeClassifier:
    """Train a :class:`ShapeClassifier` on one CPU thread; deterministic given (config, seed).

    ``seed`` sets the initial weights, the batch order and the augmentations;
    the training scenes come from ``config.data_seed``. The global RNG is left
    as it was. Returns the model in eval mode.
    """
    with one_thread():
        images, labels = scene_tensors(config.n_train, config.data_seed, config.image_size)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching global state
            torch.manual_seed(seed)
            model = ShapeClassifier(config)
        gen = torch.Generator().manual_seed(seed)
        steps_per_epoch = -(-config.n_train // config.batch_size)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch
        )
        model.train()
        for _ in range(config.epochs):  # sequential: each step updates the weights
            for idx in torch.randperm(config.n_train, generator=gen).split(config.batch_size):
                loss = F.cross_entropy(model(augment(images[idx], gen)), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return model.eval()


def default_cache_dir() -> Path:
    """``$CV_COURSE_CACHE`` if set, else ``~/.cache/cv_course``."""
    return Path(os.environ.get("CV_COURSE_CACHE", Path.home() / ".cache" / "cv_course"))


def _config_key(config: ClassifierConfig, seed: int) -> str:
    """A short hash of everything that determines the trained weights."""
    spec = {"recipe": _RECIPE_VERSION, "seed": seed, **dataclasses.asdict(config)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def shapes_classifier(
    seed: int = 0, config: ClassifierConfig = ClassifierConfig(), cache_dir=None
) -> ShapeClassifier:
    """The trained shape classifier, loaded from the disk cache or trained (and cached).

    Args:
        seed (int): initial weights and batch order; different seeds give
            different models of similar accuracy (e.g. for transfer attacks).
        config (ClassifierConfig): architecture and training recipe.
        cache_dir (str or Path, optional): where weights are cached; default
            ``$CV_COURSE_CACHE`` or ``~/.cache/cv_course``. The file name is a
            hash of (config, seed, recipe version).
    Returns:
        ShapeClassifier on the CPU in eval mode, with attribute
        ``train_seconds`` (float; the original training time, also when loaded).
    """
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / f"shapes_classifier_{_config_key(config, seed)}.pt"
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = ShapeClassifier(config)
        model.load_state_dict(saved["state_dict"])
        model.train_seconds = float(saved["train_seconds"])
        return model.eval()
    start = time.perf_counter()
    model = train_classifier(config, seed)
    model.train_seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"state_dict": model.state_dict(), "train_seconds": model.train_seconds}, tmp)
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return model

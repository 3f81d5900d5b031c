"""Measurements for the "understanding CNNs" chapter, on the trained shape classifier.

* :func:`pointing_game_table`: does each explanation method's heatmap peak on the
  object (the scenes' masks are exact), and how long does it take per image?
* :func:`fgsm_curve`, :func:`attack_comparison`: accuracy under FGSM as the
  budget eps grows, and PGD against FGSM at the same eps.
* :func:`transfer_table`: adversarial images made on one model, shown to another
  trained from a different seed.

``benchmarks/interpret.py`` and the chapter both call these functions, so the
numbers in the book are the numbers of the benchmark. Held-out scenes use scene
seed :data:`HELD_OUT_SEED`; the classifier trains on seed 0, so no scene is shared.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..interpret import (
    cam,
    fgsm,
    grad_cam,
    occlusion,
    occlusion_to_image,
    pgd,
    pointing_game,
    saliency,
)
from ..models.classifier import scene_tensors

HELD_OUT_SEED = 1  # scene seed of evaluation scenes (training uses ClassifierConfig.data_seed = 0)


def held_out_scenes(n: int = 500, size: int = 64, seed: int = HELD_OUT_SEED):
    """(images Tensor[n, 3, size, size], labels Tensor[n], masks Tensor[n, size, size] bool)."""
    return scene_tensors(n, seed=seed, size=size, return_mask=True)


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    """Fraction of ``images`` (Tensor[N, 3, H, W]) whose top class is ``labels`` (Tensor[N])."""
    was_training = model.training
    model.eval()
    try:
        correct = sum(
            int((model(x).argmax(1) == y).sum())
            for x, y in zip(images.split(batch_size), labels.split(batch_size))
        )
    finally:
        model.train(was_training)
    return correct / max(len(labels), 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def centre_map(images: Tensor, target=None) -> Tensor:
    """A "method" that ignores the image and always points at its centre, Tensor[N, 3, 3].

    The control for the pointing game: a method must beat it to show that it
    looks at the object rather than at where objects usually are.
    """
    heat = images.new_zeros(images.shape[0], 3, 3)
    heat[:, 1, 1] = 1.0  # upsampled, the peak is the image's central pixel
    return heat


def default_methods(model: nn.Module) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """The heatmap methods the chapter compares, each ``(images, target) -> [N, h, w]``.

    Grad-CAM and CAM at the last feature map, vanilla saliency, occlusion with a
    grey 8 x 8 patch moved 4 pixels at a time (its 15 x 15 map placed on the
    patch centres at image resolution, see :func:`occlusion_to_image`), and the
    image-centre control.
    """

    patch, stride = 8, 4

    def occlusion_map(x: Tensor, t: Tensor) -> Tensor:
        heat = occlusion(model, x, t, patch, stride, baseline=0.5)  # [N, 15, 15] for 64 x 64
        return occlusion_to_image(heat, tuple(x.shape[-2:]), patch, stride)  # [N, H, W]

    return {
        "Grad-CAM (last conv)": lambda x, t: grad_cam(model, model.features, x, t),
        "CAM": lambda x, t: cam(model.features, model.fc, x, t),
        "saliency": lambda x, t: saliency(model, x, t),
        "occlusion 8x8 / 4": occlusion_map,
        "image centre (control)": centre_map,
    }


@dataclass
class PointingRow:
    method: str
    hit_rate: float  # pointing-game accuracy, no tolerance
    hit_rate_tol: float  # with the mask grown by `tolerance` pixels
    ms_per_image: float  # wall time of the method, per image
    n: int  # images evaluated
    resolution: tuple[int, int]  # (h, w) of the raw heatmap


def pointing_game_table(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    masks: Tensor,
    methods: dict[str, Callable] | None = None,
    limits: dict[str, int] | None = None,
    tolerance: int = 4,
    batch_size: int = 100,
) -> list[PointingRow]:
    """Pointing game and time per image for each heatmap method.

    Args:
        model: the classifier (heatmaps are for the true class ``labels``).
        images (Tensor[N, 3, H, W]), labels (Tensor[N]), masks (Tensor[N, H, W] bool).
        methods: name -> ``fn(images, target)``; default :func:`default_methods`.
        limits: name -> number of images to use (e.g. fewer for occlusion, which
            runs one forward pass per patch position).
        tolerance (int): pixels for the second hit rate (Zhang et al. use 15 px
            at 224 px; 4 px is the same fraction of a 64-px image).
        batch_size (int): images per call, so memory stays bounded.
    Returns:
        list[PointingRow], one per method.
    """
    methods = default_methods(model) if methods is None else methods
    limits = limits or {}
    device = next(model.parameters()).device
    images, labels, masks = images.to(device), labels.to(device), masks.to(device)
    rows = []
    for name, fn in methods.items():
        n = min(limits.get(name, len(images)), len(images))
        fn(images[:2], labels[:2])  # warm-up (lazy initialisation, CUDA kernels)
        _sync(device)
        start = time.perf_counter()
        heat = torch.cat([fn(x, t) for x, t in zip(images[:n].split(batch_size), labels[:n].split(batch_size))])
        _sync(device)
        seconds = time.perf_counter() - start
        rows.append(
            PointingRow(
                method=name,
                hit_rate=pointing_game(heat, masks[:n]),
                hit_rate_tol=pointing_game(heat, masks[:n], tolerance=tolerance),
                ms_per_image=1000 * seconds / n,
                n=n,
                resolution=tuple(heat.shape[1:]),
            )
        )
    return rows


def fgsm_curve(
    model: nn.Module, images: Tensor, labels: Tensor, eps_values: Sequence[float]
) -> list[tuple[float, float]]:
    """Accuracy on FGSM images for each budget: ``[(eps, accuracy), ...]`` (eps = 0 is clean)."""
    return [(eps, accuracy(model, fgsm(model, images, labels, eps), labels)) for eps in eps_values]


def eps_where_accuracy_drops_below(curve: Sequence[tuple[float, float]], level: float = 0.2):
    """The smallest eps in ``curve`` (sorted by eps) whose accuracy is below ``level``, or None."""
    for eps, acc in sorted(curve):
        if acc < level:
            return eps
    return None


@dataclass
class AttackRow:
    eps: float
    fgsm: float  # accuracy on FGSM images
    pgd: float  # accuracy on PGD images (same eps)


def attack_comparison(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    eps_values: Sequence[float],
    steps: int = 10,
    seed: int = 0,
) -> list[AttackRow]:
    """FGSM against PGD (``steps`` steps of eps / 4, random start) at equal eps."""
    device = next(model.parameters()).device
    rows = []
    for eps in eps_values:
        gen = torch.Generator(device=device).manual_seed(seed)
        adv = pgd(model, images, labels, eps, alpha=eps / 4, steps=steps, generator=gen)
        rows.append(
            AttackRow(
                eps=eps,
                fgsm=accuracy(model, fgsm(model, images, labels, eps), labels),
                pgd=accuracy(model, adv, labels.to(device)),
            )
        )
    return rows


@dataclass
class TransferRow:
    eps: float
    attack: str  # "fgsm" or "pgd"
    source: float  # source model's accuracy on its own adversarial images (white box)
    target: float  # the other model's accuracy on the same images (black box, transfer)
    target_noise: float  # the other model's accuracy under random +-eps sign noise


def transfer_table(
    source: nn.Module,
    target: nn.Module,
    images: Tensor,
    labels: Tensor,
    eps_values: Sequence[float],
    steps: int = 10,
    seed: int = 0,
) -> list[TransferRow]:
    """Do adversarial images made on ``source`` fool ``target``?

    Random sign noise of the same size is the control: if it hurts ``target``
    as much as the transferred attack, the attack carried nothing specific.
    """
    device = next(source.parameters()).device
    images, labels = images.to(device), labels.to(device)
    rows = []
    for eps in eps_values:
        gen = torch.Generator(device=device).manual_seed(seed)
        signs = torch.randint(0, 2, images.shape, generator=gen, device=device) * 2 - 1
        noisy = (images + eps * signs).clamp(0, 1)
        adversarial = {
            "fgsm": fgsm(source, images, labels, eps),
            "pgd": pgd(source, images, labels, eps, alpha=eps / 4, steps=steps, generator=gen),
        }
        for name, adv in adversarial.items():
            rows.append(
                TransferRow(
                    eps=eps,
                    attack=name,
                    source=accuracy(source, adv, labels),
                    target=accuracy(target, adv, labels),
                    target_noise=accuracy(target, noisy, labels),
                )
            )
    return rows

"""One training loop for every detector of the course, ours and torchvision's.

A detector follows torchvision's interface: in train mode
``model(images, targets)`` returns a dict of named losses (``loss_objectness``,
``loss_rpn_box_reg``, ``loss_classifier``, ``loss_box_reg`` for Faster R-CNN);
in eval mode ``model(images)`` returns one dict of ``boxes``, ``labels`` and
``scores`` per image. The loop minimises the sum of the losses and records
each one, so one loop and one plot serve every detector, and a comparison of
two detectors differs only in the model.

Batches are ``(images, targets)`` as :func:`cv_course.data.detection_collate`
makes them: a list of Tensor[3, H, W] and a list of dicts.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from .device import default_device
from .train import History, _check_finite, to_device


@dataclass
class DetectionHistory(History):
    """:class:`cv_course.train.History` plus each named loss of each step.

    ``losses["loss_classifier"][s]`` is that loss at step s; ``train_loss`` and
    ``step_loss`` hold their sum. ``images`` counts the training images seen.
    """

    losses: dict[str, list[float]] = field(default_factory=dict)
    images: int = 0
    train_seconds: float = 0.0  # wall time of the training steps alone (no validation)

    @property
    def images_per_second(self) -> float:
        """Training throughput: images per second of training steps."""
        return self.images / self.train_seconds if self.train_seconds else 0.0

    def plot_losses(self, ax=None):
        """Each named loss per step; returns the matplotlib Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        for name, values in self.losses.items():
            ax.plot(range(1, len(values) + 1), values, lw=1, label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.legend()
        return ax


def fit_detector(
    model: nn.Module,
    train_loader,
    optimizer: torch.optim.Optimizer,
    epochs: int = 1,
    scheduler=None,
    device: torch.device | str | None = None,
    max_seconds: float | None = None,
    seed: int | None = None,
    progress: bool = True,
    stream=None,
    augment: Callable | None = None,
    val_fn: Callable[[nn.Module], float] | None = None,
) -> DetectionHistory:
    """Train a detector: each step minimises ``sum(model(images, targets).values())``.

    Args:
        model: a detector with torchvision's interface (see the module docstring).
        train_loader: iterable of ``(images, targets)`` batches.
        optimizer: e.g. ``torch.optim.AdamW(model.parameters(), lr=1e-3)``.
        epochs: passes over ``train_loader``.
        scheduler: a ``torch.optim.lr_scheduler``, stepped after every step
            (detectors are trained for a number of steps, with warmup).
        device: default :func:`cv_course.default_device`.
        max_seconds: wall-time budget; stops after the step that exceeds it and
            sets ``stopped_early``.
        seed: ``torch.manual_seed(seed)`` first (sampling inside the losses and
            ``DataLoader`` shuffling); seed the model's initialisation yourself.
        progress: print one line per epoch (losses, images/s, time) to ``stream``.
        stream: default ``sys.stdout`` (nbgrader fails cells that write to stderr).
        augment: optional ``augment(images, targets) -> (images, targets)``
            applied to each training batch (on the device).
        val_fn: optional ``val_fn(model) -> float`` called after each epoch
            (e.g. held-out mAP); recorded in ``val_metric``.
    Returns:
        DetectionHistory: the summed loss and each named loss per step, per-epoch
        means, wall times, images seen.
    Raises:
        FloatingPointError: at the end of an epoch in which a loss was NaN or inf.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if seed is not None:
        torch.manual_seed(seed)
    device = default_device() if device is None else torch.device(device)
    model.to(device)
    stream = sys.stdout if stream is None else stream
    history = DetectionHistory()
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        history.lr.append(optimizer.param_groups[0]["lr"])
        steps = _train_one_epoch(model, train_loader, optimizer, scheduler, device, augment,
                                 history, start, max_seconds)
        if not steps:
            raise ValueError("train_loader yielded no batches")
        names = list(steps[0])
        values = torch.stack([torch.stack([s[k] for k in names]) for s in steps]).tolist()
        totals = [sum(v) for v in values]  # one device sync per epoch, not per step
        _check_finite(totals, len(history.step_loss), epoch)
        for j, name in enumerate(names):
            history.losses.setdefault(name, []).extend(v[j] for v in values)
        history.step_loss += totals
        history.train_loss.append(sum(totals) / len(totals))
        if val_fn is not None:
            history.val_metric.append(float(val_fn(model)))
        history.seconds.append(time.perf_counter() - start)
        if progress:
            print(_epoch_line(history, epoch, epochs, names, len(steps)), file=stream, flush=True)
        if max_seconds is not None and history.seconds[-1] > max_seconds:
            history.stopped_early = epoch + 1 < epochs
            break
    model.eval()
    return history


def _train_one_epoch(model, loader, optimizer, scheduler, device, augment, history, start,
                     max_seconds) -> list[dict[str, Tensor]]:
    """One pass over ``loader``; returns each step's detached named losses."""
    steps = []
    epoch_start = time.perf_counter()
    for batch in loader:
        images, targets = to_device((batch[0], batch[1]), device)
        if augment is not None:
            images, targets = augment(images, targets)
        loss_dict = model(images, targets)
        if not isinstance(loss_dict, dict):
            raise TypeError("in train mode a detector must return a dict of named losses, "
                            f"got {type(loss_dict).__name__}")
        loss = sum(loss_dict.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        steps.append({k: v.detach() for k, v in loss_dict.items()})
        history.images += len(images)
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    history.train_seconds += time.perf_counter() - epoch_start
    return steps


def _epoch_line(history: DetectionHistory, epoch: int, epochs: int, names, steps: int) -> str:
    parts = " ".join(f"{n.removeprefix('loss_')} {sum(history.losses[n][-steps:]) / steps:.3f}"
                     for n in names)
    line = (f"epoch {epoch + 1}/{epochs}: loss {history.train_loss[-1]:.3f} ({parts}), "
            f"{history.images_per_second:.1f} img/s, {history.seconds[-1]:.0f} s")
    if history.val_metric:
        line += f", val {history.val_metric[-1]:.3f}"
    return line


__all__ = ["DetectionHistory", "fit_detector"]

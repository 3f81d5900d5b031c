"""The training loop every model in the course uses: ``fit``, ``evaluate``, ``predict``.

One loop for classifiers, segmenters and detectors: a batch is ``(inputs,
targets)``, the model is called as ``model(inputs)`` and the loss as
``loss_fn(output, targets)``. Inputs and targets may be tensors or any nesting of
dicts, lists and tuples of tensors (detection targets are a list of dicts); all
of it is moved to the device by :func:`to_device`.

Progress bars (``tqdm.auto``) go to stdout by default. nbgrader gives a cell zero
marks if it writes anything to *stderr*, so keep the default stream in
assignments, or pass ``progress=False``.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .device import default_device


def to_device(obj: Any, device: torch.device | str) -> Any:
    """Move a tensor, or every tensor inside nested dicts/lists/tuples, to ``device``.

    Anything else (ints, strings, None) is returned unchanged.
    """
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        moved = [to_device(v, device) for v in obj]
        return type(obj)(*moved) if hasattr(obj, "_fields") else type(obj)(moved)
    return obj


def _split_batch(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], batch[1]
    length = len(batch) if hasattr(batch, "__len__") else "?"
    raise ValueError(f"a batch must be (inputs, targets, ...); got {type(batch).__name__} "
                     f"of length {length}")


@dataclass
class History:
    """What :func:`fit` measured.

    ``train_loss[e]`` is the mean loss of epoch e, ``step_loss`` the loss of every
    step, ``val_metric[e]`` the validation metric after epoch e (empty without a
    validation loader), ``seconds[e]`` the wall time since the start at the end of
    epoch e (validation included).
    """

    train_loss: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)
    val_metric: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)  # learning rate of each epoch (first group)
    stopped_early: bool = False  # True when max_seconds ended training before ``epochs``

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    @property
    def total_seconds(self) -> float:
        return self.seconds[-1] if self.seconds else 0.0

    def plot(self, ax=None, metric_name: str = "validation metric"):
        """Loss per step (faint), per epoch (bold) and the validation metric (right axis).

        Returns the matplotlib Axes of the loss.
        """
        import matplotlib.pyplot as plt  # lazily: importing cv_course.train stays cheap

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        if self.step_loss:
            steps_per_epoch = len(self.step_loss) / max(self.epochs, 1)
            x = [(i + 1) / steps_per_epoch for i in range(len(self.step_loss))]
            ax.plot(x, self.step_loss, color="C0", alpha=0.3, lw=1, label="loss (step)")
        epochs = list(range(1, self.epochs + 1))
        ax.plot(epochs, self.train_loss, "o-", color="C0", label="loss (epoch mean)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        handles = ax.get_lines()
        if self.val_metric:
            ax2 = ax.twinx()
            handles += ax2.plot(epochs[: len(self.val_metric)], self.val_metric, "s-", color="C1",
                                label=metric_name)
            ax2.set_ylabel(metric_name, color="C1")
        ax.legend(handles=handles, loc="center right")  # one legend for both axes
        return ax


@torch.no_grad()
def evaluate(model: nn.Module, loader, metric_fn,
             device: torch.device | str | None = None) -> float:
    """Score ``model`` on every batch of ``loader``, in eval mode and without gradients.

    Args:
        model: called as ``model(inputs)``.
        loader: iterable of ``(inputs, targets)`` batches.
        metric_fn: either an accumulating metric with ``reset()``, ``update(output,
            targets)`` and ``compute()`` (e.g. ``cv_course.metrics.MeanIoU``: the
            dataset-level score), or a callable ``metric_fn(output, targets) -> number``
            whose per-batch values are averaged, weighted by batch size.
        device: where to run; default: the model's device.
    Returns:
        float: the metric. The model's train/eval mode is restored afterwards.
    """
    device = _model_device(model) if device is None else torch.device(device)
    accumulating = all(hasattr(metric_fn, a) for a in ("reset", "update", "compute"))
    was_training = model.training
    model.eval()
    if accumulating:
        metric_fn.reset()
    total, count = 0.0, 0
    try:
        for batch in loader:
            inputs, targets = to_device(_split_batch(batch), device)
            output = model(inputs)
            if accumulating:
                metric_fn.update(output, targets)
            else:
                n = len(inputs)
                total += float(metric_fn(output, targets)) * n
                count += n
    finally:
        model.train(was_training)
    if accumulating:
        return float(metric_fn.compute())
    if count == 0:
        raise ValueError("the loader yielded no batches")
    return total / count


@torch.no_grad()
def predict(model: nn.Module, data, device: torch.device | str | None = None,
            batch_size: int = 32):
    """Run ``model`` in eval mode over a tensor or a loader and collect the outputs.

    Args:
        data: ``Tensor[N, ...]`` of inputs (run in chunks of ``batch_size``), or an
            iterable of ``(inputs, targets, ...)`` batches such as a validation
            ``DataLoader`` (the targets are not used).
        device: where to run; default: the model's device.
    Returns:
        The outputs on the CPU: one ``Tensor[N, ...]`` when the model returns a
        tensor, otherwise a list with one entry per sample (e.g. detection dicts).
    """
    device = _model_device(model) if device is None else torch.device(device)
    batches = data.split(batch_size) if isinstance(data, Tensor) else (
        _split_batch(b)[0] for b in data)
    was_training = model.training
    model.eval()
    outputs = []
    try:
        for inputs in batches:
            out = to_device(model(to_device(inputs, device)), "cpu")
            outputs.extend([out] if isinstance(out, Tensor) else list(out))
    finally:
        model.train(was_training)
    if outputs and all(isinstance(o, Tensor) for o in outputs):
        return torch.cat(outputs)
    return outputs


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def fit(
    model: nn.Module,
    train_loader,
    loss_fn: Callable[[Any, Any], Tensor],
    optimizer: torch.optim.Optimizer | None = None,
    epochs: int = 1,
    device: torch.device | str | None = None,
    val_loader=None,
    metric_fn=None,
    scheduler=None,
    scheduler_interval: str = "epoch",
    progress: bool = True,
    max_seconds: float | None = None,
    seed: int | None = None,
    stream=None,
    amp: bool = False,
) -> History:
    """Train ``model`` with mini-batch gradient descent and report what happened.

    Each step: ``output = model(inputs)``; ``loss = loss_fn(output, targets)``;
    ``loss.backward()``; ``optimizer.step()``. After each epoch the model is scored
    on ``val_loader`` with ``metric_fn`` (see :func:`evaluate`).

    Args:
        model: moved to ``device`` (default: :func:`cv_course.default_device`).
        train_loader: iterable of ``(inputs, targets)`` batches.
        loss_fn: ``loss_fn(model_output, targets) -> Tensor[]``.
        optimizer: default ``Adam(model.parameters(), lr=1e-3)``.
        epochs: number of passes over ``train_loader``.
        val_loader, metric_fn: validation data and metric (both or neither).
        scheduler: a ``torch.optim.lr_scheduler``; stepped after every epoch, or after
            every step with ``scheduler_interval="step"`` (e.g. ``OneCycleLR``).
            ``ReduceLROnPlateau`` is stepped each epoch with the validation metric
            (or, without validation, the training loss); set its ``mode`` to match.
        progress: show tqdm progress bars; ``False`` prints nothing at all.
        max_seconds: wall-time budget; training stops after the step that exceeds
            it (the partial epoch is recorded and validated) and
            ``History.stopped_early`` is set.
        seed: if given, ``torch.manual_seed(seed)`` first, which fixes the shuffling
            of a ``DataLoader(shuffle=True)`` and dropout. Seed the model's
            initialisation yourself, before building it. On the CPU two runs with the
            same seeds give the same history; on a GPU, up to non-deterministic kernels.
        stream: where the progress bars write; default ``sys.stdout`` (not stderr:
            nbgrader fails a cell that writes to stderr).
        amp: mixed precision: run the forward pass and the loss under
            ``torch.autocast(device.type, dtype=torch.bfloat16)``; the weights, the
            gradients and the optimizer stay float32 (bfloat16 keeps float32's exponent
            range, so no gradient scaling is needed). Faster on GPUs and on CPUs with
            bfloat16 instructions; validation always runs in full precision.
    Returns:
        History: losses per step and epoch, validation metric, wall times.
    Raises:
        FloatingPointError: at the end of an epoch in which the loss was NaN or inf.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if (val_loader is None) != (metric_fn is None):
        raise ValueError("pass both val_loader and metric_fn, or neither")
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError("scheduler_interval must be 'epoch' or 'step', "
                         f"got {scheduler_interval!r}")
    if seed is not None:
        torch.manual_seed(seed)
    device = default_device() if device is None else torch.device(device)
    model.to(device)
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    stream = sys.stdout if stream is None else stream

    history = History()
    start = time.perf_counter()
    epoch_bar = tqdm(range(epochs), desc="epochs", disable=not progress, file=stream, leave=True)
    for _ in epoch_bar:
        model.train()
        history.lr.append(optimizer.param_groups[0]["lr"])
        losses = _train_one_epoch(model, train_loader, loss_fn, optimizer, device, scheduler
                                  if scheduler_interval == "step" else None, progress, stream,
                                  start, max_seconds, amp)
        if not losses:
            raise ValueError("train_loader yielded no batches")
        losses = torch.stack(losses).tolist()  # one device sync per epoch, not per step
        _check_finite(losses, len(history.step_loss), history.epochs)
        history.step_loss += losses
        history.train_loss.append(sum(losses) / len(losses))
        postfix = {"loss": f"{history.train_loss[-1]:.4f}"}
        if val_loader is not None:
            history.val_metric.append(evaluate(model, val_loader, metric_fn, device))
            postfix["val"] = f"{history.val_metric[-1]:.4f}"
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            # Watches a number: the validation metric if there is one, else the loss.
            scheduler.step(history.val_metric[-1] if history.val_metric else history.train_loss[-1])
        elif scheduler is not None and scheduler_interval == "epoch":
            scheduler.step()
        history.seconds.append(time.perf_counter() - start)
        epoch_bar.set_postfix(postfix)
        if max_seconds is not None and history.seconds[-1] > max_seconds:
            history.stopped_early = history.epochs < epochs
            break
    epoch_bar.close()
    return history


def _check_finite(losses: list[float], first_step: int, epoch: int) -> None:
    bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(
            f"the loss became {losses[bad[0]]} at step {first_step + bad[0]} (epoch {epoch}); "
            "try a lower learning rate, or check the inputs and targets for NaNs")


def _train_one_epoch(model, loader, loss_fn, optimizer, device, step_scheduler, progress,
                     stream, start, max_seconds, amp) -> list[Tensor]:
    """One pass over ``loader``; returns the detached loss of each step."""
    losses = []
    bar = tqdm(loader, desc="train", disable=not progress, file=stream, leave=False)
    for batch in bar:
        inputs, targets = to_device(_split_batch(batch), device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step_scheduler is not None:
            step_scheduler.step()
        losses.append(loss.detach())
        if progress and len(losses) % 10 == 0:  # .item() syncs the GPU: not every step
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    bar.close()
    return losses

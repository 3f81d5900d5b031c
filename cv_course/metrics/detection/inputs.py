"""Checks on the torchmetrics-style inputs of ``mean_average_precision``: clear
errors that say what to fix, raised before any work is done."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .regions import RegionType

_PRED_DOC = "a prediction is dict({key}=..., scores=Tensor[N] float, labels=Tensor[N] int)"
_TARGET_DOC = ("a target is dict({key}=..., labels=Tensor[K] int, optional iscrowd=Tensor[K] 0/1, "
               "optional area=Tensor[K])")


def _check_keys(d, keys: tuple[str, ...], name: str, doc: str) -> None:
    if not isinstance(d, Mapping):
        raise TypeError(f"{name} must be a dict; {doc}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise ValueError(f"{name} has no {missing[0]!r} (it has {list(d)}); {doc}")


def _check_vector(x, n: int, name: str, kind: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 1 or x.shape[0] != n:
        raise ValueError(f"{name} must be a Tensor[{n}], one value per region, got shape {list(x.shape)}")
    if kind == "float" and not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if kind == "int" and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise ValueError(f"{name} must hold integer class labels, got {x.dtype}")


def check_image(pred, target, i: int, region: RegionType) -> None:
    """Keys, types and shapes of image i (no tensor arithmetic: the values of all
    images are checked at once by :func:`check_values`)."""
    key = region.key
    _check_keys(pred, (key, "scores", "labels"), f"predictions[{i}]", _PRED_DOC.format(key=key))
    _check_keys(target, (key, "labels"), f"targets[{i}]", _TARGET_DOC.format(key=key))
    region.check(pred[key], f"predictions[{i}][{key!r}]")
    region.check(target[key], f"targets[{i}][{key!r}]")
    N, K = pred[key].shape[0], target[key].shape[0]
    _check_vector(pred["scores"], N, f"predictions[{i}]['scores']", "float")
    _check_vector(pred["labels"], N, f"predictions[{i}]['labels']", "int")
    _check_vector(target["labels"], K, f"targets[{i}]['labels']", "int")
    if target.get("iscrowd") is not None:
        _check_vector(target["iscrowd"], K, f"targets[{i}]['iscrowd']", "any")
    if target.get("area") is not None:
        _check_vector(target["area"], K, f"targets[{i}]['area']", "float")
    if key == "masks" and N and K and pred[key].shape[1:] != target[key].shape[1:]:
        raise ValueError(f"predictions[{i}]['masks'] are {list(pred[key].shape[1:])} pixels but "
                         f"targets[{i}]['masks'] are {list(target[key].shape[1:])}; both must be "
                         "masks of the same image")


def _first(bad: Tensor, message: str) -> None:
    """Raise ``message`` (with {i}, {j}) for the first True of ``bad[I, N]``."""
    if bool(bad.any()):
        i, j = bad.nonzero()[0].tolist()
        raise ValueError(message.format(i=i, j=j))


def check_values(scores: Tensor, crowd: Tensor, area: Tensor) -> None:
    """Scores finite, iscrowd 0/1, areas not negative; all Tensor[I, N], padded with valid values."""
    _first(~torch.isfinite(scores), "predictions[{i}]['scores'][{j}] is NaN or infinite")
    _first((crowd != 0) & (crowd != 1), "targets[{i}]['iscrowd'][{j}] must be 0 or 1 (or bool)")
    _first(~(area >= 0), "targets[{i}]['area'][{j}] is negative or NaN")


def check_lists(predictions, targets) -> None:
    for name, x in (("predictions", predictions), ("targets", targets)):
        if not isinstance(x, (list, tuple)):
            raise TypeError(f"{name} must be a list of dicts, one per image, got {type(x).__name__}")
    if len(predictions) != len(targets):
        raise ValueError(f"predictions and targets must have one dict per image each, got "
                         f"{len(predictions)} and {len(targets)}")

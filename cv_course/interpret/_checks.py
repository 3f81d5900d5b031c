"""Input validation and model bookkeeping shared by the interpretation methods.

Every method here runs the model in eval mode (BatchNorm uses its running
statistics and does not update them; dropout is off) and puts each submodule's
``training`` flag back afterwards. None of them changes a ``requires_grad``
flag or a parameter's ``.grad``: gradients are taken with
``torch.autograd.grad`` with respect to the input or an activation only.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator

import torch
from torch import Tensor, nn


def check_images(images, name: str = "images") -> None:
    """Raise unless ``images`` is a floating-point Tensor[N, C, H, W]."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(
            f"{name} must have shape [N, C, H, W], got {list(images.shape)}; "
            "for a single image add a batch dimension with image[None]"
        )
    if not images.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {images.dtype}")


def model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    """The device of the model's first parameter or buffer (``fallback`` if it has none)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return fallback


def resolve_layer(model: nn.Module, layer) -> nn.Module:
    """The submodule ``layer`` of ``model``, given as a module or a dotted name."""
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n]
            raise ValueError(
                f"model has no submodule named {layer!r}; valid names include {names[:12]}"
            ) from None
    if isinstance(layer, nn.Module):
        if any(m is layer for m in model.modules()):
            return layer
        raise ValueError(
            f"layer {type(layer).__name__} is not a submodule of the model (it may belong "
            "to another copy of the model, e.g. one made by copy.deepcopy)"
        )
    raise TypeError(f"layer must be an nn.Module or a dotted name, got {type(layer).__name__}")


def check_logits(logits, name: str = "model output") -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"{name} must be class scores of shape [N, K], got {shape}")


def target_indices(
    target, n: int, num_classes: int, device: torch.device, name: str = "target"
) -> Tensor:
    """``target`` (an int or Tensor[N] of class indices) as a checked Tensor[N] int64."""
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer class indices, got a {target.dtype} tensor")
        if target.dim() != 0 and target.shape != (n,):
            raise ValueError(
                f"{name} must be an int or an integer Tensor[{n}], got shape {list(target.shape)}"
            )
        t = target.to(device=device, dtype=torch.int64)
    elif isinstance(target, numbers.Integral) and not isinstance(target, bool):
        t = torch.tensor(int(target), dtype=torch.int64, device=device)
    else:
        raise ValueError(f"{name} must be an int or an integer tensor, got {type(target).__name__}")
    t = t.expand(n)  # [N]
    if n > 0 and bool(((t < 0) | (t >= num_classes)).any()):
        raise ValueError(
            f"{name} must hold class indices in [0, {num_classes}), got {t.unique().tolist()}"
        )
    return t


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Run the block with ``model`` in eval mode, then restore every module's mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


class _Capture:
    """Activations a forward hook recorded, one entry per call of the layer."""

    def __init__(self) -> None:
        self.outputs: list[Tensor] = []

    def single(self) -> Tensor:
        """The one output of the layer; raise if it ran zero or several times."""
        if len(self.outputs) != 1:
            raise ValueError(
                f"the layer ran {len(self.outputs)} times in one forward pass; pick a layer "
                "that runs exactly once (a module reused at several places, such as the "
                "shared ReLU of torchvision's ResNet blocks, is ambiguous)"
            )
        return self.outputs[0]


@contextlib.contextmanager
def capture_output(layer: nn.Module) -> Iterator[_Capture]:
    """Record ``layer``'s output during the block; the hook is removed on exit,
    also when the forward pass raises."""
    capture = _Capture()

    def hook(module, inputs, output):
        if not isinstance(output, Tensor):
            raise ValueError(
                f"the layer must return a single tensor, got {type(output).__name__}"
            )
        capture.outputs.append(output)
        # Hand the rest of the network a copy, so that an in-place op after the
        # layer (ReLU(inplace=True)) cannot overwrite the activations we keep.
        return output.clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield capture
    finally:
        handle.remove()

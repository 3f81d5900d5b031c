"""Checks that involve a model: build a student's module with the reference's
weights, require a model to be left as it was, take gradients, and require an
image's answer not to depend on the rest of its batch.

A model a student's function receives is part of its input: ``call_student``
hands it a copy and, with :func:`snapshot` and :func:`require_unchanged`,
requires the copy to come back as it went in (weights, BatchNorm statistics,
train/eval flags, ``requires_grad``, ``.grad``, hooks, attributes).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from .checks import fail


def build(cls: Callable, args: tuple, name: str) -> nn.Module:
    """``cls(*args)``, without touching the notebook's random state; fails clearly
    when the student's ``__init__`` is missing, raises or builds no module."""
    text = f"{name}({', '.join(map(repr, args))})"
    try:
        with torch.random.fork_rng(devices=[]):
            module = cls(*args)
    except NotImplementedError:
        fail(f"{text} is not implemented yet (it raised NotImplementedError)")
    except Exception as e:
        fail(f"{text} raised {type(e).__name__}: {e}; keep __init__ as the assignment gives it")
    if not isinstance(module, nn.Module):
        fail(f"{text} must build an nn.Module, got {type(module).__name__}")
    return module


def copy_weights(student: nn.Module, reference: nn.Module, key_map: Callable[[str], str],
                 text: str) -> nn.Module:
    """Load ``reference``'s parameters and buffers into ``student``, whose names map
    to the reference's through ``key_map``. ``text`` names the module in messages."""
    ref_state = reference.state_dict()
    names = list(student.state_dict())
    mapped = {key_map(k) for k in names}
    if mapped != set(ref_state):
        missing = sorted(set(ref_state) - mapped)[:3]
        extra = sorted(k for k in names if key_map(k) not in ref_state)[:3]
        fail(f"{text} does not have the layers the assignment defines (unexpected: {extra}, "
             f"missing: {missing}); keep __init__ as given and write only forward")
    try:
        student.load_state_dict({k: ref_state[key_map(k)] for k in names})
    except RuntimeError as e:
        fail(f"{text}'s layers have other shapes than the assignment's; keep __init__ as given "
             f"({str(e).splitlines()[-1].strip()})")
    return student


def randomize_batchnorm(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """Random running statistics and affine parameters for every BatchNorm, so that
    eval mode is far from the identity and differs from train mode."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                n = m.num_features
                m.running_mean.copy_(0.3 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen))
                if m.affine:
                    m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                    m.bias.copy_(0.2 * torch.randn(n, generator=gen))
    return model


def without_grad(model: Callable) -> Callable:
    """``model`` run under ``torch.no_grad()``, as a function to hand to ``call_student``.
    (Defined here, not in an assignment's module: the guard forbids those.)"""

    def predict(*inputs):
        with torch.no_grad():
            return model(*inputs)

    return predict


def module_device(model: nn.Module) -> torch.device | None:
    p = next(model.parameters(), None)
    return None if p is None else p.device


# ------------------------------------------------------------- left as it was
def _hook_dicts(obj) -> dict[str, tuple]:
    return {k: tuple(v) for k, v in vars(obj).items() if "hook" in k and isinstance(v, dict)}


def snapshot(model: nn.Module) -> dict:
    """Everything about ``model`` that a student's function must leave as it was."""
    params = list(model.parameters())
    return dict(
        tensors={k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        training=[(n, m.training) for n, m in model.named_modules()],
        requires_grad=[p.requires_grad for p in params],
        grads=[None if p.grad is None else p.grad.clone() for p in params],
        hooks=[(n, _hook_dicts(m)) for n, m in model.named_modules()],
        tensor_hooks=[(len(p._backward_hooks or {}),
                       len(getattr(p, "_post_accumulate_grad_hooks", None) or {})) for p in params],
        layout=[(n, type(m), tuple(vars(m))) for n, m in model.named_modules()],
    )


def require_unchanged(model: nn.Module, before: dict, name: str, where: str = "") -> None:
    """Fail, saying how to fix it, when ``model`` differs from its ``snapshot`` ``before``."""
    after = snapshot(model)
    if after["hooks"] != before["hooks"] or after["tensor_hooks"] != before["tensor_hooks"]:
        fail(f"{name} left a hook on the model{where}; keep the handle that register_*_hook "
             "returns and call handle.remove() before returning (in a finally: block)")
    if after["layout"] != before["layout"]:
        fail(f"{name} changed the model's modules or their attributes{where}; work with the "
             "model as it is")
    if after["training"] != before["training"]:
        fail(f"{name} changed the model's train/eval mode{where}: remember model.training "
             "before calling model.eval() and put it back with model.train(was_training)")
    if after["tensors"].keys() != before["tensors"].keys() or any(
            not torch.equal(after["tensors"][k], v) for k, v in before["tensors"].items()):
        fail(f"{name} changed the model's parameters or buffers{where} (in train mode, "
             "BatchNorm updates its running statistics at every forward pass): run the model "
             "in eval mode and do not change its weights")
    if after["requires_grad"] != before["requires_grad"]:
        fail(f"{name} changed the requires_grad flags of the model's parameters{where}; "
             "make the input require grad instead, and leave the parameters alone")
    for g0, g1 in zip(before["grads"], after["grads"]):
        if (g0 is None) != (g1 is None) or (g0 is not None and not torch.equal(g0, g1)):
            fail(f"{name} left gradients in the model's parameters (.grad){where}; use "
                 "torch.autograd.grad(score, x), which computes only the gradient you ask for")


# ------------------------------------------------------------------- gradients
def gradients(out: Tensor, inputs: Iterable[Tensor], grad_out: Tensor, name: str,
              names: Sequence[str]) -> list[Tensor]:
    """Gradients of ``(out * grad_out).sum()`` with respect to ``inputs``; fails
    clearly when autograd cannot reach them."""
    if not out.requires_grad:
        fail(f"{name}'s output does not depend on its inputs through autograd (no gradient): it "
             "must be differentiable; compute it with tensor operations, without .detach(), .data, "
             ".item(), torch.no_grad() or NumPy")
    grads = torch.autograd.grad(out, list(inputs), grad_out, allow_unused=True)
    for what, grad in zip(names, grads):
        if grad is None:
            fail(f"{name}: no gradient reaches {what}; it must take part in the computation")
    return list(grads)


def require_batch_independent(batch_first: Tensor, alone: Tensor, name: str) -> None:
    """The first item's answer computed in a batch equals its answer computed alone."""
    scale = max(float(batch_first.abs().max()) if batch_first.numel() else 0.0, 1e-6)
    if not torch.allclose(batch_first, alone, rtol=1e-4, atol=1e-6 * scale):
        fail(f"{name} of an image changes when other images are in the batch: run the model "
             "in eval mode (model.eval(), then restore its mode), so that BatchNorm uses its "
             "running statistics and dropout is off")

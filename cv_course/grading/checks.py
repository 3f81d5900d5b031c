"""Building blocks of honest checks: call the student's function under the
delegation guard on copies of the inputs, then hold its output to the exact
type, device, dtype and shape expected before comparing values.

Every failure raises :class:`CheckFailed` (an ``AssertionError``) with a
message that says what to fix. Hidden checks name the kind of case that failed
("200 clustered boxes, float64"), never its data.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .guard import DelegationError, Forbidden, no_delegation


class CheckFailed(AssertionError):
    """A check found a problem; the message says what to fix."""


def fail(message: str) -> None:
    raise CheckFailed(message)


def fresh_generator(device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded from the operating system, so hidden inputs are new at
    every grading run and cannot be known in advance."""
    return torch.Generator(device="cpu").manual_seed(int.from_bytes(os.urandom(8), "little"))


def _clone(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.detach().clone()
    if isinstance(x, (list, tuple)):
        return type(x)(_clone(v) for v in x)
    return x


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return True


def global_state() -> dict:
    """What a function could switch on for every later computation: global module
    hooks, torch function and dispatch modes, saved-tensor hooks, grad and
    inference mode. ``call_student`` compares it before and after the call."""
    module = torch.nn.modules.module
    hooks = {n: len(v) for n in dir(module) if n.startswith("_global") and n.endswith("hooks")
             and isinstance(v := getattr(module, n), dict)}
    return dict(
        hooks=hooks,
        function_modes=torch._C._len_torch_function_stack(),
        dispatch_modes=torch._C._len_torch_dispatch_stack(),
        saved_tensor_hooks=torch._C._autograd._top_saved_tensors_default_hooks(False) is not None,
        grad_enabled=torch.is_grad_enabled(),
        inference_mode=torch.is_inference_mode_enabled(),
    )


_CLEAN = dict(function_modes=0, dispatch_modes=0, saved_tensor_hooks=False, inference_mode=False)


def require_clean_globals(name: str) -> dict:
    """Fail when something switched on at the notebook's top level could change
    what the student's function or the reference computes; returns the state."""
    state = global_state()
    if any(state["hooks"].values()):
        fail("a global module hook is registered (torch.nn.modules.module.register_module_*_hook); "
             f"it changes every model's forward pass, so {name} cannot be checked: remove it and "
             "restart the kernel")
    if any(state[k] != v for k, v in _CLEAN.items()):
        fail(f"a TorchFunctionMode, TorchDispatchMode, saved-tensor hook or inference mode is "
             f"switched on outside any `with` block, so {name} cannot be checked: restart the kernel")
    return state


def call_student(fn: Callable, args: Sequence, forbidden: Forbidden, name: str, case: str = "") -> Any:
    """Call ``fn(*args)`` as a check would and return what it returned.

    The function gets copies of ``args`` (so it cannot change what the reference
    sees), runs under :class:`~cv_course.grading.guard.no_delegation` with
    warnings silenced (a warning from the student's code must not cost the
    whole test cell), and must leave its inputs unmodified and nothing switched
    on globally (see :func:`global_state`).
    """
    where = f" on {case}" if case else ""
    if not callable(fn):
        fail(f"{name} is not a function (got {type(fn).__name__}); run the cell that defines it")
    before = require_clean_globals(name)
    given = _clone(list(args))
    guard = no_delegation(forbidden)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with guard:
                out = fn(*given)
    except DelegationError:
        out = None
    except NotImplementedError:
        fail(f"{name} is not implemented yet (it raised NotImplementedError)")
    except Exception as e:  # the student's error, reported as theirs
        if not guard.violations:
            fail(f"{name} raised {type(e).__name__}{where}: {e}")
    if guard.violations:
        fail(
            f"{name} used {', '.join(guard.violations)}{where}. The point of this exercise is "
            "to implement it yourself with basic tensor operations."
        )
    if global_state() != before:
        fail(f"{name} left something switched on globally{where} (a global hook, a torch "
             "mode, saved-tensor hooks or torch.set_grad_enabled); use `with` blocks "
             "(torch.enable_grad(), ...) so that it ends with the function")
    if not _same(list(args), given):
        fail(f"{name} modified its input tensors{where}; work on new tensors instead (e.g. x.clone())")
    return out


def check_tensor(
    out: Any,
    name: str,
    *,
    shape: Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    case: str = "",
) -> Tensor:
    """Require a plain ``torch.Tensor`` (exactly, not a subclass) with the given
    shape, dtype and device."""
    where = f" on {case}" if case else ""
    if type(out) is not Tensor:
        kind = f"{type(out).__module__}.{type(out).__qualname__}"
        fail(f"{name} must return a torch.Tensor (exactly), got {kind}{where}")
    if device is not None and out.device != torch.device(device):
        fail(f"{name} returned a tensor on {out.device}, expected it on {torch.device(device)} "
             f"(the input's device){where}; create new tensors with device=<input>.device")
    if dtype is not None and out.dtype != dtype:
        fail(f"{name} returned dtype {out.dtype}, expected {dtype}{where}")
    if shape is not None and tuple(out.shape) != tuple(shape):
        fail(f"{name} returned shape {list(out.shape)}, expected {list(shape)}{where}")
    if out.requires_grad and out.grad_fn is None and out.is_leaf:
        fail(f"{name} returned a leaf tensor that requires grad{where}; return a computed result")
    return out


def check_close(out: Tensor, expected: Tensor, name: str, *, rtol: float, atol: float,
                case: str = "", show: bool = False) -> None:
    """Values agree (NaN never matches). ``show=True`` (visible checks only)
    prints both tensors in the message."""
    where = f" on {case}" if case else ""
    out, expected = out.detach(), expected.detach()  # float() of a grad-requiring tensor warns
    if torch.isnan(out).any() and not torch.isnan(expected).any():
        fail(f"{name} returned NaN{where}; guard divisions by zero (e.g. with torch.where)")
    if not torch.allclose(out, expected, rtol=rtol, atol=atol):
        if show:
            fail(f"{name} returned the wrong values{where}.\nexpected:\n{expected}\ngot:\n{out}")
        worst = (out - expected).abs().max()
        fail(f"{name} returned the wrong values{where} (largest difference {float(worst):.3g})")

"""Building blocks of honest checks: call the student's function under the
delegation guard on copies of the inputs, then hold its output to the exact
type, device, dtype and shape expected before comparing values.

Inputs may be any nesting of tuples, lists, dicts and namedtuples of tensors
and models (a detector's ``targets: list[dict]``); the function gets a deep
copy, and every part of it must come back unchanged. Outputs may be nested the
same way (detections, a dict of losses): :func:`check_like` and
:func:`check_close` walk both structures and name the part that differs
(``out[1]['boxes']``).

Every failure raises :class:`CheckFailed` (an ``AssertionError``) with a
message that says what to fix. Hidden checks name the kind of case that failed
("200 clustered boxes, float64"), never its data.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import warnings
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from .guard import DelegationError, Forbidden, no_delegation
from .numerics import exact_float32, tolerance


class CheckFailed(AssertionError):
    """A check found a problem; the message says what to fix."""


def fail(message: str) -> None:
    raise CheckFailed(message)


def fresh_generator(device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded from the operating system, so hidden inputs are new at
    every grading run and cannot be known in advance."""
    return torch.Generator(device="cpu").manual_seed(int.from_bytes(os.urandom(8), "little"))


@contextlib.contextmanager
def quiet():
    """Warnings silenced and stderr sent to stdout: nbgrader zeroes a test cell
    that writes anything to stderr, and a warning is not a wrong answer."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(sys.stdout):
        warnings.simplefilter("ignore")
        yield


# ------------------------------------------------------------ nested inputs
def _is_namedtuple(x) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def copy_nested(x: Any, memo: dict | None = None) -> Any:
    """A deep copy of any nesting of tuples, lists, dicts and namedtuples of
    tensors and modules. One memo for the whole input, so that a layer passed
    next to its model stays a part of the model's copy."""
    memo = {} if memo is None else memo
    if id(x) in memo:
        return memo[id(x)]
    if isinstance(x, Tensor):
        out = x.detach().clone().requires_grad_(x.requires_grad) if x.is_leaf else x.detach().clone()
    elif isinstance(x, nn.Module):
        out = copy.deepcopy(x, memo)
    elif _is_namedtuple(x):
        out = type(x)(*(copy_nested(v, memo) for v in x))
    elif isinstance(x, (list, tuple)):
        out = type(x)(copy_nested(v, memo) for v in x)
    elif isinstance(x, dict):
        out = type(x)((k, copy_nested(v, memo)) for k, v in x.items())
    else:
        return x  # numbers, strings, None: immutable
    memo[id(x)] = out
    return out


def first_change(before: Any, after: Any, path: str) -> str | None:
    """Where ``after`` (the student's copy) differs from ``before``, or None.
    Modules are compared with their snapshots elsewhere (:mod:`.models`)."""
    if isinstance(before, Tensor):
        same = (isinstance(after, Tensor) and after.shape == before.shape and after.dtype == before.dtype
                and after.device == before.device and (before.numel() == 0 or bool(
                    (after.detach() == before).logical_or(after.detach().isnan() & before.isnan()).all())))
        return None if same else path
    if isinstance(before, (list, tuple)):
        if type(after) is not type(before) or len(after) != len(before):
            return path
        for i, (b, a) in enumerate(zip(before, after)):
            if (where := first_change(b, a, f"{path}[{i}]")) is not None:
                return where
    if isinstance(before, dict):
        if not isinstance(after, dict) or list(after) != list(before):
            return path
        for k in before:
            if (where := first_change(before[k], after[k], f"{path}[{k!r}]")) is not None:
                return where
    return None


def _modules(x: Any, found: list) -> list:
    if isinstance(x, nn.Module):
        if not any(x is m for m in found):
            found.append(x)
    elif isinstance(x, (list, tuple)):
        for v in x:
            _modules(v, found)
    elif isinstance(x, dict):
        for v in x.values():
            _modules(v, found)
    return found


def arg_names(fn: Callable, n: int) -> list[str]:
    """The names of ``fn``'s first ``n`` parameters, for messages (``self`` left out)."""
    code = getattr(getattr(fn, "forward", fn), "__code__", None) or getattr(fn, "__code__", None)
    names = list(code.co_varnames[:code.co_argcount]) if code else []
    names = names[1:] if names[:1] == ["self"] else names
    return (names + [f"argument {i + 1}" for i in range(len(names), n)])[:n]


# --------------------------------------------------------- global state
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


def _student_line(e: BaseException) -> str:
    """' (in nms, line 12 of its cell)': the last frame of the traceback outside
    PyTorch and the course, i.e. the student's own line."""
    skip = (os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(__file__)))
    tb, last = e.__traceback__, None
    while tb is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(skip):
            last = tb
        tb = tb.tb_next
    if last is None:
        return ""
    code, line = last.tb_frame.f_code, last.tb_lineno
    cell = "ipykernel" in code.co_filename or code.co_filename.startswith("<ipython")
    place = "of its cell" if cell else f"of {os.path.basename(code.co_filename)}"
    return f" (in {code.co_name}, line {line} {place})"


def call_student(fn: Callable, args: Sequence, forbidden: Forbidden, name: str, case: str = "",
                 names: Sequence[str] | None = None) -> Any:
    """Call ``fn(*args)`` as a check would and return what it returned.

    The function gets a deep copy of ``args`` (so it cannot change what the
    reference sees), runs under :class:`~cv_course.grading.guard.no_delegation`
    with warnings silenced, stderr sent to stdout and no TF32, and must leave
    every part of its inputs (models included) as it found them and nothing
    switched on globally (see :func:`global_state`). ``names`` name the arguments
    in messages (default: ``fn``'s parameter names).
    """
    from .models import require_unchanged, snapshot  # models builds on this module

    where = f" on {case}" if case else ""
    if not callable(fn):
        fail(f"{name} is not a function (got {type(fn).__name__}); run the cell that defines it")
    before = require_clean_globals(name)
    given = copy_nested(list(args))
    models = _modules(given, [])
    states = [snapshot(m) for m in models]
    guard = no_delegation(forbidden)
    try:
        with quiet(), exact_float32(), guard:
            out = fn(*given)
    except DelegationError:
        out = None
    except NotImplementedError:
        fail(f"{name} is not implemented yet (it raised NotImplementedError)")
    except Exception as e:  # the student's error, reported as theirs
        if not guard.violations:
            fail(f"{name} raised {type(e).__name__}{where}: {e}{_student_line(e)}")
    if guard.violations:
        fail(f"{name} used {', '.join(guard.violations)}{where}. The point of this exercise is "
             "to implement it yourself with basic tensor operations.")
    if global_state() != before:
        fail(f"{name} left something switched on globally{where} (a global hook, a torch "
             "mode, saved-tensor hooks or torch.set_grad_enabled); use `with` blocks "
             "(torch.enable_grad(), ...) so that it ends with the function")
    for model, state in zip(models, states):
        require_unchanged(model, state, name, where)
    for arg, before_arg, copied in zip(names or arg_names(fn, len(args)), args, given):
        if (path := first_change(before_arg, copied, arg)) is not None:
            fail(f"{name} modified its input {path}{where}; work on new tensors instead (e.g. x.clone())")
    return out


# -------------------------------------------------------------- outputs
def check_tensor(out: Any, name: str, *, shape: Sequence[int] | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None, case: str = "") -> Tensor:
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


def check_like(out: Any, expected: Any, name: str, *, case: str = "", shape: bool = True) -> None:
    """``out`` has the structure of ``expected``: the same nesting of tuples, lists
    and dicts (same lengths and keys), and tensors of the same dtype, device and
    shape (``shape=False``: the same number of dimensions only)."""
    where = f" on {case}" if case else ""
    if isinstance(expected, Tensor):
        check_tensor(out, name, dtype=expected.dtype, device=expected.device, case=case,
                     shape=expected.shape if shape else None)
        if out.dim() != expected.dim():
            fail(f"{name} must be a {expected.dim()}-D tensor, got shape {list(out.shape)}{where}")
    elif isinstance(expected, (list, tuple)):
        kind = "a tuple" if isinstance(expected, tuple) else "a list"
        if not isinstance(out, type(expected)) and not (isinstance(expected, tuple) and isinstance(out, tuple)):
            fail(f"{name} must return {kind} of {len(expected)}, got {type(out).__name__}{where}")
        if len(out) != len(expected):
            fail(f"{name} returned {kind} of {len(out)}, expected {len(expected)}{where}")
        for i, (o, e) in enumerate(zip(out, expected)):
            check_like(o, e, f"{name}[{i}]", case=case, shape=shape)
    elif isinstance(expected, dict):
        if not isinstance(out, dict) or set(out) != set(expected):
            keys = sorted(out) if isinstance(out, dict) else type(out).__name__
            fail(f"{name} must return a dict with keys {sorted(expected)}, got {keys}{where}")
        for k in expected:
            check_like(out[k], expected[k], f"{name}[{k!r}]", case=case, shape=shape)


def check_close(out: Any, expected: Any, name: str, *, kind: str = "arithmetic", case: str = "",
                show: bool = False, rtol: float | None = None, atol: float | None = None,
                hint: str = "") -> None:
    """Values agree (NaN never matches), within the ``numerics`` rule for ``kind``
    or the ``rtol``/``atol`` given; nested outputs are compared part by part.
    ``show=True`` (visible checks only) prints both in the message."""
    if isinstance(expected, (list, tuple)):
        for i, (o, e) in enumerate(zip(out, expected)):
            check_close(o, e, f"{name}[{i}]", kind=kind, case=case, show=show, rtol=rtol, atol=atol, hint=hint)
        return
    if isinstance(expected, dict):
        for k in expected:
            check_close(out[k], expected[k], f"{name}[{k!r}]", kind=kind, case=case, show=show, rtol=rtol,
                        atol=atol, hint=hint)
        return
    where = f" on {case}" if case else ""
    out, expected = out.detach(), expected.detach()  # float() of a grad-requiring tensor warns
    tol = tolerance(expected, kind) if rtol is None else dict(rtol=rtol, atol=atol or 0.0)
    if out.is_floating_point() and torch.isnan(out).any() and not torch.isnan(expected).any():
        fail(f"{name} returned NaN{where}; guard divisions by zero (e.g. with torch.where)")
    if out.shape != expected.shape or not torch.allclose(out, expected, **tol):
        hint = f" {hint}" if hint else ""
        if show:
            fail(f"{name} returned the wrong values{where}.{hint}\nexpected:\n{expected}\ngot:\n{out}")
        worst = (out.double() - expected.double()).abs().max() if out.shape == expected.shape else float("nan")
        fail(f"{name} returned the wrong values{where} (largest difference {float(worst):.3g}).{hint}")

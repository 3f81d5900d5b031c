"""Run a student's function so that it cannot delegate to a reference.

While a check runs the student's function, two monitors watch it:

* a Python profile hook (``sys.setprofile``, also installed for threads the
  function starts) sees every Python function it calls and every built-in
  (C) function, so calling ``cv_course.ops.nms`` -- through any alias, a
  reference saved earlier, or a copy of its code object -- or
  ``torchvision.ops.nms`` is seen;
* a ``TorchDispatchMode`` sees every operator that reaches PyTorch's
  dispatcher, including ones called as ``torch.ops.torchvision.nms`` and the
  ones autograd runs in a backward pass, so ``torch.autograd.grad`` of a
  convolution cannot stand in for a transposed convolution.

A forbidden call is recorded and raises :class:`DelegationError` inside the
student's function. Switching a monitor off (``sys.setprofile``, popping the
dispatch mode) is itself recorded, and so is starting a process or a raw
thread (``_thread.start_new_thread`` called other than by ``threading``, whose
threads the profile hook follows): work handed to either would run unwatched.
The rest of the notebook is unaffected: the monitors exist only for the
duration of the ``with`` block.
"""

from __future__ import annotations

import _thread
import importlib.util
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class DelegationError(RuntimeError):
    """Raised inside the student's function when it calls something forbidden."""


@dataclass(frozen=True)
class Forbidden:
    """What a student's function may not use while it is checked.

    Attributes:
        modules: importable names ("cv_course.ops", "torchvision.ops") whose
            Python code may not run.
        ops: dispatcher operators, "namespace::name" ("aten::max_unpool2d") or a
            whole namespace ("torchvision::").
        op_rules: extra predicates ``rule(op_name, args, kwargs) -> str | None``
            returning a reason when a call is forbidden (e.g. a convolution
            with ``transposed=True``).
        builtins: C functions that may not be called (e.g. ``torch.conv_transpose2d``).
    """

    modules: tuple[str, ...] = ()
    ops: tuple[str, ...] = ()
    op_rules: tuple[Callable, ...] = ()
    builtins: tuple = ()

    def __add__(self, other: "Forbidden") -> "Forbidden":
        return Forbidden(
            self.modules + other.modules,
            self.ops + other.ops,
            self.op_rules + other.op_rules,
            self.builtins + other.builtins,
        )


# Calls that would switch the monitors off are always forbidden.
_MONITOR_SWITCHES = (sys.setprofile, sys.settrace, threading.setprofile, threading.settrace)


def _process_starters() -> tuple:
    """C functions that start a process: work handed to a child process runs
    unwatched, so these are always forbidden."""
    import _posixsubprocess

    names = ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "execv", "execve")
    return tuple(getattr(os, n) for n in names if hasattr(os, n)) + (_posixsubprocess.fork_exec,)


PROCESS_STARTERS = _process_starters()
# Raw thread starters: always forbidden, except when ``threading`` calls them (the
# guard installs its hook in threads that ``threading`` starts, so those are watched).
RAW_THREAD_STARTERS = tuple(getattr(_thread, n) for n in ("start_new_thread", "start_joinable_thread")
                            if hasattr(_thread, n))
_RAW_THREAD_IDS = frozenset(id(f) for f in RAW_THREAD_STARTERS)
_MODE_SWITCH_FUNCS = ("_disable_current_modes", "_pop_mode", "_pop_mode_temporarily")


def _module_paths(names: tuple[str, ...]) -> tuple[str, ...]:
    """Source locations (a folder for a package, a file for a module) of ``names``."""
    paths = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        if spec.submodule_search_locations:
            paths.extend(os.path.join(p, "") for p in spec.submodule_search_locations)
        elif spec.origin:
            paths.append(spec.origin)
    return tuple(paths)


def _op_name(op) -> str:
    # OpOverload has name(), OpOverloadPacket has _qualified_op_name
    if hasattr(op, "_qualified_op_name"):
        return op._qualified_op_name
    try:
        return op.name()
    except Exception:  # pragma: no cover - not an operator after all
        return repr(op)


class _OpMonitor(TorchDispatchMode):
    def __init__(self, guard: "no_delegation"):
        super().__init__()
        self.guard = guard

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.guard._check_op(_op_name(func), args, kwargs)
        return func(*args, **kwargs)


@dataclass
class no_delegation:
    """Context manager: inside it, forbidden calls are recorded and raise.

    Args:
        forbidden (Forbidden): what may not be used.
    After the block, ``violations`` lists what was called (empty when clean).
    """

    forbidden: Forbidden
    violations: list[str] = field(default_factory=list)

    def __post_init__(self):
        self._paths = _module_paths(self.forbidden.modules)
        self._ops = tuple(o for o in self.forbidden.ops if not o.endswith("::"))
        self._namespaces = tuple(o for o in self.forbidden.ops if o.endswith("::"))
        always = _MONITOR_SWITCHES + PROCESS_STARTERS + RAW_THREAD_STARTERS
        self._builtins = {id(b) for b in self.forbidden.builtins + always}
        from torch import _ops

        self._op_call_codes = {_ops.OpOverload.__call__.__code__, _ops.OpOverloadPacket.__call__.__code__}

    # -- what counts as a violation -------------------------------------------------
    def _record(self, what: str) -> None:
        if what not in self.violations:
            self.violations.append(what)
        raise DelegationError(f"{what} may not be used here: implement it yourself")

    def _check_op(self, name: str, args, kwargs) -> None:
        if name in self._ops or name.startswith(self._namespaces) and self._namespaces:
            self._record(f"the operator {name}")
        for rule in self.forbidden.op_rules:
            reason = rule(name, args, kwargs)
            if reason:
                self._record(reason)

    def _hook(self, frame, event, arg):
        if not self._active:
            return
        if event == "call":
            code = frame.f_code
            if self._paths and code.co_filename.startswith(self._paths):
                module = frame.f_globals.get("__name__", code.co_filename)
                self._record(f"{module}.{code.co_name}")
            elif code in self._op_call_codes:
                self._check_op(_op_name(frame.f_locals.get("self")), (), {})
            elif code.co_name in _MODE_SWITCH_FUNCS and "_python_dispatch" in code.co_filename:
                self._record("switching off the check's operator monitor")
        elif event == "c_call" and id(arg) in self._builtins:
            if id(arg) in _RAW_THREAD_IDS and frame.f_code.co_filename == threading.__file__:
                return  # threading.Thread.start: the new thread gets the hook
            name = getattr(arg, "__qualname__", None) or getattr(arg, "__name__", repr(arg))
            if arg in _MONITOR_SWITCHES:
                self._record(f"{name} (it would switch off the check's monitor)")
            self._record(f"{getattr(arg, '__module__', '') or 'torch'}.{name}")

    # -- context manager -------------------------------------------------------------
    def __enter__(self) -> "no_delegation":
        self._old_profile = sys.getprofile()
        self._active = True
        self._mode = _OpMonitor(self)
        self._mode.__enter__()
        threading.setprofile(self._hook)
        sys.setprofile(self._hook)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        # Python removes a profile hook that raised, so a recorded violation
        # explains a missing hook; without one, something switched it off.
        intact = sys.getprofile() == self._hook or bool(self.violations)
        self._active = False
        sys.setprofile(self._old_profile)
        threading.setprofile(None)
        try:
            self._mode.__exit__(None, None, None)
        except Exception:  # the mode stack was tampered with
            intact = False
        if not intact and "switching off the check's monitor" not in self.violations:
            self.violations.append("switching off the check's monitor")
        return False

"""An exercise as data: a :class:`Exercise` spec from which the notebook's
``check_<name>_visible`` and ``check_<name>_hidden`` are generated.

A spec says what the student writes (``name``), what answers it (``reference``),
what it may not call (``forbidden``, from :mod:`.policy`), the visible cases
(worked examples and a small twin of every kind of hidden case), the hidden
cases (drawn from a fresh generator at every run) and how answers are compared
(``compare``: :func:`close` for most, another comparator where several answers
are right: ties, set-valued answers, undetermined signs). Every case then runs
the same way (:func:`run_case`)::

    call_student (copies, guard) -> reference (after, on the originals)
    -> check_like (type, dtype, device, shape) -> require (properties)
    -> compare -> gradients (Case.grad) -> the first item alone (Case.alone)

Each public check runs with warnings silenced and no TF32, refuses to award
points where grading is not closed (``failclosed``), and shows only the
check's message: one frame of the grader's traceback. When an exercise fails
and the student's function calls another exercise of theirs (their ``box_iou``
inside ``nms``) that fails its own checks, the message says so.
"""

from __future__ import annotations

import contextlib
import functools
import io
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from . import models
from .checks import (CheckFailed, arg_names, call_student, check_close, check_like, copy_nested, fail,
                     fresh_generator, quiet)
from .failclosed import require_course_scan
from .guard import Forbidden
from .numerics import exact_float32, tolerance

Comparator = Callable[[Any, Any, str, "Case"], None]  # (out, expected, name, case); raises CheckFailed


@dataclass(frozen=True)
class Case:
    """One call of the student's answer and what it is held to."""

    name: str  # what a message names: "37 x 23 random boxes, float64" (never the data)
    args: tuple  # positional arguments: tensors, models, any nesting of them
    tags: tuple[str, ...] = ()  # kinds of case ("float64", "empty"): each hidden kind has a visible twin
    expected: Any = None  # a worked example's stated answer; None: the reference's
    show: bool = False  # print expected and got on failure (small visible cases)
    reference: Callable | None = None  # this case's reference, else the exercise's
    build: Callable | None = None  # the student's answer -> what to call (a class -> a module)
    grad: tuple[int, ...] = ()  # also compare gradients with respect to these arguments
    alone: bool = False  # also require the first batch item alone to get the same answer
    values: bool = True  # False: check type, dtype, device and shape only


@dataclass(frozen=True)
class Exercise:
    """Everything the checks of one exercise need; ``checks()`` makes them."""

    name: str  # the notebook's name: check_<name>_visible / check_<name>_hidden
    reference: Callable | None  # bound at import, before any student code runs
    forbidden: Forbidden
    visible: Callable[[torch.Generator, torch.device], Iterable[Case]]
    hidden: Callable[[torch.Generator, torch.device], Iterable[Case]]
    compare: Comparator = None  # default: close("arithmetic")
    title: str = ""  # how messages name the answer ("UNet.forward"); default: name
    shape: bool = True  # the output's shape must equal the reference's (False: its ndim)
    require: Callable | None = None  # require(out, case, title): properties of every answer
    batched: tuple[int, ...] = (0,)  # arguments holding a batch (for Case.alone)
    uses: tuple[str, ...] = ()  # other exercises the student's answer may call (box_iou in nms)
    extra: tuple[Callable, ...] = ()  # extra(fn, gen, device, hidden): checks unique to it

    @property
    def label(self) -> str:
        return self.title or self.name

    def checks(self) -> tuple[Callable, Callable]:
        """``(check_<name>_visible, check_<name>_hidden)`` for the notebook."""
        _EXERCISES[self.name] = self

        def visible(fn, device) -> None:
            run_exercise(self, fn, device, hidden=False)
            print(f"{self.label}: visible checks passed")

        def hidden(fn, device) -> None:
            run_exercise(self, fn, device, hidden=True)
            print(f"{self.label}: hidden checks passed")

        visible.__name__, hidden.__name__ = f"check_{self.name}_visible", f"check_{self.name}_hidden"
        visible.__doc__ = f"Visible checks of ``{self.name}``: worked examples, twins of the hidden cases."
        hidden.__doc__ = f"Hidden checks of ``{self.name}``: fresh cases at every run, against the reference."
        CHECKS[self.name] = graded(visible), graded(hidden)
        return CHECKS[self.name]


_EXERCISES: dict[str, Exercise] = {}  # every exercise whose checks exist, by name
CHECKS: dict[str, tuple[Callable, Callable]] = {}  # name -> (visible, hidden) public checks


# ----------------------------------------------------------------- comparators
def close(kind: str = "arithmetic", *, hint: str = "", free: Callable | None = None) -> Comparator:
    """Values within the ``numerics`` rule for ``kind``. ``free(case, expected)``
    (bool, like ``expected``) marks where any value is right (a sign at a zero gradient)."""

    def compare(out, expected, name, case):
        if free is not None:
            out = torch.where(free(case, expected), expected, out.detach())
        check_close(out, expected, name, kind=kind, case=case.name, show=case.show, hint=hint)

    return compare


def kept_indices(what: str = "boxes") -> Comparator:
    """Exactly the reference's indices, in its order (NMS: ties broken by index)."""

    def compare(out, expected, name, case):
        if torch.equal(out, expected):
            return
        if case.show:
            fail(f"{name} kept the wrong {what} on {case.name}.\nexpected indices: {expected.tolist()}\n"
                 f"got: {out.tolist()}")
        hint = (f"the right {what} in the wrong order (sort by decreasing score)"
                if sorted(out.tolist()) == sorted(expected.tolist())
                else f"{len(out)} {what} where {len(expected)} should be kept")
        fail(f"{name} kept the wrong {what} on {case.name}: {hint}")

    return compare


def same_scores(score: Callable[[Case], Tensor]) -> Comparator:
    """Top-k with ties: distinct indices whose scores are the reference's, in order;
    which of several equal scores comes first (or makes the cut) is free."""

    def compare(out, expected, name, case):
        s = score(case)
        if out.unique().numel() != out.numel() or not torch.equal(s[out], s[expected]):
            fail(f"{name} returned the wrong indices on {case.name}: their scores are not the "
                 "k best in decreasing order")

    return compare


def optimal_matching(cost: Callable[[Case], Tensor], kind: str = "arithmetic") -> Comparator:
    """Matchings ``(rows, cols)``: any one-to-one matching of the reference's size
    whose total cost is the reference's (several can be optimal)."""

    def compare(out, expected, name, case):
        C, (rows, cols) = cost(case), out
        one_to_one = rows.unique().numel() == len(rows) and cols.unique().numel() == len(cols)
        if len(rows) != len(expected[0]) or not one_to_one:
            fail(f"{name} did not return a one-to-one matching of {len(expected[0])} pairs on {case.name}")
        total, best = C[rows, cols].sum(), C[expected[0], expected[1]].sum()
        if not torch.allclose(total, best, **tolerance(best, kind)):
            fail(f"{name}'s matching costs {float(total):.4g} on {case.name}; the optimum is {float(best):.4g}")

    return compare


# ------------------------------------------------------------------- running
def _student_call(ex: Exercise, student: Callable, case: Case) -> tuple[Any, list]:
    if not case.grad:
        return call_student(student, case.args, ex.forbidden, ex.label, case.name), []

    def forward(*args):  # runs under the guard: the inputs to differentiate become leaves
        leaves = [args[i].requires_grad_() for i in case.grad]
        return student(*args), leaves

    names = arg_names(student, len(case.args))
    return call_student(forward, case.args, ex.forbidden, ex.label, case.name, names=names)


def _reference_call(ex: Exercise, case: Case) -> tuple[Any, list]:
    if case.expected is not None and not case.grad:
        return case.expected, []
    args = copy_nested(case.args)
    leaves = [args[i].requires_grad_() for i in case.grad]
    with quiet(), exact_float32(), torch.set_grad_enabled(torch.is_grad_enabled() or bool(case.grad)):
        return (case.reference or ex.reference)(*args), leaves


def run_case(ex: Exercise, fn: Callable, case: Case) -> Any:
    """Run one case (see the module's docstring); returns the student's output."""
    student = case.build(fn) if case.build else fn
    out, leaves = _student_call(ex, student, case)
    expected, ref_leaves = _reference_call(ex, case)  # only now: never visible to the student
    check_like(out, expected, ex.label, case=case.name, shape=ex.shape)
    if ex.require is not None:  # a property ("clamp to [0, 1]") says more than "wrong values"
        try:
            ex.require(out, case, ex.label)
        except CheckFailed as e:
            if not (case.show and case.values):
                raise
            raise CheckFailed(f"{e}\nexpected:\n{expected}\ngot:\n{out.detach()}") from None
    if case.values:
        (ex.compare or close())(out, expected, ex.label, case)
    if case.grad:
        g = torch.randn(expected.shape, generator=fresh_generator(), dtype=torch.float64).to(expected)
        names = [arg_names(student, len(case.args))[i] for i in case.grad]
        got = models.gradients(out, leaves, g, ex.label, names)
        want = torch.autograd.grad(expected, ref_leaves, g)
        for n, a, b in zip(names, got, want):
            check_close(a, b, f"the gradient of {ex.label} with respect to {n}", kind="network", case=case.name)
    if case.alone:
        where = f"{case.name}, the first item alone"
        alone_args = tuple(a[:1] if i in ex.batched else a for i, a in enumerate(case.args))
        alone = call_student(student, alone_args, ex.forbidden, ex.label, where)
        check_like(alone, out[:1], ex.label, case=where)
        models.require_batch_independent(out[:1].detach(), alone.detach(), f"{ex.label}'s answer")
    return out


def run_exercise(ex: Exercise, fn: Callable, device, hidden: bool) -> None:
    """Every visible (or hidden) case of ``ex`` and its extra checks; on failure,
    say whether another exercise the answer calls fails its own checks."""
    device = torch.device(device)
    gen = fresh_generator()
    try:
        for extra in ex.extra:
            extra(fn, gen, device, hidden)
        for case in (ex.hidden if hidden else ex.visible)(gen, device):
            run_case(ex, fn, case)
    except CheckFailed as e:
        raise CheckFailed(str(e) + _blame_helpers(ex, fn, device, hidden)) from None


def _names_used(code) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _names_used(const)
    return names


def _blame_helpers(ex: Exercise, fn: Callable, device, hidden: bool) -> str:
    """'nms calls your box_iou, which fails its own checks: ...' (or '')."""
    code, scope = getattr(fn, "__code__", None), getattr(fn, "__globals__", {})
    notes = []
    for dep in ex.uses:
        helper, other = scope.get(dep), _EXERCISES.get(dep)
        if code is None or other is None or not callable(helper) or dep not in _names_used(code):
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                run_exercise(other, helper, device, hidden=False)
                if hidden:
                    run_exercise(other, helper, device, hidden=True)
        except CheckFailed as e:
            notes.append(f"\n\n{ex.label} calls your {dep}, which fails its own checks; fix {dep} first:\n{e}")
    return "".join(notes)


def graded(check: Callable) -> Callable:
    """A public check: fail closed, warnings silenced, no TF32, and on failure the
    check's message with one frame of the grader's traceback."""

    @functools.wraps(check)
    def public(*args, **kwargs):
        try:
            require_course_scan()  # points only where the course's tamper scan ran
            with quiet(), exact_float32():
                return check(*args, **kwargs)
        except AssertionError as e:  # CheckFailed and the fail-closed refusal
            raise type(e)(str(e)) from None

    return public

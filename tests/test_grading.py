"""The grading harness, for every exercise at once.

* The generic cheat battery: for every ``Exercise`` of every assignment, made
  from its honest answer (in that assignment's test file): a NumPy return, the
  wrong dtype, device or shape, a tensor subclass, a modified input, a saved
  reference to the course's function, not implemented, raising; and an honest
  answer that prints to stderr passes without anything reaching stderr.
* What every check shares: nested inputs copied and compared, structured
  outputs, the guard (raw threads, modes, grad mode), one tolerance and TF32
  rule, visible twins of every kind of hidden case, fail-closed checks,
  one-frame messages that name the student's line.
* A detection-style exercise (``list[dict]`` targets, a dict of losses) written
  as a spec of a few lines, as assignments 03-05 will be.
"""

from __future__ import annotations

import sys
import traceback
from collections import namedtuple

import pytest
import torch
from test_grading_boxes import HONEST as BOXES
from test_grading_detection import HONEST as DETECTION
from test_grading_instance import HONEST as INSTANCE
from test_grading_segmentation import HONEST as SEGMENTATION
from test_grading_single_stage import HONEST as SINGLE_STAGE
from test_grading_understanding import HONEST as UNDERSTANDING
from torch import nn

from cv_course.grading import Case, CheckFailed, Exercise, Forbidden, call_student, no_delegation, policy
from cv_course.grading import boxes as G
from cv_course.grading.exercise import _EXERCISES, CHECKS, close, optimal_matching, same_scores
from cv_course.grading.failclosed import MARKER, ScanNotConfigured
from cv_course.grading.numerics import exact_float32, tolerance
from cv_course.grading.tamper import scan_sources


# ------------------------------------------ a detection-style exercise, as a spec
def _reference_box_losses(pred_boxes: list, targets: list) -> dict:
    """Per image, L1 between predicted and target boxes (matched by position);
    ``{"loss_box_l1": mean over boxes, "num_boxes": int64 count}``."""
    n = sum(len(t["boxes"]) for t in targets)
    l1 = sum(((p - t["boxes"]).abs().sum() for p, t in zip(pred_boxes, targets)), pred_boxes[0].new_zeros(()))
    return {"loss_box_l1": l1 / max(n, 1), "num_boxes": torch.tensor(n, device=pred_boxes[0].device)}


def _loss_cases(gen, device, sizes=((3, 0, 2), (5, 1))):
    for dtype in (torch.float32, torch.float64):
        for counts in sizes:
            preds = [100 * torch.rand(k, 4, generator=gen, dtype=dtype).to(device) for k in counts]
            targets = [{"boxes": 100 * torch.rand(k, 4, generator=gen, dtype=dtype).to(device),
                        "labels": torch.randint(5, (k,), generator=gen).to(device)} for k in counts]
            yield Case(f"{len(counts)} images with {list(counts)} boxes, {dtype}", (preds, targets),
                       ("float64",) * (dtype == torch.float64) + ("empty",) * (0 in counts))


BOX_LOSSES = Exercise("box_losses", _reference_box_losses, policy.course_code() + policy.TORCHVISION,
                      lambda gen, device: _loss_cases(gen, device, ((1, 0),)), _loss_cases, close("arithmetic"))
check_box_losses_visible, check_box_losses_hidden = BOX_LOSSES.checks()


def honest_box_losses(pred_boxes, targets):
    diffs = [(p - t["boxes"]).abs().sum() for p, t in zip(pred_boxes, targets)]
    n = sum(t["boxes"].shape[0] for t in targets)
    return {"num_boxes": torch.tensor(n, device=pred_boxes[0].device),
            "loss_box_l1": torch.stack(diffs).sum() / max(n, 1)}


HONEST = {**BOXES, **DETECTION, **INSTANCE, **SEGMENTATION, **SINGLE_STAGE, **UNDERSTANDING,
          "box_losses": honest_box_losses}


def test_every_exercise_has_an_honest_answer_in_the_tests():
    assert set(_EXERCISES) <= set(HONEST), set(_EXERCISES) - set(HONEST)
    assert {"box_iou", "nms", "unet", "pixel_cross_entropy", "saliency", "grad_cam", "fgsm"} <= set(_EXERCISES)


def _checks(name):
    return CHECKS[name]


# ---------------------------------------------------------- the cheat battery
class Sneaky(torch.Tensor):
    def __eq__(self, other):  # a subclass that "equals" anything
        return True


def _first_tensor(x, floating=False):
    """The first tensor (floating-point when asked) in a nesting of lists, tuples, dicts."""
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() or not floating else None
    values = x.values() if isinstance(x, dict) else x if isinstance(x, (list, tuple)) else ()
    return next((t for v in values if (t := _first_tensor(v, floating)) is not None), None)


def _replace_first(x, fn):
    """``x`` with its first tensor replaced by ``fn(tensor)``."""
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, dict):
        k = next(k for k, v in x.items() if _first_tensor(v) is not None)
        return {**x, k: _replace_first(x[k], fn)}
    i = next(i for i, v in enumerate(x) if _first_tensor(v) is not None)
    return type(x)([*x[:i], _replace_first(x[i], fn), *x[i + 1:]])


def _other_dtype(t):
    return t.to(torch.float32 if t.dtype == torch.float64 else torch.float64) if t.is_floating_point() \
        else t.to(torch.int32)


def _modify_input(args):
    with torch.no_grad():
        first = _first_tensor(args, floating=True)
        (first if first is not None else _first_tensor(args)).add_(1)  # integer-only inputs: panoptic maps


def _raise(error):
    raise error


OUTPUT_CHEATS = {  # name: (what to do to the honest output, what the message must say)
    "returns a NumPy array": (lambda t: t.detach().cpu().numpy(), "torch.Tensor"),
    "returns the wrong dtype": (_other_dtype, "dtype"),
    "returns it on another device": (lambda t: t.to("meta"), "device"),
    "returns the wrong shape": (lambda t: t.unsqueeze(0), "shape"),
    "returns a tensor subclass": (lambda t: t.as_subclass(Sneaky), "exactly"),
}
CALL_CHEATS = {  # name: (what to do to the arguments instead of / before answering, message)
    "modifies its input": ("after", _modify_input, "modified its input"),
    "is not implemented": ("instead", lambda args: _raise(NotImplementedError()), "not implemented"),
    "raises": ("instead", lambda args: _raise(ValueError("boom")), r"raised ValueError.*boom \(in "),
    "calls a saved reference to the course's function": ("instead", None, "cv_course"),
}


def _cheat(name: str, honest, cheat: str):
    """The honest answer turned into ``cheat`` (for a module class: in its forward)."""
    saved = _EXERCISES[name].reference  # captured before the checks run, as a student might

    def answer(call, args):
        when, act, _ = CALL_CHEATS.get(cheat, (None, None, None))
        if when == "instead":
            return saved(*args) if act is None else act(args)
        out = call(*args)
        if cheat in OUTPUT_CHEATS:
            out = _replace_first(out, OUTPUT_CHEATS[cheat][0])
        if when == "after":
            act(args)
        if cheat == "prints to stderr":
            print("debugging output", file=sys.stderr)
        return out

    if isinstance(honest, type):
        return type("Cheat", (honest,), {"forward": lambda self, *args: answer(
            lambda *a: honest.forward(self, *a), args)})
    return lambda *args: answer(honest, args)


def _course_reference(name: str) -> bool:
    reference = _EXERCISES[name].reference
    return reference is not None and reference.__module__.startswith("cv_course")


BATTERY = [(ex, cheat) for ex in sorted(HONEST) for cheat in [*OUTPUT_CHEATS, *CALL_CHEATS]
           if _course_reference(ex) or not cheat.startswith("calls a saved")]  # (per-case references)


@pytest.mark.filterwarnings("ignore::UserWarning")  # a meta tensor's .numpy() and the like
@pytest.mark.parametrize("name,cheat", BATTERY)
def test_the_generic_cheat_battery(name, cheat):
    visible, hidden = _checks(name)
    message = OUTPUT_CHEATS[cheat][1] if cheat in OUTPUT_CHEATS else CALL_CHEATS[cheat][2]
    with pytest.raises(CheckFailed, match=message):
        visible(_cheat(name, HONEST[name], cheat), "cpu")
        hidden(_cheat(name, HONEST[name], cheat), "cpu")
    assert sys.getprofile() is None  # the guard never outlives a check


@pytest.mark.parametrize("name", sorted(HONEST))
def test_an_honest_answer_that_prints_to_stderr_passes_and_nothing_reaches_stderr(name, capfd):
    visible, hidden = _checks(name)
    visible(_cheat(name, HONEST[name], "prints to stderr"), "cpu")
    hidden(_cheat(name, HONEST[name], "prints to stderr"), "cpu")
    out, err = capfd.readouterr()
    assert err == "" and "debugging output" in out


@pytest.mark.parametrize("name", sorted(HONEST))
def test_every_kind_of_hidden_case_has_a_visible_twin(name):
    ex, gen = _EXERCISES[name], torch.Generator().manual_seed(0)
    visible = {tag for case in ex.visible(gen, torch.device("cpu")) for tag in case.tags}
    hidden = {tag for case in ex.hidden(gen, torch.device("cpu")) for tag in case.tags}
    assert hidden <= visible, f"{name}: hidden kinds without a visible twin: {hidden - visible}"


@pytest.mark.parametrize("name", sorted(HONEST))
def test_checks_fail_closed_under_autograde_without_the_scan(name, monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    monkeypatch.delenv(MARKER, raising=False)
    for check in _checks(name):
        with pytest.raises(ScanNotConfigured, match="without the course's tamper scan"):
            check(HONEST[name], "cpu")


# -------------------------------------------------- nested inputs and outputs
def test_a_detection_exercise_is_a_small_spec_and_its_honest_answer_passes():
    check_box_losses_visible(honest_box_losses, "cpu")
    check_box_losses_hidden(honest_box_losses, "cpu")


def _rewrites_targets(pred_boxes, targets):
    targets[0]["boxes"].mul_(0)  # would make the reference compare with zeros
    return honest_box_losses(pred_boxes, targets)


def _replaces_a_target(pred_boxes, targets):
    targets[-1]["labels"] = torch.zeros(3, dtype=torch.int64)  # a new tensor in the caller's dict
    return honest_box_losses(pred_boxes, targets)


@pytest.mark.parametrize("fn,message", [
    (_rewrites_targets, r"modified its input targets\[0\]\['boxes'\]"),
    (_replaces_a_target, r"modified its input targets\[1\]\['labels'\]"),
    (lambda p, t: (t.append(t[0]), honest_box_losses(p, t[:-1]))[1], r"modified its input t on"),
    (lambda p, t: {"loss_box_l1": honest_box_losses(p, t)["loss_box_l1"]}, r"dict with keys \['loss_box_l1', "
                                                                           r"'num_boxes'\]"),
    (lambda p, t: tuple(honest_box_losses(p, t).values()), "dict with keys"),
    (lambda p, t: {**honest_box_losses(p, t), "num_boxes": torch.tensor(0)}, r"box_losses\['num_boxes'\] "
                                                                            "returned the wrong values"),
    (lambda p, t: {**honest_box_losses(p, t), "num_boxes": torch.tensor(1.0)},
     r"\['num_boxes'\] returned dtype"),
])
def test_nested_inputs_are_protected_and_nested_outputs_checked_part_by_part(fn, message):
    with pytest.raises(CheckFailed, match=message):
        check_box_losses_visible(fn, "cpu")
        check_box_losses_hidden(fn, "cpu")


def test_namedtuples_and_dicts_of_tensors_are_copied_and_compared():
    Pair = namedtuple("Pair", "boxes scores")
    arg = {"pairs": [Pair(torch.ones(2, 4), torch.ones(2))], "k": 3}

    def modifies(x):
        x["pairs"][0].scores[1] = 5.0
        return torch.zeros(())

    call_student(lambda x: torch.zeros(()), (arg,), Forbidden(), "f")  # leaves it alone: fine
    with pytest.raises(CheckFailed, match=r"modified its input x\['pairs'\]\[0\]\[1\]"):
        call_student(modifies, (arg,), Forbidden(), "f")
    assert arg["pairs"][0].scores.tolist() == [1.0, 1.0]  # the caller's data never changed


def test_a_model_and_its_layer_are_copied_together():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    seen = []
    call_student(lambda m, layer: seen.append(any(layer is x for x in m.modules())) or torch.zeros(()),
                 (model, model[0]), Forbidden(), "f")
    assert seen == [True]


# ------------------------------------------------------------------ comparators
def test_top_k_with_ties_accepts_any_order_among_equal_scores():
    scores = torch.tensor([0.9, 0.5, 0.9, 0.5, 0.1])
    compare, case = same_scores(lambda case: scores), Case("five scores with ties", ())
    compare(torch.tensor([2, 0, 3]), torch.tensor([0, 2, 1]), "top_k", case)  # ties in any order: right
    with pytest.raises(CheckFailed, match="k best"):
        compare(torch.tensor([0, 2, 4]), torch.tensor([0, 2, 1]), "top_k", case)
    with pytest.raises(CheckFailed, match="k best"):
        compare(torch.tensor([0, 0, 1]), torch.tensor([0, 2, 1]), "top_k", case)  # an index twice


def test_matchings_are_judged_by_their_total_cost():
    cost = torch.tensor([[1.0, 2.0], [2.0, 1.0], [1.0, 2.0]])  # rows 0 or 2 -> column 0: both optimal
    compare, case = optimal_matching(lambda case: cost), Case("a 3 x 2 cost matrix", ())
    best = (torch.tensor([0, 1]), torch.tensor([0, 1]))
    compare((torch.tensor([2, 1]), torch.tensor([0, 1])), best, "match", case)  # the other optimum: right
    with pytest.raises(CheckFailed, match="costs 3 .* the optimum is 2"):
        compare((torch.tensor([0, 2]), torch.tensor([0, 1])), best, "match", case)
    with pytest.raises(CheckFailed, match="one-to-one"):
        compare((torch.tensor([0, 0]), torch.tensor([0, 1])), best, "match", case)


# ---------------------------------------------------- numerics and messages
def test_one_tolerance_rule_scales_with_the_largest_expected_value():
    small, large = tolerance(torch.tensor([1e-5, 0.0]), "network"), tolerance(torch.tensor([10.0]), "network")
    assert small["rtol"] == large["rtol"] == 1e-3 and large["atol"] == pytest.approx(1e-2)
    assert small["atol"] == pytest.approx(1e-8)  # a map of 1e-5 is held to 1e-5's scale
    assert tolerance(torch.tensor([1.0], dtype=torch.float64), "arithmetic")["rtol"] == 1e-9
    assert tolerance(torch.tensor([3]), "network") == dict(rtol=0.0, atol=0.0)  # integers: exact


def test_no_tf32_inside_a_check_and_the_settings_come_back():
    before = torch.backends.cudnn.allow_tf32
    with exact_float32():
        assert torch.backends.cudnn.allow_tf32 is False
        seen = call_student(lambda: torch.backends.cudnn.allow_tf32, (), Forbidden(), "f")
    assert seen is False and torch.backends.cudnn.allow_tf32 == before


def test_a_failure_shows_the_message_and_one_frame_of_the_grader():
    with pytest.raises(CheckFailed) as info:
        G.check_box_iou_visible(lambda a, b: None, "cpu")
    grader = [f for f in traceback.extract_tb(info.value.__traceback__) if "cv_course" in f.filename]
    assert len(grader) == 1 and info.value.__suppress_context__ and info.value.__cause__ is None
    assert "must return a torch.Tensor" in str(info.value)


def test_an_error_in_the_students_code_names_their_line():
    def box_iou(a, b):
        return a @ b  # [N, 4] @ [M, 4]: the shapes do not multiply

    where = r"\(in box_iou, line \d+ of test_grading\.py\)"
    with pytest.raises(CheckFailed, match=r"raised RuntimeError on .*" + where):
        G.check_box_iou_visible(box_iou, "cpu")


# -------------------------------------------------------------------- the guard
def test_raw_threads_are_refused_and_threading_threads_are_watched():
    import _thread
    import threading

    with pytest.raises(CheckFailed, match="start_new_thread"):
        call_student(lambda: _thread.start_new_thread(print, ()), (), Forbidden(), "f")
    done = []
    worker = lambda: done.append(threading.Thread(target=lambda: done.append(1)))  # noqa: E731
    call_student(lambda: (worker(), done[0].start(), done[0].join()), (), Forbidden(), "f")
    assert done[1:] == [1]  # an ordinary thread may run


def test_the_guard_does_not_leak_into_the_notebook():
    guard = no_delegation(Forbidden(modules=("cv_course.ops",), ops=("torchvision::",)))
    with guard:
        torch.ones(3).sum()
    assert guard.violations == []
    b = torch.tensor([[0.0, 0, 1, 1]])
    import cv_course.ops

    assert cv_course.ops.nms(b, torch.ones(1), 0.5).tolist() == [0]  # usable again afterwards
    assert sys.getprofile() is None


def test_the_policy_forbids_course_code_and_the_graders_assignment_modules_not_its_harness():
    modules = set((policy.course_code() + policy.TORCHVISION).modules)
    assert {"cv_course.ops", "cv_course.models", "cv_course.losses", "cv_course.metrics", "cv_course.data",
            "cv_course.interpret", "cv_course.grading.boxes", "cv_course.grading.understanding",
            "torchvision.ops"} <= modules
    assert not modules & {"cv_course.device", "cv_course.grading.checks", "cv_course.grading.exercise"}
    assert {"cv_course.models", "cv_course.data"}.isdisjoint(policy.course_code("models", "data").modules)


class _AlwaysClose(torch.overrides.TorchFunctionMode):
    """A cheat: make every comparison in the checks say "close"."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.allclose, torch.isclose, torch.equal):
            return True
        return func(*args, **(kwargs or {}))


def test_a_torch_mode_left_on_by_the_function_is_refused():
    def iou_leaving_a_mode_on(a, b):
        _AlwaysClose().__enter__()  # never exited: it would outlive the call
        return torch.zeros(len(a), len(b), device=a.device)

    try:
        with pytest.raises(CheckFailed, match="switched on globally"):
            G.check_box_iou_visible(iou_leaving_a_mode_on, "cpu")
    finally:
        while torch._C._len_torch_function_stack():
            torch._C._pop_torch_function_stack()


def test_a_torch_mode_switched_on_in_the_notebook_is_refused():
    mode = _AlwaysClose()
    mode.__enter__()
    try:
        with pytest.raises(CheckFailed, match="restart the kernel"):
            G.check_box_iou_visible(lambda a, b: torch.zeros(len(a), len(b)), "cpu")
    finally:
        mode.__exit__(None, None, None)


def test_gradients_switched_off_by_the_function_are_refused():
    def nms_grad_off(boxes, scores, thr):
        torch.set_grad_enabled(False)
        return BOXES["nms"](boxes, scores, thr)

    try:
        with pytest.raises(CheckFailed, match="torch.set_grad_enabled"):
            G.check_nms_visible(nms_grad_off, "cpu")
    finally:
        torch.set_grad_enabled(True)


# ------------------------------------- the tamper scan (more in tests/test_tamper.py)
def scan(*cells):
    trusted = [(0, "import torch\nfrom cv_course import default_device\ndevice = default_device()", True)]
    return [str(f) for f in scan_sources(trusted + [(i + 1, c, False) for i, c in enumerate(cells)])]


@pytest.mark.parametrize("source,what", [
    ("torch.allclose = lambda *a, **k: True", "assigns to torch.allclose"),
    ("torch.Tensor.__eq__ = lambda s, o: True", "assigns to torch.Tensor.__eq__"),
    ("import cv_course.grading.boxes as g\ng.check_nms_hidden = print", "imports cv_course.grading"),
    ("setattr(torch, 'equal', lambda *a: True)", "uses setattr"),
    ("exec('torch.equal = 1')", "uses exec"),
    ("import inspect", "imports inspect"),
    ("from os import system", "imports os"),
    ("from concurrent.futures import ThreadPoolExecutor", "imports concurrent"),
    ("import _thread", "imports _thread"),
    ("import traceback", "imports traceback"),
    ("d = getattr(torch, '__dict__')", "uses getattr(..., '__dict__')"),
    ("name = '__dict__'\nd = getattr(torch, name)", "computed attribute name"),
    ("!pip install cheat", "shell command"),
    ("%run other.py", "magic"),
    ("device = 'cpu'", "assigns to device"),
    ("def default_device():\n    return 'cpu'", "redefines default_device"),
    ("f = box_iou.__code__", "uses .__code__"),
    ("torch.sys.modules['x'] = 1", "uses .modules"),
    ("open('/tmp/x.py', 'w').write('')", "opens a file for writing"),
])
def test_tamper_scan_finds(source, what):
    found = scan(source)
    assert any(what in f for f in found), found

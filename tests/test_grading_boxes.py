"""The grading checks are honest: they pass a correct implementation and fail
every shortcut we could think of, with a message that says what to fix."""

from __future__ import annotations

import sys
import threading

import pytest
import torch
import torchvision

import cv_course.ops
from cv_course.grading import CheckFailed, Forbidden, no_delegation
from cv_course.grading import boxes as G
from cv_course.grading.tamper import scan_sources

_saved_nms = cv_course.ops.nms  # a reference captured early, as a student might


def honest_iou(a, b):
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    lt, rb = torch.max(a[:, None, :2], b[None, :, :2]), torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area(a)[:, None] + area(b)[None] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-30), torch.zeros_like(inter))


def honest_nms(boxes, scores, thr):
    order = scores.argsort(descending=True, stable=True)
    iou = honest_iou(boxes[order], boxes[order])
    removed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(len(order)):
        if not removed[i]:
            keep.append(i)
            removed |= iou[i] > thr
    return order[torch.tensor(keep, dtype=torch.int64, device=boxes.device)]


def test_honest_implementations_pass(device):
    G.check_box_iou_visible(honest_iou, device)
    G.check_box_iou_hidden(honest_iou, device)
    G.check_nms_visible(honest_nms, device)
    G.check_nms_hidden(honest_nms, device)


class Sneaky(torch.Tensor):
    def __eq__(self, other):  # a subclass that "equals" anything
        return True


CHEATS_IOU = {
    "cv_course reference": (lambda a, b: cv_course.ops.box_iou(a, b), "cv_course.ops"),
    "torchvision": (lambda a, b: torchvision.ops.box_iou(a, b), "torchvision.ops"),
    "numpy array": (lambda a, b: honest_iou(a, b).cpu().numpy(), "torch.Tensor"),
    "tensor subclass": (lambda a, b: honest_iou(a, b).as_subclass(Sneaky), "exactly"),
    "wrong dtype": (lambda a, b: honest_iou(a, b).double() if a.dtype == torch.float32 else honest_iou(a, b).float(), "dtype"),
    "NaN for empty union": (lambda a, b: (lambda i, u: i / u)(*_inter_union(a, b)), "NaN"),
    "modifies input": (lambda a, b: honest_iou(a.add_(1.0), b), "modified its input"),
    "transposed": (lambda a, b: honest_iou(b, a).T.contiguous() if len(a) == len(b) else honest_iou(b, a), "shape"),
    "not implemented": (lambda a, b: (_ for _ in ()).throw(NotImplementedError()), "not implemented"),
}


def _inter_union(a, b):
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    lt, rb = torch.max(a[:, None, :2], b[None, :, :2]), torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter, area(a)[:, None] + area(b)[None] - inter


@pytest.mark.parametrize("name", list(CHEATS_IOU))
def test_iou_shortcuts_fail_with_a_clear_message(name):
    fn, message = CHEATS_IOU[name]
    with pytest.raises(CheckFailed, match=message):
        G.check_box_iou_visible(fn, "cpu")
        G.check_box_iou_hidden(fn, "cpu")


def _thread_nms(b, s, t):
    out = []
    worker = threading.Thread(target=lambda: out.append(torchvision.ops.nms(b, s, t)))
    worker.start()
    worker.join()
    return out[0] if out else honest_nms(b, s, t)


def _unhook_nms(b, s, t):
    sys.setprofile(None)
    return torchvision.ops.nms(b, s, t)


def _swallow_nms(b, s, t):
    try:
        return _saved_nms(b, s, t)
    except Exception:
        return honest_nms(b, s, t)


CHEATS_NMS = {
    "saved reference": (lambda b, s, t: _saved_nms(b, s, t), "cv_course.ops"),
    "torch.ops directly": (lambda b, s, t: torch.ops.torchvision.nms(b, s, t), "torchvision::nms"),
    "in a thread": (_thread_nms, "torchvision.ops"),
    "switches the monitor off": (_unhook_nms, "monitor"),
    "catches the error and falls back": (_swallow_nms, "cv_course.ops"),
    "in a child process": (lambda b, s, t: (__import__("os").system("true"), _saved_nms(b, s, t))[1], "system"),
    "int32 indices": (lambda b, s, t: honest_nms(b, s, t).int(), "dtype"),
    "no suppression": (lambda b, s, t: s.argsort(descending=True, stable=True), "wrong boxes"),
    "ascending order": (lambda b, s, t: honest_nms(b, s, t).flip(0), "wrong"),
    "hard-coded visible answer": (lambda b, s, t: torch.tensor([0, 2], device=b.device), "wrong boxes"),
}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("name", list(CHEATS_NMS))
def test_nms_shortcuts_fail_with_a_clear_message(name):
    fn, message = CHEATS_NMS[name]
    with pytest.raises(CheckFailed, match=message):
        G.check_nms_visible(fn, "cpu")
        G.check_nms_hidden(fn, "cpu")
    assert sys.getprofile() is None  # the guard never outlives a check


def test_guard_does_not_leak_into_the_notebook():
    guard = no_delegation(Forbidden(modules=("cv_course.ops",), ops=("torchvision::",)))
    with guard:
        torch.ones(3).sum()
    assert guard.violations == []
    b = torch.tensor([[0.0, 0, 1, 1]])
    assert cv_course.ops.nms(b, torch.ones(1), 0.5).tolist() == [0]  # usable again afterwards
    assert sys.getprofile() is None


def test_visible_failure_shows_expected_and_got():
    with pytest.raises(CheckFailed, match=r"(?s)expected:.*0\.14.*got:"):
        G.check_box_iou_visible(lambda a, b: torch.zeros(len(a), len(b), device=a.device), "cpu")


def test_hidden_failure_names_the_case_not_the_data():
    with pytest.raises(CheckFailed) as info:
        G.check_nms_hidden(lambda b, s, t: s.argsort(descending=True, stable=True), "cpu")
    message = str(info.value)
    assert "boxes" in message and "[" not in message  # no tensor contents


def test_hidden_inputs_differ_between_runs():
    seen = []
    G.check_box_iou_hidden(lambda a, b: (seen.append(a.sum().item()), honest_iou(a, b))[1], "cpu")
    first = list(seen)
    seen.clear()
    G.check_box_iou_hidden(lambda a, b: (seen.append(a.sum().item()), honest_iou(a, b))[1], "cpu")
    assert first[0] != seen[0]


def test_frame_peeking_finds_no_expected_value():
    # the reference result is computed after the student's function returns
    def peek(a, b):
        frame = sys._getframe(1)
        while frame is not None:
            assert "expected" not in frame.f_locals
            frame = frame.f_back
        return honest_iou(a, b)

    G.check_box_iou_visible(peek, "cpu")


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


def test_tamper_scan_passes_ordinary_solutions():
    ordinary = '''
import math
import torch.nn.functional as F
def box_iou(a, b):
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    result = {}
    result["x"] = lt
    for i in range(3):
        pass
    with torch.no_grad():
        y = F.relu(lt)
    return y
%matplotlib inline
%time box_iou(torch.zeros(1, 4), torch.zeros(1, 4))
text = open("data.txt") if False else None
'''
    assert scan(ordinary) == []


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
        return honest_nms(boxes, scores, thr)

    try:
        with pytest.raises(CheckFailed, match="torch.set_grad_enabled"):
            G.check_nms_visible(nms_grad_off, "cpu")
    finally:
        torch.set_grad_enabled(True)

"""The checks of assignment 02 (boxes) are honest: they pass correct
implementations and fail every shortcut we could think of, with a message that
says what to fix. (The generic cheats every exercise must refuse are in
test_grading.py; these are the ones particular to IoU and NMS.)"""

from __future__ import annotations

import sys
import threading

import pytest
import torch
import torchvision

import cv_course.ops
from cv_course.grading import CheckFailed
from cv_course.grading import boxes as G

_saved_nms = cv_course.ops.nms  # a reference captured early, as a student might


def honest_iou(a, b):
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    lt, rb = torch.max(a[:, None, :2], b[None, :, :2]), torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area(a)[:, None] + area(b)[None] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-30), torch.zeros_like(inter))


def honest_nms(boxes, scores, thr, suppress=lambda iou, thr: iou > thr, stable=True):
    order = scores.argsort(descending=True, stable=True)
    if not stable:  # equal scores in decreasing index order
        flipped = scores.flip(0).argsort(descending=True, stable=True)
        order = len(scores) - 1 - flipped
    iou = honest_iou(boxes[order], boxes[order])
    removed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(len(order)):
        if not removed[i]:
            keep.append(i)
            removed |= suppress(iou[i], thr)
    return order[torch.tensor(keep, dtype=torch.int64, device=boxes.device)]


HONEST = {"box_iou": honest_iou, "nms": honest_nms}  # for the generic cheat battery


def test_honest_implementations_pass(device):
    G.check_box_iou_visible(honest_iou, device)
    G.check_box_iou_hidden(honest_iou, device)
    G.check_nms_visible(honest_nms, device)
    G.check_nms_hidden(honest_nms, device)


def _expect(message, check, fn):
    with pytest.raises(CheckFailed, match=message):
        getattr(G, f"check_{check}_visible")(fn, "cpu")
        getattr(G, f"check_{check}_hidden")(fn, "cpu")
    assert sys.getprofile() is None  # the guard never outlives a check


# ------------------------------------------------------------------- box_iou
def _inter_union(a, b, clamp=True):
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    lt, rb = torch.max(a[:, None, :2], b[None, :, :2]), torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0) if clamp else rb - lt  # disjoint boxes: negative widths
    inter = wh[..., 0] * wh[..., 1]
    return inter, area(a)[:, None] + area(b)[None] - inter


CHEATS_IOU = {
    "cv_course reference": (lambda a, b: cv_course.ops.box_iou(a, b), "cv_course.ops"),
    "torchvision": (lambda a, b: torchvision.ops.box_iou(a, b), "torchvision.ops"),
    "NaN for empty union": (lambda a, b: (lambda i, u: i / u)(*_inter_union(a, b)), "NaN"),
    "transposed": (lambda a, b: honest_iou(b, a).T.contiguous() if len(a) == len(b) else honest_iou(b, a),
                   "shape"),
    "float32 always": (lambda a, b: honest_iou(a, b).float(), "dtype"),
    "no clamp of the intersection": (lambda a, b: _inter_union(a, b, clamp=False)[0] / _inter_union(a, b)[1],
                                     "wrong values"),
}


@pytest.mark.parametrize("name", list(CHEATS_IOU))
def test_iou_shortcuts_fail_with_a_clear_message(name):
    fn, message = CHEATS_IOU[name]
    _expect(message, "box_iou", fn)


@pytest.mark.parametrize("slip,case", [
    (lambda a, b: honest_iou(a.float(), b.float()), "float64"),
    (lambda a, b: (lambda i, u: i / u)(*_inter_union(a, b)), "zero-width box"),
    (lambda a, b: honest_iou(a, b) if len(a) and len(b) else torch.zeros(1, 1), "empty first input"),
])
def test_what_the_text_promises_fails_already_in_the_visible_checks(slip, case):
    with pytest.raises(CheckFailed, match=case):
        G.check_box_iou_visible(slip, "cpu")


def test_visible_failure_shows_expected_and_got():
    with pytest.raises(CheckFailed, match=r"(?s)expected:.*0\.14.*got:"):
        G.check_box_iou_visible(lambda a, b: torch.zeros(len(a), len(b), device=a.device), "cpu")


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


# ----------------------------------------------------------------------- nms
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
    "suppresses at IoU == threshold": (lambda b, s, t: honest_nms(b, s, t, lambda iou, thr: iou >= thr),
                                       "IoU exactly"),
    "ties in reverse index order": (lambda b, s, t: honest_nms(b, s, t, stable=False), "tied scores"),
}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("name", list(CHEATS_NMS))
def test_nms_shortcuts_fail_with_a_clear_message(name):
    fn, message = CHEATS_NMS[name]
    _expect(message, "nms", fn)


@pytest.mark.parametrize("slip,case", [
    (lambda b, s, t: honest_nms(b, s, t, lambda iou, thr: iou >= thr), "IoU exactly"),
    (lambda b, s, t: honest_nms(b, s, t, stable=False), "tied scores"),
])
def test_hidden_nms_catches_the_threshold_and_tie_slips_too(slip, case):
    with pytest.raises(CheckFailed, match=case):
        G.check_nms_hidden(slip, "cpu")


def test_exact_threshold_scenes_have_ious_exactly_at_the_threshold():
    gen = torch.Generator().manual_seed(0)
    for thr in (0.5, 0.25):
        boxes, scores = G.exact_threshold_scene(4, thr, gen)
        iou = cv_course.ops.box_iou(boxes, boxes)
        neighbours = torch.arange(0, len(boxes) - 1)
        neighbours = neighbours[neighbours % 3 != 2]  # within a group of three
        assert (iou[neighbours, neighbours + 1] == thr).all()
        assert len(cv_course.ops.nms(boxes, scores, thr)) == len(boxes)  # nothing above thr
        assert len(honest_nms(boxes, scores, thr, lambda i, t: i >= t)) < len(boxes)


def test_hidden_failure_names_the_case_not_the_data():
    with pytest.raises(CheckFailed) as info:
        G.check_nms_hidden(lambda b, s, t: s.argsort(descending=True, stable=True), "cpu")
    message = str(info.value)
    assert "boxes" in message and "[" not in message  # no tensor contents


# ----------------------------------------------- nms blames the student's box_iou
NOTEBOOK_NMS = '''
def nms(boxes, scores, iou_threshold):
    order = torch.argsort(scores, descending=True, stable=True)
    iou = box_iou(boxes[order], boxes[order])
    removed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(len(order)):
        if not removed[i]:
            keep.append(i)
            removed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.int64, device=boxes.device)]
'''


def _notebook(box_iou_source: str, nms_source: str = NOTEBOOK_NMS) -> dict:
    """The namespace of a notebook whose cells define ``box_iou`` and then ``nms``."""
    namespace = {"torch": torch, "torchvision": torchvision}
    exec(compile(box_iou_source + nms_source, "/tmp/ipykernel_1/1.py", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("box_iou_source,why", [
    ("def box_iou(a, b):\n    return torch.zeros(len(a), len(b), device=a.device) + 0.9\n", "wrong values"),
    ("def box_iou(a, b):\n    return torchvision.ops.box_iou(a, b)\n", "box_iou used torchvision.ops"),
])
def test_nms_says_when_the_students_box_iou_is_to_blame(box_iou_source, why):
    nb = _notebook(box_iou_source)
    with pytest.raises(CheckFailed, match=f"(?s)nms calls your box_iou, which fails its own checks; "
                                          f"fix box_iou first:.*{why}"):
        G.check_nms_visible(nb["nms"], "cpu")


def test_nms_does_not_blame_a_correct_box_iou():
    nb = _notebook("box_iou = None\n", NOTEBOOK_NMS.replace("> iou_threshold", ">= iou_threshold"))
    nb["box_iou"] = honest_iou  # what nms calls: correct; nms itself suppresses at IoU == threshold
    with pytest.raises(CheckFailed) as info:
        G.check_nms_visible(nb["nms"], "cpu")
    assert "IoU exactly" in str(info.value) and "calls your box_iou" not in str(info.value)

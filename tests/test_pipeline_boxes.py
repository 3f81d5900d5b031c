"""End to end through nbgrader for assignment 02 (boxes): release, autograde
honest, partial and dishonest submissions, export grades."""

from __future__ import annotations

import pytest

from cv_course.grading.release import stale
from nbgrader_course import (PLAIN_CONFIG, REPO, autograde_and_export, graded_cells, make_course, nbgrader,
                             solution_sources, submit)

pytestmark = pytest.mark.grading
A = "02_boxes"

WRONG_NMS = '''def nms(boxes, scores, iou_threshold):
    # forgets to suppress anything: every box, best first
    return torch.argsort(scores, descending=True, stable=True)
'''
DELEGATING_IOU = '''from torchvision.ops import box_iou as _tv_box_iou

def box_iou(boxes1, boxes2):
    return _tv_box_iou(boxes1, boxes2)
'''
DELEGATING_NMS = '''import cv_course.ops
_saved = cv_course.ops.nms  # a reference taken before any check runs

def nms(boxes, scores, iou_threshold):
    return _saved(boxes, scores, iou_threshold)
'''
ZERO_IOU = '''def box_iou(boxes1, boxes2):
    return torch.zeros(len(boxes1), len(boxes2), dtype=boxes1.dtype, device=boxes1.device)
'''
TAMPERING = "torch.allclose = lambda *args, **kwargs: True  # makes every value comparison pass"
# Tampering in the first exercise's cell that would make a wrong answer to the second pass:
# the flagged cell does not run, so it cannot.
EQUAL_ALWAYS = "\ntorch.equal = lambda *args, **kwargs: True  # would make every index comparison pass\n"
# An honest nms in a style the scan once punished: a local named like the set-up's `device`.
LOCAL_DEVICE_NMS = '''def nms(boxes, scores, iou_threshold):
    device = boxes.device
    order = torch.argsort(scores, descending=True, stable=True)
    iou = box_iou(boxes[order], boxes[order])
    removed = torch.zeros(len(order), dtype=torch.bool, device=device)
    keep = []
    for i in range(len(order)):
        if not removed[i]:
            keep.append(i)
            removed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.int64, device=device)]
'''


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("boxes"), A)
    answers = solution_sources(REPO / "solutions" / A / "boxes.ipynb")
    submit(course, A, "solution", answers)
    submit(course, A, "untouched", {})
    submit(course, A, "iou_only", {"box_iou": answers["box_iou"], "nms": WRONG_NMS})
    submit(course, A, "delegates", {"box_iou": DELEGATING_IOU, "nms": DELEGATING_NMS})
    submit(course, A, "tampers", {"box_iou": ZERO_IOU, "nms": answers["nms"]}, extra_cells=[TAMPERING])
    submit(course, A, "local_device", {"box_iou": answers["box_iou"], "nms": LOCAL_DEVICE_NMS})
    submit(course, A, "os_in_nms", {"box_iou": answers["box_iou"], "nms": "import os\n" + answers["nms"]})
    submit(course, A, "tamper_for_nms", {"box_iou": answers["box_iou"] + EQUAL_ALWAYS, "nms": WRONG_NMS})
    scores = autograde_and_export(course, A)
    return course, scores


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """An instructor's course directory with nbgrader's plain configuration (no scan)."""
    course = make_course(tmp_path_factory.mktemp("boxes_plain"), A, config=PLAIN_CONFIG)
    submit(course, A, "solution", solution_sources(REPO / "solutions" / A / "boxes.ipynb"))
    return course, autograde_and_export(course, A)


def test_solution_gets_full_marks(graded):
    course, scores = graded
    assert scores["solution"] == 10.0
    cells = graded_cells(course, A, "solution")
    assert all(score == top for score, top in cells.values()), cells


def test_untouched_release_gets_zero_with_every_cell_graded(graded):
    course, scores = graded
    assert scores["untouched"] == 0.0
    cells = graded_cells(course, A, "untouched")
    assert set(cells) == {"test_box_iou_visible", "test_box_iou_hidden", "test_nms_visible", "test_nms_hidden"}
    assert sum(top for _, top in cells.values()) == 10.0


def test_correct_iou_wrong_nms_gets_exactly_the_iou_points(graded):
    course, scores = graded
    assert scores["iou_only"] == 5.0
    cells = graded_cells(course, A, "iou_only")
    assert cells["test_box_iou_hidden"] == (3.0, 3.0) and cells["test_nms_hidden"] == (0.0, 3.0)


def test_delegating_to_references_scores_nothing(graded):
    _, scores = graded
    assert scores["delegates"] == 0.0


def test_tampering_is_caught_by_the_scan(graded):
    course, scores = graded
    assert scores["tampers"] == 0.0
    feedback = (course / "autograded" / "tampers" / A / "boxes.ipynb").read_text()
    assert "GradingIntegrityError" in feedback and "torch.allclose" in feedback


def test_a_local_named_like_a_set_up_name_gets_full_marks(graded):
    _, scores = graded
    assert scores["local_device"] == 10.0


def test_a_finding_withholds_only_its_exercise_and_says_where(graded):
    course, scores = graded
    assert scores["os_in_nms"] == 5.0
    cells = graded_cells(course, A, "os_in_nms")
    assert cells["test_box_iou_hidden"] == (3.0, 3.0) and cells["test_nms_visible"] == (0.0, 2.0)
    feedback = (course / "autograded" / "os_in_nms" / A / "boxes.ipynb").read_text()
    assert "your nms answer cell, line 1: imports os" in feedback


def test_tampering_in_one_exercise_cannot_pass_another(graded):
    course, scores = graded
    assert scores["tamper_for_nms"] == 0.0  # box_iou withheld; the wrong nms is compared honestly
    feedback = (course / "autograded" / "tamper_for_nms" / A / "boxes.ipynb").read_text()
    assert "nms kept the wrong boxes" in feedback and "your box_iou answer cell, line" in feedback


def test_a_plain_nbgrader_configuration_awards_no_hidden_points(plain):
    course, scores = plain
    assert scores["solution"] <= 4.0  # at most the visible checks' points (the grader may refuse those too)
    cells = graded_cells(course, A, "solution")
    assert cells["test_box_iou_hidden"] == (0.0, 3.0) and cells["test_nms_hidden"] == (0.0, 3.0)
    feedback = (course / "autograded" / "solution" / A / "boxes.ipynb").read_text()
    assert "without the course's tamper" in feedback and "TamperScan in place of nbgrader's Execute" in feedback


def test_feedback_is_generated(graded):
    course, _ = graded
    nbgrader(course, "generate_feedback", A, "--student", "solution", "--force")
    html = list((course / "feedback" / "solution" / A).glob("*.html"))
    assert html and "visible checks passed" in html[0].read_text()


def test_committed_release_is_current():
    assert stale() == [], "assignments/ is stale: run `make release` and commit the result"

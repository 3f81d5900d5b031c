"""End to end through nbgrader for assignment 01 (segmentation): release,
autograde the solution (training included), the untouched release, a partial
and a delegating submission, export grades.

Run with ``-s`` to see the autograde time of each submission and what the
solution's training cell and trained-model tests printed."""

from __future__ import annotations

import csv
import json
import re
import time

import pytest

from cv_course.grading.segmentation import MIOU_THRESHOLD
from nbgrader_course import REPO, graded_cells, make_course, nbgrader, solution_sources, submit

pytestmark = pytest.mark.grading
A = "01_segmentation"
NOTEBOOK = "segmentation.ipynb"
POINTS = {  # grade_id -> points
    "test_max_unpool2d_visible": 1, "test_max_unpool2d_hidden": 2,
    "test_conv_transpose2d_visible": 2, "test_conv_transpose2d_hidden": 3,
    "test_unet_visible": 2, "test_unet_hidden": 2,
    "test_pixel_cross_entropy_visible": 1, "test_pixel_cross_entropy_hidden": 2,
    "test_trained_model_visible": 2, "test_trained_model_hidden": 3,
}

DELEGATING = {
    "max_unpool2d": '''def max_unpool2d(x, indices, output_size):
    return F.max_unpool2d(x, indices, 2, output_size=output_size)
''',
    "conv_transpose2d": '''def conv_transpose2d(x, weight, bias=None, stride=1, padding=0):
    return F.conv_transpose2d(x, weight, bias, stride, padding)
''',
    "pixel_cross_entropy": '''def pixel_cross_entropy(logits, target, ignore_index=255):
    return F.cross_entropy(logits, target, ignore_index=ignore_index)
''',
    # the course's U-Net, untrained: the tests must refuse to run it at all
    "train": '''from cv_course.models import UNet as CourseUNet
model = CourseUNet(3, NUM_CLASSES, 8, 3).to(device)
''',
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("segmentation"), A)
    answers = solution_sources(REPO / "solutions" / A / NOTEBOOK)
    submissions = {
        "solution": answers,
        "untouched": {},
        "upsampling_only": {k: answers[k] for k in ("max_unpool2d", "conv_transpose2d")},
        "delegates": DELEGATING,
    }
    seconds = {}
    for student, subs in submissions.items():
        submit(course, A, student, subs)
        start = time.perf_counter()
        nbgrader(course, "autograde", A, "--student", student, "--force")
        seconds[student] = time.perf_counter() - start
    nbgrader(course, "export", "--to", "grades.csv")
    with open(course / "grades.csv", newline="") as f:
        scores = {r["student_id"]: float(r["score"]) for r in csv.DictReader(f) if r["assignment"] == A}
    print("\nautograde time per submission (s):", {k: round(v) for k, v in seconds.items()})
    return course, scores


def _outputs(course, student: str, grade_id: str) -> str:
    """What a cell of an autograded submission printed (stdout and tracebacks)."""
    source = json.loads((REPO / "solutions" / A / NOTEBOOK).read_text())
    index = next(i for i, c in enumerate(source["cells"])
                 if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)
    cell = json.loads((course / "autograded" / student / A / NOTEBOOK).read_text())["cells"][index]
    return "".join("".join(o.get("text", "")) + "".join(o.get("traceback", [])) for o in cell["outputs"])


def test_solution_gets_full_marks(graded):
    course, scores = graded
    cells = graded_cells(course, A, "solution")
    assert all(score == top for score, top in cells.values()), cells
    assert scores["solution"] == sum(POINTS.values()) == 20.0
    printed = "".join(_outputs(course, "solution", g) for g in ("train", "test_trained_model_visible"))
    print(printed)
    miou = float(re.search(r"mean IoU on 128 new scenes: ([0-9.]+)", printed).group(1))
    assert miou >= MIOU_THRESHOLD


def test_untouched_release_gets_zero_with_every_cell_graded(graded):
    course, scores = graded
    assert scores["untouched"] == 0.0
    cells = graded_cells(course, A, "untouched")
    assert {k: top for k, (_, top) in cells.items()} == POINTS
    assert "not implemented yet" in _outputs(course, "untouched", "test_conv_transpose2d_hidden")


def test_upsampling_only_gets_exactly_those_points(graded):
    course, scores = graded
    cells = graded_cells(course, A, "upsampling_only")
    earned = {k for k, (score, top) in cells.items() if score == top and top > 0}
    assert earned == {"test_max_unpool2d_visible", "test_max_unpool2d_hidden",
                      "test_conv_transpose2d_visible", "test_conv_transpose2d_hidden"}
    assert all(score == 0 for k, (score, _) in cells.items() if k not in earned)
    assert scores["upsampling_only"] == 8.0


def test_delegating_to_torch_and_the_course_scores_nothing(graded):
    course, scores = graded
    assert scores["delegates"] == 0.0
    assert "aten::max_unpool2d" in _outputs(course, "delegates", "test_max_unpool2d_visible")
    assert "transposed=True" in _outputs(course, "delegates", "test_conv_transpose2d_visible")
    assert "nll_loss" in _outputs(course, "delegates", "test_pixel_cross_entropy_visible")
    assert "cv_course.models" in _outputs(course, "delegates", "test_trained_model_visible")

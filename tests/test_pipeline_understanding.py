"""End to end through nbgrader for assignment 06 (understanding CNNs): release,
autograde the solution, the untouched release, a partial and a delegating
submission with a cold model cache, export grades, add the instructor's
points for the written answers."""

from __future__ import annotations

import csv
import time

import pytest
from nbgrader.api import Gradebook

from nbgrader_course import REPO, graded_cells, make_course, nbgrader, solution_sources, submit

pytestmark = pytest.mark.grading
A = "06_understanding"
NB = "understanding"
AUTO_POINTS = {"test_saliency_visible": 2, "test_saliency_hidden": 3, "test_grad_cam_visible": 2,
               "test_grad_cam_hidden": 4, "test_pointing_game": 3, "test_fgsm_visible": 2,
               "test_fgsm_hidden": 4}
ANSWERS = ("answer_saliency", "answer_grad_cam", "answer_fgsm")  # read by an instructor, 1 point each

NO_RELU_GRAD_CAM = '''def grad_cam(model, layer, images, target):
    # forgets the ReLU: regions that speak against the class come out negative
    store = {}
    handle = layer.register_forward_hook(lambda module, inputs, output: store.update(acts=output))
    was_training = model.training
    model.eval()
    try:
        x = images.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            total = model(x).gather(1, target[:, None]).sum()
            (grads,) = torch.autograd.grad(total, store["acts"])
    finally:
        handle.remove()
        model.train(was_training)
    return (grads.mean(dim=(2, 3), keepdim=True) * store["acts"].detach()).sum(dim=1)
'''
DELEGATING = {
    "saliency": '''from captum.attr import Saliency as _Saliency

def saliency(model, images, target):
    return _Saliency(model).attribute(images, target=target, abs=True).amax(dim=1)
''',
    "grad_cam": '''import cv_course.interpret as _reference

def grad_cam(model, layer, images, target):
    return _reference.grad_cam(model, layer, images, target)
''',
    "fgsm": '''from cv_course.interpret import fgsm as _reference_fgsm

fgsm = _reference_fgsm
''',
}


def _export(course) -> dict[str, float]:
    nbgrader(course, "export", "--to", "grades.csv")
    with open(course / "grades.csv", newline="") as f:
        return {r["student_id"]: float(r["score"]) for r in csv.DictReader(f) if r["assignment"] == A}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("understanding")
    course = make_course(tmp, A)
    answers = solution_sources(REPO / "solutions" / A / f"{NB}.ipynb")
    submit(course, A, "solution", answers)
    submit(course, A, "untouched", {})
    submit(course, A, "no_grad_cam", {"saliency": answers["saliency"], "grad_cam": NO_RELU_GRAD_CAM,
                                      "fgsm": answers["fgsm"]})
    submit(course, A, "delegates", DELEGATING)
    seconds = {}
    # An empty model cache: the first notebook graded trains the classifier within
    # the setup cell's time limit; the notebook and the grader never rely on a warm cache.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CV_COURSE_CACHE", str(tmp / "empty_cache"))
        for student in ("solution", "untouched", "no_grad_cam", "delegates"):
            start = time.perf_counter()
            nbgrader(course, "autograde", A, "--student", student, "--force")
            seconds[student] = time.perf_counter() - start
    print("autograde seconds per submission:", {k: round(v) for k, v in seconds.items()})
    return course, _export(course)


def test_solution_gets_full_marks(graded):
    course, scores = graded
    assert scores["solution"] == sum(AUTO_POINTS.values()) == 20
    cells = graded_cells(course, A, "solution")
    assert all(cells[name] == (top, top) for name, top in AUTO_POINTS.items()), cells
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        pending = [gb.find_grade(name, NB, A, "solution") for name in ANSWERS]
        assert all(g.needs_manual_grade for g in pending)  # written answers wait for an instructor
        for g in pending:
            g.manual_score = g.max_score
        gb.db.commit()
    assert _export(course)["solution"] == 23.0


def test_untouched_release_gets_zero_with_every_cell_graded(graded):
    course, scores = graded
    assert scores["untouched"] == 0.0
    cells = graded_cells(course, A, "untouched")
    assert set(cells) == set(AUTO_POINTS) | set(ANSWERS)
    assert sum(top for _, top in cells.values()) == 23.0
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        grades = gb.find_submission_notebook(NB, A, "untouched").grades
        assert not any(g.needs_manual_grade for g in grades)  # unchanged answers score 0 at once


def test_correct_saliency_and_fgsm_wrong_grad_cam_gets_exactly_those_points(graded):
    course, scores = graded
    assert scores["no_grad_cam"] == 11.0
    cells = graded_cells(course, A, "no_grad_cam")
    for name, top in AUTO_POINTS.items():
        expected = 0.0 if "grad_cam" in name or "pointing" in name else float(top)
        assert cells[name] == (expected, top), (name, cells[name])


def test_delegating_to_references_scores_nothing(graded):
    course, scores = graded
    assert scores["delegates"] == 0.0
    feedback = (course / "autograded" / "delegates" / A / f"{NB}.ipynb").read_text()
    assert "captum" in feedback and "cv_course.interpret" in feedback


def test_hidden_tests_are_not_in_the_release(graded):
    course, _ = graded
    released = (course / "assignments" / A / f"{NB}.ipynb").read_text()
    assert "check_saliency_visible" in released and "check_pointing_game" in released
    assert not any(f"check_{f}_hidden" in released for f in ("saliency", "grad_cam", "fgsm"))
    assert "grad.abs().amax(dim=1)  # [N, H, W]" not in released  # nor the solutions


def test_feedback_reports_the_pointing_game(graded):
    course, _ = graded
    nbgrader(course, "generate_feedback", A, "--student", "solution", "--force")
    html = list((course / "feedback" / "solution" / A).glob("*.html"))
    assert html and "your Grad-CAM" in html[0].read_text() and "the reference" in html[0].read_text()

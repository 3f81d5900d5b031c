"""The README's instructor recipe, followed as written, in a scratch course:
the exchange route (a local exchange folder; a student who fetches, submits
and fetches feedback) and the zip route (zip files in, feedback and CSV out),
graded together by the parallel autograde command."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from autograde_submissions import A, answers
from cv_course.grading.release import nbgrader_env
from nbgrader_course import REPO, make_course, nbgrader

# What the tests run, as the README writes it (checked against the README below).
RECIPE = ["nbgrader generate_assignment 02_boxes --force", "nbgrader release_assignment 02_boxes",
          "nbgrader collect 02_boxes", "nbgrader zip_collect 02_boxes",
          "python -m cv_course.grading.autograde 02_boxes", "nbgrader generate_feedback 02_boxes",
          "nbgrader release_feedback 02_boxes", "nbgrader fetch_feedback", "nbgrader export --to grades.csv",
          "make setup", "downloaded/02_boxes/archive/alice.zip"]
STUDENT_DATA = ["submitted/alice/02_boxes/boxes.ipynb", "autograded/a/b.ipynb", "feedback/a/b.html",
                "downloaded/02_boxes/archive/a.zip", "exchange/x", "gradebook.db", "grades.csv",
                "autograde-report/02_boxes/report.md"]


def instructor_section() -> str:
    readme = (REPO / "README.md").read_text()
    return readme[readme.index("## For instructors"):readme.index("## Repository layout")]


def test_readme_shows_every_command_the_recipe_test_runs():
    section = instructor_section()
    missing = [cmd for cmd in RECIPE if cmd not in section]
    assert not missing, f"the README's instructor section lacks {missing}"


@pytest.mark.parametrize("path", STUDENT_DATA)
def test_student_data_is_ignored_by_git(path):
    done = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO)
    assert done.returncode == 0, f"{path} is not ignored by git: student data could be committed"


def _as_student(student: str, home: Path, *args: str, exchange: Path) -> str:
    """An nbgrader command run by ``student`` in their own folder (on a shared machine nbgrader takes
    the id from the login name; here every student is the same user, so it is given)."""
    cmd = [sys.executable, "-m", "nbgrader", *args, "--course", "cv-course", f"--Exchange.root={exchange}",
           f"--student={student}"]
    done = subprocess.run(cmd, cwd=home, env=nbgrader_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"student {student}: `nbgrader {' '.join(args)}` failed:\n{done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def _answer(notebook: Path, code: dict[str, str]) -> None:
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.metadata.get("nbgrader", {}).get("solution") and gid in code:
            cell.source = code[gid]
    nbformat.write(nb, notebook)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recipe")
    course = make_course(tmp, A)  # runs `nbgrader generate_assignment 02_boxes --force`
    exchange, alice = tmp / "exchange", tmp / "alice"
    exchange.mkdir()
    alice.mkdir()
    logs = [nbgrader(course, "release_assignment", A, f"--Exchange.root={exchange}")]
    # alice, with the exchange
    _as_student("alice", alice, "fetch_assignment", A, exchange=exchange)
    _answer(alice / A / "boxes.ipynb", answers("correct"))
    _as_student("alice", alice, "submit", A, exchange=exchange)
    logs.append(nbgrader(course, "collect", A, f"--Exchange.root={exchange}"))
    # bob, by zip file (his nms is wrong)
    bob = tmp / "bob.ipynb"
    bob.write_bytes((course / "assignments" / A / "boxes.ipynb").read_bytes())
    _answer(bob, answers("wrong"))
    archive = course / "downloaded" / A / "archive"
    archive.mkdir(parents=True)
    with zipfile.ZipFile(archive / "bob.zip", "w") as z:
        z.write(bob, f"{A}/boxes.ipynb")
    logs.append(nbgrader(course, "zip_collect", A))
    graded = subprocess.run([sys.executable, "-m", "cv_course.grading.autograde", A, "--workers", "2",
                             "--no-progress"], cwd=course, env=nbgrader_env(), capture_output=True, text=True,
                            timeout=3600)
    assert graded.returncode == 0, graded.stdout + graded.stderr
    logs.append(graded.stdout + graded.stderr)
    logs.append(nbgrader(course, "generate_feedback", A))
    # (bob's zip has no submission time, which release_feedback needs: his feedback goes back by hand)
    logs.append(nbgrader(course, "release_feedback", A, "--student", "alice", f"--Exchange.root={exchange}"))
    _as_student("alice", alice, "fetch_feedback", A, exchange=exchange)
    logs.append(nbgrader(course, "export", "--to", "grades.csv"))
    return course, alice, "\n".join(logs)


@pytest.mark.grading
def test_both_routes_end_in_grades_csv(recipe):
    course, _, _ = recipe
    with open(course / "grades.csv", newline="") as f:
        scores = {r["student_id"]: float(r["score"]) for r in csv.DictReader(f) if r["assignment"] == A}
    assert scores == {"alice": 10.0, "bob": 5.0}


@pytest.mark.grading
def test_alice_fetches_her_feedback(recipe):
    _, alice, _ = recipe
    html = list((alice / A / "feedback").glob("*/boxes.html"))
    assert len(html) == 1 and "visible checks passed" in html[0].read_text()


@pytest.mark.grading
def test_feedback_reads_offline_without_grader_paths(recipe):
    course, _, _ = recipe
    text = (course / "feedback" / "bob" / A / "boxes.html").read_text()
    assert "data:image/svg+xml" in text  # the notebook's $A$ and $B$, drawn
    assert not re.search(r"\$[AB]\$", text)
    assert "nms kept the wrong boxes" in text
    assert str(REPO) not in text and "site-packages" not in text


@pytest.mark.grading
def test_logs_have_no_warnings_that_mean_nothing(recipe):
    _, _, logs = recipe
    assert "SAWarning" not in logs and "not in session" not in logs
    assert "checksum" not in logs and "without encryption" not in logs

"""Drive the real nbgrader pipeline in a scratch course directory.

Used by the end-to-end grading tests of every assignment: generate the
release from solutions/, write submissions (the solution, the untouched
release, partial or dishonest ones), autograde them all, export grades.
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from cv_course.grading.release import nbgrader_env

REPO = Path(__file__).resolve().parents[1]
_MARKERS = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*\n", re.MULTILINE)


def nbgrader(course: Path, *args: str, timeout: int = 1800) -> str:
    cmd = [sys.executable, "-m", "nbgrader", *args]
    done = subprocess.run(cmd, cwd=course, env=nbgrader_env(), capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"`nbgrader {' '.join(args)}` failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


# What an instructor's own course directory might hold: nbgrader's defaults (plain
# Execute, no tamper scan) with the course's folders.
PLAIN_CONFIG = """c = get_config()
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "assignments"
c.Execute.timeout = 300
"""


def make_course(tmp: Path, assignment: str, config: str | None = None) -> Path:
    """A course directory with the repository's config (or the text ``config``) and
    one source assignment, released with `nbgrader generate_assignment` (database
    included)."""
    course = tmp / "course"
    shutil.copytree(REPO / "solutions" / assignment, course / "solutions" / assignment)
    if config is None:
        shutil.copy(REPO / "nbgrader_config.py", course / "nbgrader_config.py")
    else:
        (course / "nbgrader_config.py").write_text(config)
    nbgrader(course, "generate_assignment", assignment, "--force")
    return course


def solution_sources(source_nb: Path) -> dict[str, str]:
    """grade_id -> the instructor's solution code, markers removed."""
    nb = nbformat.read(source_nb, as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: _MARKERS.sub("", c.source)
            for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")}


def submit(course: Path, assignment: str, student: str, answers: dict[str, str],
           extra_cells: list[str] = ()) -> None:
    """Write a submission: the released notebook with the answer cells named in
    ``answers`` (grade_id -> code) replaced, plus ``extra_cells`` appended as
    new code cells after the first answer cell (as a student might add them)."""
    for release_nb in sorted((course / "assignments" / assignment).glob("*.ipynb")):
        nb = nbformat.read(release_nb, as_version=4)
        for cell in nb.cells:
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if cell.metadata.get("nbgrader", {}).get("solution") and gid in answers:
                cell.source = answers[gid]
        if extra_cells:
            first = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("solution"))
            for k, src in enumerate(extra_cells):
                nb.cells.insert(first + 1 + k, nbformat.v4.new_code_cell(src))
        out = course / "submitted" / student / assignment / release_nb.name
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out)


def autograde_each(course: Path, assignment: str) -> dict[str, float]:
    """Autograde every submission, one nbgrader run each; student -> seconds."""
    seconds = {}
    for folder in sorted((course / "submitted").iterdir()):
        start = time.perf_counter()
        nbgrader(course, "autograde", assignment, "--student", folder.name, "--force")
        seconds[folder.name] = time.perf_counter() - start
    print(f"{assignment}: autograde seconds per submission:", {k: round(v, 1) for k, v in seconds.items()})
    return seconds


def autograde_and_export(course: Path, assignment: str) -> dict[str, float]:
    """Autograde every submission (timing each), export grades; student -> score."""
    autograde_each(course, assignment)
    nbgrader(course, "export", "--to", "grades.csv")
    with open(course / "grades.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["assignment"] == assignment]
    return {r["student_id"]: float(r["score"]) for r in rows}


def graded_cells(course: Path, assignment: str, student: str) -> dict[str, tuple[float, float]]:
    """grade_id -> (score, max) for one autograded submission, from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        sub = gb.find_submission(assignment, student)
        return {g.name: (g.score, g.max_score) for nb in sub.notebooks for g in nb.grades}

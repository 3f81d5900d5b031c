"""Between the course's gradebook and the scratch ones, through nbgrader's
Gradebook API (no SQL of our own).

* :func:`template_db`: a new gradebook holding one assignment as the course's
  gradebook has it (notebooks, grade/solution/task/source cells): what a
  scratch course starts from.
* :func:`read_results`: what ``nbgrader autograde`` saved for one submission
  in a scratch gradebook.
* :func:`merge`: write those results into the course's gradebook, field by
  field as nbgrader's ``SaveAutoGrades`` and ``AssignLatePenalties`` would
  have: ``merge(read_results(scratch)) `` leaves the course's gradebook as a
  serial ``nbgrader autograde --student S`` would, and running it twice
  changes nothing the second time. Manual scores are kept; a grade with one
  is marked for review again, as nbgrader does.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry

from ..release import nbgrader_env
from .quiet import ignore_gradebook_warnings


def template_db(db_url: str, assignment: str, course_id: str = "") -> bytes:
    """A gradebook (SQLite file, as bytes) with ``assignment`` copied from ``db_url``."""
    ignore_gradebook_warnings()
    os.environ["PATH"] = nbgrader_env()["PATH"]  # a new gradebook runs `alembic` from the interpreter's bin
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gradebook.db"
        with Gradebook(db_url, course_id) as src, Gradebook(f"sqlite:///{path}", course_id) as dst:
            try:
                a = src.find_assignment(assignment)
            except MissingEntry:
                raise SystemExit(f"The gradebook has no assignment {assignment!r}: run "
                                 f"`nbgrader generate_assignment {assignment}` first.") from None
            dst.update_or_create_assignment(a.name, duedate=a.duedate)
            for nb in a.notebooks:
                dst.update_or_create_notebook(nb.name, a.name)
                for c in nb.grade_cells:
                    dst.update_or_create_grade_cell(c.name, nb.name, a.name, max_score=c.max_score,
                                                    cell_type=c.cell_type)
                for c in nb.solution_cells:
                    dst.update_or_create_solution_cell(c.name, nb.name, a.name)
                for c in nb.task_cells:
                    dst.update_or_create_task_cell(c.name, nb.name, a.name, max_score=c.max_score,
                                                   cell_type=c.cell_type)
                for c in nb.source_cells:
                    dst.update_or_create_source_cell(c.name, nb.name, a.name, cell_type=c.cell_type,
                                                     locked=c.locked, source=c.source, checksum=c.checksum)
        return path.read_bytes()


def read_results(db_path: Path, assignment: str, student: str) -> tuple[object, dict]:
    """(timestamp, {notebook: {"grades": {cell: auto_score}, "comments": {cell: auto_comment},
    "late_penalty": float | None}}) of one submission in a scratch gradebook."""
    with Gradebook(f"sqlite:///{db_path}") as gb:
        sub = gb.find_submission(assignment, student)
        notebooks = {nb.name: {"grades": {g.name: g.auto_score for g in nb.grades},
                               "comments": {c.name: c.auto_comment for c in nb.comments},
                               "late_penalty": nb.late_submission_penalty}
                     for nb in sub.notebooks}
        return sub.timestamp, notebooks


def merge(db_url: str, assignment: str, student: str, timestamp, notebooks: dict, course_id: str = "") -> None:
    """Write one submission's :func:`read_results` into the gradebook at ``db_url``."""
    ignore_gradebook_warnings()
    with Gradebook(db_url, course_id) as gb:
        gb.update_or_create_student(student)
        if timestamp is not None:
            gb.update_or_create_submission(assignment, student, timestamp=timestamp)
        else:
            gb.update_or_create_submission(assignment, student)
        for nb_name, saved in notebooks.items():
            for cell, auto_score in saved["grades"].items():
                grade = gb.find_grade(cell, nb_name, assignment, student)
                grade.auto_score = auto_score
                grade.needs_manual_grade = grade.manual_score is not None or auto_score is None
            for cell, comment in saved["comments"].items():
                gb.find_comment(cell, nb_name, assignment, student).auto_comment = comment
            gb.find_submission_notebook(nb_name, assignment, student).late_submission_penalty = \
                saved["late_penalty"]
        gb.db.commit()


def graded_cells(db_url: str, assignment: str) -> dict[str, dict[str, tuple]]:
    """student -> {notebook/cell: (auto_score, manual_score, needs_manual_grade)}: for comparing
    two gradebooks cell by cell."""
    out = {}
    with Gradebook(db_url) as gb:
        for sub in gb.assignment_submissions(assignment):
            out[sub.student.id] = {f"{nb.name}/{g.name}": (g.auto_score, g.manual_score, g.needs_manual_grade)
                                   for nb in sub.notebooks for g in nb.grades}
            out[sub.student.id].update({f"{nb.name}/{c.name}#comment": c.auto_comment
                                        for nb in sub.notebooks for c in nb.comments})
    return out

"""The scan applied to a notebook: which cells a student wrote, which exercise
each belongs to, and what would be withheld.

An exercise is a *section* of the notebook: it starts at an answer (solution)
code cell and runs to the next one; cells before the first answer cell belong
to the first exercise. Its graded code cells are the automatically graded test
cells in the section. A finding withholds only the exercise of its section.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field, replace

from .scan import Finding, scan_sources, to_python


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def is_trusted(cell) -> bool:
    """Cells whose source nbgrader restores from the instructor's version: locked
    cells and test cells that still carry a grade_id (nbgrader's sanitising step
    strips a grade_id it does not know, so a student cannot mark their own cell
    as trusted)."""
    meta = _nbgrader(cell)
    return bool(meta.get("grade_id")) and bool(meta.get("locked") or (meta.get("grade") and not meta.get("solution")))


def _is_answer(cell) -> bool:
    return cell.get("cell_type") == "code" and bool(_nbgrader(cell).get("solution"))


def _is_test(cell) -> bool:
    meta = _nbgrader(cell)
    return cell.get("cell_type") == "code" and is_trusted(cell) and bool(meta.get("grade"))


@dataclass(eq=False)
class Exercise:
    name: str  # the grade_id of its answer cell ("box_iou")
    tests: list[int] = field(default_factory=list)  # indices of its graded test cells
    points: float = 0.0
    findings: list[Finding] = field(default_factory=list)


def exercises(nb) -> dict[int, Exercise]:
    """Cell index -> the exercise whose section the cell is in (code cells only)."""
    cells = nb["cells"]
    answers = {i: Exercise(_nbgrader(c).get("grade_id") or f"cell {i}") for i, c in enumerate(cells)
               if _is_answer(c)}
    owner: dict[int, Exercise] = {}
    current = next(iter(answers.values()), Exercise("the notebook"))
    for i, cell in enumerate(cells):
        current = answers.get(i, current)
        if _is_test(cell):
            current.tests.append(i)
            current.points += float(_nbgrader(cell).get("points") or 0)
        if cell.get("cell_type") == "code":
            owner[i] = current
    return owner


def _label(nb, index: int, owner: dict[int, Exercise]) -> str:
    """The cell as a student knows it: their answer cell by name, any other cell by
    the answer cell before it and its first line."""
    cell = nb["cells"][index]
    if _is_answer(cell):
        return f"your {_nbgrader(cell).get('grade_id', '')} answer cell"
    first = next((line.strip() for line in cell["source"].splitlines() if line.strip()), "")
    first = first if len(first) <= 40 else first[:37] + "..."
    before = [i for i in owner if i < index and _is_answer(nb["cells"][i])]
    after = f" after your {_nbgrader(nb['cells'][before[-1]]).get('grade_id')} answer cell" if before else ""
    return f"the cell{after} that starts `{first}`"


def scan_notebook(nb) -> list[Finding]:
    """Findings in the code cells a student can write (answer cells and any cells
    they added), each naming its cell as the student knows it."""
    owner = exercises(nb)
    cells = [(i, c["source"], is_trusted(c)) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    return [replace(f, where=_label(nb, f.cell, owner)) for f in scan_sources(cells)]


def withheld(nb) -> list[Exercise]:
    """The exercises that a finding withholds, each with its findings, in notebook order."""
    owner = exercises(nb)
    out: list[Exercise] = []
    for f in scan_notebook(nb):
        ex = owner[f.cell]
        if ex not in out:
            out.append(ex)
        ex.findings.append(f)
    return out


def stub_source(source: str) -> str:
    """What runs instead of a withheld cell: every function or class it defines
    raises a NameError that says why, so an exercise that uses one says so."""
    try:
        tree = ast.parse(to_python(source))
    except SyntaxError:
        tree = ast.Module(body=[], type_ignores=[])
    names = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    lines = ["# Not run: the course's tamper scan withheld this cell (see the feedback)."]
    for name in names:
        lines += [f"def {name}(*args, **kwargs):",
                  f"    raise NameError({name + ' is not defined: the tamper scan withheld the cell that defines it'!r})"]
    return "\n".join(lines)

"""The notebooks' last cell, "Before you submit": the grader's scan run by the
student on their own saved notebook, so that nothing is withheld by surprise."""

from __future__ import annotations

import datetime
import json
import os

from .notebook import withheld
from .rules import rules_markdown


def check_before_submitting(notebook: str) -> None:
    """Scan the saved ``notebook`` (a path, relative to the notebook's folder) as
    the grader will and print what it would withhold. Returns True when nothing
    would be."""
    if os.environ.get("NBGRADER_EXECUTION"):
        print("Skipped while grading: the grader runs its own scan.")
        return
    if not os.path.exists(notebook):
        print(f"Cannot find {notebook} next to this notebook; run this cell from the notebook you submit, "
              "under its released name.")
        return
    with open(notebook, encoding="utf-8") as f:
        nb = json.load(f)
    for cell in nb["cells"]:  # the file stores sources as lists of lines
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(cell["source"])
    saved = datetime.datetime.fromtimestamp(os.path.getmtime(notebook)).strftime("%H:%M:%S")
    print(f"Scanned {notebook} as saved at {saved} (save first, so that your latest changes count).")
    held = withheld(nb)
    if not held:
        print("Nothing would be withheld: the tamper scan finds nothing in your cells.")
        return
    for exercise in held:
        print(f"\n{exercise.name} ({exercise.points:g} points) would be withheld, because of:")
        for finding in exercise.findings:
            print(f"  - {finding}")
    print("\nRemove that code (no exercise needs it), save, and run this cell again. The rules: "
          + rules_markdown().replace("`", ""))

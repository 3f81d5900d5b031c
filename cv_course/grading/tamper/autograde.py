"""The scan as an nbgrader autograde step: :class:`TamperScan`, nbgrader's
``Execute`` with the scan around it.

Before the submission runs, each cell with a finding is replaced by a stub
(``notebook.stub_source``), so the flagged code never runs and cannot reach
any other exercise; the kernel is started with the fail-closed marker
(``failclosed.MARKER``) in its environment. After the run, the student's code
is put back for the instructor to read, and the graded cells of each withheld
exercise get an error naming the findings, so they score zero and the feedback
says why. Exercises without findings are graded as usual.
"""

from __future__ import annotations

import contextlib
import os

from nbformat.v4 import new_output
from nbgrader.preprocessors import Execute

from ..failclosed import MARKER
from .notebook import withheld, stub_source


@contextlib.contextmanager
def _marked():
    """The marker in this process's environment while the kernel starts (the
    kernel inherits it), removed afterwards."""
    before = os.environ.get(MARKER)
    os.environ[MARKER] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ[MARKER]
        else:
            os.environ[MARKER] = before


def withheld_message(exercise) -> str:
    listing = "\n".join(f"  - {f}" for f in exercise.findings)
    cells = "That cell was" if len({f.cell for f in exercise.findings}) == 1 else "Those cells were"
    return (f"Autograding of {exercise.name} withheld: the tamper scan found code that could change how it "
            f"is graded:\n{listing}\n{cells} not run while grading (an exercise that uses what they define "
            "fails too). Remove that code (no exercise needs it; the notebook's last cell, "
            "\"Before you submit\", runs the same scan), or ask an instructor to review the submission.")


class TamperScan(Execute):
    """nbgrader's Execute, with the course's tamper scan before and after it.

    Use it in place of ``Execute`` in ``c.Autograde.autograde_preprocessors``;
    ``c.Execute.*`` settings (``timeout``, ...) apply to it."""

    def preprocess(self, nb, resources):
        held = withheld(nb)
        originals = {}
        for exercise in held:
            for f in exercise.findings:
                cell = nb.cells[f.cell]
                originals.setdefault(f.cell, cell.source)
                cell.source = stub_source(originals[f.cell])
        try:
            with _marked():
                nb, resources = super().preprocess(nb, resources)
        finally:  # the student's code, for the instructor to read
            for index, source in originals.items():
                nb.cells[index].source = source
                nb.cells[index].outputs = [new_output(
                    "stream", name="stdout", text="Not run while grading: the tamper scan withheld this cell.\n")]
        for exercise in held:
            message = withheld_message(exercise)
            self.log.warning("Tamper scan: %s", message)
            for index in exercise.tests:  # the reason first, then what the check said
                nb.cells[index].outputs.insert(0, new_output(
                    "error", ename="GradingIntegrityError", evalue=message, traceback=[message]))
        return nb, resources

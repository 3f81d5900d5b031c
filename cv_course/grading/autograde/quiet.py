"""Logs an instructor can read: nbgrader's harmless messages out of the way,
everything else left as it is. Called from ``nbgrader_config.py``.

Three messages appear for every submission and mean nothing is wrong:

* SQLAlchemy's ``SAWarning: Object of type <SubmittedNotebook> not in
  session, add operation along 'Notebook.submissions' will not proceed``:
  nbgrader 0.9's gradebook code with SQLAlchemy 2; the submission is saved.
* ``Attribute 'checksum' for cell test_nms_hidden has changed!`` for a cell
  with hidden tests: the release's copy of that cell has its hidden tests
  removed, so it never matches the source's checksum; nbgrader puts the
  source's cell back before grading, as it should. The same message for any
  *other* cell is kept: a student edited a read-only cell (nbgrader still
  grades the original).
* The kernel's ``Kernel is running over TCP without encryption``: the grading
  kernel talks to nbgrader over the machine's loopback only
  (``kernel_arguments`` sets its log level to errors).
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import nbformat

GRADEBOOK_WARNING = r"Object of type <\w+> not in session"
_CHECKSUM = re.compile(r"Attribute 'checksum' for cell (\S+) has changed")
APP_LOGGERS = ("NbGraderApp", "AutogradeApp", "GenerateFeedbackApp", "GenerateAssignmentApp",
               "ValidateApp", "ZipCollectApp", "CollectApp", "ExportApp", "FormgradeApp")
kernel_arguments = ["--IPKernelApp.log_level=ERROR"]  # c.Execute.extra_arguments


def hidden_test_cells(source: Path) -> set[str]:
    """grade_ids of the cells with ``### BEGIN HIDDEN TESTS`` in the source notebooks under ``source``."""
    out = set()
    for path in sorted(source.glob("*/*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if "BEGIN HIDDEN TESTS" in cell.source:
                out.add(cell.metadata.get("nbgrader", {}).get("grade_id", ""))
    return out


class HiddenTestChecksum(logging.Filter):
    """Drops the checksum warning for cells whose hidden tests explain it."""

    def __init__(self, cells: set[str]):
        super().__init__()
        self.cells = cells

    def filter(self, record: logging.LogRecord) -> bool:
        m = _CHECKSUM.search(record.getMessage())
        return not (m and m.group(1) in self.cells)


def ignore_gradebook_warnings() -> None:
    """Silence nbgrader's SQLAlchemy session warnings (see the module docstring)."""
    from sqlalchemy.exc import SAWarning

    warnings.filterwarnings("ignore", message=GRADEBOOK_WARNING, category=SAWarning)


def quiet_nbgrader(source: Path) -> None:
    """Both filters, for the source directory ``source`` (e.g. ``solutions``)."""
    ignore_gradebook_warnings()
    checksum = HiddenTestChecksum(hidden_test_cells(source))
    for name in APP_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, HiddenTestChecksum)]:
            logger.removeFilter(old)  # a worker loads the configuration once per submission
        logger.addFilter(checksum)

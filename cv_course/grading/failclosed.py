"""Hidden checks award points only where the course's tamper scan ran.

The tamper scan (:mod:`cv_course.grading.tamper`) runs in nbgrader's own
process, and only where the course directory's ``nbgrader_config.py`` puts
:class:`~cv_course.grading.tamper.TamperScan` in place of nbgrader's
``Execute``. Without it a submission that also rewrites ``torch.allclose``
would pass every value check. So every hidden check first calls
:func:`require_course_scan`:

* under ``nbgrader autograde`` (nbgrader sets ``NBGRADER_EXECUTION=autograde``
  in the kernel's environment) it fails unless ``TamperScan`` started the
  kernel, which it marks with ``CV_COURSE_TAMPER_SCAN=1``;
* anywhere else (a student running the notebook, ``nbgrader validate``, tests
  calling a check directly) it does nothing.

Under a plain configuration every hidden check then scores zero with a message
that says how to configure the course: an instructor notices at once, instead
of publishing grades nothing checked. (Code in an unscanned submission could
set the marker itself; it would still be caught when the instructor regrades
with the scan, which is what the zeros ask for.)

For generated checks: call ``require_course_scan()`` first in every
``check_<name>_hidden``, or decorate it with ``@hidden_check``.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, TypeVar

from .checks import CheckFailed

MARKER = "CV_COURSE_TAMPER_SCAN"  # set to "1" in the kernel's environment by TamperScan
F = TypeVar("F", bound=Callable)


class ScanNotConfigured(CheckFailed):
    """A hidden check ran under nbgrader autograde without the course's tamper scan."""


def require_course_scan() -> None:
    """Raise :class:`ScanNotConfigured` when running under ``nbgrader autograde``
    without the course's tamper scan; do nothing otherwise."""
    if os.environ.get("NBGRADER_EXECUTION") == "autograde" and os.environ.get(MARKER) != "1":
        raise ScanNotConfigured(
            "Not graded: this check ran under nbgrader autograde without the course's tamper "
            "scan, so it awards no points. In the course's nbgrader_config.py, put "
            "cv_course.grading.tamper.TamperScan in place of nbgrader's Execute in "
            "c.Autograde.autograde_preprocessors (the repository's nbgrader_config.py shows how; the "
            "README's instructor section has the lines to copy), then autograde again.")


def hidden_check(check: F) -> F:
    """Decorator: run :func:`require_course_scan` before the check."""

    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        require_course_scan()
        return check(*args, **kwargs)

    return wrapper  # type: ignore[return-value]

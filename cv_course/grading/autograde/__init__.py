"""Autograde a whole class: ``python -m cv_course.grading.autograde ASSIGNMENT``.

nbgrader autogrades one submission after another (it has no parallel
autograde, nbgrader issue #174, and no memory limit, #1429). This command
runs nbgrader's own autograde, with the course's configuration (tamper scan,
preprocessors, feedback), for each submission in isolation, on Dask workers:

* ``coordinator.py``: finds the submissions under ``submitted/*/ASSIGNMENT/``,
  skips those already graded (``--force`` regrades), sends each to a worker,
  and merges what comes back into ``gradebook.db``: it is the only writer.
* ``scratch.py``: what a worker runs: a scratch course directory per
  submission, ``nbgrader autograde --student S`` in it.
* ``contain.py`` + ``launch.py``: the limits: memory on the kernel process,
  time per cell and per submission, a kernel that dies costs its cell only.
* ``gradebook.py``: scratch gradebooks <-> the course's, through nbgrader's API.
* ``report.py``, ``similarity.py``: the summary, the report file with a score
  histogram, and near-identical solutions listed for review.
* ``feedback.py``, ``quiet.py``: feedback and log settings for ``nbgrader_config.py``.
"""

from .coordinator import Outcome, autograde
from .scratch import Limits

__all__ = ["Limits", "Outcome", "autograde"]

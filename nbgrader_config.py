"""nbgrader configuration for cv-course.

solutions/   nbgrader's *source* directory: assignments with solutions and hidden tests.
assignments/ nbgrader's *release* directory: what students get (made by `make release`).
Run nbgrader commands from the repository root (see the README's instructor section).
"""

from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    IgnorePattern,
    LimitOutput,
    SaveAutoGrades,
)

from cv_course.grading.tamper import TamperScan

c = get_config()  # noqa: F821 (provided by nbgrader)

c.CourseDirectory.course_id = "cv-course"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "assignments"

# Per-cell time limit while autograding. Hidden tests finish in seconds on a CPU;
# the training cell of assignment 01 needs more than nbgrader's default 30 s.
c.Execute.timeout = 180

# TamperScan is nbgrader's Execute with the course's tamper scan around it: cells
# with code that could change how they are graded are not run, and their
# exercise is withheld with the reason. Without it (nbgrader's plain Execute)
# every hidden check refuses to award points (cv_course.grading.failclosed).
# nbgrader's default list, with TamperScan in place of Execute:
c.Autograde.autograde_preprocessors = [
    TamperScan,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

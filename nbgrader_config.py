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
# the training cells (01's U-Net, 06's classifier on a cold cache) need one to
# two minutes on a quiet core and up to four on a busy grading machine, where a
# tighter limit would cost an honest student points.
c.Execute.timeout = 300

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

# ---- Submissions downloaded as zip files: `nbgrader zip_collect ASSIGNMENT` ----
# Put one zip file per student, named after the student's id, in
#   downloaded/ASSIGNMENT/archive/STUDENT_ID.zip   (holding the notebook, in any folder)
# zip_collect extracts each to downloaded/ASSIGNMENT/extracted/STUDENT_ID/ and copies
# the notebooks to submitted/STUDENT_ID/ASSIGNMENT/. The pattern below reads the
# student's id from that folder name (nbgrader matches it against the full path).
c.ZipCollectApp.downloaded_directory = "downloaded"
c.ZipCollectApp.archive_directory = "archive"
c.ZipCollectApp.extracted_directory = "extracted"
c.FileNameCollectorPlugin.named_regexp = r".*/extracted/(?P<student_id>[^/]+)/(?:.*/)?(?P<file_id>[^/]+\.ipynb)$"

# ---- Logs an instructor can read, feedback a student can read offline ----
# (cv_course.grading.autograde.quiet and .feedback say what each one does and why.)
from pathlib import Path  # noqa: E402

from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import GetGrades  # noqa: E402

from cv_course.grading.autograde.feedback import OfflineMath, ShortTracebacks  # noqa: E402
from cv_course.grading.autograde.quiet import kernel_arguments, quiet_nbgrader  # noqa: E402

quiet_nbgrader(Path(__file__).resolve().parent / c.CourseDirectory.source_directory)
c.Execute.extra_arguments = list(kernel_arguments)
c.GenerateFeedback.preprocessors = [GetGrades, CSSHTMLHeaderPreprocessor, ShortTracebacks, OfflineMath]

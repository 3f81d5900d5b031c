"""Submissions of 02_boxes that misbehave while graded, for the autograde tests
and benchmarks/autograde.py: each passes the tamper scan, so it really runs."""

from __future__ import annotations

from nbgrader_course import REPO, solution_sources

A = "02_boxes"
ANSWERS = solution_sources(REPO / "solutions" / A / "boxes.ipynb")
_FIRST_LINE = "    order = torch.argsort"


def _nms_doing(code: str) -> str:
    """The reference nms with ``code`` (indented lines) run first."""
    assert _FIRST_LINE in ANSWERS["nms"], "the solution's nms changed: update tests/autograde_submissions.py"
    return ANSWERS["nms"].replace(_FIRST_LINE, code + "\n" + _FIRST_LINE, 1)


WRONG_NMS = '''def nms(boxes, scores, iou_threshold):
    return torch.argsort(scores, descending=True, stable=True)  # suppresses nothing
'''
# os reached through a module the scan allows: the kernel process ends mid-check
EXIT_NMS = _nms_doing("    torch.serialization.os._exit(3)")
LOOP_NMS = _nms_doing("    while True:\n        pass")
HOG_NMS = _nms_doing("    hoard = []\n    while True:\n"
                     "        hoard.append(torch.ones(2**26))  # 256 MB more each time")
RAISING_NMS = _nms_doing("    raise ValueError('not finished')")

# name -> answers (grade_id -> code); box_iou is right in each, so only nms differs
KINDS = {
    "correct": {},
    "wrong": {"nms": WRONG_NMS},
    "raising": {"nms": RAISING_NMS},
    "exit": {"nms": EXIT_NMS},
    "loop": {"nms": LOOP_NMS},
    "hog": {"nms": HOG_NMS},
}


def answers(kind: str) -> dict[str, str]:
    if kind == "untouched":
        return {}
    return {**ANSWERS, **KINDS[kind]}

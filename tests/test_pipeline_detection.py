"""End to end through nbgrader for assignment 03 (detection): release, autograde
honest, partial, buggy, dishonest and tampering submissions, export grades."""

from __future__ import annotations

import filecmp
import json

import pytest

from cv_course.grading.release import generate
from nbgrader_course import (PLAIN_CONFIG, REPO, autograde_and_export, graded_cells, make_course, nbgrader,
                             solution_sources, submit)

pytestmark = pytest.mark.grading
A = "03_detection"
NOTEBOOK = "detection.ipynb"
POINTS = {"encode_boxes": 3, "decode_boxes": 3, "roi_align": 6, "label_anchors": 4, "average_precision": 4}

# A roi_align that forgets the adaptive grid: one sample in the middle of each bin unless told otherwise.
ONE_SAMPLE_ROI_ALIGN = '''def roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    N, C, H, W = input.shape
    PH, PW = output_size
    out = []
    for roi in boxes:
        x1, y1, x2, y2 = (roi[1:] * spatial_scale - (0.5 if aligned else 0.0)).tolist()
        w, h = (x2 - x1, y2 - y1) if aligned else (max(x2 - x1, 1.0), max(y2 - y1, 1.0))
        g = max(sampling_ratio, 1)
        ys = torch.tensor([y1 + (p + (i + 0.5) / g) * h / PH for p in range(PH) for i in range(g)])
        xs = torch.tensor([x1 + (q + (j + 0.5) / g) * w / PW for q in range(PW) for j in range(g)])
        def weights(c, size):
            inside = ((c >= -1) & (c <= size)).float()
            c = c.clamp(min=0)
            lo = c.floor().long().clamp(max=size - 1)
            hi = (lo + 1).clamp(max=size - 1)
            frac = torch.where(c >= size - 1, 0.0, c - lo)
            px = torch.arange(size)
            return ((1 - frac) * inside)[:, None] * (px == lo[:, None]) + (frac * inside)[:, None] * (px == hi[:, None])
        wy = weights(ys, H).to(input)
        wx = weights(xs, W).to(input)
        s = wy @ input[int(roi[0])] @ wx.T
        out.append(s.reshape(C, PH, g, PW, g).mean(dim=(2, 4)))
    return torch.stack(out) if out else input.new_zeros(0, C, PH, PW)
'''
# AP as the area under the raw precision-recall curve: no interpolation.
RAW_AP = '''def average_precision(boxes, scores, gt_boxes, iou_threshold=0.5):
    order = torch.argsort(scores, descending=True, stable=True)
    iou = box_iou(boxes[order], gt_boxes)
    D, G = iou.shape
    taken = torch.zeros(G, dtype=torch.bool, device=boxes.device)
    tp = torch.zeros(D, dtype=torch.float64, device=boxes.device)
    for k in range(D if G else 0):
        free = torch.where(taken, -1.0, iou[k])
        if free.max() >= iou_threshold:
            taken[free.argmax()] = True
            tp[k] = 1
    tp = tp.cumsum(0)
    precision = tp / torch.arange(1, D + 1, device=boxes.device)
    recall = tp / max(G, 1)
    return (torch.diff(recall, prepend=recall.new_zeros(1)) * precision).sum()
'''
# The typical slip: thresholds right, but no low-quality matches.
NO_LOW_QUALITY = '''def label_anchors(iou, high_threshold=0.7, low_threshold=0.3):
    if iou.shape[0] == 0:
        return torch.zeros(iou.shape[1], dtype=torch.int64, device=iou.device)
    best = iou.max(dim=0).values
    labels = torch.full_like(best, -1, dtype=torch.int64)
    labels[best < low_threshold] = 0
    labels[best >= high_threshold] = 1
    return labels
'''
DELEGATING = {
    "encode_boxes": '''import cv_course.ops

def encode_boxes(boxes, anchors):
    return cv_course.ops.BoxCoder().encode(boxes, anchors)
''',
    "decode_boxes": '''from torchvision.models.detection._utils import BoxCoder as _TVBoxCoder

def decode_boxes(deltas, anchors):
    return _TVBoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(deltas, anchors)
''',
    "roi_align": '''import torchvision

def roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    return torchvision.ops.roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
''',
    "label_anchors": '''from cv_course.ops import Matcher as _Matcher

def label_anchors(iou, high_threshold=0.7, low_threshold=0.3):
    m = _Matcher(high_threshold, low_threshold, True)(iou)
    return torch.where(m >= 0, 1, torch.where(m == -1, 0, -1))
''',
    "average_precision": '''from cv_course import metrics as _metrics

def average_precision(boxes, scores, gt_boxes, iou_threshold=0.5):
    curve = _metrics.precision_recall(boxes, scores, gt_boxes, iou_threshold)
    return _metrics.average_precision(curve.precision, curve.recall, "voc")
''',
}
WRONG_ENCODE = '''def encode_boxes(boxes, anchors):
    return torch.zeros_like(boxes)
'''
TAMPERING = "torch.allclose = lambda *args, **kwargs: True  # makes every value comparison pass"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("detection"), A)
    answers = solution_sources(REPO / "solutions" / A / NOTEBOOK)
    assert set(answers) == set(POINTS)
    submit(course, A, "solution", answers)
    submit(course, A, "untouched", {})
    submit(course, A, "partial", {**answers, "roi_align": ONE_SAMPLE_ROI_ALIGN, "average_precision": RAW_AP})
    submit(course, A, "no_low_quality", {**answers, "label_anchors": NO_LOW_QUALITY})
    submit(course, A, "delegates", DELEGATING)
    submit(course, A, "tampers", {**answers, "encode_boxes": WRONG_ENCODE}, extra_cells=[TAMPERING])
    scores = autograde_and_export(course, A)
    return course, scores


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """An instructor's course directory with nbgrader's plain configuration (no scan)."""
    course = make_course(tmp_path_factory.mktemp("detection_plain"), A, config=PLAIN_CONFIG)
    submit(course, A, "solution", solution_sources(REPO / "solutions" / A / NOTEBOOK))
    return course, autograde_and_export(course, A)


def _outputs(course, student: str, grade_id: str) -> str:
    """Everything the autograded cell ``grade_id`` printed or raised."""
    nb = json.loads((course / "autograded" / student / A / NOTEBOOK).read_text())
    cell = next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)
    return "\n".join("".join(o.get("text", "")) + o.get("ename", "") + ": " + o.get("evalue", "")
                     for o in cell.get("outputs", []))


def test_solution_gets_full_marks(graded):
    course, scores = graded
    assert scores["solution"] == 20.0
    cells = graded_cells(course, A, "solution")
    assert all(score == top for score, top in cells.values()), cells


def test_untouched_release_gets_zero_with_every_cell_graded(graded):
    course, scores = graded
    assert scores["untouched"] == 0.0
    cells = graded_cells(course, A, "untouched")
    assert set(cells) == {f"test_{n}_{k}" for n in POINTS for k in ("visible", "hidden")}
    assert sum(top for _, top in cells.values()) == 20.0


def test_partial_submission_gets_exactly_the_points_of_its_correct_exercises(graded):
    course, scores = graded
    assert scores["partial"] == POINTS["encode_boxes"] + POINTS["decode_boxes"] + POINTS["label_anchors"]
    cells = graded_cells(course, A, "partial")
    assert cells["test_roi_align_visible"] == (0.0, 2.0) and cells["test_roi_align_hidden"] == (0.0, 4.0)
    assert cells["test_average_precision_hidden"] == (0.0, 3.0)
    assert "adaptive grid" in _outputs(course, "partial", "test_roi_align_visible")
    assert "rises again" in _outputs(course, "partial", "test_average_precision_visible")


def test_labels_without_low_quality_matches_lose_exactly_that_exercise_and_are_told_why(graded):
    course, scores = graded
    assert scores["no_low_quality"] == 20.0 - POINTS["label_anchors"]
    visible = _outputs(course, "no_low_quality", "test_label_anchors_visible")
    hidden = _outputs(course, "no_low_quality", "test_label_anchors_hidden")
    print("feedback of the visible check:\n" + visible + "\nfeedback of the hidden check:\n" + hidden)
    assert "a low-quality match" in visible and "expected: [1, 0, 1, -1]" in visible
    assert "anchors wrongly on" in hidden and "should be 1 (positive)" in hidden


def test_delegating_to_references_scores_nothing(graded):
    course, scores = graded
    assert scores["delegates"] == 0.0
    assert "torchvision.ops" in _outputs(course, "delegates", "test_roi_align_visible")
    assert "torchvision.models" in _outputs(course, "delegates", "test_decode_boxes_visible")


def test_tampering_withholds_only_its_exercise(graded):
    course, scores = graded
    assert scores["tampers"] == 20.0 - POINTS["encode_boxes"]
    feedback = _outputs(course, "tampers", "test_encode_boxes_hidden")
    assert "withheld" in feedback and "torch.allclose" in feedback


def test_a_plain_nbgrader_configuration_awards_no_hidden_points(plain):
    course, scores = plain
    cells = graded_cells(course, A, "solution")
    assert all(cells[f"test_{n}_hidden"][0] == 0.0 for n in POINTS), cells
    assert "without the course's tamper" in _outputs(course, "solution", "test_roi_align_hidden")


def test_feedback_is_generated(graded):
    course, _ = graded
    nbgrader(course, "generate_feedback", A, "--student", "no_low_quality", "--force")
    html = list((course / "feedback" / "no_low_quality" / A).glob("*.html"))
    assert html and "low-quality match" in html[0].read_text()


def test_committed_release_is_current(tmp_path):
    fresh = generate(A, tmp_path)
    cmp = filecmp.dircmp(fresh, REPO / "assignments" / A)
    assert not (cmp.left_only or cmp.right_only or cmp.diff_files), "assignments/03_detection is stale: " \
                                                                    "run `make release` and commit the result"

"""End to end through nbgrader for assignment 04 (single-stage detectors and DETR):
release, autograde honest, partial, buggy, dishonest and tampering submissions,
export grades."""

from __future__ import annotations

import filecmp
import json

import pytest

from cv_course.grading.release import generate
from nbgrader_course import (PLAIN_CONFIG, REPO, autograde_and_export, graded_cells, make_course, nbgrader,
                             solution_sources, submit)

pytestmark = pytest.mark.grading
A = "04_single_stage"
NOTEBOOK = "single_stage.ipynb"
POINTS = {"sigmoid_focal_loss": 4, "encode_yolo_targets": 5, "detr_cost_matrix": 3, "detr_set_loss": 4,
          "fcos_targets": 4}

# The seeds' weighting: alpha for every example, negatives included.
SAME_ALPHA_FOCAL = '''def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2, reduction="none"):
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p = torch.sigmoid(inputs)
    pt = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - pt) ** gamma
    if alpha >= 0:
        loss = alpha * loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
'''
# w and h left in pixels.
PIXEL_YOLO = '''def encode_yolo_targets(boxes, labels, grid_size=7, num_boxes=2, num_classes=20, image_size=(448, 448)):
    S, B, C = grid_size, num_boxes, num_classes
    H, W = image_size
    target = torch.zeros(S, S, 5 * B + C, dtype=boxes.dtype, device=boxes.device)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for k in sorted(range(len(boxes)), key=lambda k: (float(area[k]), -k)):  # the largest is written last
        x1, y1, x2, y2 = boxes[k]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        j, i = min(int(cx / (W / S)), S - 1), min(int(cy / (H / S)), S - 1)
        slot = torch.stack([cx / (W / S) - j, cy / (H / S) - i, x2 - x1, y2 - y1, torch.ones_like(cx)])
        target[i, j] = 0
        target[i, j, :5 * B] = slot.repeat(B)
        target[i, j, 5 * B + int(labels[k]) - 1] = 1
    return target
'''
# The first box wins where a point lies in several.
FIRST_BOX_FCOS = '''def fcos_targets(points, boxes, labels, size_ranges):
    P = len(points)
    out_labels = torch.zeros(P, dtype=torch.int64, device=points.device)
    ltrb = points.new_zeros(P, 4)
    for k in reversed(range(len(boxes))):  # later boxes first, so the first box is written last
        x1, y1, x2, y2 = boxes[k]
        d = torch.stack([points[:, 0] - x1, points[:, 1] - y1, x2 - points[:, 0], y2 - points[:, 1]], dim=1)
        ok = (d.amin(1) > 0) & (d.amax(1) >= size_ranges[:, 0]) & (d.amax(1) <= size_ranges[:, 1])
        out_labels[ok] = labels[k]
        ltrb[ok] = d[ok]
    l, t, r, b = ltrb.unbind(1)
    pos = out_labels > 0
    one = torch.ones_like(l)
    ratio = torch.where(pos, torch.minimum(l, r) * torch.minimum(t, b), 0 * one) / torch.where(
        pos, torch.maximum(l, r) * torch.maximum(t, b), one)
    return out_labels, ltrb, ratio.sqrt()
'''
# The typical slip: a plain cross-entropy, no "no object" weight.
UNWEIGHTED_SET_LOSS = '''def detr_set_loss(pred_logits, pred_boxes, tgt_labels, tgt_boxes, rows, cols, no_object_weight=0.1):
    Q, C1 = pred_logits.shape
    target = torch.full((Q,), C1 - 1, dtype=torch.int64, device=pred_logits.device)
    target[rows] = tgt_labels[cols]
    loss_ce = F.cross_entropy(pred_logits, target)
    n = max(len(tgt_labels), 1)
    a, b = pred_boxes[rows], tgt_boxes[cols]
    giou = generalized_box_iou(box_cxcywh_to_xyxy(a), box_cxcywh_to_xyxy(b)).diagonal()
    return {"loss_ce": loss_ce, "loss_bbox": (a - b).abs().sum() / n, "loss_giou": (1 - giou).sum() / n}
'''
DELEGATING = {
    "sigmoid_focal_loss": '''import torchvision

def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2, reduction="none"):
    return torchvision.ops.sigmoid_focal_loss(inputs, targets, alpha, gamma, reduction)
''',
    "encode_yolo_targets": '''from cv_course.models.detection.yolo import encode_yolo_targets as _encode

def encode_yolo_targets(boxes, labels, grid_size=7, num_boxes=2, num_classes=20, image_size=(448, 448)):
    return _encode(boxes, labels, grid_size, num_boxes, num_classes, image_size)
''',
    "detr_cost_matrix": '''from cv_course.ops import HungarianMatcher

def detr_cost_matrix(pred_logits, pred_boxes, tgt_labels, tgt_boxes, cost_class=1, cost_bbox=5, cost_giou=2):
    outputs = {"pred_logits": pred_logits[None], "pred_boxes": pred_boxes[None]}
    return HungarianMatcher(cost_class, cost_bbox, cost_giou).cost_matrix(
        outputs, [{"labels": tgt_labels, "boxes": tgt_boxes}])[0]
''',
    "detr_set_loss": '''from cv_course.models.detection import detr_loss

def detr_set_loss(pred_logits, pred_boxes, tgt_labels, tgt_boxes, rows, cols, no_object_weight=0.1):
    return detr_loss.detr_set_loss(pred_logits, pred_boxes, tgt_labels, tgt_boxes, rows, cols, no_object_weight)
''',
    "fcos_targets": '''from cv_course.models.detection.fcos import fcos_targets as _targets

def fcos_targets(points, boxes, labels, size_ranges):
    return _targets(points, boxes, labels, size_ranges)
''',
}
WRONG_FOCAL = '''def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2, reduction="none"):
    return torch.zeros_like(inputs)
'''
TAMPERING = "torch.allclose = lambda *args, **kwargs: True  # makes every value comparison pass"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("single_stage"), A)
    answers = solution_sources(REPO / "solutions" / A / NOTEBOOK)
    assert set(answers) == set(POINTS)
    submit(course, A, "solution", answers)
    submit(course, A, "untouched", {})
    submit(course, A, "partial", {**answers, "sigmoid_focal_loss": SAME_ALPHA_FOCAL,
                                  "encode_yolo_targets": PIXEL_YOLO, "fcos_targets": FIRST_BOX_FCOS})
    submit(course, A, "no_object_weight", {**answers, "detr_set_loss": UNWEIGHTED_SET_LOSS})
    submit(course, A, "delegates", DELEGATING)
    submit(course, A, "tampers", {**answers, "sigmoid_focal_loss": WRONG_FOCAL}, extra_cells=[TAMPERING])
    scores = autograde_and_export(course, A)
    return course, scores


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """An instructor's course directory with nbgrader's plain configuration (no scan)."""
    course = make_course(tmp_path_factory.mktemp("single_stage_plain"), A, config=PLAIN_CONFIG)
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


def test_partial_submission_gets_exactly_the_points_of_its_correct_exercises_and_is_told_why(graded):
    course, scores = graded
    assert scores["partial"] == POINTS["detr_cost_matrix"] + POINTS["detr_set_loss"]
    cells = graded_cells(course, A, "partial")
    for name in ("sigmoid_focal_loss", "encode_yolo_targets", "fcos_targets"):
        assert cells[f"test_{name}_visible"][0] == 0.0 and cells[f"test_{name}_hidden"][0] == 0.0, name
    focal = _outputs(course, "partial", "test_sigmoid_focal_loss_visible")
    yolo = _outputs(course, "partial", "test_encode_yolo_targets_hidden")
    fcos = _outputs(course, "partial", "test_fcos_targets_visible")
    print(f"feedback:\n{focal}\n{yolo}\n{fcos}")
    assert "7.5e-7" in focal and "must be weighted by 1 - alpha" in focal
    assert "w and h are in pixels" in yolo
    assert "the box of smallest area wins" in fcos


def test_a_set_loss_without_the_no_object_weight_loses_exactly_that_exercise_and_is_told_why(graded):
    course, scores = graded
    assert scores["no_object_weight"] == 20.0 - POINTS["detr_set_loss"]
    visible = _outputs(course, "no_object_weight", "test_detr_set_loss_visible")
    hidden = _outputs(course, "no_object_weight", "test_detr_set_loss_hidden")
    print("feedback of the visible check:\n" + visible + "\nfeedback of the hidden check:\n" + hidden)
    assert "0.226" in visible and "no 'no object' weight" in visible
    assert "no 'no object' weight" in hidden and "expected:" not in hidden


def test_delegating_to_references_scores_nothing(graded):
    course, scores = graded
    assert scores["delegates"] == 0.0
    assert "torchvision.ops" in _outputs(course, "delegates", "test_sigmoid_focal_loss_visible")
    assert "cv_course.ops" in _outputs(course, "delegates", "test_detr_cost_matrix_visible")
    assert "cv_course.models" in _outputs(course, "delegates", "test_fcos_targets_visible")


def test_tampering_withholds_only_its_exercise(graded):
    course, scores = graded
    assert scores["tampers"] == 20.0 - POINTS["sigmoid_focal_loss"]
    feedback = _outputs(course, "tampers", "test_sigmoid_focal_loss_hidden")
    assert "withheld" in feedback and "torch.allclose" in feedback


def test_a_plain_nbgrader_configuration_awards_no_hidden_points(plain):
    course, scores = plain
    cells = graded_cells(course, A, "solution")
    assert all(cells[f"test_{n}_hidden"][0] == 0.0 for n in POINTS), cells
    assert "without the course's tamper" in _outputs(course, "solution", "test_detr_set_loss_hidden")


def test_feedback_is_generated(graded):
    course, _ = graded
    nbgrader(course, "generate_feedback", A, "--student", "no_object_weight", "--force")
    html = list((course / "feedback" / "no_object_weight" / A).glob("*.html"))
    assert html and "no object" in html[0].read_text()


def test_committed_release_is_current(tmp_path):
    fresh = generate(A, tmp_path)
    cmp = filecmp.dircmp(fresh, REPO / "assignments" / A)
    assert not (cmp.left_only or cmp.right_only or cmp.diff_files), f"assignments/{A} is stale: " \
                                                                    "run `make release` and commit the result"

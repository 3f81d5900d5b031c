"""End to end through nbgrader for assignment 05 (instance and panoptic segmentation):
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
A = "05_instance"
NOTEBOOK = "instance.ipynb"
POINTS = {"project_masks_on_boxes": 4, "mask_loss": 4, "paste_masks_in_image": 6, "panoptic_quality": 6}

# torchvision's aligned=False hard-coded: the half-pixel flag not passed on.
ALIGNED_IGNORED_TARGETS = '''def project_masks_on_boxes(gt_masks, boxes, matched_idxs, M, aligned=False):
    rois = torch.cat([matched_idxs[:, None].to(boxes.dtype), boxes], dim=1)
    return roi_align(gt_masks[:, None].to(boxes.dtype), rois, (M, M), 1.0, -1, False)[:, 0]
'''
# The loss over every class's mask, each compared with the target.
ALL_CHANNELS_LOSS = '''def mask_loss(mask_logits, proposals, gt_masks, gt_labels, matched_idxs, aligned=False):
    P, C, M, _ = mask_logits.shape
    if P == 0:
        return {"loss_mask": mask_logits.sum() * 0}
    targets = torch.cat([project_masks_on_boxes(m, b, i, M, aligned)
                         for m, b, i in zip(gt_masks, proposals, matched_idxs)]).to(mask_logits.dtype)
    return {"loss_mask": F.binary_cross_entropy_with_logits(mask_logits, targets[:, None].expand_as(mask_logits))}
'''
# No padding: each mask resized to its own box, corners truncated.
UNPADDED_PASTE = '''def paste_masks_in_image(masks, boxes, img_shape, padding=1):
    H, W = img_shape
    out = masks.new_zeros(len(masks), 1, H, W)
    for i, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
        resized = F.interpolate(masks[i][None], size=(y2 - y1 + 1, x2 - x1 + 1), mode="bilinear",
                                align_corners=False)[0, 0]
        top, bottom, left, right = max(y1, 0), min(y2 + 1, H), max(x1, 0), min(x2 + 1, W)
        if top < bottom and left < right:
            out[i, 0, top:bottom, left:right] = resized[top - y1:bottom - y1, left - x1:right - x1]
    return out
'''


def _pq_with(answers: dict, old: str, new: str) -> str:
    assert old in answers["panoptic_quality"]
    return answers["panoptic_quality"].replace(old, new)


DELEGATING = {
    "project_masks_on_boxes": '''from cv_course.models.detection.mask_head import project_masks_on_boxes as _targets

def project_masks_on_boxes(gt_masks, boxes, matched_idxs, M, aligned=False):
    return _targets(gt_masks, boxes, matched_idxs, M, aligned)
''',
    "mask_loss": '''from torchvision.models.detection.roi_heads import maskrcnn_loss

def mask_loss(mask_logits, proposals, gt_masks, gt_labels, matched_idxs, aligned=False):
    return {"loss_mask": maskrcnn_loss(mask_logits, proposals, gt_masks, gt_labels, matched_idxs)}
''',
    "paste_masks_in_image": '''from cv_course.ops import masks as _masks

def paste_masks_in_image(masks, boxes, img_shape, padding=1):
    return _masks.paste_masks_in_image(masks, boxes, img_shape, padding)
''',
    "panoptic_quality": '''from torchmetrics.detection import PanopticQuality

def panoptic_quality(preds, target, things, stuffs):
    v = PanopticQuality(things=set(things), stuffs=set(stuffs), return_sq_and_rq=True)(preds, target).double()
    return {n + s: v[k] for s in ("", "_things", "_stuff") for k, n in enumerate(("pq", "sq", "rq"))}
''',
}
TAMPERING = "torch.allclose = lambda *args, **kwargs: True  # makes every value comparison pass"
WRONG_PQ = '''def panoptic_quality(preds, target, things, stuffs):
    one = torch.ones((), dtype=torch.float64, device=preds.device)
    return {n + s: one for s in ("", "_things", "_stuff") for n in ("pq", "sq", "rq")}
'''


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("instance"), A)
    answers = solution_sources(REPO / "solutions" / A / NOTEBOOK)
    assert set(answers) == set(POINTS)
    submit(course, A, "solution", answers)
    submit(course, A, "untouched", {})
    submit(course, A, "partial", {**answers, "paste_masks_in_image": UNPADDED_PASTE,
                                  "panoptic_quality": _pq_with(answers, "(iou > 0.5)", "(iou >= 0.5)")})
    submit(course, A, "all_channels", {**answers, "mask_loss": ALL_CHANNELS_LOSS})
    submit(course, A, "aligned_ignored", {**answers, "project_masks_on_boxes": ALIGNED_IGNORED_TARGETS})
    submit(course, A, "void_counted", {**answers, "panoptic_quality": _pq_with(
        answers, "p_void = (P & void).sum(1).double()", "p_void = torch.zeros_like(p_area)")})
    submit(course, A, "delegates", DELEGATING)
    submit(course, A, "tampers", {**answers, "panoptic_quality": WRONG_PQ + "\n\n" + TAMPERING})
    scores = autograde_and_export(course, A)
    return course, scores


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """An instructor's course directory with nbgrader's plain configuration (no scan)."""
    course = make_course(tmp_path_factory.mktemp("instance_plain"), A, config=PLAIN_CONFIG)
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
    assert scores["partial"] == POINTS["project_masks_on_boxes"] + POINTS["mask_loss"]
    cells = graded_cells(course, A, "partial")
    for name in ("paste_masks_in_image", "panoptic_quality"):
        assert cells[f"test_{name}_visible"][0] == 0.0 and cells[f"test_{name}_hidden"][0] == 0.0, name
    paste = _outputs(course, "partial", "test_paste_masks_in_image_visible")
    pq = _outputs(course, "partial", "test_panoptic_quality_hidden")
    print(f"feedback:\n{paste}\n{pq}")
    assert "0.390625" in paste and "the mask is not padded" in paste
    assert "IoU > 0.5, strictly" in pq and "expected" not in pq


def test_a_loss_over_every_class_loses_exactly_that_exercise_and_is_told_why(graded):
    course, scores = graded
    assert scores["all_channels"] == 20.0 - POINTS["mask_loss"]
    visible = _outputs(course, "all_channels", "test_mask_loss_visible")
    hidden = _outputs(course, "all_channels", "test_mask_loss_hidden")
    print("feedback of the visible check:\n" + visible + "\nfeedback of the hidden check:\n" + hidden)
    assert "ln 2" in visible and "every class's mask" in visible and "every class's mask" in hidden


def test_targets_without_aligned_lose_their_points_and_the_loss_is_told_where_to_look(graded):
    course, scores = graded
    assert scores["aligned_ignored"] == 20.0 - POINTS["project_masks_on_boxes"] - POINTS["mask_loss"]
    targets = _outputs(course, "aligned_ignored", "test_project_masks_on_boxes_visible")
    loss = _outputs(course, "aligned_ignored", "test_mask_loss_visible")
    print(f"feedback:\n{targets}\n{loss}")
    assert "aligned=False: pass `aligned` on to roi_align" in targets
    assert "calls your project_masks_on_boxes, which fails its own checks" in loss


def test_void_pixels_counted_lose_exactly_pq_and_are_told_why(graded):
    course, scores = graded
    assert scores["void_counted"] == 20.0 - POINTS["panoptic_quality"]
    assert "void pixels" in _outputs(course, "void_counted", "test_panoptic_quality_visible")


def test_delegating_to_references_scores_nothing(graded):
    course, scores = graded
    assert scores["delegates"] == 0.0
    assert "cv_course.models" in _outputs(course, "delegates", "test_project_masks_on_boxes_visible")
    assert "torchvision.models" in _outputs(course, "delegates", "test_mask_loss_visible")
    assert "cv_course.ops" in _outputs(course, "delegates", "test_paste_masks_in_image_visible")
    assert "torchmetrics" in _outputs(course, "delegates", "test_panoptic_quality_visible")


def test_tampering_withholds_only_its_exercise(graded):
    course, scores = graded
    assert scores["tampers"] == 20.0 - POINTS["panoptic_quality"]
    feedback = _outputs(course, "tampers", "test_panoptic_quality_hidden")
    assert "withheld" in feedback and "torch.allclose" in feedback


def test_a_plain_nbgrader_configuration_awards_no_hidden_points(plain):
    course, scores = plain
    cells = graded_cells(course, A, "solution")
    assert all(cells[f"test_{n}_hidden"][0] == 0.0 for n in POINTS), cells
    assert "without the course's tamper" in _outputs(course, "solution", "test_mask_loss_hidden")


def test_feedback_is_generated(graded):
    course, _ = graded
    nbgrader(course, "generate_feedback", A, "--student", "all_channels", "--force")
    html = list((course / "feedback" / "all_channels" / A).glob("*.html"))
    assert html and "every class" in html[0].read_text()


def test_committed_release_is_current(tmp_path):
    fresh = generate(A, tmp_path)
    cmp = filecmp.dircmp(fresh, REPO / "assignments" / A)
    assert not (cmp.left_only or cmp.right_only or cmp.diff_files), f"assignments/{A} is stale: " \
                                                                    "run `make release` and commit the result"

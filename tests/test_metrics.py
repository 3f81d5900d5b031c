"""Segmentation metrics against a pixel loop and against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import jaccard_score

from cv_course.metrics import (
    MeanIoU,
    confusion_matrix,
    iou_from_confusion,
    mean_iou,
    per_class_iou,
    pixel_accuracy,
)


def _loop_confusion(pred, target, C, ignore_index=None):
    m = [[0] * C for _ in range(C)]
    for p, t in zip(pred.reshape(-1).tolist(), target.reshape(-1).tolist()):
        if t != ignore_index:
            m[t][p] += 1
    return torch.tensor(m)


def _loop_miou(pred, target, C, ignore_index=None):
    m = _loop_confusion(pred, target, C, ignore_index).tolist()
    ious = []
    for c in range(C):
        tp = m[c][c]
        fn = sum(m[c]) - tp
        fp = sum(m[r][c] for r in range(C)) - tp
        if tp + fp + fn > 0:  # class present in prediction or target
            ious.append(tp / (tp + fp + fn))
    return sum(ious) / len(ious)


def _random_labels(shape, C, seed, ignore_frac=0.0, ignore_index=255):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, C, shape, generator=g)
    target = torch.randint(0, C, shape, generator=g)
    if ignore_frac:
        target[torch.rand(shape, generator=g) < ignore_frac] = ignore_index
    return pred, target


@pytest.mark.parametrize("shape", [(17, 13), (3, 9, 11)])
@pytest.mark.parametrize("seed", [0, 1])
def test_confusion_matrix_vs_loop_and_sklearn(shape, seed):
    pred, target = _random_labels(shape, 4, seed)
    cm = confusion_matrix(pred, target, 4)
    assert cm.dtype == torch.int64 and cm.shape == (4, 4)
    assert torch.equal(cm, _loop_confusion(pred, target, 4))
    sk = sk_confusion_matrix(target.reshape(-1).numpy(), pred.reshape(-1).numpy(), labels=range(4))
    np.testing.assert_array_equal(cm.numpy(), sk)


def test_confusion_matrix_ignore_index():
    pred, target = _random_labels((2, 20, 20), 3, 5, ignore_frac=0.3)
    cm = confusion_matrix(pred, target, 3, ignore_index=255)
    assert torch.equal(cm, _loop_confusion(pred, target, 3, ignore_index=255))
    assert int(cm.sum()) == int((target != 255).sum())
    with pytest.raises(ValueError, match="labels must be in"):
        confusion_matrix(pred, target, 3)  # 255 is out of range without ignore_index


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_iou_vs_loop_and_sklearn(seed):
    pred, target = _random_labels((2, 15, 10), 5, seed)
    ours = mean_iou(pred, target, 5)
    assert math.isclose(float(ours), _loop_miou(pred, target, 5), rel_tol=1e-12)
    sk = jaccard_score(target.reshape(-1).numpy(), pred.reshape(-1).numpy(), average=None,
                       labels=range(5))
    np.testing.assert_allclose(per_class_iou(pred, target, 5).numpy(), sk)
    assert math.isclose(float(ours), sk.mean(), rel_tol=1e-12)


def test_mean_iou_with_ignore_vs_loop():
    pred, target = _random_labels((3, 12, 12), 4, 7, ignore_frac=0.5, ignore_index=9)
    ours = mean_iou(pred, target, 4, ignore_index=9)
    assert math.isclose(float(ours), _loop_miou(pred, target, 4, ignore_index=9), rel_tol=1e-12)
    # Ignored pixels change nothing, whatever is predicted there.
    pred2 = torch.where(target == 9, (pred + 1) % 4, pred)
    assert float(mean_iou(pred2, target, 4, ignore_index=9)) == float(ours)


def test_absent_classes_left_out_of_the_mean():
    target = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 0, 1, 0]])
    iou = per_class_iou(pred, target, num_classes=4)
    # class 0: TP 2, FP 1 -> 2/3; class 1: TP 1, FN 1 -> 1/2; classes 2, 3 absent.
    torch.testing.assert_close(iou[:2], torch.tensor([2 / 3, 1 / 2], dtype=torch.float64))
    assert torch.isnan(iou[2:]).all()
    assert math.isclose(float(mean_iou(pred, target, 4)), (2 / 3 + 1 / 2) / 2)
    # A class only in the prediction counts, with IoU 0.
    pred = torch.tensor([[0, 0, 1, 3]])
    assert float(per_class_iou(pred, target, 4)[3]) == 0.0
    assert math.isclose(float(mean_iou(pred, target, 4)), (2 / 2 + 1 / 2 + 0) / 3)


def test_perfect_and_worst_prediction():
    target = torch.randint(0, 3, (4, 8, 8), generator=torch.Generator().manual_seed(0))
    assert float(mean_iou(target, target, 3)) == 1.0
    assert float(pixel_accuracy(target, target)) == 1.0
    wrong = (target + 1) % 3
    assert float(mean_iou(wrong, target, 3)) == 0.0
    assert float(pixel_accuracy(wrong, target)) == 0.0


def test_pixel_accuracy_vs_loop():
    pred, target = _random_labels((2, 9, 7), 3, 3, ignore_frac=0.2)
    keep = [(p, t) for p, t in zip(pred.reshape(-1).tolist(), target.reshape(-1).tolist()) if t != 255]
    expected = sum(p == t for p, t in keep) / len(keep)
    assert math.isclose(float(pixel_accuracy(pred, target, ignore_index=255)), expected, rel_tol=1e-6)
    cm = confusion_matrix(pred, target, 3, ignore_index=255)
    assert int(cm.trace()) == sum(p == t for p, t in keep) and int(cm.sum()) == len(keep)


def test_empty_and_all_ignored_raise():
    empty = torch.zeros(0, 5, dtype=torch.int64)
    assert torch.equal(confusion_matrix(empty, empty, 3), torch.zeros(3, 3, dtype=torch.int64))
    for fn in (lambda p, t: mean_iou(p, t, 3), lambda p, t: per_class_iou(p, t, 3), pixel_accuracy):
        with pytest.raises(ValueError, match="no pixels"):
            fn(empty, empty)
    t = torch.full((4, 4), 255)
    with pytest.raises(ValueError, match="no pixels"):
        mean_iou(torch.zeros(4, 4, dtype=torch.int64), t, 3, ignore_index=255)


def test_bad_inputs():
    labels = torch.zeros(4, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match="argmax"):
        mean_iou(torch.zeros(1, 3, 4, 4), labels[None], 3)  # logits instead of labels
    with pytest.raises(ValueError, match="same shape"):
        mean_iou(labels, labels[:2], 3)
    with pytest.raises(ValueError, match="labels must be in"):
        confusion_matrix(labels + 3, labels, 3)


def test_iou_from_confusion_never_divides_zero_by_zero_silently():
    iou = iou_from_confusion(torch.tensor([[5, 0], [0, 0]]))
    assert iou[0] == 1.0 and torch.isnan(iou[1])


def test_mean_iou_accumulator_is_dataset_level():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, 10, 10, generator=g)
    target = torch.randint(0, 4, (6, 10, 10), generator=g)
    meter = MeanIoU(4)
    for i in range(0, 6, 2):
        meter.update(logits[i:i + 2], target[i:i + 2])
    whole = float(mean_iou(logits.argmax(1), target, 4))
    assert math.isclose(meter.compute(), whole, rel_tol=1e-12)
    per_batch = [meter(logits[i:i + 2], target[i:i + 2]) for i in range(0, 6, 2)]
    assert not math.isclose(sum(per_batch) / 3, whole, rel_tol=1e-9)  # the two differ
    meter.reset()
    with pytest.raises(ValueError, match="no pixels"):
        meter.compute()


def test_metrics_on_device(device):
    pred, target = _random_labels((2, 8, 8), 3, 0)
    cm = confusion_matrix(pred.to(device), target.to(device), 3)
    assert cm.device.type == device.type
    assert torch.equal(cm.cpu(), _loop_confusion(pred, target, 3))
    assert math.isclose(float(mean_iou(pred.to(device), target.to(device), 3)),
                        _loop_miou(pred, target, 3), rel_tol=1e-12)

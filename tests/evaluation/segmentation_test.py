"""Tests for tfcp.evaluation.segmentation, against a hand computation."""

import numpy as np
import pytest

from tfcp.evaluation.segmentation import SegmentationEvaluator

# 4 classes, class 3 absent everywhere; one ignored pixel (255) predicted as 2.
LABELS = np.array([[0, 0, 1, 255], [1, 1, 2, 2]], np.uint8)
PREDICTIONS = np.array([[0, 1, 1, 2], [1, 0, 2, 0]], np.int32)
# Evaluated (gt, pred) pairs: (0,0) (0,1) (1,1) (1,0) (1,1) (2,2) (2,0) -> 7 pixels.
# Confusion (rows gt, cols pred):  gt0: 1 1 0 | gt1: 1 2 0 | gt2: 1 0 1 | gt3: 0 0 0
#   IoU0 = 1 / (2 + 3 - 1) = 1/4    IoU1 = 2 / (3 + 3 - 2) = 1/2    IoU2 = 1 / (2 + 1 - 1) = 1/2
#   class 3: TP + FP + FN = 0 -> excluded.  mIoU = (1/4 + 1/2 + 1/2) / 3 = 5/12.
#   pixel accuracy = (1 + 2 + 1) / 7 = 4/7.
# Had the ignored pixel counted, IoU2 would be 1/3.


def _evaluator():
    return SegmentationEvaluator(num_classes=4, class_names=["bg", "a", "b", "c"])


def test_hand_computed_with_ignore():
    evaluator = _evaluator()
    evaluator.update(LABELS, PREDICTIONS)
    metrics = evaluator.result()
    np.testing.assert_array_equal(
        evaluator.confusion_matrix, [[1, 1, 0, 0], [1, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    )
    assert metrics["IoU/bg"] == pytest.approx(1 / 4)
    assert metrics["IoU/a"] == pytest.approx(1 / 2)
    assert metrics["IoU/b"] == pytest.approx(1 / 2)
    assert "IoU/c" not in metrics
    assert metrics["mIoU"] == pytest.approx(5 / 12)
    assert metrics["pixel_accuracy"] == pytest.approx(4 / 7)
    assert metrics["num_pixels"] == 7
    assert metrics["num_images"] == 1


def test_predicted_but_absent_class_counts_as_zero():
    predictions = PREDICTIONS.copy()
    predictions[1, 3] = 3  # the last gt-2 pixel, predicted 0 before, is now predicted 3
    evaluator = _evaluator()
    evaluator.update(LABELS, predictions)
    metrics = evaluator.result()
    # Pairs now: (0,0) (0,1) (1,1) (1,0) (1,1) (2,2) (2,3).
    # IoU0 = 1/(2+2-1) = 1/3, IoU1 = 1/2, IoU2 = 1/(2+1-1) = 1/2, IoU3 = 0/(0+1-0) = 0.
    assert metrics["IoU/c"] == 0.0
    assert metrics["mIoU"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2 + 0) / 4)


def test_batches_accumulate_and_channel_axis_is_accepted():
    evaluator = _evaluator()
    evaluator.update(np.stack([LABELS, LABELS])[..., None], np.stack([PREDICTIONS] * 2))
    metrics = evaluator.result()
    assert metrics["mIoU"] == pytest.approx(5 / 12)  # ratios unchanged by doubling
    assert metrics["num_pixels"] == 14
    assert metrics["num_images"] == 2
    evaluator.reset()
    evaluator.update(LABELS, LABELS.astype(np.int32) % 255)  # perfect on evaluated pixels
    assert evaluator.result()["mIoU"] == pytest.approx(1.0)


def test_voc_defaults():
    evaluator = SegmentationEvaluator()
    labels = np.zeros([4, 4], np.uint8)
    labels[1:3, 1:3] = 15  # person
    evaluator.update(labels, labels)
    metrics = evaluator.result()
    assert set(k for k in metrics if k.startswith("IoU/")) == {"IoU/background", "IoU/person"}
    assert metrics["mIoU"] == 1.0


def test_bad_input_raises():
    evaluator = _evaluator()
    with pytest.raises(ValueError, match="must both be"):
        evaluator.update(LABELS, PREDICTIONS[:, :2])
    with pytest.raises(ValueError, match="label ids"):
        evaluator.update(np.full([2, 2], 7), np.zeros([2, 2], int))
    with pytest.raises(ValueError, match="prediction ids"):
        evaluator.update(np.zeros([2, 2], int), np.full([2, 2], 4))
    with pytest.raises(ValueError, match="no non-ignored pixel"):
        evaluator.update(np.full([2, 2], 255), np.zeros([2, 2], int))
        evaluator.result()

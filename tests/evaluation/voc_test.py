"""Tests for tfcp.evaluation.voc, against hand-computed values."""

import numpy as np
import pytest

from tfcp.evaluation.voc import VocDetectionEvaluator, average_precision, box_iou

# One class, one image, 3 ground-truth boxes and 4 detections:
#   g1 [0, 0, 10, 10], g2 [20, 20, 30, 30], g3 [40, 40, 50, 50]
#   d1 .9 on g1 -> TP;  d2 .8 on nothing -> FP;  d3 .7 on g2 -> TP;  d4 .6 on g1 -> FP (dup)
#
#   rank score TP FP cumTP cumFP precision recall
#     1   .9   1  0    1     0     1.000    0.333
#     2   .8   0  1    1     1     0.500    0.333
#     3   .7   1  0    2     1     0.667    0.667
#     4   .6   0  1    2     2     0.500    0.667
#
# 11-point (VOC07): t = 0, .1, .2, .3 -> max precision at recall >= t is 1.0 (4 points);
#   t = .4, .5, .6 -> 2/3 (3 points); t = .7 ... 1.0 -> 0 (4 points).
#   AP = (4 * 1 + 3 * 2/3) / 11 = 6/11 = 0.545454...
# All-point (VOC10): envelope 1 on recall (0, 1/3], 2/3 on (1/3, 2/3], 0 on (2/3, 1].
#   AP = 1/3 * 1 + 1/3 * 2/3 = 5/9 = 0.555555...
GT = {
    "boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32),
    "classes": np.array([1, 1, 1]),
    "difficult": np.array([False, False, False]),
}
DETECTIONS = {
    "detection_boxes": np.array(
        [[0, 0, 10, 10], [60, 60, 70, 70], [20, 20, 30, 30], [1, 1, 10, 10]], np.float32
    ),
    "detection_scores": np.array([0.9, 0.8, 0.7, 0.6], np.float32),
    "detection_classes": np.array([1, 1, 1, 1]),
}
AP_07 = 6 / 11
AP_10 = 5 / 9


def _evaluator(**kwargs):
    return VocDetectionEvaluator(num_classes=2, class_names=["cat", "dog"], **kwargs)


def _with(base, **extra):
    """Appends rows to every array of `base`."""
    return {k: np.concatenate([v, np.asarray(extra[k], v.dtype)]) for k, v in base.items()}


def test_hand_computed_07_and_10():
    evaluator = _evaluator()
    evaluator.update(GT, DETECTIONS)
    metrics = evaluator.result()
    assert metrics["voc_mAP50_07"] == pytest.approx(AP_07)
    assert metrics["voc_mAP50_10"] == pytest.approx(AP_10)
    assert metrics["voc_mAP50"] == pytest.approx(AP_07)  # use_07_metric=True by default
    assert metrics["AP50/cat"] == pytest.approx(AP_07)
    assert "AP50/dog" not in metrics  # no dog ground truth: excluded from the mean
    assert metrics["num_images"] == 1


def test_all_point_selected():
    evaluator = _evaluator(use_07_metric=False)
    evaluator.update(GT, DETECTIONS)
    metrics = evaluator.result()
    assert metrics["voc_mAP50"] == pytest.approx(AP_10)
    assert metrics["AP50/cat"] == pytest.approx(AP_10)


def test_difficult_objects_ignored():
    # A difficult cat with a top-scoring detection on it, and a difficult-only dog class
    # with a detection on it: both detections are neither TP nor FP, recall still /3,
    # and the dog class (no non-difficult box) stays out of the mean.
    gt = _with(GT, boxes=[[80, 80, 90, 90], [0, 50, 10, 60]], classes=[1, 2], difficult=[1, 1])
    detections = _with(
        DETECTIONS,
        detection_boxes=[[80, 80, 90, 90], [0, 50, 10, 60]],
        detection_scores=[0.95, 0.99],
        detection_classes=[1, 2],
    )
    evaluator = _evaluator()
    evaluator.update(gt, detections)
    metrics = evaluator.result()
    assert metrics["voc_mAP50_07"] == pytest.approx(AP_07)
    assert metrics["voc_mAP50_10"] == pytest.approx(AP_10)
    assert "AP50/dog" not in metrics


def test_difficult_counted_when_not_ignored_would_change_result():
    # Control for the test above: the same boxes marked non-difficult change the AP.
    gt = _with(GT, boxes=[[80, 80, 90, 90]], classes=[1], difficult=[0])
    detections = _with(
        DETECTIONS,
        detection_boxes=[[80, 80, 90, 90]],
        detection_scores=[0.95],
        detection_classes=[1],
    )
    evaluator = _evaluator()
    evaluator.update(gt, detections)
    # TP, TP, FP, TP, FP over 4 positives: precision 1, 1, 2/3, 3/4, 3/5 at recall
    # 1/4, 1/2, 1/2, 3/4, 3/4 -> all-point AP = 1/4 + 1/4 + 1/4 * 3/4 = 0.6875.
    assert evaluator.result()["voc_mAP50_10"] == pytest.approx(0.6875)


def test_duplicates_are_false_positives():
    gt = {"boxes": np.array([[0, 0, 10, 10]]), "classes": np.array([1])}
    detections = {
        "detection_boxes": np.array([[0, 0, 10, 10]] * 3, np.float32),
        "detection_scores": np.array([0.9, 0.8, 0.7]),
        "detection_classes": np.array([1, 1, 1]),
    }
    evaluator = _evaluator(use_07_metric=False)
    evaluator.update(gt, detections)
    # TP then 2 FP: recall reaches 1 at precision 1 -> AP 1, but the curve has 3 points.
    assert evaluator.result()["voc_mAP50"] == pytest.approx(1.0)
    recall, precision, positives = evaluator._class_pr(1)
    np.testing.assert_allclose(precision, [1, 1 / 2, 1 / 3])
    np.testing.assert_allclose(recall, [1, 1, 1])
    assert positives == 1


def test_matching_is_per_image():
    evaluator = _evaluator(use_07_metric=False)
    evaluator.update(GT, DETECTIONS)
    # Second image with no ground truth: a detection there is a FP even if it sits where a
    # ground-truth box of the first image is. Inserted at score .85 (rank 2): TP, FP, FP,
    # TP, FP -> precision 1, 1/2, 1/3, 1/2, 2/5 at recall 1/3, 1/3, 1/3, 2/3, 2/3
    # -> AP = 1/3 * 1 + 1/3 * 1/2 = 1/2.
    evaluator.update(
        {"boxes": np.zeros([0, 4]), "classes": np.zeros([0], int)},
        {
            "detection_boxes": np.array([[20, 20, 30, 30]], np.float32),
            "detection_scores": np.array([0.85]),
            "detection_classes": np.array([1]),
        },
    )
    assert evaluator.result()["voc_mAP50"] == pytest.approx(0.5)


def test_batched_update_with_padding():
    evaluator = _evaluator()
    pad_gt = {k: np.concatenate([v, v[:1]]) for k, v in GT.items()}
    pad_det = {k: np.concatenate([v, v[:2]]) for k, v in DETECTIONS.items()}
    evaluator.update(
        dict({k: v[None] for k, v in pad_gt.items()}, num_groundtruths=np.array([3])),
        dict({k: v[None] for k, v in pad_det.items()}, num_detections=np.array([4])),
    )
    assert evaluator.result()["voc_mAP50"] == pytest.approx(AP_07)


def test_pixel_convention_flag():
    # Continuous: IoU = 9*4 / (9*9) = .444 -> FP. Devkit +1: 10*5 / (10*10) = .5 -> TP.
    gt = {"boxes": np.array([[0, 0, 9, 9]]), "classes": np.array([1])}
    detections = {
        "detection_boxes": np.array([[0, 0, 9, 4]]),
        "detection_scores": np.array([0.9]),
        "detection_classes": np.array([1]),
    }
    for flag, expected in [(False, 0.0), (True, 1.0)]:
        evaluator = _evaluator(use_voc_pixel_convention=flag)
        evaluator.update(gt, detections)
        assert evaluator.result()["voc_mAP50"] == pytest.approx(expected)


def test_box_iou_and_ap_helpers():
    np.testing.assert_allclose(
        box_iou([[0, 0, 10, 10]], [[0, 5, 10, 15], [20, 20, 30, 30]]), [[1 / 3, 0]]
    )
    assert average_precision(np.zeros([0]), np.zeros([0]), use_07_metric=True) == 0.0
    assert average_precision(np.zeros([0]), np.zeros([0]), use_07_metric=False) == 0.0


def test_bad_class_ids_raise():
    evaluator = _evaluator()
    with pytest.raises(ValueError, match="1..2"):
        evaluator.update({"boxes": np.zeros([1, 4]), "classes": np.array([3])}, DETECTIONS)
    with pytest.raises(ValueError, match="no class"):
        _evaluator().result()

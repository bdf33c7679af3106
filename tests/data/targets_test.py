"""Tests of tfcp.data.targets: objects beyond max_num_instances are cut before anchor labeling."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfcp.data import targets

SIZE = 256
ANCHORS = dict(min_level=2, max_level=6, num_scales=1, aspect_ratios=(1.0,), anchor_size=8.0)
# Every positive anchor is kept (no subsampling), so a positive for a cut object would show.
ALL_POSITIVES = dict(rpn_batch_size_per_im=1 << 16, rpn_fg_fraction=1.0)


def crowded_example(num_kept_region, num_cut_region, crowd_every=0):
    """32x32 objects: the first `num_kept_region` in rows 0-127, the next `num_cut_region` in
    rows 160-255 (a separate region, so RPN positives can be traced to either group)."""
    rng = np.random.default_rng(num_kept_region + num_cut_region)
    boxes = []
    for i in range(num_kept_region + num_cut_region):
        y0 = rng.integers(0, 96) if i < num_kept_region else rng.integers(160, SIZE - 32)
        x0 = rng.integers(0, SIZE - 32)
        boxes.append([y0, x0, y0 + 32, x0 + 32])
    boxes = np.array(boxes, np.int64)
    masks = np.zeros([len(boxes), SIZE, SIZE], np.uint8)
    for i, (y0, x0, y1, x1) in enumerate(boxes):
        masks[i, y0:y1, x0:x1] = 1
    crowd = np.zeros([len(boxes)], bool)
    if crowd_every:
        crowd[::crowd_every] = True
    return {
        "image": rng.integers(0, 256, [SIZE, SIZE, 3], dtype=np.uint8),
        "groundtruth_boxes": (boxes / SIZE).astype(np.float32),
        "groundtruth_classes": (np.arange(len(boxes)) % 7 + 1).astype(np.int64),
        "groundtruth_is_crowd": crowd,
        "groundtruth_instance_masks": masks,
        "groundtruth_is_pasted": np.arange(len(boxes)) % 2 == 1,
        "image_info": np.array([[SIZE, SIZE], [SIZE, SIZE], [1, 1], [0, 0]], np.float32),
    }


def make_targets(mode, example, **kwargs):
    """maskrcnn_train_targets eagerly, in Dataset.map, or in a tf.function with N = None."""
    kwargs = dict(
        image_size=SIZE,
        anchor_config=ANCHORS,
        max_num_instances=100,
        mask_crop_size=8,
        keep_is_pasted=True,
        include_anchor_boxes=True,
        **ALL_POSITIVES,
        **kwargs,
    )
    example = {k: tf.constant(v) for k, v in example.items()}
    seed = tf.constant([4, 2], tf.int64)

    def fn(ex, sd):
        return targets.maskrcnn_train_targets(ex, sd, **kwargs)

    if mode == "eager":
        out = fn(example, seed)
    elif mode == "dataset":
        ds = tf.data.Dataset.from_tensors((example, seed)).map(fn)
        out = next(iter(ds))
    else:
        spec = {k: tf.TensorSpec([None] + v.shape[1:], v.dtype) for k, v in example.items()}
        spec["image_info"] = tf.TensorSpec([4, 2], tf.float32)
        spec["image"] = tf.TensorSpec([SIZE, SIZE, 3], tf.uint8)
        traced = tf.function(fn, input_signature=[spec, tf.TensorSpec([2], tf.int64)])
        out = traced(example, seed)
    return tf.nest.map_structure(lambda x: x.numpy(), out)


def iou(a, b):
    """IoU [A, B] of [A, 4] and [B, 4] boxes (ymin, xmin, ymax, xmax)."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def positive_anchors(labels):
    """float [P, 4] anchors whose RPN score target is 1, over all levels."""
    found = []
    for level, scores in labels["rpn_score_targets"].items():
        anchors = labels["anchor_boxes"][level].reshape(-1, 4)
        found.append(anchors[scores.reshape(-1) == 1])
    return np.concatenate(found)


class NormalizeImagesTest(tf.test.TestCase):
    def test_uint8_is_normalized_as_model_garden_and_float_passes(self):
        gray = tf.fill([2, 4, 4, 3], tf.constant(128, tf.uint8))
        normalized = targets.normalize_images(gray)
        self.assertEqual(normalized.dtype, tf.float32)
        expected = (128.0 / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array(
            [0.229, 0.224, 0.225]
        )
        self.assertAllClose(normalized[1, 3, 2], expected, atol=1e-6)
        already = tf.random.stateless_normal([1, 4, 4, 3], [1, 2])
        self.assertIs(targets.normalize_images(already), already)

    def test_train_targets_keep_the_uint8_image(self):
        example = crowded_example(3, 0)
        image, _ = make_targets("eager", example)
        self.assertEqual(image.dtype, np.uint8)
        self.assertAllEqual(image, example["image"])


class TruncationTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters("eager", "dataset", "function")
    def test_120_objects_give_100_targets_positives_for_those_and_count_20(self, mode):
        example = crowded_example(100, 20)
        image, labels = make_targets(mode, example)
        self.assertEqual(image.shape, (SIZE, SIZE, 3))
        self.assertEqual(labels["num_truncated_instances"], 20)
        self.assertEqual(labels["num_truncated_instances"].dtype, np.int32)
        boxes_px = example["groundtruth_boxes"] * SIZE
        np.testing.assert_allclose(labels["gt_boxes"], boxes_px[:100], atol=1e-4)
        np.testing.assert_array_equal(labels["gt_classes"], example["groundtruth_classes"][:100])
        np.testing.assert_array_equal(
            labels["gt_is_pasted"], example["groundtruth_is_pasted"][:100]
        )
        self.assertEqual(labels["gt_masks"].shape, (100, 8, 8))
        self.assertTrue((labels["gt_masks"] >= 0).all())  # 100 real mask targets, no padding
        # Every RPN positive belongs to a kept object, none to a cut one.
        positives = positive_anchors(labels)
        self.assertGreater(len(positives), 100)
        kept_iou = iou(positives, boxes_px[:100]).max(1)
        cut_iou = iou(positives, boxes_px[100:]).max(1)
        self.assertTrue(np.all(kept_iou > cut_iou), "a positive anchor matches a cut object")
        self.assertTrue(np.all(cut_iou < 0.3))

    def test_nothing_cut_at_or_below_k(self):
        _, labels = make_targets("eager", crowded_example(80, 20))
        self.assertEqual(labels["num_truncated_instances"], 0)
        self.assertTrue((labels["gt_classes"] > 0).all())
        positives = positive_anchors(labels)
        boxes_px = crowded_example(80, 20)["groundtruth_boxes"] * SIZE
        self.assertTrue(np.any(iou(positives, boxes_px[80:]).max(1) >= 0.7))  # both regions

    def test_crowds_are_skipped_before_counting(self):
        example = crowded_example(100, 10, crowd_every=10)  # 11 crowds: 99 objects remain
        _, labels = make_targets("eager", example)
        self.assertEqual(labels["num_truncated_instances"], 0)
        self.assertEqual(int((labels["gt_classes"] >= 0).sum()), 99)
        _, labels = make_targets("eager", example, skip_crowd=False)
        self.assertEqual(labels["num_truncated_instances"], 10)


if __name__ == "__main__":
    tf.test.main()

"""Tests of tfcp.tasks.voc_detection: difficult handling in both pipelines, VOC metric wiring."""

import os
import tempfile

import gin
import numpy as np
import tensorflow as tf

from tfcp.data import schema
from tfcp.tasks import voc_detection

SIZE = 64
# Normalized boxes of two objects: a large "car" (7) and a small difficult "cat" (8).
BOXES = np.array([[0.1, 0.1, 0.7, 0.8], [0.75, 0.75, 0.95, 0.95]], np.float32)
CLASSES = [7, 8]
DIFFICULT = [0, 1]


def _write(path, num=2):
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(num):
            image = np.full([SIZE, SIZE, 3], 40 * i, np.uint8)
            example = schema.make_example(
                encoded_image=schema.encode_png(image),
                image_format="png",
                height=SIZE,
                width=SIZE,
                source_id=f"2008_00000{i}",
                boxes=BOXES,
                classes=CLASSES,
                difficult=DIFFICULT,
            )
            writer.write(example.SerializeToString())


ANCHORS = dict(min_level=2, max_level=6, num_scales=1, aspect_ratios=(1.0,), anchor_size=4.0)


class VocDetectionInputTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        gin.clear_config()
        self.path = os.path.join(tempfile.mkdtemp(), "voc.tfrecord")
        _write(self.path)

    def test_training_targets_exclude_difficult(self):
        for skip, expected in ((True, [7]), (False, [7, 8])):
            ds = voc_detection.build_voc_detection_dataset(
                self.path, is_training=True, global_batch_size=2, image_size=SIZE,
                scale_range=(1.0, 1.0), flip_prob=0.0, max_num_instances=4,
                skip_difficult_during_training=skip, **ANCHORS,
            )  # fmt: skip
            _, labels = next(iter(ds))
            classes = labels["gt_classes"].numpy()
            self.assertAllEqual(classes[0][classes[0] > 0], expected)
            self.assertNotIn("gt_masks", labels)

    def test_eval_keeps_difficult_flag_and_pixel_boxes(self):
        ds = voc_detection.build_voc_detection_dataset(
            self.path, is_training=False, global_batch_size=2, image_size=128,
            max_num_instances=4, **ANCHORS,
        )  # fmt: skip
        _, labels = next(iter(ds))
        gt = labels["groundtruths"]
        self.assertAllEqual(gt["num_detections"], [2, 2])
        self.assertAllEqual(gt["classes"][0], [7, 8, -1, -1])
        self.assertAllEqual(gt["difficult"][0], [0, 1, 0, 0])
        self.assertAllClose(gt["boxes"][0, :2], BOXES * SIZE)
        self.assertAllEqual(gt["source_id"], [b"2008_000000", b"2008_000001"])

    def test_eval_rejects_more_objects_than_max(self):
        ds = voc_detection.build_voc_detection_dataset(
            self.path, is_training=False, global_batch_size=1, image_size=SIZE,
            max_num_instances=1, **ANCHORS,
        )  # fmt: skip
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "2008_000000"):
            next(iter(ds))


class VocDetectionEvaluatorWiringTest(tf.test.TestCase):
    def test_difficult_ignored_and_both_ap_definitions_reported(self):
        task = voc_detection.VocDetectionTask()
        task.evaluator_begin()
        pixel_boxes = BOXES * SIZE
        # Detections: the car (TP) and the difficult cat (ignored) -> AP 1 for car; the
        # cat class has no non-difficult box, so it has no AP.
        task.evaluator_update(
            {
                "gt_boxes": np.concatenate([pixel_boxes, -np.ones([1, 4])])[None],
                "gt_classes": np.array([[7, 8, -1]]),
                "gt_difficult": np.array([[0, 1, 0]]),
                "gt_num": np.array([2]),
                "detection_boxes": np.concatenate([pixel_boxes, np.zeros([1, 4])])[None],
                "detection_scores": np.array([[0.9, 0.8, 0.0]]),
                "detection_classes": np.array([[7, 8, 1]]),
                "num_detections": np.array([2]),
                "source_id": np.array([b"x"]),
            }
        )
        metrics = task.evaluator_result()
        self.assertAlmostEqual(metrics["AP50/car"], 1.0)
        self.assertNotIn("AP50/cat", metrics)
        self.assertAlmostEqual(metrics["voc_mAP50"], 1.0)
        self.assertAlmostEqual(metrics["voc_mAP50_07"], 1.0)
        self.assertAlmostEqual(metrics["voc_mAP50_10"], 1.0)


if __name__ == "__main__":
    tf.test.main()

"""Tests for tfcp.data.classifier_streams: the double classifier's two streams in a batch."""

import os
import sys

import numpy as np
import tensorflow as tf

from tfcp.data import classifier_streams, pipeline

sys.path.insert(0, os.path.dirname(__file__))
from mosaic_stage_test import CLASSES, SMALL, _record  # noqa: E402


class ClassifierStreamsTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.path = os.path.join(tf.compat.v1.test.get_temp_dir(), "streams-0.tfrecord")
        with tf.io.TFRecordWriter(cls.path) as writer:
            for i, classes in enumerate(CLASSES):
                writer.write(_record(i, list(classes)))

    def _batches(self, num, **kwargs):
        args = dict(
            SMALL,
            file_pattern=self.path,
            seed=3,
            copy_paste_prob=1.0,
            repeat_factor_threshold=0.5,
        )
        args.update(kwargs)
        return list(pipeline.build_dataset(**args).take(num).as_numpy_iterator())

    def _assert_equal(self, a, b):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)

    def test_each_half_is_its_own_stream_and_tagged(self):
        both = self._batches(3, global_batch_size=4, classifier_streams=True, images_per_category=1)
        rfs = self._batches(3, global_batch_size=2)
        class_aware = self._batches(
            3,
            global_batch_size=2,
            repeat_factor_threshold=None,
            images_per_category=1,
            seed=3 + classifier_streams.CLASS_AWARE_SEED_OFFSET,
        )
        for (images, labels), (images_a, labels_a), (images_b, labels_b) in zip(
            both, rfs, class_aware, strict=True
        ):
            np.testing.assert_array_equal(labels.pop("classifier_stream"), [0, 0, 1, 1])
            self._assert_equal(images[:2], images_a)
            self._assert_equal(images[2:], images_b)
            self._assert_equal(tf.nest.map_structure(lambda v: v[:2], labels), labels_a)
            self._assert_equal(tf.nest.map_structure(lambda v: v[2:], labels), labels_b)

    def test_resume_is_exact(self):
        args = dict(global_batch_size=4, classifier_streams=True, images_per_category=1)
        full = self._batches(4, **args)
        resumed = self._batches(2, start_step=2, **args)
        self._assert_equal(full[2:], resumed)

    def test_with_mosaic_the_class_aware_stream_keeps_factors_for_partners(self):
        batches = self._batches(
            2, global_batch_size=4, classifier_streams=True, images_per_category=1, mosaic_prob=1.0
        )
        self.assertEqual(batches[0][0].shape, (4, SMALL["image_size"], SMALL["image_size"], 3))

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "must be even"):
            self._batches(1, global_batch_size=3, classifier_streams=True, images_per_category=1)
        with self.assertRaisesRegex(ValueError, "images_per_category"):
            self._batches(1, global_batch_size=4, classifier_streams=True)
        with self.assertRaisesRegex(ValueError, "mutually exclusive"):
            self._batches(1, global_batch_size=2, images_per_category=1)


if __name__ == "__main__":
    tf.test.main()

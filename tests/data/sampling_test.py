"""Tests of tfcp.data.sampling: repeat factors (formula, sidecars, first pass)."""

import json
import math
import os
import tempfile

import numpy as np
import tensorflow as tf

from tfcp.data import sampling, schema


def _write(path, per_record_classes):
    with tf.io.TFRecordWriter(path) as writer:
        for classes in per_record_classes:
            n = len(classes)
            example = schema.make_example(
                encoded_image=schema.encode_png(np.zeros([4, 4, 3], np.uint8)),
                image_format="png",
                height=4,
                width=4,
                source_id="1",
                boxes=np.tile(np.array([[0.0, 0.0, 0.5, 0.5]], np.float32), [n, 1]),
                classes=list(classes),
                is_crowd=[0] * n,
            )
            writer.write(example.SerializeToString())


class RepeatFactorTest(tf.test.TestCase):
    def test_factors_follow_the_formula(self):
        # 1000 images: category 1 in all, 2 in 10 (f=0.01), 3 in 1 (f=0.001), 4 in none.
        per_record = [np.array([1]) for _ in range(1000)]
        for i in range(10):
            per_record[i] = np.array([1, 2])
        per_record[999] = np.array([1, 3])
        per_record[500] = np.array([], np.int64)
        t = 0.1
        by_category = sampling.category_repeat_factors(per_record, t)
        self.assertAllClose(by_category[1], 1.0)  # f = 0.999 > t
        self.assertAllClose(by_category[2], math.sqrt(t / 0.01))
        self.assertAllClose(by_category[3], math.sqrt(t / 0.001))
        factors = sampling.repeat_factors(per_record, t)
        self.assertAllClose(factors[0], math.sqrt(10.0))  # max over its categories
        self.assertAllClose(factors[999], 10.0)
        self.assertAllClose(factors[500], 1.0)  # no objects
        self.assertAllClose(factors[100], 1.0)
        with self.assertRaisesRegex(ValueError, "positive"):
            sampling.repeat_factors(per_record, 0.0)

    def test_sidecar_and_first_pass_agree(self):
        tmp = tempfile.mkdtemp()
        classes = [[3, 1, 3], [], [2], [1, 2]]
        a, b = os.path.join(tmp, "a.tfrecord"), os.path.join(tmp, "b.tfrecord")
        _write(a, classes)
        _write(b, classes[:2])
        parsed = sampling.record_classes([a, b])
        sampling.write_classes_sidecar(a, classes)
        from_sidecar = sampling.record_classes([a, b])
        for x, y in zip(parsed[0], from_sidecar[0], strict=True):
            self.assertAllEqual(x, y)
        self.assertAllEqual(from_sidecar[0][0], [1, 3])
        factors = sampling.file_repeat_factors([a, b], threshold=0.5)
        self.assertEqual([len(f) for f in factors], [4, 2])
        with open(sampling.sidecar_path(a), "w") as f:
            json.dump({"num_records": 3, "classes": [[1], [2], [3]]}, f)
        with self.assertRaisesRegex(ValueError, "a.tfrecord.json lists 3 records"):
            sampling.record_classes([a])


if __name__ == "__main__":
    tf.test.main()

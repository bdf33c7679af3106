"""Tests for tfcp.data.mosaic_stage: partner sampling and Balanced Mosaic in build_dataset."""

import collections
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

from tfcp.data import mosaic_stage, pipeline, record_policy, records, sampling, schema

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
import bad_records  # noqa: E402

SIZE = 64
SMALL = dict(
    image_size=SIZE,
    max_num_instances=24,
    mask_crop_size=16,
    shuffle_buffer=4,
    occluded_area_threshold=4.0,
)
# Record i holds objects of these classes: class 5 is rare (one image), so with repeat factor
# sampling record 3 gets the largest factor.
CLASSES = ([1, 2], [1, 2], [1, 3], [1, 5], [2, 3], [1, 2, 3])


def _record(index: int, classes: list[int], height: int = 40, width: int = 48) -> bytes:
    rng = np.random.default_rng(index)
    image = np.full([height, width, 3], 20 * index, np.uint8)
    boxes, masks = [], []
    for j, _ in enumerate(classes):
        y0, x0 = 4 + 10 * j, 4 + 12 * j
        mask = np.zeros([height, width], np.uint8)
        mask[y0 : y0 + 9, x0 : x0 + 11] = 1
        image[mask > 0] = rng.integers(60, 250, [3], dtype=np.uint8)
        masks.append(mask)
        boxes.append([y0 / height, x0 / width, (y0 + 9) / height, (x0 + 11) / width])
    return schema.make_example(
        encoded_image=schema.encode_png(image),
        image_format="png",
        height=height,
        width=width,
        source_id=str(100 + index),
        boxes=np.asarray(boxes, np.float32),
        classes=classes,
        is_crowd=[0] * len(classes),
        masks=np.stack(masks),
    ).SerializeToString()


class MosaicStageTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._tmp = tempfile.TemporaryDirectory()
        cls.path = os.path.join(cls._tmp.name, "train-0.tfrecord")
        with tf.io.TFRecordWriter(cls.path) as writer:
            for i, classes in enumerate(CLASSES):
                writer.write(_record(i, list(classes)))
        # S x S images: jittering them by scale 1 without flip is the identity.
        cls.square_path = os.path.join(cls._tmp.name, "square-0.tfrecord")
        with tf.io.TFRecordWriter(cls.square_path) as writer:
            for i, classes in enumerate(CLASSES):
                writer.write(_record(i, list(classes), SIZE, SIZE))

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()
        super().tearDownClass()

    def _partner_names(self, num, start_step=0, threshold=None):
        opened = records.open_records(
            self.path,
            is_training=True,
            seed=4,
            shuffle_buffer=4,
            global_batch_size=1,
            start_step=start_step,
            repeat_factor_threshold=threshold,
            mosaic_partners=3,
            partner_repeat_factor_threshold=threshold,
        )
        out = {}
        for position, _, _, names, _ in opened.dataset.take(num).as_numpy_iterator():
            out[int(position)] = [n.decode() for n in names]
        return out

    def test_partner_frequencies_follow_the_repeat_factors(self):
        threshold = 0.5
        factors = sampling.repeat_factors([np.unique(c) for c in CLASSES], threshold)  # float64 [6]
        self.assertGreater(factors.max(), factors.min())  # the test needs unequal factors
        names = self._partner_names(1500, threshold=threshold)
        counts = collections.Counter(n for group in names.values() for n in group)
        total = sum(counts.values())
        expected = factors / factors.sum()
        for i, p in enumerate(expected):
            observed = counts[f"{self.path}:{i}"] / total
            sigma = np.sqrt(p * (1 - p) / total)
            self.assertLess(abs(observed - p), 4 * sigma + 0.01, (i, observed, p))

    def test_partners_are_uniform_without_factors(self):
        names = self._partner_names(600)
        counts = collections.Counter(n for group in names.values() for n in group)
        # Without factors each epoch holds every record once: exactly uniform per epoch.
        self.assertEqual(sorted(counts.values()), [300] * len(CLASSES))

    def test_partners_are_keyed_by_position_so_resume_gets_the_same(self):
        full = self._partner_names(40, threshold=0.5)
        resumed = self._partner_names(20, start_step=20, threshold=0.5)
        self.assertEqual(sorted(resumed), list(range(20, 40)))
        for position, group in resumed.items():
            self.assertEqual(group, full[position])

    def _batches(self, num, **kwargs):
        args = dict(SMALL, file_pattern=self.path, global_batch_size=2, seed=3)
        args.update(kwargs)
        return list(pipeline.build_dataset(**args).take(num).as_numpy_iterator())

    def _assert_same(self, a, b):
        for (images_a, labels_a), (images_b, labels_b) in zip(a, b, strict=True):
            np.testing.assert_array_equal(images_a, images_b)
            tf.nest.map_structure(np.testing.assert_array_equal, labels_a, labels_b)

    def test_pipeline_structure_determinism_and_resume(self):
        made_before = mosaic_stage.mosaic_counts()[0]
        plain = self._batches(4, copy_paste_prob=1.0)
        first = self._batches(4, mosaic_prob=1.0, copy_paste_prob=1.0)
        again = self._batches(4, mosaic_prob=1.0, copy_paste_prob=1.0)
        self.assertEqual(
            tf.nest.map_structure(lambda x: (x.shape, x.dtype), plain),
            tf.nest.map_structure(lambda x: (x.shape, x.dtype), first),
        )
        self._assert_same(first, again)
        self.assertGreaterEqual(mosaic_stage.mosaic_counts()[0] - made_before, 16)
        resumed = self._batches(2, mosaic_prob=1.0, copy_paste_prob=1.0, start_step=2)
        self._assert_same(first[2:], resumed)
        # A mosaic holds objects of 4 images: more objects than the plain pipeline's.
        count = lambda batches: sum(int((b[1]["gt_classes"] > 0).sum()) for b in batches)  # noqa: E731
        self.assertGreater(count(first), count(plain))

    def test_examples_left_without_mosaic_are_bit_identical_to_the_plain_pipeline(self):
        plain = self._batches(6, copy_paste_prob=0.0)
        half = self._batches(6, copy_paste_prob=0.0, mosaic_prob=0.5)
        same = sum(
            np.array_equal(a, b)
            for (images_a, _), (images_b, _) in zip(plain, half, strict=True)
            for a, b in zip(images_a, images_b, strict=True)
        )
        self.assertBetween(same, 1, 11)

    def test_a_bad_partner_raises_naming_it_or_is_skipped(self):
        path = os.path.join(self.get_temp_dir(), "bad-0.tfrecord")
        written = bad_records.write_records(path, ["good", "good", "nan_box", "good"])
        args = dict(SMALL, file_pattern=path, global_batch_size=2, seed=1, mosaic_prob=1.0)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, r"bad-0.tfrecord:2"):
            list(pipeline.build_dataset(**args).take(8))
        batches = list(pipeline.build_dataset(**args, on_bad_record="skip").take(8))
        self.assertLen(batches, 8)
        self.assertEqual(written.bad_indices, (2,))
        self.assertGreater(record_policy.skipped_count(), 0)

    def test_mosaic_needs_a_valid_probability(self):
        with self.assertRaisesRegex(ValueError, "mosaic_prob"):
            self._batches(1, mosaic_prob=1.5)

    def test_order_names_are_checked(self):
        with self.assertRaisesRegex(ValueError, "mosaic_order must be one of"):
            self._batches(1, mosaic_prob=1.0, mosaic_order="paste_first")
        with self.assertRaisesRegex(ValueError, "needs Copy-Paste"):
            self._batches(
                1, mosaic_prob=1.0, mosaic_order="jitter_paste_mosaic", copy_paste_prob=0.0
            )

    def test_jitter_first_with_identity_jitter_equals_mosaic_first(self):
        """With S x S images, scale 1 and no flip, jittering is the identity in either order:
        the two orders then give the same batches (same mosaic seed, identity re-jitter)."""
        args = dict(
            file_pattern=self.square_path, mosaic_prob=0.5, main_scale_range=(1.0, 1.0),
            flip_prob=0.0, copy_paste_prob=0.0,
        )  # fmt: skip
        first = self._batches(4, **args)
        views = self._batches(4, **args, mosaic_order="jitter_mosaic_paste")
        self._assert_same(first, views)
        plain = self._batches(4, **dict(args, mosaic_prob=0.0))
        self.assertFalse(all(np.array_equal(a[0], b[0]) for a, b in zip(first, plain, strict=True)))

    def test_jitter_first_mosaics_are_not_jittered_again(self):
        def scales(order):
            batches = self._batches(
                3, mosaic_prob=1.0, main_scale_range=(0.5, 0.5), mosaic_order=order,
                copy_paste_prob=1.0, paste_scale_range=(0.5, 0.5),
            )  # fmt: skip
            return np.concatenate([b[1]["image_info"][:, 2] for b in batches])  # [N, 2]

        np.testing.assert_allclose(scales("mosaic_jitter_paste"), 0.5, rtol=1e-6)
        np.testing.assert_allclose(scales("jitter_mosaic_paste"), 1.0)
        np.testing.assert_allclose(scales("jitter_paste_mosaic"), 1.0)

    def test_jitter_paste_mosaic_pastes_inside_the_group_once(self):
        """Each view gets the next image's objects ('all'), the mosaic no more: at most the
        group's objects are pasted ones; deterministic and resumable."""
        args = dict(
            mosaic_prob=1.0, mosaic_order="jitter_paste_mosaic", copy_paste_prob=1.0,
            selection="all", keep_is_pasted=True, main_scale_range=(0.9, 1.1),
        )  # fmt: skip
        first = self._batches(3, **args)
        self._assert_same(first, self._batches(3, **args))
        self._assert_same(first[2:], self._batches(1, **args, start_step=2))
        max_group = 4 * max(len(c) for c in CLASSES)
        pasted_total = 0
        for _, labels in first:
            for classes, is_pasted in zip(
                labels["gt_classes"], labels["gt_is_pasted"], strict=True
            ):
                # In-group pasting adds at most the group's objects; a second paste onto the
                # mosaic (another mosaic's objects, 'all') would go beyond.
                pasted = int(is_pasted[classes > 0].sum())
                self.assertLessEqual(pasted, max_group)
                pasted_total += pasted
        self.assertGreater(pasted_total, 0)


if __name__ == "__main__":
    tf.test.main()

"""Tests for tfcp.data.mixed_sources and two-source training in tfcp.data.pipeline."""

import os
import tempfile

import numpy as np
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcp.data import mixed_sources, pipeline, schema

SIZE = 64
# Labeled records use classes 1-3, pseudo-labeled ones 5-7: a class tells where an object
# came from independently of the pipeline's flags.
LABELED_CLASSES = (1, 2, 3)
PSEUDO_CLASSES = (5, 6, 7)
SMALL = dict(
    image_size=SIZE,
    max_num_instances=16,
    mask_crop_size=16,
    shuffle_buffer=8,
    occluded_area_threshold=4.0,
    num_parallel_calls=2,
)


def _record(index: int, classes, rng: np.random.Generator, source_id: str) -> bytes:
    height, width = 48, 64
    image = rng.integers(0, 255, [height, width, 3], dtype=np.uint8)
    boxes, masks = [], []
    count = index % 3  # 0, 1 or 2 objects: images without objects too (pseudo labels)
    for _ in range(count):
        y0, x0 = rng.integers(0, height - 20), rng.integers(0, width - 20)
        mask = np.zeros([height, width], np.uint8)
        mask[y0 : y0 + 18, x0 : x0 + 18] = 1
        masks.append(mask)
        boxes.append([y0 / height, x0 / width, (y0 + 18) / height, (x0 + 18) / width])
    example = schema.make_example(
        encoded_image=schema.encode_png(image),
        image_format="png",
        height=height,
        width=width,
        source_id=source_id,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        classes=[classes[j % len(classes)] for j in range(count)],
        is_crowd=[0] * count,
        masks=np.stack(masks) if masks else np.zeros([0, height, width], np.uint8),
    )
    return example.SerializeToString()


class SplitBatchTest(tf.test.TestCase):
    def test_exact_shares(self):
        self.assertEqual(mixed_sources.split_batch(4, 0.5), (2, 2))
        self.assertEqual(mixed_sources.split_batch(8, 0.25), (6, 2))
        self.assertEqual(mixed_sources.split_batch(512, 0.5), (256, 256))

    def test_inexact_or_empty_share_is_an_error(self):
        with self.assertRaisesRegex(ValueError, r"0.5 x per-replica batch 3 = 1.5"):
            mixed_sources.split_batch(3, 0.5)
        with self.assertRaisesRegex(ValueError, "between 1 and the batch size"):
            mixed_sources.split_batch(4, 0.1)
        with self.assertRaisesRegex(ValueError, r"must be in \(0, 1\)"):
            mixed_sources.split_batch(4, 1.0)

    def test_paste_settings(self):
        with self.assertRaisesRegex(ValueError, "paste_into must be one of"):
            mixed_sources.check_paste("everywhere", "labeled", 2, 2)
        with self.assertRaisesRegex(ValueError, "paste_from must be one of"):
            mixed_sources.check_paste("both", "teacher", 2, 2)
        with self.assertRaisesRegex(ValueError, "at least 2 labeled images"):
            mixed_sources.check_paste("both", "labeled", 1, 1)
        mixed_sources.check_paste("pseudo", "labeled", 1, 1)  # 1 labeled -> 1 pseudo: fine
        self.assertEqual(mixed_sources.paste_targets("pseudo", 2, 1), [False, False, True])


class AssignSourcesTest(tf.test.TestCase):
    @settings(max_examples=40, deadline=None)
    @given(
        num_labeled=st.integers(1, 6),
        num_pseudo=st.integers(1, 6),
        paste_from=st.sampled_from(mixed_sources.PASTE_FROM),
        seed=st.integers(0, 2**31 - 1),
    )
    def test_never_itself_each_used_once_others_balanced(
        self, num_labeled, num_pseudo, paste_from, seed
    ):
        rows = mixed_sources.assign_sources(
            tf.constant([seed, 7], tf.int64), num_labeled, num_pseudo, paste_from
        ).numpy()
        n = num_labeled if paste_from == "labeled" else num_pseudo
        own = rows[:num_labeled] if paste_from == "labeled" else rows[num_labeled:]
        others = rows[num_labeled:] if paste_from == "labeled" else rows[:num_labeled]
        self.assertTrue(np.all((rows >= 0) & (rows < n)))
        if n > 1:
            self.assertTrue(np.all(own != np.arange(n)), own)  # never its own source
            self.assertCountEqual(own.tolist(), range(n))  # each pool image once
        counts = np.bincount(others, minlength=n)
        self.assertLessEqual(counts.max() - counts.min(), 1)  # cycling: balanced

    def test_deterministic_per_seed(self):
        a = mixed_sources.assign_sources(tf.constant([1, 2], tf.int64), 6, 6, "labeled")
        b = mixed_sources.assign_sources(tf.constant([1, 2], tf.int64), 6, 6, "labeled")
        self.assertAllEqual(a, b)
        draws = {
            tuple(
                mixed_sources.assign_sources(tf.constant([s, 2], tf.int64), 6, 6, "labeled").numpy()
            )
            for s in range(8)
        }
        self.assertGreater(len(draws), 1)


class MixedPipelineTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._tmp = tempfile.TemporaryDirectory()
        rng = np.random.default_rng(0)
        cls.labeled = os.path.join(cls._tmp.name, "labeled.tfrecord")
        cls.pseudo = os.path.join(cls._tmp.name, "pseudo.tfrecord")
        for path, classes, count, base in (
            (cls.labeled, LABELED_CLASSES, 7, 100),
            (cls.pseudo, PSEUDO_CLASSES, 9, 900),
        ):
            with tf.io.TFRecordWriter(path) as writer:
                for i in range(count):
                    writer.write(_record(i + 1, classes, rng, str(base + i)))

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()
        super().tearDownClass()

    def _batches(self, num, **kwargs):
        args = dict(
            SMALL,
            file_pattern=self.labeled,
            pseudo_file_pattern=self.pseudo,
            global_batch_size=4,
            seed=3,
            keep_is_pasted=True,
        )
        args.update(kwargs)
        return [
            tf.nest.map_structure(lambda t: t.numpy(), batch)
            for batch in pipeline.build_dataset(**args).take(num)
        ]

    def _objects(self, labels, b):
        valid = labels["gt_classes"][b] > 0
        return (
            labels["gt_classes"][b][valid],
            labels["gt_is_pasted"][b][valid],
            labels["gt_from_pseudo"][b][valid],
        )

    def test_exact_share_and_flags_agree_with_classes(self):
        pasted_from_labeled = own_pseudo = 0
        for _, labels in self._batches(6):
            self.assertAllEqual(labels["is_pseudo"], [False, False, True, True])
            for b in range(4):
                classes, is_pasted, from_pseudo = self._objects(labels, b)
                # The flag says pseudo exactly when the class is a pseudo-data class.
                self.assertAllEqual(from_pseudo, np.isin(classes, PSEUDO_CLASSES))
                # paste_from='labeled': no pasted object comes from a pseudo image.
                self.assertFalse(np.any(from_pseudo & is_pasted))
                if labels["is_pseudo"][b]:
                    self.assertTrue(np.all(from_pseudo[~is_pasted]))
                    own_pseudo += int(np.sum(~is_pasted))
                else:
                    self.assertFalse(np.any(from_pseudo))
                pasted_from_labeled += int(np.sum(is_pasted))
        self.assertGreater(pasted_from_labeled, 0)
        self.assertGreater(own_pseudo, 0)

    def test_paste_into_labeled_only(self):
        pasted_into_labeled = 0
        for _, labels in self._batches(6, paste_into="labeled"):
            pasted = labels["gt_is_pasted"] & (labels["gt_classes"] > 0)
            self.assertFalse(np.any(pasted[labels["is_pseudo"]]))
            pasted_into_labeled += int(np.sum(pasted[~labels["is_pseudo"]]))
        self.assertGreater(pasted_into_labeled, 0)

    def test_paste_into_pseudo_only(self):
        for _, labels in self._batches(4, paste_into="pseudo"):
            pasted = labels["gt_is_pasted"] & (labels["gt_classes"] > 0)
            self.assertFalse(np.any(pasted[~labels["is_pseudo"]]))

    def test_paste_from_pseudo(self):
        for _, labels in self._batches(4, paste_from="pseudo"):
            pasted = labels["gt_is_pasted"] & (labels["gt_classes"] > 0)
            self.assertTrue(np.all(labels["gt_from_pseudo"][pasted]))
            self.assertTrue(np.all(np.isin(labels["gt_classes"][pasted], PSEUDO_CLASSES)))

    def test_quarter_share(self):
        for _, labels in self._batches(2, pseudo_fraction=0.25):
            self.assertAllEqual(labels["is_pseudo"], [False, False, False, True])

    def test_deterministic_per_seed_and_exact_resume(self):
        full = self._batches(5)
        again = self._batches(5)
        resumed = self._batches(2, start_step=3)
        other_seed = self._batches(1, seed=4)
        for a, b in zip(full, again, strict=True):
            tf.nest.map_structure(self.assertAllEqual, a, b)
        for a, b in zip(full[3:], resumed, strict=True):
            tf.nest.map_structure(self.assertAllEqual, a, b)
        self.assertNotAllClose(full[0][0], other_seed[0][0])

    def test_separate_source_views_and_two_replicas_resume_exactly(self):
        context = tf.distribute.InputContext(
            num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2
        )
        args = dict(paste_scale_range=(0.8, 1.25), input_context=context, global_batch_size=8)
        full = self._batches(3, **args)
        resumed = self._batches(1, start_step=1, **args)
        # One pipeline feeding 2 replicas: step 1 is the pipeline's third per-replica batch.
        tf.nest.map_structure(self.assertAllEqual, full[2], resumed[0])
        for _, labels in full:
            self.assertAllEqual(labels["is_pseudo"], [False, False, True, True])
            pasted = labels["gt_is_pasted"] & (labels["gt_classes"] > 0)
            self.assertFalse(np.any(labels["gt_from_pseudo"][pasted]))

    def test_without_copy_paste_the_flags_still_come(self):
        ((_, labels),) = self._batches(1, copy_paste_prob=0.0)
        self.assertAllEqual(labels["is_pseudo"], [False, False, True, True])
        self.assertNotIn("gt_is_pasted", labels)
        for b in range(4):
            valid = labels["gt_classes"][b] > 0
            self.assertAllEqual(
                labels["gt_from_pseudo"][b][valid], [bool(labels["is_pseudo"][b])] * valid.sum()
            )

    def test_training_structure_has_no_flags(self):
        ((_, labels),) = self._batches(1, keep_is_pasted=False)
        self.assertNotIn("gt_from_pseudo", labels)
        self.assertNotIn("is_pseudo", labels)
        ((_, single),) = self._batches(1, keep_is_pasted=False, pseudo_file_pattern=None)
        self.assertEqual(set(labels), set(single))

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "at least 2 labeled images"):
            self._batches(1, global_batch_size=2)
        with self.assertRaisesRegex(ValueError, "for training"):
            pipeline.build_dataset(
                **SMALL,
                file_pattern=self.labeled,
                pseudo_file_pattern=self.pseudo,
                is_training=False,
            )


if __name__ == "__main__":
    tf.test.main()

"""Tests of tfcp.data.record_policy: bad records fail naming them, or are skipped and counted."""

import os
import tempfile

import tensorflow as tf

from tests import bad_records
from tfcp.data import pipeline, record_policy

NUM_CLASSES = 4


def _named_stream(path):
    """(position, 'path:index', serialized) for one pass over a file."""
    records = tf.data.TFRecordDataset(path)
    return tf.data.Dataset.zip(tf.data.Dataset.range(1 << 40), records).map(
        lambda i, r: (i, tf.strings.join([path, ":", tf.strings.as_string(i)]), r)
    )


class DecodeStageTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp()

    def _stage(self, path, policy):
        return record_policy.decode_stage(
            _named_stream(path),
            on_bad_record=policy,
            include_mask=True,
            num_classes=NUM_CLASSES,
            num_parallel_calls=2,
        )

    def test_bad_records_fail_naming_the_record_or_are_skipped_and_counted(self):
        # Every bad kind once, between good records; the reasons' wording per kind is tested
        # in validation_test.py.
        kinds = ["good"]
        for kind in bad_records.BAD_KINDS:
            kinds += [kind, "good"]
        path = os.path.join(self.tmp, "mixed.tfrecord")
        written = bad_records.write_records(path, kinds, num_classes=NUM_CLASSES)
        with self.assertRaises(tf.errors.InvalidArgumentError) as raised:
            list(self._stage(path, "raise"))
        error = record_policy.as_bad_record_error(raised.exception)
        self.assertIsNotNone(error)
        first = written.bad_indices[0]
        self.assertIn(
            f"bad record {path}:{first} (source_id {written.source_ids[first]}): "
            f"{written.reasons[first]}",
            str(error),
        )
        self.assertIn("on_bad_record = 'skip'", str(error))
        before = record_policy.skipped_count()
        kept = [int(p) for p, _ in self._stage(path, "skip")]
        self.assertEqual(kept, [i for i, k in enumerate(kinds) if k == "good"])
        self.assertEqual(record_policy.skipped_count() - before, len(bad_records.BAD_KINDS))

    def test_good_records_pass_unchanged(self):
        path = os.path.join(self.tmp, "good.tfrecord")
        bad_records.write_records(path, ["good", "good"])
        for policy in record_policy.POLICIES:
            out = list(self._stage(path, policy))
            self.assertEqual([int(p) for p, _ in out], [0, 1])
            self.assertEqual(out[0][1]["groundtruth_boxes"].shape, (2, 4))

    def test_check_stage_drops_the_records_decode_stage_drops_without_decoding(self):
        kinds = ["good", *bad_records.BAD_KINDS, "good"]
        path = os.path.join(self.tmp, "checked.tfrecord")
        written = bad_records.write_records(path, kinds, num_classes=NUM_CLASSES)
        stream = _named_stream(path)
        options = dict(include_mask=True, num_classes=NUM_CLASSES, num_parallel_calls=2)
        raised = list(record_policy.check_stage(stream, on_bad_record="raise", **options))
        self.assertEqual([int(p) for p, _, _ in raised], list(range(len(kinds))))
        before = record_policy.skipped_count()
        kept = list(record_policy.check_stage(stream, on_bad_record="skip", **options))
        self.assertEqual([int(p) for p, _, _ in kept], [0, len(kinds) - 1])
        self.assertEqual(record_policy.skipped_count() - before, len(written.bad_indices))
        self.assertEqual(kept[1][1].numpy().decode(), f"{path}:{len(kinds) - 1}")

    def test_decode_or_fail_names_the_bad_record(self):
        good = bad_records.make_example("good", 0).SerializeToString()
        decoded = record_policy.decode_or_fail(
            tf.constant("f:0"), tf.constant(good), include_mask=True, num_classes=NUM_CLASSES
        )
        self.assertEqual(decoded["groundtruth_instance_masks"].shape[0], 2)
        bad = bad_records.make_example("nan_box", 4).SerializeToString()
        with self.assertRaisesRegex(
            tf.errors.InvalidArgumentError, r"bad record f:4 \(source_id 4-nan_box\): box 1 is NaN"
        ):
            record_policy.decode_or_fail(
                tf.constant("f:4"), tf.constant(bad), include_mask=True, num_classes=NUM_CLASSES
            )

    def test_unknown_policy(self):
        with self.assertRaisesRegex(ValueError, "on_bad_record"):
            self._stage(os.path.join(self.tmp, "x"), "ignore")

    def test_training_pipeline_skips_every_kind(self):
        path = os.path.join(self.tmp, "all.tfrecord")
        bad_records.write_records(path, bad_records.KINDS)
        before = record_policy.skipped_count()
        dataset = pipeline.build_dataset(
            file_pattern=path,
            global_batch_size=2,
            image_size=64,
            max_num_instances=8,
            mask_crop_size=16,
            on_bad_record="skip",
            num_classes=NUM_CLASSES,
            num_parallel_calls=1,
        )
        images, labels = next(iter(dataset))  # only the one good record, twice
        self.assertEqual(images.shape, (2, 64, 64, 3))
        self.assertGreaterEqual(record_policy.skipped_count() - before, len(bad_records.BAD_KINDS))


if __name__ == "__main__":
    tf.test.main()

"""Tests of tfcp.data.records: counts, exact index-keyed resume, sharding, windows."""

import collections
import os
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfcp.data import records


def _write_files(directory, sizes):
    """Files f0..fk with sizes[i] records each; record j of file i is b'i:j'."""
    paths = []
    for i, size in enumerate(sizes):
        path = os.path.join(directory, f"part-{i:05d}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for j in range(size):
                writer.write(f"{i}:{j}".encode() * (1 + j % 3))
        paths.append(path)
    return paths


def _take(dataset, n):
    return [(int(p), n_.decode(), r.decode()) for p, n_, r in dataset.take(n).as_numpy_iterator()]


class CountRecordsTest(tf.test.TestCase):
    def test_counts_match_tf_and_truncation_is_named(self):
        tmp = tempfile.mkdtemp()
        paths = _write_files(tmp, [0, 1, 7])
        for path in paths:
            expected = sum(1 for _ in tf.data.TFRecordDataset(path))
            self.assertEqual(records.count_records(path), expected)
        with open(paths[2], "rb") as f:
            data = f.read()
        bad = os.path.join(tmp, "truncated.tfrecord")
        with open(bad, "wb") as f:
            f.write(data[:-3])
        with self.assertRaisesRegex(ValueError, "truncated.tfrecord"):
            records.count_records(bad)


class TrainRecordsTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.files = _write_files(tempfile.mkdtemp(), [5, 3, 6, 4])  # 18 records

    def test_every_epoch_is_a_permutation_and_epochs_differ(self):
        ds = records.train_records(self.files, seed=3, shuffle_window=4)
        rows = _take(ds, 18 * 3)
        self.assertEqual([p for p, _, _ in rows], list(range(54)))
        epochs = [[r for _, _, r in rows[k * 18 : (k + 1) * 18]] for k in range(3)]
        all_records = sorted(
            r
            for _, _, r in _take(
                records.eval_records(self.files).map(
                    lambda r: (tf.constant(0, tf.int64), tf.constant(""), r)
                ),
                18,
            )
        )
        for epoch in epochs:
            self.assertEqual(sorted(epoch), all_records)
        self.assertNotEqual(epochs[0], epochs[1])
        # record_name names the file and the record's index in it.
        for _, name, record in rows:
            path, index = name.rsplit(":", 1)
            file_index = self.files.index(path)
            self.assertTrue(record.startswith(f"{file_index}:{index}"))

    @parameterized.parameters(1, 4, 7, 64)
    def test_start_anywhere_equals_the_uninterrupted_stream(self, window):
        full = _take(records.train_records(self.files, seed=5, shuffle_window=window), 60)
        for start in (0, 1, 3, 4, 5, 17, 18, 19, 23, 36, 41):
            resumed = records.train_records(self.files, seed=5, shuffle_window=window, start=start)
            self.assertEqual(_take(resumed, 60 - start), full[start:], f"start={start}")

    @parameterized.parameters((2, [5, 3, 6, 4]), (3, [5, 3, 6, 4]), (5, [5, 3, 6, 4]), (3, [7]))
    def test_pipelines_partition_each_epoch_and_resume_exactly(self, num_pipelines, sizes):
        files = _write_files(tempfile.mkdtemp(), sizes)
        per_pipeline = []
        for pid in range(num_pipelines):
            kwargs = dict(seed=1, shuffle_window=3, num_pipelines=num_pipelines, pipeline_id=pid)
            full = _take(records.train_records(files, **kwargs), 40)
            for start in (1, 6, 13):
                resumed = records.train_records(files, start=start, **kwargs)
                self.assertEqual(_take(resumed, 40 - start), full[start:])
            per_pipeline.append(full)
        # The first epoch of all pipelines together holds every record exactly once.
        total = sum(sizes)
        first_epoch = collections.Counter()
        for pid, full in enumerate(per_pipeline):
            if len(files) >= num_pipelines:  # files are sharded
                size = sum(sizes[pid::num_pipelines])
            else:  # records are sharded
                size = len(range(pid, total, num_pipelines))
            first_epoch.update(name for _, name, _ in full[:size])
            self.assertEqual([p for p, _, _ in full], list(range(40)))
        self.assertEqual(sum(first_epoch.values()), total)
        self.assertEqual(set(first_epoch.values()), {1})

    def test_start_position_counts_replicas_per_pipeline(self):
        ctx = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=8
        )
        self.assertEqual(records.start_position(10, 3, ctx), 10 * 3 * 4)
        self.assertEqual(records.start_position(10, 3, None), 30)

    def test_resume_cost_does_not_grow_with_the_position(self):
        # Resuming deep into a run reads at most one window past the files it skips whole.
        files = _write_files(tempfile.mkdtemp(), [50] * 4)
        start = 10**12 + 3  # epoch 5e9: replaying the stream would never finish
        rows = _take(records.train_records(files, seed=0, shuffle_window=8, start=start), 2)
        self.assertEqual([p for p, _, _ in rows], [start, start + 1])

    def test_a_pipeline_without_records_is_a_clear_error(self):
        files = _write_files(tempfile.mkdtemp(), [1])
        with self.assertRaisesRegex(ValueError, "input pipeline 1 of 2 gets no training record"):
            records.train_records(files, seed=0, shuffle_window=2, num_pipelines=2, pipeline_id=1)


class RepeatFactorStreamTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.sizes = [5, 3, 6, 4]
        self.files = _write_files(tempfile.mkdtemp(), self.sizes)
        rng = np.random.default_rng(0)
        self.factors = [1.0 + rng.choice([0.0, 0.0, 0.5, 1.7, 3.2], size=n) for n in self.sizes]

    def test_copies_per_epoch_match_the_factors(self):
        ds = records.train_records(
            self.files, seed=2, shuffle_window=5, repeat_factors=self.factors
        )
        names = [n for _, n, _ in _take(ds, 6000)]
        counts = collections.Counter(names)
        expected_per_epoch = sum(float(f.sum()) for f in self.factors)
        epochs = len(names) / expected_per_epoch
        for path, factors in zip(self.files, self.factors, strict=True):
            for index, r in enumerate(factors):
                rate = counts[f"{path}:{index}"] / epochs
                self.assertAllClose(rate, r, atol=0.2, msg=f"{path}:{index} r={r}")

    @parameterized.parameters((1, 0), (2, 1), (3, 0))
    def test_resume_is_exact_with_repeat_factors(self, num_pipelines, pipeline_id):
        kwargs = dict(
            seed=4,
            shuffle_window=4,
            repeat_factors=self.factors,
            num_pipelines=num_pipelines,
            pipeline_id=pipeline_id,
        )
        full = _take(records.train_records(self.files, **kwargs), 90)
        self.assertEqual(full, _take(records.train_records(self.files, **kwargs), 90))
        for start in (1, 5, 29, 31, 58, 77):
            resumed = records.train_records(self.files, start=start, **kwargs)
            self.assertEqual(_take(resumed, 90 - start), full[start:], f"start={start}")

    def test_bad_factors_are_named(self):
        with self.assertRaisesRegex(ValueError, "repeat factors must be >= 1"):
            records.train_records(
                self.files, seed=0, shuffle_window=2, repeat_factors=[np.ones(2)] * 4
            )


class EvalRecordsTest(tf.test.TestCase):
    def test_pipelines_cover_every_record_once(self):
        for sizes, n in (([2, 3, 4], 2), ([9], 4)):
            files = _write_files(tempfile.mkdtemp(), sizes)
            seen = []
            for pid in range(n):
                ds = records.eval_records(files, num_pipelines=n, pipeline_id=pid)
                seen += [r.decode() for r in ds.as_numpy_iterator()]
            self.assertLen(seen, sum(sizes))
            self.assertLen(set(seen), sum(sizes))
            np.testing.assert_array_equal(sorted(seen), sorted(set(seen)))


if __name__ == "__main__":
    tf.test.main()


class OpenRecordsTest(tf.test.TestCase):
    def test_list_files_sorts_each_pattern_and_names_an_empty_one(self):
        tmp = tempfile.mkdtemp()
        paths = _write_files(tmp, [1, 1, 1])
        pattern = os.path.join(tmp, "part-*.tfrecord")
        self.assertEqual(records.list_files(pattern), paths)
        self.assertEqual(records.list_files(f"{paths[2]}, {paths[0]}"), [paths[2], paths[0]])
        with self.assertRaisesRegex(ValueError, "nothing-\\*"):
            records.list_files([pattern, os.path.join(tmp, "nothing-*")])

    def test_training_stream_layout_and_resume_drop(self):
        tmp = tempfile.mkdtemp()
        paths = _write_files(tmp, [5, 4])
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2
        )
        opened = records.open_records(
            ",".join(paths), is_training=True, seed=3, shuffle_buffer=4,
            input_context=context, global_batch_size=6, start_step=1, position_multiple=2,
        )  # fmt: skip
        self.assertEqual((opened.pipeline_id, opened.batch_size), (1, 3))
        # Step 1 starts at position 3 of this pipeline: read from 2, drop 1 after pairing.
        self.assertEqual(opened.drop, 1)
        expected, _ = records.read(
            paths, is_training=True, seed=3, shuffle_buffer=4, input_context=context,
            batch_size=3, start_step=1, position_multiple=2,
        )  # fmt: skip
        self.assertEqual(_take(opened.dataset, 6), _take(expected, 6))
        self.assertEqual(_take(opened.dataset, 1)[0][0], 2)

    def test_eval_is_one_pass_in_file_order(self):
        tmp = tempfile.mkdtemp()
        _write_files(tmp, [2, 1])
        opened = records.open_records(
            os.path.join(tmp, "*.tfrecord"), is_training=False, global_batch_size=4
        )
        self.assertEqual((opened.drop, opened.pipeline_id, opened.batch_size), (0, 0, 4))
        got = [r.decode() for r in opened.dataset.as_numpy_iterator()]
        self.assertEqual(got, ["0:0", "0:10:1", "1:0"])

"""Tests of tfcp.data.class_aware: k draws per category per epoch, walks, streams, resume."""

import collections
import os
import tempfile

import numpy as np
import tensorflow as tf
from absl import logging as absl_logging
from absl.testing import parameterized

from tfcp.data import class_aware, records, sampling


def _write(directory, per_file_classes):
    """One TFRecord file per list; record j of file i is b'i:j'; class sidecars beside."""
    paths = []
    for i, classes in enumerate(per_file_classes):
        path = os.path.join(directory, f"part-{i:05d}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for j in range(len(classes)):
                writer.write(f"{i}:{j}".encode())
        sampling.write_classes_sidecar(path, classes)
        paths.append(path)
    return paths


def _take(dataset, n):
    return [(int(p), n_.decode(), r.decode()) for p, n_, r in dataset.take(n).as_numpy_iterator()]


# 18 records in 4 files, one category each (or none): category 1 in 9 images, 2 in 5,
# 3 in 2 (fewer than k = 3), two images without objects.
CLASSES = [
    [[1], [2], [1], [], [3]],
    [[1], [2], [1]],
    [[2], [1], [1], [3], [2], []],
    [[1], [2], [1], [1]],
]
K = 3


def _expected(files, classes, epoch, seed):
    """record name -> copies in `epoch` (the whole data set), from class_aware directly."""
    per_record = [np.array(x, np.int64) for f in classes for x in f]
    copies = class_aware.epoch_copies(class_aware.group_by_category(per_record), K, seed, epoch)
    names = [f"{f}:{i}" for f, c in zip(files, classes, strict=True) for i in range(len(c))]
    return collections.Counter({n: int(c) for n, c in zip(names, copies.numpy(), strict=True) if c})


def _category(name, files):
    path, index = name.rsplit(":", 1)
    return CLASSES[files.index(path)][int(index)]


class DrawTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        per_record = [np.array(x, np.int64) for f in CLASSES for x in f]
        self.categories = class_aware.group_by_category(per_record)

    def test_grouping(self):
        c = self.categories
        self.assertAllEqual(c.ids, [1, 2, 3])
        self.assertAllEqual(c.sizes, [9, 5, 2])
        self.assertEqual(c.num_records, 18)
        self.assertAllEqual(c.records[c.starts[2] : c.starts[2] + 2], [4, 11])  # category 3
        with self.assertRaisesRegex(ValueError, "none of the 2 training records has an object"):
            class_aware.group_by_category([np.zeros([0], np.int64)] * 2)

    def test_each_category_walks_fresh_permutations_k_at_a_time(self):
        c = self.categories
        drawn = class_aware.draws(c, K, seed=7, epochs=tf.range(30, dtype=tf.int64)).numpy()
        self.assertEqual(drawn.shape, (30, 3, K))
        for ci, n in enumerate(c.sizes):
            members = sorted(c.records[c.starts[ci] : c.starts[ci] + n])
            chain = drawn[:, ci, :].reshape(-1)  # the category's walk, epoch after epoch
            self.assertEqual(set(chain), set(members))
            cycles = [sorted(chain[i : i + n]) for i in range(0, len(chain) - n + 1, n)]
            for cycle in cycles:  # no image comes back before all were drawn
                self.assertEqual(cycle, members)
            if n > K:  # fresh permutations: not the same order every cycle
                self.assertGreater(len({tuple(chain[i : i + n]) for i in range(0, 60, n)}), 1)
        copies = class_aware.epoch_copies(c, K, seed=7, epoch=4).numpy()
        self.assertEqual(copies.sum(), class_aware.epoch_size(c, K))
        self.assertEqual(copies.sum(), 9)
        self.assertAllEqual(copies, np.bincount(drawn[4].reshape(-1), minlength=18))

    def test_seeded(self):
        c, epochs = self.categories, tf.range(10, dtype=tf.int64)
        a = class_aware.draws(c, K, seed=1, epochs=epochs).numpy()
        self.assertAllEqual(a, class_aware.draws(c, K, seed=1, epochs=epochs).numpy())
        self.assertNotAllEqual(a, class_aware.draws(c, K, seed=2, epochs=epochs).numpy())
        # A seed beyond 32 bits still matters (the op keeps 32 bits of each seed word).
        self.assertNotAllEqual(a, class_aware.draws(c, K, seed=1 + 2**40, epochs=epochs).numpy())

    def test_describe(self):
        line = class_aware.describe(self.categories, K)
        self.assertIn("3 categories x 3 images = epoch of 9 records (of 18)", line)
        self.assertIn("1 category has fewer than 3 images", line)


class ClassAwareStreamTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.files = _write(tempfile.mkdtemp(), CLASSES)

    def _stream(self, **kwargs):
        args = dict(seed=3, shuffle_window=4, images_per_category=K) | kwargs
        return records.train_records(self.files, **args)

    def test_every_epoch_holds_k_images_per_category_and_new_ones(self):
        rows = _take(self._stream(), 9 * 6)
        self.assertEqual([p for p, _, _ in rows], list(range(54)))
        epochs = [rows[e * 9 : (e + 1) * 9] for e in range(6)]
        by_category = collections.defaultdict(list)  # category -> images, epoch after epoch
        for e, epoch in enumerate(epochs):
            names = [n for _, n, _ in epoch]
            categories = collections.Counter(c for n in names for c in _category(n, self.files))
            self.assertEqual(categories, {1: K, 2: K, 3: K}, f"epoch {e}")
            # The small category (2 images) gives both of its images to every epoch.
            self.assertLen({n for n in names if _category(n, self.files) == [3]}, 2)
            for n in names:
                by_category[_category(n, self.files)[0]].append(n)
            # The stream of the epoch is the function's draw (a shuffled multiset).
            expected = _expected(self.files, CLASSES, epoch=e, seed=3)
            self.assertEqual(collections.Counter(names), expected)
            for _, name, record in epoch:  # names and payloads agree
                path, index = name.rsplit(":", 1)
                self.assertEqual(record, f"{self.files.index(path)}:{index}")
        # Category 1 (9 images, k = 3): epochs 0-2 show all 9, in each third 3 new ones.
        walk = sorted(by_category[1][:9])
        self.assertLen(set(walk), 9)
        self.assertNotEqual(by_category[1][:9], by_category[1][9:18])

    def test_seeded_stream(self):
        a = _take(self._stream(), 18)
        self.assertEqual(a, _take(self._stream(), 18))
        b = _take(self._stream(seed=4), 18)
        # Other images, not only another order: the first epochs' draws differ.
        self.assertNotEqual(
            collections.Counter(n for _, n, _ in a), collections.Counter(n for _, n, _ in b)
        )

    @parameterized.parameters(1, 4, 64)
    def test_start_anywhere_equals_the_uninterrupted_stream(self, window):
        full = _take(self._stream(shuffle_window=window), 50)
        for start in (1, 8, 9, 10, 17, 27, 31, 44):
            resumed = _take(self._stream(shuffle_window=window, start=start), 50 - start)
            self.assertEqual(resumed, full[start:], f"start={start}")
        # A fixed epoch size: resuming deep into a run costs no more than at the start.
        deep = _take(self._stream(start=10**12 + 5), 2)
        self.assertEqual([p for p, _, _ in deep], [10**12 + 5, 10**12 + 6])

    @parameterized.parameters("files", "records")
    def test_two_pipelines_partition_each_epoch_and_resume_exactly(self, sharding):
        files = (
            self.files if sharding == "files" else _write(tempfile.mkdtemp(), [sum(CLASSES, [])])
        )
        classes = CLASSES if sharding == "files" else [sum(CLASSES, [])]
        per_pipeline = {}
        for pid in (0, 1):
            kwargs = dict(seed=5, shuffle_window=3, images_per_category=K)
            kwargs |= dict(num_pipelines=2, pipeline_id=pid)
            full = _take(records.train_records(files, **kwargs), 40)
            self.assertEqual([p for p, _, _ in full], list(range(40)))
            for start in (1, 4, 5, 11, 23):
                resumed = records.train_records(files, start=start, **kwargs)
                self.assertEqual(_take(resumed, 40 - start), full[start:], f"{pid} {start}")
            per_pipeline[pid] = [n for _, n, _ in full]
        # Epoch 0 of both pipelines together is the whole epoch's draw.
        expected = _expected(files, classes, epoch=0, seed=5)
        if sharding == "files":  # the files of pipeline p: files[p::2]
            pipeline = {n: files.index(n.rsplit(":", 1)[0]) % 2 for n in expected}
            sizes = [sum(c for n, c in expected.items() if pipeline[n] == p) for p in (0, 1)]
        else:  # every other copy of the one stream
            sizes = [5, 4]
        got = collections.Counter(per_pipeline[0][: sizes[0]] + per_pipeline[1][: sizes[1]])
        self.assertEqual(got, expected)

    def test_a_pipeline_may_get_empty_epochs_and_still_resume_exactly(self):
        # Pipeline 1 reads the second file: 1 of category 1's 8 images, k = 1, so most
        # epochs hold none of its records; the stream goes on with the next epoch.
        files = _write(tempfile.mkdtemp(), [[[1]] * 7 + [[2]], [[1], []]])
        kwargs = dict(seed=0, shuffle_window=2, images_per_category=1)
        kwargs |= dict(num_pipelines=2, pipeline_id=1)
        full = _take(records.train_records(files, **kwargs), 6)
        self.assertEqual({n for _, n, _ in full}, {f"{files[1]}:0"})
        for start in (1, 3, 5):
            resumed = records.train_records(files, start=start, **kwargs)
            self.assertEqual(_take(resumed, 6 - start), full[start:])

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "mutually exclusive"):
            self._stream(repeat_factors=[np.ones(len(c)) for c in CLASSES])
        with self.assertRaisesRegex(ValueError, "mutually exclusive"):
            records.open_records(
                self.files, is_training=True, repeat_factor_threshold=0.1, images_per_category=5
            )
        with self.assertRaisesRegex(ValueError, "positive integer"):
            self._stream(images_per_category=0)
        with self.assertRaisesRegex(ValueError, "part-00001.tfrecord has 3 records but 2 class"):
            self._stream(record_classes=[CLASSES[0], CLASSES[1][:2], *CLASSES[2:]])
        pipeline_1 = dict(seed=0, shuffle_window=2, num_pipelines=2, pipeline_id=1)
        # File sharding: pipeline 1's only file holds no object.
        files = _write(tempfile.mkdtemp(), [[[1], [2]], [[], []]])
        with self.assertRaisesRegex(ValueError, "hold no object.*part-00001"):
            records.train_records(files, images_per_category=2, **pipeline_1)
        # Record sharding: one category, k = 1: pipeline 1 of 2 never gets a copy.
        files = _write(tempfile.mkdtemp(), [[[1], [1]]])
        with self.assertRaisesRegex(ValueError, "input pipeline 1 of 2 gets no training record"):
            records.train_records(files, images_per_category=1, **pipeline_1)

    def test_open_records_keyword_logs_and_matches_the_reader(self):
        # absl INFO on for this test: a test that parsed flags earlier in the same process
        # (converters_test's `FLAGS(argv)`) leaves absl's verbosity at WARNING.
        before = absl_logging.get_verbosity()
        absl_logging.set_verbosity(absl_logging.INFO)
        try:
            with self.assertLogs(level="INFO") as logs:
                opened = records.open_records(
                    self.files, is_training=True, seed=3, shuffle_buffer=4, images_per_category=K
                )
        finally:
            absl_logging.set_verbosity(before)
        self.assertTrue(any("3 categories x 3 images = epoch of 9" in x for x in logs.output))
        self.assertEqual(_take(opened.dataset, 20), _take(self._stream(), 20))
        evaluation = records.open_records(self.files, is_training=False, images_per_category=K)
        self.assertLen(list(evaluation.dataset.as_numpy_iterator()), 18)  # one plain pass


if __name__ == "__main__":
    tf.test.main()

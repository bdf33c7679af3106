"""Tests of tfcp.data.epochs: pipeline epoch sizes and the start-epoch search (host side).

The epoch reader (`epoch_stream`) is tested through `records.train_records` in
records_test.py (exact resume, sharding, windows, sampled copies).
"""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfcp.data import epochs


def _brute_start(start, sizes):
    """(epoch, first position of that epoch) by walking epochs one at a time."""
    first = 0
    for epoch, size in enumerate(sizes):
        if start < first + size:
            return epoch, first
        first += size
    raise AssertionError("start beyond the listed epochs")


def _varying(totals):
    totals = np.asarray(totals, np.int64)
    return epochs.EpochCopies(
        counts=None,
        totals=lambda first, num: totals[first : first + num],
        constant=None,
        least=int(totals.min()),
    )


class PipelineEpochSizeTest(tf.test.TestCase):
    def test_every_stride_th_copy_from_offset(self):
        # 10 copies, stride 3: offset 0 keeps 0,3,6,9; offset 1 keeps 1,4,7; offset 2: 2,5,8.
        self.assertAllEqual(epochs.pipeline_epoch_size([10, 10, 10], 3, 0), [4, 4, 4])
        self.assertEqual(int(epochs.pipeline_epoch_size(10, 3, 1)), 3)
        self.assertEqual(int(epochs.pipeline_epoch_size(10, 3, 2)), 3)

    def test_never_negative(self):
        self.assertAllEqual(epochs.pipeline_epoch_size([0, 1, 2], 4, 3), [0, 0, 0])


class StartEpochTest(parameterized.TestCase):
    def test_constant_epochs(self):
        copies = epochs.EpochCopies(None, None, constant=7, least=7)
        for start in (0, 6, 7, 20, 10**12):
            self.assertEqual(
                epochs.start_epoch(start, copies, 1, 0), (start // 7, start - start % 7)
            )
        # Stride 2, offset 1: 3 of the 7 copies per epoch.
        self.assertEqual(epochs.start_epoch(10, copies, 2, 1), (3, 9))

    @parameterized.parameters((1, 0), (2, 0), (2, 1), (3, 2))
    def test_varying_epochs_match_walking(self, stride, offset):
        rng = np.random.default_rng(stride * 10 + offset)
        totals = rng.integers(0, 9, 2000)  # includes empty epochs
        copies = _varying(totals)
        sizes = epochs.pipeline_epoch_size(totals, stride, offset)
        ends = np.cumsum(sizes)
        # Epoch boundaries, positions inside epochs, and far positions (blocks of 256).
        starts = [0, 1, int(ends[0]), int(ends[0]) - 1, int(ends[300]), int(ends[1500]) + 1]
        starts += [int(s) for s in rng.integers(0, int(ends[1900]), 20)]
        for start in starts:
            self.assertEqual(
                epochs.start_epoch(start, copies, stride, offset), _brute_start(start, sizes)
            )


if __name__ == "__main__":
    tf.test.main()

"""Tests of tfcp.ops.packed_masks against NumPy, on packed and plain shapes."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfcp.ops import packed_masks as pm


class PackedMasksTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters((3, 16, 16), (2, 5, 7), (4, 9, 24), (0, 8, 8))
    def test_row_counts_union_and_columns_match_numpy(self, n, h, w):
        masks = (np.random.default_rng(n + h + w).random([n, h, w]) < 0.3).astype(np.uint8)
        np.testing.assert_array_equal(pm.row_counts(tf.constant(masks)), masks.sum(2))
        np.testing.assert_array_equal(pm.column_any(tf.constant(masks)), masks.any(1))
        np.testing.assert_array_equal(pm.mask_union(tf.constant(masks)), masks.max(0, initial=0))

    def test_union_of_more_than_255_masks(self):
        masks = np.zeros([300, 8, 8], np.uint8)
        masks[:, 0, 0] = 1  # a byte counter would overflow at 256
        masks[5, 3, 3] = 1
        union = pm.mask_union(tf.constant(masks)).numpy()
        np.testing.assert_array_equal(union, masks.max(0))

    def test_row_counts_of_wide_masks(self):
        masks = np.ones([1, 2, 2048], np.uint8)  # wider than the packed counters allow
        np.testing.assert_array_equal(pm.row_counts(tf.constant(masks)), [[2048, 2048]])

    def test_column_any_of_tall_masks(self):
        masks = np.ones([2, 300, 8], np.uint8)  # more rows than one 128-row chunk
        masks[1, :, 3] = 0
        np.testing.assert_array_equal(pm.column_any(tf.constant(masks)), masks.any(1))

    def test_tight_boxes_and_bounds(self):
        rows = tf.constant([[False, True, True, False]])
        cols = tf.constant([[True, False, False, False, False, False, True, False]])
        np.testing.assert_array_equal(pm.tight_bounds(rows, cols), [[1, 0, 3, 7]])
        np.testing.assert_allclose(pm.tight_boxes(rows, cols), [[0.25, 0.0, 0.75, 7 / 8]])

    @parameterized.parameters(
        (np.uint8, 255),
        (np.uint8, 1),
        (np.uint8, 7),
        (bool, True),
        (np.float32, 1.0),
        (np.int32, -3),
    )
    def test_binarize_masks_gives_uint8_zero_one(self, dtype, on):
        # A 40x40 block of 255 used to count 2036 per row in the packed counters.
        masks = np.zeros([2, 40, 40], dtype)
        masks[0, 2:30, 5:35] = on
        binary = pm.binarize_masks(tf.constant(masks))
        self.assertEqual(binary.dtype, tf.uint8)
        expected = (masks != 0).astype(np.uint8)
        np.testing.assert_array_equal(binary, expected)
        np.testing.assert_array_equal(pm.row_counts(binary), expected.sum(2))

    @parameterized.parameters(16, 255, 256, 300, 510, 512, 257, 9)
    def test_column_any_sums_rows_in_chunks_that_cannot_wrap(self, h):
        # Full columns are the worst case for the byte counters: a chunk of 256 rows would
        # wrap a full column's count to 0 (512 rows), a static H picks its largest divisor
        # <= 255 (510 -> 255), and heights without one (257, 9) take the segment-sum path.
        masks = np.zeros([2, h, 16], np.uint8)
        masks[0, :, 3] = 1
        masks[1, :, 0] = 1
        masks[1, h - 1, 15] = 1
        np.testing.assert_array_equal(pm.column_any(tf.constant(masks)), masks.any(1))
        fn = tf.function(
            pm.column_any, input_signature=[tf.TensorSpec([None, None, None], tf.uint8)]
        )
        np.testing.assert_array_equal(fn(tf.constant(masks)), masks.any(1))

    @parameterized.parameters((3, 16, 16), (2, 5, 7), (0, 8, 8))
    def test_mask_difference_matches_numpy(self, n, h, w):
        rng = np.random.default_rng(n + h + w)
        masks = (rng.random([n, h, w]) < 0.5).astype(np.uint8)
        removed = (rng.random([h, w]) < 0.5).astype(np.uint8)
        expected = masks & (1 - removed)[None]
        np.testing.assert_array_equal(pm.mask_difference(tf.constant(masks), removed), expected)
        spec = tf.TensorSpec([None, None, None], tf.uint8)
        fn = tf.function(
            pm.mask_difference, input_signature=[spec, tf.TensorSpec([None, None], tf.uint8)]
        )
        np.testing.assert_array_equal(fn(tf.constant(masks), tf.constant(removed)), expected)

    @parameterized.parameters(
        (np.uint8, 255), (np.uint8, 1), (bool, True), (np.float32, 1.0), (np.int32, -3)
    )
    def test_binarize_and_nonempty(self, dtype, on):
        masks = np.zeros([3, 8, 8], dtype)
        masks[0, 2, 5] = on
        masks[2, 7, 7] = on
        if dtype == np.float32:
            masks[1, 0, 0] = 0.4  # below 0.5: not set
        binary, nonempty = pm.binarize_and_nonempty(tf.constant(masks))
        expected = (masks >= 0.5) if dtype == np.float32 else (masks != 0)
        np.testing.assert_array_equal(binary, expected.astype(np.uint8))
        np.testing.assert_array_equal(nonempty, [True, False, True])
        _, none = pm.binarize_and_nonempty(tf.zeros([0, 8, 8], dtype))
        self.assertEqual(none.shape, [0])


if __name__ == "__main__":
    tf.test.main()

"""Reductions of binary instance masks that read 8 mask bytes as one uint64 word.

The Copy-Paste op (`tfcp.ops.copy_paste`) runs on the host CPU inside `tf.data` at full
resolution (1024x1024, tens of objects), so its per-pixel work stays in uint8 (no int32 or
float32 copy of an [N, H, W] tensor) and its reductions view 8 mask bytes as one uint64 word:

* the union of masks is a bitwise-OR loop over uint64 words, and the difference of masks and
  a union one broadcast AND of uint64 words;
* per-object pixel counts per row sum uint64 words along the row, each byte acting as an
  independent 8-bit counter (exact while W <= 2040; other widths use an int32 reduction);
* column projections sum words over chunks of rows (at most 255, so that no byte counter
  wraps): with a static H one reshape and reduction, otherwise a segment sum of 128-row chunks;
* tight boxes come from the row/column projections ([N, H] and [N, W]).

Every function here assumes uint8 masks holding 0/1 (a byte of 255 would overflow the
counters); `binarize_masks` produces them from any mask dtype and convention.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Widest row for which 8-bit lane counters cannot overflow: W / 8 <= 255.
_MAX_PACKED_WIDTH = 8 * 255


def binarize_masks(masks: tf.Tensor) -> tf.Tensor:
    """Masks of any dtype and convention -> uint8 0/1 [N, H, W].

    Integer masks (uint8 0/1 as `tfcp.data.decoder` emits, uint8 0/255 as many PNG masks
    hold, or any other integers) become `!= 0`; float masks `>= 0.5`; bool masks a cast.
    uint8 masks that already hold 0/1 are returned as they are (one uint8 max reduction, no
    copy); others cost one uint8 `minimum` pass (no wider copy).
    """
    return binarize_and_nonempty(masks)[0]


def binarize_and_nonempty(masks: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`binarize_masks`, and which masks have a set pixel, from one reduction of uint8 masks.

    Args:
      masks: [N, H, W] masks of any dtype and convention (see `binarize_masks`).

    Returns:
      (uint8 [N, H, W] 0/1 masks, bool [N] whether each mask has a set pixel).
    """
    masks = tf.convert_to_tensor(masks)
    if masks.dtype == tf.uint8:
        one = tf.constant(1, tf.uint8)
        peaks = tf.reduce_max(masks, axis=[1, 2])  # [N]: any nonzero byte is a set pixel
        binary = tf.cond(
            tf.reduce_max(peaks) <= one,
            lambda: masks,
            lambda: tf.minimum(masks, one),
        )
        return binary, peaks > 0
    if masks.dtype.is_floating:
        binary = tf.cast(masks >= 0.5, tf.uint8)
    elif masks.dtype == tf.bool:
        binary = tf.cast(masks, tf.uint8)
    else:
        binary = tf.cast(tf.not_equal(masks, 0), tf.uint8)
    return binary, tf.reduce_max(binary, axis=[1, 2]) > 0


def _divisible_by_8(*dims) -> tf.Tensor | bool:
    """Whether the product of `dims` (ints or scalar tensors) is a multiple of 8.

    A Python bool when all dims are static, so that reshapes to [..., 8] are only traced when
    they are valid.
    """
    if all(isinstance(d, int) for d in dims):
        return int(np.prod(dims)) % 8 == 0
    product = tf.constant(1, tf.int32)
    for d in dims:
        product *= tf.cast(d, tf.int32)
    return tf.equal(product % 8, 0)


def _dims(x: tf.Tensor) -> list:
    """Each dimension of x as a Python int when static, else as a scalar tensor."""
    dynamic = tf.shape(x)
    return [d if d is not None else dynamic[i] for i, d in enumerate(x.shape.as_list())]


def _branch(pred, true_fn, false_fn):
    """`tf.cond` that resolves at trace time when `pred` is a Python bool."""
    if isinstance(pred, bool):
        return true_fn() if pred else false_fn()
    return tf.cond(pred, true_fn, false_fn)


def row_counts(masks: tf.Tensor) -> tf.Tensor:
    """Number of set pixels per object and row.

    Args:
      masks: uint8 [N, H, W] with values 0/1.

    Returns:
      int32 [N, H].
    """
    shape = tf.shape(masks)
    n, h, w = shape[0], shape[1], shape[2]

    def packed():
        words = tf.bitcast(tf.reshape(masks, [n, h, w // 8, 8]), tf.uint64)
        lanes = tf.reduce_sum(words, axis=2)  # [N, H]: 8 byte counters, each <= W / 8
        return tf.reduce_sum(tf.cast(tf.bitcast(lanes, tf.uint8), tf.int32), axis=2)

    def plain():
        return tf.reduce_sum(tf.cast(masks, tf.int32), axis=2)

    static_w = masks.shape[2]
    if static_w is not None:
        ok = static_w % 8 == 0 and static_w <= _MAX_PACKED_WIDTH
    else:
        ok = tf.equal(w % 8, 0) & (w <= _MAX_PACKED_WIDTH)
    return _branch(ok, packed, plain)


def mask_union(masks: tf.Tensor) -> tf.Tensor:
    """Union of masks.

    Args:
      masks: uint8 [M, H, W] with values 0/1.

    Returns:
      uint8 [H, W] with values 0/1 (all zeros when M == 0).
    """
    shape = tf.shape(masks)
    m, h, w = shape[0], shape[1], shape[2]

    def packed():
        # Bitwise OR of the masks viewed as uint64 words: exact for any M, 8 pixels per op.
        words = tf.bitcast(tf.reshape(masks, [m, h * w // 8, 8]), tf.uint64)
        union = tf.while_loop(
            lambda i, acc: i < m,
            lambda i, acc: (i + 1, tf.bitwise.bitwise_or(acc, words[i])),
            (tf.constant(0), tf.zeros([h * w // 8], tf.uint64)),
        )[1]
        return tf.reshape(tf.bitcast(union, tf.uint8), [h, w])

    def plain():
        return tf.reduce_max(masks, axis=0)

    return _branch(_divisible_by_8(*_dims(masks)[1:]), packed, plain)


def mask_difference(masks: tf.Tensor, removed: tf.Tensor) -> tf.Tensor:
    """Masks with the pixels of `removed` cleared: `masks & ~removed`.

    Args:
      masks: uint8 [N, H, W] with values 0/1.
      removed: uint8 [H, W] with values 0/1.

    Returns:
      uint8 [N, H, W] with values 0/1.
    """
    dims = _dims(masks)

    def packed():
        # One uint64 XOR makes the complement of 8 pixels; the AND then reads 8 pixels per op.
        n, h, w = dims
        words = tf.bitcast(tf.reshape(masks, [n, h * w // 8, 8]), tf.uint64)
        keep = tf.bitwise.bitwise_xor(
            tf.bitcast(tf.reshape(removed, [h * w // 8, 8]), tf.uint64),
            tf.constant(0x0101010101010101, tf.uint64),
        )
        visible = tf.bitwise.bitwise_and(words, keep[None])
        return tf.reshape(tf.bitcast(visible, tf.uint8), [n, h, w])

    def plain():
        return tf.bitwise.bitwise_and(masks, (1 - removed)[None])

    return _branch(_divisible_by_8(*dims[1:]), packed, plain)


def _row_chunk(height: int | None) -> int | None:
    """Rows per chunk of `column_any`'s packed sums for a static `height`, or None.

    The largest divisor of `height` that is <= 255 (a byte counter's capacity), if it is at
    least 16; None for an unknown height or one with only smaller divisors.
    """
    if height is None:
        return None
    for chunk in range(min(height, 255), 15, -1):
        if height % chunk == 0:
            return chunk
    return None


def column_any(masks: tf.Tensor) -> tf.Tensor:
    """Whether each column of each mask has a set pixel.

    Args:
      masks: uint8 [N, H, W] with values 0/1.

    Returns:
      bool [N, W].
    """
    shape = tf.shape(masks)
    n, h, w = shape[0], shape[1], shape[2]
    chunk = _row_chunk(masks.shape[1])

    def packed():
        # Rows are summed in chunks of at most 255 so that each byte counter cannot wrap.
        if chunk is not None:  # static H: a reshape and one reduction over each chunk
            words = tf.bitcast(tf.reshape(masks, [n, h // chunk, chunk, w // 8, 8]), tf.uint64)
            sums = tf.reduce_sum(words, axis=2)  # [N, H / chunk, W / 8]
            counts = tf.reshape(tf.bitcast(sums, tf.uint8), [n, h // chunk, w])
            return tf.reduce_max(counts, axis=1) > 0
        chunks = (h + 127) // 128
        row = tf.range(n * h)
        ids = (row // h) * chunks + (row % h) // 128
        words = tf.bitcast(tf.reshape(masks, [n * h, w // 8, 8]), tf.uint64)
        sums = tf.math.unsorted_segment_sum(words, ids, n * chunks)  # [N * C, W / 8]
        counts = tf.reshape(tf.bitcast(sums, tf.uint8), [n, chunks, w])
        return tf.reduce_max(counts, axis=1) > 0

    def plain():
        return tf.reduce_max(masks, axis=1) > 0

    return _branch(_divisible_by_8(_dims(masks)[2]), packed, plain)


def tight_bounds(rows_any: tf.Tensor, cols_any: tf.Tensor) -> tf.Tensor:
    """Tight pixel bounds of masks from their projections.

    Args:
      rows_any: bool [N, H], whether each row of each mask has a set pixel.
      cols_any: bool [N, W], whether each column of each mask has a set pixel.

    Returns:
      int32 [N, 4] [row_min, col_min, row_max + 1, col_max + 1] (MMDetection's
      `BitmapMasks.get_bboxes` convention, in [y, x] order). Rows of empty masks are
      meaningless.
    """

    def bounds(any_):
        length = tf.shape(any_)[1]
        idx = tf.range(length, dtype=tf.int32)[None, :]
        lo = tf.reduce_min(tf.where(any_, idx, length), axis=1)
        hi = tf.reduce_max(tf.where(any_, idx, -1), axis=1) + 1
        return lo, hi

    ymin, ymax = bounds(rows_any)
    xmin, xmax = bounds(cols_any)
    return tf.stack([ymin, xmin, ymax, xmax], axis=1)


def tight_boxes(rows_any: tf.Tensor, cols_any: tf.Tensor) -> tf.Tensor:
    """Tight normalized boxes from mask projections.

    Args:
      rows_any: bool [N, H], whether each row of each mask has a set pixel.
      cols_any: bool [N, W], whether each column of each mask has a set pixel.

    Returns:
      float32 [N, 4] [row_min / H, col_min / W, (row_max + 1) / H, (col_max + 1) / W].
      Rows of empty masks are meaningless.
    """
    return normalize_bounds(
        tight_bounds(rows_any, cols_any), tf.shape(rows_any)[1], tf.shape(cols_any)[1]
    )


def normalize_bounds(bounds: tf.Tensor, height, width) -> tf.Tensor:
    """int32 [N, 4] pixel bounds [y0, x0, y1, x1] -> float32 [N, 4] divided by [H, W, H, W]."""
    hf = tf.cast(height, tf.float32)
    wf = tf.cast(width, tf.float32)
    return tf.cast(bounds, tf.float32) / tf.stack([hf, wf, hf, wf])

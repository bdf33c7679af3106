"""Class-aware sampling (LVIS 2020 challenge report, Sec. 3): k images per category per epoch.

An epoch holds, for every category c of the training records, k = `images_per_category`
draws among the n_c images that contain c (the report: 5), so every category is seen
equally often however rare it is. The epoch thus holds k x (number of categories) record
copies (`epoch_size`); a record drawn for several categories appears that many times, and
a record drawn for none has 0 copies (most records: LVIS's 100k images give epochs of ~6k).

Draws walk, per category, an endless chain of seeded permutations of its images k at a
time: epoch e takes the positions e*k ... e*k + k - 1 of the chain; position p is image
`perm[c, p // n_c][p % n_c]`, each permutation drawn from (seed, category id, p // n_c).
Hence different images every epoch: no image comes back for c before all n_c were drawn.
A category with fewer than k images (or an epoch straddling two permutations) takes images
twice in one epoch: the chain just goes on, so every category gets exactly k draws (the
report's intent is balance; the usual class-aware samplers, classifier-balancing's and
mmdetection's `ClassAwareSampler`, cycle the same way: a reshuffled cycle per category).
Images without any object are never drawn.

Everything is a pure, stateless function of (seed, epoch), in core TF ops usable inside
tf.data (hence with the tf.data service; no py_function) and eagerly on the host (epoch
sizes for a resume): `permute`, a keyed Feistel permutation, gives the image at one
position of a permutation without building it, so an epoch costs O(k x categories)
whatever n_c (TF's `index_shuffle` would do, but costs ~50 us per element on the small
domains of rare categories). `tfcp.data.records.train_records(images_per_category=...)`
reads the copies; `pipeline_copies` is its adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tfcp.data import records

_SEED_TAG = 0xC1A55
_ROUNDS = 6
_DRAWS_PER_CALL = 2**20  # host-side epoch sizes: draws per vectorized call


class Categories(NamedTuple):
    """Training records grouped by category (all files, records numbered in file order).

    Attributes:
      ids: int64 [C], the sorted category ids present in the records.
      sizes: int64 [C], n_c: images (records) that contain category c.
      starts: int64 [C], where category c's images begin in `records`.
      records: int64 [sum n_c], record numbers, ascending within each category.
      num_records: N, all records.
    """

    ids: np.ndarray
    sizes: np.ndarray
    starts: np.ndarray
    records: np.ndarray
    num_records: int


def group_by_category(per_record: Sequence[np.ndarray]) -> Categories:
    """Groups records by the categories they contain.

    Args:
      per_record: each record's unique category ids (`sampling.record_classes`, flattened
        over files in order).

    Raises:
      ValueError: no record contains any object.
    """
    lengths = np.array([len(np.unique(x)) for x in per_record], np.int64)
    categories = np.concatenate(
        [np.unique(np.asarray(x, np.int64)) for x in per_record] + [np.zeros([0], np.int64)]
    )
    if len(categories) == 0:
        raise ValueError(
            f"class-aware sampling: none of the {len(per_record)} training records has an object"
        )
    record_ids = np.repeat(np.arange(len(per_record), dtype=np.int64), lengths)
    order = np.lexsort((record_ids, categories))
    ids, sizes = np.unique(categories[order], return_counts=True)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return Categories(ids, sizes.astype(np.int64), starts, record_ids[order], len(per_record))


def epoch_size(categories: Categories, images_per_category: int) -> int:
    """Record copies in every epoch: k x number of categories."""
    return int(images_per_category) * len(categories.ids)


def _u64(x):
    return tf.constant(np.uint64(x), tf.uint64)


def _mix(x):
    """splitmix64's finalizer: a bijection of uint64 that scrambles every bit."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _u64(30))) * _u64(0xBF58476D1CE4E5B9)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _u64(27))) * _u64(0x94D049BB133111EB)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _u64(31)))


def permute(index: tf.Tensor, size: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
    """`index`'s image under a keyed pseudo-random permutation of [0, size), elementwise.

    A balanced Feistel network of `_ROUNDS` rounds (splitmix64 round function) over the
    smallest 2h-bit domain holding `size` (< 4 x size), cycle-walked back into [0, size):
    O(1) expected work per element whatever the size, so no permutation is materialized.

    Args:
      index: int64 [m], in [0, size).
      size: int64 [m], >= 1.
      key: uint64 [m], one permutation per (key, size).

    Returns:
      int64 [m], a bijection of [0, size) for each (key, size).
    """
    size = tf.cast(size, tf.uint64)
    # bits = ceil(log2(size)), exact: the float estimate is off by at most one.
    bits = tf.cast(tf.math.ceil(tf.math.log(tf.cast(size, tf.float64)) / np.log(2.0)), tf.uint64)
    bits = tf.where(tf.bitwise.left_shift(_u64(1), bits) < size, bits + _u64(1), bits)
    smaller = tf.maximum(bits, _u64(1)) - _u64(1)
    bits = tf.where(
        (bits > _u64(0)) & (tf.bitwise.left_shift(_u64(1), smaller) >= size), smaller, bits
    )
    half = tf.maximum((bits + _u64(1)) // _u64(2), _u64(1))
    mask = tf.bitwise.left_shift(_u64(1), half) - _u64(1)

    def encrypt(x, key, half, mask):
        left, right = tf.bitwise.right_shift(x, half), tf.bitwise.bitwise_and(x, mask)
        for r in range(_ROUNDS):
            salted = tf.bitwise.bitwise_xor(key, tf.bitwise.left_shift(right, _u64(8)) + _u64(r))
            mixed = tf.bitwise.bitwise_and(_mix(salted), mask)
            left, right = right, tf.bitwise.bitwise_xor(left, mixed)
        return tf.bitwise.bitwise_or(tf.bitwise.left_shift(left, half), right)

    def walk(x):  # re-encrypts only the elements still outside [0, size)
        out = tf.where(x >= size)
        again = encrypt(*(tf.gather_nd(t, out) for t in (x, key, half, mask)))
        return (tf.tensor_scatter_nd_update(x, out, again),)

    first = encrypt(tf.cast(index, tf.uint64), key, half, mask)
    (out,) = tf.while_loop(lambda x: tf.reduce_any(x >= size), walk, [first])
    return tf.cast(out, tf.int64)


def draws(
    categories: Categories, images_per_category: int, seed: int, epochs: tf.Tensor
) -> tf.Tensor:
    """The record drawn for each category and slot of each epoch.

    Args:
      categories: from `group_by_category`.
      images_per_category: k >= 1.
      seed: the run's seed.
      epochs: int64 [E] epoch numbers (a tensor, eager or in a graph).

    Returns:
      int64 [E, C, k] record numbers; [e, c] are the k images epoch e takes for category
      `categories.ids[c]`.
    """
    k = int(images_per_category)
    n = tf.constant(categories.sizes)[None, :, None]
    positions = tf.reshape(tf.cast(epochs, tf.int64), [-1, 1, 1]) * k + tf.range(k, dtype=tf.int64)
    shape = tf.broadcast_dynamic_shape(tf.shape(positions), tf.shape(n))

    def flat(x):
        return tf.reshape(tf.broadcast_to(x, shape), [-1])

    ids = tf.cast(flat(tf.constant(categories.ids)[None, :, None]), tf.uint64)
    cycles = tf.cast(flat(positions // n), tf.uint64)
    run = _mix(_u64((int(seed) ^ _SEED_TAG) % 2**64))
    key = _mix(tf.bitwise.bitwise_xor(_mix(tf.bitwise.bitwise_xor(run, ids)), cycles))
    index = permute(flat(positions % n), flat(n), key)
    starts = flat(tf.constant(categories.starts)[None, :, None])
    return tf.reshape(tf.gather(tf.constant(categories.records), starts + index), shape)


def epoch_copies(
    categories: Categories, images_per_category: int, seed: int, epoch: tf.Tensor | int
) -> tf.Tensor:
    """Copies of every record in `epoch`: int64 [N], summing to `epoch_size`."""
    drawn = tf.reshape(draws(categories, images_per_category, seed, tf.reshape(epoch, [1])), [-1])
    return tf.math.unsorted_segment_sum(
        tf.ones_like(drawn), drawn, tf.constant(categories.num_records, tf.int64)
    )


def describe(categories: Categories, images_per_category: int) -> str:
    """One log line: categories, k, epoch size, categories drawn with repeats."""
    k = int(images_per_category)
    few = int(np.sum(categories.sizes < k))
    return (
        f"Class-aware sampling: {len(categories.ids)} categories x {k} images = epoch of "
        f"{epoch_size(categories, k)} records (of {categories.num_records}); {few} "
        f"categor{'y has' if few == 1 else 'ies have'} fewer than {k} images (drawn repeatedly)"
    )


def pipeline_copies(
    files: Sequence[str],
    record_classes: Sequence[Sequence[np.ndarray]],
    my_files: Sequence[str],
    counts: np.ndarray,
    images_per_category: int,
    seed: int,
) -> records.EpochCopies:
    """The class-aware copies of the records of `my_files` (an input pipeline's share).

    Args:
      files: all training files, in order.
      record_classes: per file of `files`, per record, the unique category ids.
      my_files, counts: the files this input pipeline reads (all of `files`, or its
        shard) and their record counts.
      images_per_category: k >= 1.
      seed: the run's seed.

    Returns:
      `EpochCopies`: a fixed epoch size when the pipeline reads every file, else sizes
      summed from vectorized draws (~2**20 draws per call) and `least` None (an epoch may
      draw none of the pipeline's records).

    Raises:
      ValueError: bad k, class lists that do not match the files, or files of this
        pipeline that hold no object (it would never get a record; names the files).
    """
    if not float(images_per_category).is_integer() or images_per_category < 1:
        raise ValueError(
            f"images_per_category must be a positive integer, got {images_per_category!r}"
        )
    k = int(images_per_category)
    if len(record_classes) != len(files):
        raise ValueError(
            f"class-aware sampling: {len(record_classes)} record class lists for "
            f"{len(files)} files ({list(files)[:4]}...)"
        )
    lengths = [len(x) for x in record_classes]
    first = dict(zip(files, np.cumsum([0, *lengths[:-1]]), strict=True))
    size = dict(zip(files, lengths, strict=True))
    for path, count in zip(my_files, counts, strict=True):
        if size[path] != count:
            raise ValueError(f"{path} has {count} records but {size[path]} class lists")
    categories = group_by_category([x for per_file in record_classes for x in per_file])
    mine = np.concatenate(
        [np.arange(first[f], first[f] + size[f], dtype=np.int64) for f in my_files]
        + [np.zeros([0], np.int64)]
    )

    def epoch_counts(epoch):
        return tf.gather(epoch_copies(categories, k, seed, epoch), mine)

    total = epoch_size(categories, k)
    if len(mine) == categories.num_records:  # every file: the epoch size is fixed
        return records.EpochCopies(epoch_counts, None, total, total)
    is_mine = np.zeros([categories.num_records], bool)
    is_mine[mine] = True
    if not is_mine[categories.records].any():
        raise ValueError(
            f"class-aware sampling: the files of this input pipeline hold no object, so it "
            f"would never get a record: {list(my_files)[:4]}"
        )

    chunk = max(_DRAWS_PER_CALL // total, 1)  # epochs per vectorized draw

    def totals(first_epoch, num):
        out = []
        for begin in range(first_epoch, first_epoch + num, chunk):
            epochs = tf.range(begin, min(begin + chunk, first_epoch + num), dtype=tf.int64)
            drawn = draws(categories, k, seed, epochs).numpy()
            out.append(is_mine[drawn].sum(axis=(1, 2)))
        return np.concatenate(out).astype(np.int64)

    return records.EpochCopies(epoch_counts, totals, None, None)

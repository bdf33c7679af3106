"""The per-epoch copy model of `tfcp.data.records.train_records` and its epoch reader.

An input pipeline's training stream is a sequence of epochs. Epoch `e` holds 0 or more
copies of each of the pipeline's records (`EpochCopies`: one copy each, repeat factor
sampling `tfcp.data.sampling.repeat_copies`, class-aware sampling
`tfcp.data.class_aware.pipeline_copies`), a pure function of (seed, `e`). `start_epoch`
finds the epoch holding a stream position from the epoch sizes alone (no I/O);
`epoch_stream` reads the epochs from there: files in a random order per epoch, copies
repeated in place, the stream cut into windows of W records that are each permuted by a
stateless permutation (see the `records` module doc).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf

_MAX_EPOCHS = 2**62


class EpochCopies(NamedTuple):
    """How many copies of each of an input pipeline's records an epoch holds.

    Attributes:
      counts: epoch (int64 [] tensor) -> int64 [n] copies of each of the pipeline's n
        records (its files in order); core TF ops, run inside the tf.data graph.
      totals: (first epoch, number of epochs) -> int64 [number], copies per epoch,
        computed on the host without I/O (None when `constant` is set).
      constant: the copies of every epoch when they do not depend on the epoch, else None.
      least: the fewest copies an epoch can hold (None: unknown, possibly 0).
    """

    counts: Callable[[tf.Tensor], tf.Tensor]
    totals: Callable[[int, int], np.ndarray] | None
    constant: int | None
    least: int | None


def pipeline_epoch_size(copies: int | np.ndarray, stride: int, offset: int) -> np.ndarray:
    """Elements a pipeline keeps of epochs of `copies` copies (every `stride`-th from `offset`).

    Returns:
      int64 array of `copies`' shape, >= 0.
    """
    return np.maximum((np.asarray(copies, np.int64) - offset + stride - 1) // stride, 0)


def start_epoch(start: int, copies: EpochCopies, stride: int, offset: int) -> tuple[int, int]:
    """(epoch, position of its first element) holding pipeline position `start`.

    Epoch sizes come from `copies` (no I/O): O(1) when they are fixed, else epochs are
    summed in blocks of up to 256.
    """
    if copies.constant is not None:  # every epoch has the same size
        epoch_size = int(pipeline_epoch_size(copies.constant, stride, offset))
        return start // epoch_size, start - start % epoch_size
    epoch, first, block = 0, 0, 1
    while True:
        sizes = pipeline_epoch_size(copies.totals(epoch, block), stride, offset)
        ends = first + np.cumsum(sizes)
        i = int(np.searchsorted(ends, start, side="right"))  # the first epoch ending after
        if i < block:
            return epoch + i, int(ends[i - 1]) if i else first
        epoch, first, block = epoch + block, int(ends[-1]), min(2 * block, 256)


def epoch_stream(
    files: Sequence[str],
    counts: np.ndarray,
    copies: EpochCopies,
    *,
    seed: tf.Tensor,
    window: int,
    stride: int,
    offset: int,
    start: int,
) -> tf.data.Dataset:
    """The epochs of one input pipeline's training stream, from position `start` on.

    Args:
      files: the pipeline's TFRecord paths, in the order `copies` counts their records.
      counts: int64 [len(files)], records per file.
      copies: the copies each epoch holds.
      seed: int64 [2], the stream seed (folded with the epoch, then the window index).
      window: W >= 1, records per permuted window.
      stride, offset: the pipeline keeps every `stride`-th copy from `offset`.
      start: the first position to produce.

    Returns:
      An endless dataset of `(record_name string [], serialized string [])`, where
      `record_name` is `'path:index'`.
    """
    first_epoch, epoch_first = start_epoch(int(start), copies, stride, offset)
    first_window, skip_in_window = divmod(int(start) - epoch_first, window)
    num_files = len(files)
    file_names = tf.constant(list(files))
    file_sizes = tf.constant(counts)
    file_starts = tf.constant(np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64))

    def epoch_records(epoch):
        first = epoch == first_epoch
        window0 = tf.where(first, tf.constant(first_window, tf.int64), 0)
        skip0 = tf.where(first, tf.constant(skip_in_window, tf.int64), 0)
        epoch_seed = tf.random.experimental.stateless_fold_in(seed, epoch)
        copies_e = copies.counts(epoch)
        order = tf.argsort(tf.random.stateless_uniform([num_files], epoch_seed))
        names, sizes, starts = (tf.gather(x, order) for x in (file_names, file_sizes, file_starts))
        # Copies before the first window of this epoch (a multiple of `stride`): find the
        # record they end in and how many of its copies were already produced.
        copy_skip = window0 * window * stride
        ids = tf.ragged.range(starts, starts + sizes).flat_values  # records in epoch order
        ends = tf.cumsum(tf.gather(copies_e, ids))
        record = tf.reduce_sum(tf.cast(ends <= copy_skip, tf.int64))
        done = copy_skip - tf.concat([[0], ends], 0)[record]
        file_ends = tf.cumsum(sizes)
        # (An epoch without copies for this pipeline skips all of its last file.)
        first_file = tf.minimum(
            tf.reduce_sum(tf.cast(file_ends <= record, tf.int32)), num_files - 1
        )
        skip_in_file = record - (file_ends[first_file] - sizes[first_file])
        skips = tf.concat([[skip_in_file], tf.zeros([num_files - first_file - 1], tf.int64)], 0)

        def read_file(name, skip, file_start):
            indices = tf.data.Dataset.range(skip, tf.int64.max)
            rows = tf.data.Dataset.zip(indices, tf.data.TFRecordDataset(name).skip(skip))
            sep = tf.constant(":")
            return rows.map(
                lambda i, r: (
                    file_start + i,
                    tf.strings.join([name, sep, tf.strings.as_string(i)]),
                    r,
                )
            )

        raw = tf.data.Dataset.from_tensor_slices(
            (names[first_file:], skips, starts[first_file:])
        ).flat_map(read_file)

        def repeat(index, row):
            record_id, name, serialized = row
            n = copies_e[record_id] - tf.where(index == 0, done, 0)
            return tf.data.Dataset.from_tensors((name, serialized)).repeat(n)

        stream = raw.enumerate().flat_map(repeat)
        if stride > 1:
            stream = stream.shard(stride, offset)
        windows = tf.data.Dataset.zip(
            tf.data.Dataset.range(window0, tf.int64.max), stream.batch(window)
        )

        def permute(index, batch):
            names_w, records_w = batch
            window_seed = tf.random.experimental.stateless_fold_in(epoch_seed, index)
            perm = tf.argsort(tf.random.stateless_uniform(tf.shape(records_w), window_seed))
            return tf.gather(names_w, perm), tf.gather(records_w, perm)

        return windows.map(permute).unbatch().skip(skip0)

    return tf.data.Dataset.range(first_epoch, _MAX_EPOCHS).flat_map(epoch_records)

"""The one record reader of every tfcp pipeline: sharded, shuffled, resumable at any position.

Training streams are index-keyed: the record at position `p` of an input pipeline's
endless stream is a pure function of (`seed`, `p`, the files), so a resumed run starts
reading exactly where an uninterrupted run would be, at a cost that does not depend on `p`:

- epoch `e = p // N` (N = records of this input pipeline) lists the pipeline's files in a
  random order drawn from (`seed`, `e`) and reads them one after the other;
- the epoch's records are cut into windows of `shuffle_window` consecutive records and each
  window is permuted by a stateless permutation drawn from (`seed`, `e`, window index): the
  window plays the part of a shuffle buffer of the same size (and holds as many serialized
  records in memory), but unlike a reservoir buffer its output at a position never depends
  on what was read before;
- to start at `p`, whole files are skipped by their record counts (read once from the
  record headers, see `count_records`) and the rest of one file is skipped record by
  record without parsing, then at most one window is read; nothing is decoded.

Files are sharded across input pipelines (`InputContext`) when there are at least as many
files as pipelines; otherwise every pipeline reads every file and keeps every
`num_pipelines`-th record of the (identically ordered) epoch stream. Either way each epoch
gives every record to exactly one pipeline. Converters write record `i` to shard
`i % num_shards` (as Model Garden's `tfrecord_lib`), so consecutive records of a shard are
spread over the whole data set.

Evaluation streams are the files in order, sharded the same way, read once.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

_HEADER = struct.Struct("<QI")  # record length, masked CRC of the length
_FOOTER_BYTES = 4  # masked CRC of the data
_MAX_EPOCHS = 2**62
_count_cache: dict[tuple[str, int], int] = {}


def count_records(path: str) -> int:
    """Number of records in the TFRecord file `path`, read from the record headers.

    Only the 12-byte header of each record is read; the data is seeked over, so counting
    costs one small read per record (a COCO shard of ~450 images: a few ms). Results are
    cached per (path, file size) for the life of the process.

    Raises:
      ValueError: the file is truncated or not a TFRecord file (the message names it).
    """
    size = tf.io.gfile.stat(path).length
    key = (path, size)
    if key in _count_cache:
        return _count_cache[key]
    count, offset = 0, 0
    with tf.io.gfile.GFile(path, "rb") as f:
        while offset < size:
            header = f.read(_HEADER.size)
            if len(header) != _HEADER.size:
                raise ValueError(f"{path}: truncated TFRecord header at byte {offset}")
            (length, _) = _HEADER.unpack(header)
            offset += _HEADER.size + length + _FOOTER_BYTES
            if offset > size:
                raise ValueError(
                    f"{path}: record {count} at byte {offset - length - 16} claims {length} "
                    f"bytes but the file has {size} (truncated or not a TFRecord file)"
                )
            f.seek(offset)
            count += 1
    _count_cache[key] = count
    return count


def start_position(
    start_step: int, per_replica_batch_size: int, input_context: tf.distribute.InputContext | None
) -> int:
    """Records of one input pipeline consumed by `start_step` training steps.

    Each step takes one per-replica batch for every replica an input pipeline feeds
    (`num_replicas_in_sync // num_input_pipelines`).
    """
    replicas_per_pipeline = 1
    if input_context is not None:
        replicas_per_pipeline = max(
            input_context.num_replicas_in_sync // input_context.num_input_pipelines, 1
        )
    return int(start_step) * int(per_replica_batch_size) * replicas_per_pipeline


def _pipeline_files(files, num_pipelines, pipeline_id):
    """(files this pipeline reads, record stride, record offset) in the epoch stream."""
    if num_pipelines > 1 and len(files) >= num_pipelines:
        return list(files[pipeline_id::num_pipelines]), 1, 0
    return list(files), max(num_pipelines, 1), pipeline_id if num_pipelines > 1 else 0


def train_records(
    files: Sequence[str],
    *,
    seed: int,
    shuffle_window: int,
    num_pipelines: int = 1,
    pipeline_id: int = 0,
    start: int = 0,
) -> tf.data.Dataset:
    """The endless training stream of one input pipeline, from position `start`.

    Args:
      files: TFRecord paths (the sorted output of `pipeline.list_files`).
      seed: the run's seed (file order and window permutations).
      shuffle_window: W, records per permuted window (the shuffle buffer size); 1 keeps
        the order of the (randomly ordered) files.
      num_pipelines, pipeline_id: from the `tf.distribute.InputContext`.
      start: the first position to produce (see `start_position`).

    Returns:
      A dataset of `(position int64 [], record_name string [], serialized string [])`:
      `position` counts this pipeline's records from 0 over all epochs (seed your
      augmentation with it), `record_name` is `'path:index'` (index within the file).

    Raises:
      ValueError: no file, or this pipeline gets no record (the message names the files).
    """
    if not files:
        raise ValueError("train_records needs at least one file")
    window = max(int(shuffle_window), 1)
    my_files, stride, offset = _pipeline_files(list(files), num_pipelines, pipeline_id)
    counts = np.array([count_records(f) for f in my_files], np.int64)
    total = int(counts.sum())
    epoch_size = max((total - offset + stride - 1) // stride, 0)
    if epoch_size == 0:
        raise ValueError(
            f"input pipeline {pipeline_id} of {num_pipelines} gets no training record from "
            f"{len(my_files)} file(s) holding {total} record(s): {my_files[:4]}"
        )
    start_epoch, first_in_epoch = divmod(int(start), epoch_size)
    first_window, skip_in_window = divmod(first_in_epoch, window)
    file_names = tf.constant(my_files)
    file_counts = tf.constant(counts)
    seed_t = tf.constant([seed, 0x7EC0], tf.int64)

    def epoch_records(epoch):
        first = epoch == start_epoch
        window0 = tf.where(first, tf.constant(first_window, tf.int64), 0)
        skip0 = tf.where(first, tf.constant(skip_in_window, tf.int64), 0)
        epoch_seed = tf.random.experimental.stateless_fold_in(seed_t, epoch)
        order = tf.argsort(tf.random.stateless_uniform([len(my_files)], epoch_seed))
        names, sizes = tf.gather(file_names, order), tf.gather(file_counts, order)
        # Raw records (before record sharding) to skip: a multiple of `stride`.
        raw_skip = window0 * window * stride
        ends = tf.cumsum(sizes)
        first_file = tf.reduce_sum(tf.cast(ends <= raw_skip, tf.int32))
        skip_in_file = raw_skip - (ends[first_file] - sizes[first_file])
        skips = tf.concat([[skip_in_file], tf.zeros([len(my_files) - first_file - 1], tf.int64)], 0)

        def read_file(name, skip):
            indices = tf.data.Dataset.range(skip, tf.int64.max)
            rows = tf.data.Dataset.zip(indices, tf.data.TFRecordDataset(name).skip(skip))
            sep = tf.constant(":")
            return rows.map(lambda i, r: (tf.strings.join([name, sep, tf.strings.as_string(i)]), r))

        raw = tf.data.Dataset.from_tensor_slices((names[first_file:], skips))
        raw = raw.flat_map(read_file)
        if stride > 1:
            raw = raw.shard(stride, offset)
        windows = tf.data.Dataset.zip(
            tf.data.Dataset.range(window0, tf.int64.max), raw.batch(window)
        )

        def permute(index, batch):
            names_w, records_w = batch
            window_seed = tf.random.experimental.stateless_fold_in(epoch_seed, index)
            perm = tf.argsort(tf.random.stateless_uniform(tf.shape(records_w), window_seed))
            return tf.gather(names_w, perm), tf.gather(records_w, perm)

        stream = windows.map(permute).unbatch().skip(skip0)
        positions = tf.data.Dataset.range(
            epoch * epoch_size + window0 * window + skip0, tf.int64.max
        )
        return tf.data.Dataset.zip(positions, stream).map(lambda p, nr: (p, nr[0], nr[1]))

    epochs = tf.data.Dataset.range(start_epoch, _MAX_EPOCHS)
    return epochs.flat_map(epoch_records)


def eval_records(
    files: Sequence[str], *, num_pipelines: int = 1, pipeline_id: int = 0
) -> tf.data.Dataset:
    """Serialized records of one pass over `files` in order, sharded by input pipeline.

    Each record goes to exactly one pipeline (by file when there are at least as many
    files as pipelines, else by record).
    """
    my_files, stride, offset = _pipeline_files(list(files), num_pipelines, pipeline_id)
    dataset = tf.data.Dataset.from_tensor_slices(my_files).flat_map(tf.data.TFRecordDataset)
    if stride > 1:
        dataset = dataset.shard(stride, offset)
    return dataset


def pipeline_layout(
    input_context: tf.distribute.InputContext | None, global_batch_size: int
) -> tuple[int, int, int]:
    """(num_pipelines, pipeline_id, per-replica batch size) of an input context (or none)."""
    if input_context is None:
        return 1, 0, int(global_batch_size)
    return (
        input_context.num_input_pipelines,
        input_context.input_pipeline_id,
        input_context.get_per_replica_batch_size(global_batch_size),
    )


def read(
    files: Sequence[str],
    *,
    is_training: bool,
    seed: int,
    shuffle_buffer: int,
    input_context: tf.distribute.InputContext | None,
    batch_size: int,
    start_step: int = 0,
    position_multiple: int = 1,
) -> tuple[tf.data.Dataset, int]:
    """The records a pipeline builder reads: `train_records` or `eval_records`.

    Args:
      files: TFRecord paths.
      is_training: the endless, shuffled, resumable training stream, or one eval pass.
      seed, shuffle_buffer: see `train_records`.
      input_context: sharding by input pipeline (None: one pipeline).
      batch_size: the per-replica batch size.
      start_step: training: the global step to start at.
      position_multiple: training: start at a multiple of this position (2 for a
        pipeline that pairs consecutive records); the caller drops the returned number
        of leading examples after its pairing stage.

    Returns:
      (dataset, examples to drop): training `(position, record_name, serialized)`
      elements, eval serialized records; the second item is 0 for eval.
    """
    num_pipelines, pipeline_id = 1, 0
    if input_context is not None:
        num_pipelines, pipeline_id = (
            input_context.num_input_pipelines,
            input_context.input_pipeline_id,
        )
    if not is_training:
        return eval_records(files, num_pipelines=num_pipelines, pipeline_id=pipeline_id), 0
    start = start_position(start_step, batch_size, input_context)
    drop = start % position_multiple
    dataset = train_records(
        files,
        seed=seed,
        shuffle_window=shuffle_buffer,
        num_pipelines=num_pipelines,
        pipeline_id=pipeline_id,
        start=start - drop,
    )
    return dataset, drop

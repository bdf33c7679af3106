"""The one record reader of every tfcp pipeline: sharded, shuffled, resumable at any position.

Training streams are index-keyed: the record at position `p` of an input pipeline's
endless stream is a pure function of (`seed`, `p`, the files), so a resumed run starts
reading exactly where an uninterrupted run would be, at a cost that does not depend on `p`:

- epoch `e` (`p // N` for N records of this input pipeline) lists the pipeline's files in a
  random order drawn from (`seed`, `e`) and reads them one after the other; with record
  sampling (`tfcp.data.epochs.EpochCopies`: repeat factors, `tfcp.data.sampling`, or
  class-aware sampling, `tfcp.data.class_aware`) each record comes 0 or more times, a pure
  function of (`seed`, `e`), and epoch sizes are summed on the host (no I/O) to find `e`;
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
gives every record (copy) to exactly one pipeline. Converters write record `i` to shard
`i % num_shards` (as Model Garden's `tfrecord_lib`), so consecutive records of a shard are
spread over the whole data set.

Evaluation streams are the files in order, sharded the same way, read once.

`open_records` is the entry point of every pipeline builder (`tfcp.data.pipeline`,
`tfcp.data.segmentation_pipeline`): file patterns -> files (`list_files`) -> this input
pipeline's records, with the per-replica batch size and input pipeline id.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from absl import logging

from tfcp.data import epochs
from tfcp.data.epochs import EpochCopies  # noqa: F401 - re-exported for sampling, class_aware

_HEADER = struct.Struct("<QI")  # record length, masked CRC of the length
_FOOTER_BYTES = 4  # masked CRC of the data
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
    repeat_factors: Sequence[np.ndarray] | None = None,
    images_per_category: int | None = None,
    record_classes: Sequence[Sequence[np.ndarray]] | None = None,
) -> tf.data.Dataset:
    """The endless training stream of one input pipeline, from position `start`.

    Args:
      files: TFRecord paths (the sorted output of `list_files`).
      seed: the run's seed (file order, window permutations, repeats).
      shuffle_window: W, records per permuted window (the shuffle buffer size); 1 keeps
        the order of the (randomly ordered) files.
      num_pipelines, pipeline_id: from the `tf.distribute.InputContext`.
      start: the first position to produce (see `start_position`).
      repeat_factors: optional repeat factor sampling: one float array per file with each
        record's factor r >= 1 (`tfcp.data.sampling.file_repeat_factors`). Each epoch holds
        floor(r) copies of the record plus one with probability frac(r), drawn from
        (seed, epoch); copies fall in the same window. Finding the start epoch then costs
        one vectorized draw per epoch before it (no I/O).
      images_per_category: optional class-aware sampling (`tfcp.data.class_aware`), k:
        each epoch holds k draws per category, different images every epoch; records
        drawn for no category are skipped. Excludes `repeat_factors`. With files sharded
        across pipelines a pipeline's share of an epoch varies (and may be empty: the
        stream goes on with the next epoch); else every epoch has k x categories copies.
      record_classes: with `images_per_category`: per file, per record, the unique
        category ids (`tfcp.data.sampling.record_classes(files)`, read when None).

    Returns:
      A dataset of `(position int64 [], record_name string [], serialized string [])`:
      `position` counts this pipeline's records from 0 over all epochs (seed your
      augmentation with it), `record_name` is `'path:index'` (index within the file).

    Raises:
      ValueError: no file, bad factors or classes, both sampling modes, or this pipeline
        gets no record (names the files).
    """
    if not files:
        raise ValueError("train_records needs at least one file")
    window = max(int(shuffle_window), 1)
    my_files, stride, offset = _pipeline_files(list(files), num_pipelines, pipeline_id)
    counts = np.array([count_records(f) for f in my_files], np.int64)
    seed_t = tf.constant([seed, 0x7EC0], tf.int64)
    from tfcp.data import class_aware, sampling  # noqa: PLC0415 - both import this module

    if images_per_category is not None:
        if repeat_factors is not None:
            raise ValueError("repeat factors and class-aware sampling are mutually exclusive")
        if record_classes is None:
            record_classes = sampling.record_classes(files)
        copies = class_aware.pipeline_copies(
            files, record_classes, my_files, counts, images_per_category, seed
        )
    else:
        rfs_seed = tf.random.experimental.stateless_fold_in(seed_t, 0x4F5)
        copies = sampling.repeat_copies(files, repeat_factors, my_files, counts, rfs_seed)
    if copies.least is not None and epochs.pipeline_epoch_size(copies.least, stride, offset) == 0:
        raise ValueError(
            f"input pipeline {pipeline_id} of {num_pipelines} gets no training record from "
            f"{len(my_files)} file(s) holding {int(counts.sum())} record(s): {my_files[:4]}"
        )
    stream = epochs.epoch_stream(
        my_files,
        counts,
        copies,
        seed=seed_t,
        window=window,
        stride=stride,
        offset=offset,
        start=int(start),
    )
    positions = tf.data.Dataset.range(int(start), tf.int64.max)
    return tf.data.Dataset.zip(positions, stream).map(lambda p, nr: (p, nr[0], nr[1]))


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
    repeat_factors: Sequence[np.ndarray] | None = None,
    images_per_category: int | None = None,
    record_classes: Sequence[Sequence[np.ndarray]] | None = None,
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
      repeat_factors, images_per_category, record_classes: training: record sampling
        (see `train_records`).

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
        repeat_factors=repeat_factors,
        images_per_category=images_per_category,
        record_classes=record_classes,
    )
    return dataset, drop


def list_files(file_pattern: str | Sequence[str]) -> list[str]:
    """Expands comma-separated glob patterns (or a list of them) to a sorted file list.

    Raises:
      ValueError: if a pattern matches no file (the message names the pattern).
    """
    patterns = file_pattern.split(",") if isinstance(file_pattern, str) else list(file_pattern)
    files = []
    for pattern in patterns:
        pattern = pattern.strip()
        matched = sorted(tf.io.gfile.glob(pattern))
        if not matched:
            raise ValueError(f"No file matches the input pattern {pattern!r}")
        files.extend(matched)
    return files


class OpenedRecords(NamedTuple):
    """What `open_records` returns.

    Attributes:
      dataset: training `(position int64, record_name string, serialized string)` elements
        (endless, shuffled, resumable); eval serialized records (one pass, file order).
      drop: training: leading examples the caller drops after its pairing stage (see
        `read`); 0 for eval.
      pipeline_id: this input pipeline's id (0 without an input context): part of the
        augmentation seed.
      batch_size: the per-replica batch size.
    """

    dataset: tf.data.Dataset
    drop: int
    pipeline_id: int
    batch_size: int


def open_records(
    file_pattern: str | Sequence[str],
    *,
    is_training: bool,
    seed: int = 0,
    shuffle_buffer: int = 256,
    input_context: tf.distribute.InputContext | None = None,
    global_batch_size: int = 1,
    start_step: int = 0,
    position_multiple: int = 1,
    repeat_factor_threshold: float | None = None,
    images_per_category: int | None = None,
    mosaic_partners: int = 0,
    partner_repeat_factor_threshold: float | None = None,
) -> OpenedRecords:
    """The records of one input pipeline: the shared first stage of every pipeline builder.

    Args:
      file_pattern: TFRecord glob(s), comma-separated or a list; each must match a file.
      is_training: the endless, shuffled, resumable training stream, or one eval pass.
      seed, shuffle_buffer: see `train_records` (training).
      input_context: sharding by input pipeline and per-replica batch size (None: one).
      global_batch_size: batch size over all replicas.
      start_step: training: the global step to start at.
      position_multiple: training: see `read` (2 for a pipeline pairing records).
      repeat_factor_threshold: training: t of repeat factor sampling (per-file factors
        from `tfcp.data.sampling.file_repeat_factors`); None = off.
      images_per_category: training: k of class-aware sampling (`tfcp.data.class_aware`:
        each epoch draws k images per category; the report: 5); None = off. Excludes
        `repeat_factor_threshold`.
      mosaic_partners: training: n > 0 adds n partner records to every element
        (`tfcp.data.mosaic_stage.partner_records`: positions n*p .. n*p+n-1 of a second
        stream, drawn by `partner_repeat_factor_threshold`'s repeat factors).
      partner_repeat_factor_threshold: t of the partners' repeat factors; None = uniform.

    Returns:
      `OpenedRecords(dataset, drop, pipeline_id, batch_size)`; with partners the training
      elements are `(position, record_name, serialized, partner_names string [n],
      partner_serialized string [n])`.

    Raises:
      ValueError: a pattern matches no file, or both sampling modes are set.
    """
    if repeat_factor_threshold and images_per_category is not None:
        raise ValueError(
            "repeat_factor_threshold and images_per_category (class-aware sampling) are "
            f"mutually exclusive, got {repeat_factor_threshold} and {images_per_category}"
        )
    files = list_files(file_pattern)
    _, pipeline_id, batch_size = pipeline_layout(input_context, global_batch_size)
    repeat_factors, classes = None, None
    if is_training and (repeat_factor_threshold or images_per_category is not None):
        from tfcp.data import class_aware, sampling  # noqa: PLC0415 - both import this module

        if repeat_factor_threshold:
            repeat_factors = sampling.file_repeat_factors(files, repeat_factor_threshold)
        else:
            classes = sampling.record_classes(files)
            categories = class_aware.group_by_category([x for f in classes for x in f])
            logging.info(class_aware.describe(categories, images_per_category))
    dataset, drop = read(
        files,
        is_training=is_training,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
        input_context=input_context,
        batch_size=batch_size,
        start_step=start_step,
        position_multiple=position_multiple,
        repeat_factors=repeat_factors,
        images_per_category=images_per_category if is_training else None,
        record_classes=classes,
    )
    if is_training and mosaic_partners:
        from tfcp.data import mosaic_stage, sampling  # noqa: PLC0415 - both import this module

        partner_factors = None
        if partner_repeat_factor_threshold == repeat_factor_threshold:
            partner_factors = repeat_factors
        elif partner_repeat_factor_threshold:
            partner_factors = sampling.file_repeat_factors(files, partner_repeat_factor_threshold)
        first = start_position(start_step, batch_size, input_context) - drop
        dataset = mosaic_stage.with_partners(
            dataset,
            files,
            num_partners=mosaic_partners,
            seed=seed,
            shuffle_window=shuffle_buffer,
            input_context=input_context,
            first_position=first,
            repeat_factors=partner_factors,
        )
    return OpenedRecords(dataset, drop, pipeline_id, batch_size)

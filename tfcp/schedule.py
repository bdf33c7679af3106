"""Training length in epochs: `TRAIN_EPOCHS` -> `TRAIN_STEPS`.

An epoch is one pass over the records matched by `TRAIN_FILES` (the records as written,
before repeat-factor sampling or Copy-Paste pairing), so

    TRAIN_STEPS = ceil(TRAIN_EPOCHS * num_records / GLOBAL_BATCH_SIZE).

`num_records` comes from the converters' `<prefix>_summary.json` (`shard_paths` and
`shard_sizes`, written beside the shards by `tfcp.data.create_coco_tfrecord` and
`create_voc_tfrecord`) when it lists a shard and is not older than it; any other file is
counted once from its record headers (`tfcp.data.records.count_records`: one 12-byte read
per record, no decoding). `tfcp.gin_utils.parse_gin` applies this when `TRAIN_EPOCHS` is
bound (see its docstring).
"""

from __future__ import annotations

import dataclasses
import fractions
import json
import math
import numbers
import os
from collections.abc import Sequence

import tensorflow as tf
from absl import logging

from tfcp.data import records

SUMMARY_GLOB = "*_summary.json"


@dataclasses.dataclass(frozen=True)
class RecordCount:
    """The size of a training set.

    Attributes:
      num_records: records in all matched files.
      num_files: files matched by the pattern.
      summaries: the summary JSON files that gave the sizes of some of the files.
      counted: the files counted from their record headers.
    """

    num_records: int
    num_files: int
    summaries: tuple[str, ...] = ()
    counted: tuple[str, ...] = ()

    def describe(self) -> str:
        """'256 records in 2 files (from train_summary.json)' and the like."""
        sources = [os.path.basename(p) for p in self.summaries]
        if self.counted:
            sources.append(f"{len(self.counted)} file(s) counted from their record headers")
        return f"{self.num_records} records in {self.num_files} file(s) (from {', '.join(sources)})"


def _summary_sizes(directory: str) -> dict[str, tuple[int, str, float]]:
    """{shard basename: (records, summary path, summary mtime)} of the summaries in a dir."""
    sizes = {}
    for path in sorted(tf.io.gfile.glob(os.path.join(directory or ".", SUMMARY_GLOB))):
        try:
            with tf.io.gfile.GFile(path) as f:
                summary = json.load(f)
            shards, counts = summary["shard_paths"], summary["shard_sizes"]
            if len(shards) != len(counts):
                raise ValueError("shard_paths and shard_sizes differ in length")
        except (ValueError, KeyError, TypeError) as e:
            logging.warning("%s: not a converter summary (%s); counting records instead", path, e)
            continue
        mtime = tf.io.gfile.stat(path).mtime_nsec
        for shard, count in zip(shards, counts, strict=True):
            sizes[os.path.basename(shard)] = (int(count), path, mtime)
    return sizes


def count_training_records(file_pattern: str | Sequence[str]) -> RecordCount:
    """Records in the files of `file_pattern` (comma-separated globs or a list of them).

    Raises:
      ValueError: a pattern matches no file, or a file is not a TFRecord file (the message
        names it).
    """
    files = records.list_files(file_pattern)
    by_directory: dict[str, dict] = {}
    total, summaries, counted = 0, [], []
    for path in files:
        directory = os.path.dirname(path)
        if directory not in by_directory:
            by_directory[directory] = _summary_sizes(directory)
        entry = by_directory[directory].get(os.path.basename(path))
        if entry is not None and entry[2] >= tf.io.gfile.stat(path).mtime_nsec:
            total += entry[0]
            if entry[1] not in summaries:
                summaries.append(entry[1])
        else:  # no summary, or the shard was rewritten after it
            total += records.count_records(path)
            counted.append(path)
    return RecordCount(total, len(files), tuple(summaries), tuple(counted))


def epochs_to_steps(epochs: float, num_records: int, global_batch_size: int) -> int:
    """ceil(epochs * num_records / global_batch_size), exact for decimal `epochs`.

    Raises:
      ValueError: `epochs` is not a positive number, `num_records` is 0, or the batch
        size is not a positive integer.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Real):
        raise ValueError(f"TRAIN_EPOCHS must be a positive number, got {epochs!r}")
    if not math.isfinite(epochs) or epochs <= 0:
        raise ValueError(f"TRAIN_EPOCHS must be a positive number, got {epochs!r}")
    if isinstance(global_batch_size, bool) or not isinstance(global_batch_size, int):
        raise ValueError(f"GLOBAL_BATCH_SIZE must be a positive integer, got {global_batch_size!r}")
    if global_batch_size <= 0:
        raise ValueError(f"GLOBAL_BATCH_SIZE must be a positive integer, got {global_batch_size}")
    if num_records <= 0:
        raise ValueError("the training files hold no record: TRAIN_EPOCHS cannot size the run")
    exact = fractions.Fraction(str(epochs)) * num_records / global_batch_size
    return max(1, math.ceil(exact))

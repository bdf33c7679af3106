"""Sharded, parallel TFRecord writing with a progress line and a conversion summary.

Converters describe each image as a picklable work item and give a picklable
`convert_fn(item) -> ConvertedImage`. `write_sharded` assigns item `i` to shard
`i % num_shards` (as Model Garden's `tfrecord_lib` does), converts chunks of items in a
`multiprocessing` pool, and writes the serialized examples in the main process, in item
order: the output is identical for any number of workers. Shards are written to temporary
files and renamed when all succeeded, so a failed run leaves no partial shard behind.
Beside the shards, `.tfcp_classes/<shard>.json` lists every record's category ids, which repeat
factor sampling reads instead of parsing the shard (`tfcp.data.sampling`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import tensorflow as tf

from tfcp.data import sampling, schema

SHARD_PATTERN = "{prefix}-{index:05d}-of-{num_shards:05d}.tfrecord"


class ConversionError(ValueError):
    """Bad input data; the message names the file and the record."""


@dataclasses.dataclass
class ConvertedImage:
    """What converting one image produced.

    Attributes:
      serialized: the serialized `tf.train.Example`, or None if the image was skipped.
      num_objects: objects written for this image.
      image_skip_reason: why the image was skipped (only when `serialized` is None).
      objects_skipped: reason -> number of objects of this image that were not written.
      objects_modified: reason -> number of objects written after a repair (e.g. a box
        clipped to the image).
      warnings: human-readable messages naming the file and the annotation.
    """

    serialized: bytes | None
    num_objects: int = 0
    image_skip_reason: str = ""
    objects_skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    objects_modified: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    warnings: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ConversionSummary:
    """Counts of a whole conversion; nothing is dropped without being counted here."""

    images_total: int = 0
    images_written: int = 0
    objects_written: int = 0
    images_skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    objects_skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    objects_modified: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    shard_paths: list[str] = dataclasses.field(default_factory=list)
    shard_sizes: list[int] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def add(self, converted: ConvertedImage) -> None:
        self.images_total += 1
        if converted.serialized is None:
            self.images_skipped[converted.image_skip_reason or "unspecified"] += 1
        else:
            self.images_written += 1
            self.objects_written += converted.num_objects
        self.objects_skipped.update(converted.objects_skipped)
        self.objects_modified.update(converted.objects_modified)

    def to_dict(self) -> dict[str, Any]:
        return {
            "images_total": self.images_total,
            "images_written": self.images_written,
            "objects_written": self.objects_written,
            "images_skipped": dict(sorted(self.images_skipped.items())),
            "objects_skipped": dict(sorted(self.objects_skipped.items())),
            "objects_modified": dict(sorted(self.objects_modified.items())),
            "shard_paths": list(self.shard_paths),
            "shard_sizes": list(self.shard_sizes),
            "seconds": round(self.seconds, 3),
        }

    def format(self) -> str:
        """A multi-line human-readable report."""

        def _counts(counter):
            if not counter:
                return "none"
            return ", ".join(f"{k}={v}" for k, v in sorted(counter.items()))

        return "\n".join(
            [
                f"images written:   {self.images_written} of {self.images_total} "
                f"into {len(self.shard_paths)} shards in {self.seconds:.1f}s",
                f"objects written:  {self.objects_written}",
                f"images skipped:   {_counts(self.images_skipped)}",
                f"objects skipped:  {_counts(self.objects_skipped)}",
                f"objects repaired: {_counts(self.objects_modified)}",
            ]
        )


def shard_paths(output_prefix: str, num_shards: int) -> list[str]:
    """The shard file names `{prefix}-00000-of-00004.tfrecord`, ..., in order."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    return [
        SHARD_PATTERN.format(prefix=output_prefix, index=i, num_shards=num_shards)
        for i in range(num_shards)
    ]


class Progress:
    """A progress line on a stream: done/total, images/s, ETA.

    On a terminal the line is rewritten in place; otherwise one line is printed every
    `interval_non_tty` seconds so logs stay readable.
    """

    def __init__(self, total: int, name: str = "", stream: TextIO | None = None):
        self._total = total
        self._name = f"[{name}] " if name else ""
        self._stream = sys.stderr if stream is None else stream
        self._start = time.monotonic()
        self._last = -1e9
        self._done = 0
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._interval = 0.5 if self._tty else 10.0

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        rate = self._done / elapsed
        if rate > 0:
            eta = _format_seconds((self._total - self._done) / rate)
        else:
            eta = "?"
        return (
            f"{self._name}{self._done}/{self._total} images  {rate:.1f} images/s  "
            f"elapsed {_format_seconds(elapsed)}  ETA {eta}"
        )

    def update(self, num_done: int, force: bool = False) -> None:
        self._done += num_done
        now = time.monotonic()
        if force or now - self._last >= self._interval:
            self._last = now
            end = "\r" if self._tty else "\n"
            self._stream.write(self.line() + end)
            self._stream.flush()

    def close(self) -> None:
        self._last = -1e9
        self.update(0, force=True)
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()


def _format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _convert_chunk(
    convert_fn: Callable[[Any], ConvertedImage], chunk: Sequence[Any]
) -> list[ConvertedImage]:
    return [convert_fn(item) for item in chunk]


def _chunks(items: Sequence[Any], num_shards: int, chunk_size: int):
    """Yields (shard index, chunk of items) in item order within each shard."""
    for shard in range(num_shards):
        members = items[shard::num_shards]
        for start in range(0, len(members), chunk_size):
            yield shard, members[start : start + chunk_size]


def write_sharded(
    output_prefix: str,
    items: Sequence[Any],
    convert_fn: Callable[[Any], ConvertedImage],
    num_shards: int,
    *,
    num_workers: int | None = None,
    chunk_size: int = 8,
    name: str = "",
    progress_stream: TextIO | None = None,
    warn: Callable[[str], None] | None = None,
) -> ConversionSummary:
    """Converts `items` with `convert_fn` and writes them to `num_shards` TFRecord files.

    Args:
      output_prefix: path prefix; shards are `{output_prefix}-00000-of-0000N.tfrecord`.
        Its directory is created if needed.
      items: picklable work items, one per image. Item `i` goes to shard `i % num_shards`.
      convert_fn: picklable callable (a module-level function or an instance of a
        module-level class) mapping an item to a `ConvertedImage`. Raises
        `ConversionError` on bad input, which stops the conversion.
      num_shards: number of output files (>= 1). Shards may be empty if there are fewer
        items than shards.
      num_workers: processes converting chunks in parallel; None = `os.cpu_count()`,
        0 or 1 = convert in this process.
      chunk_size: items per task sent to a worker.
      name: shown at the start of the progress line.
      progress_stream: where the progress line goes (stderr by default).
      warn: called with every warning of the converted images (default: stderr).

    Returns:
      The `ConversionSummary`.

    Raises:
      ConversionError: re-raised from `convert_fn`; no shard file is left behind.
    """
    paths = shard_paths(output_prefix, num_shards)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if warn is None:
        warn = lambda message: print(f"WARNING: {message}", file=sys.stderr)
    directory = os.path.dirname(output_prefix)
    if directory:
        tf.io.gfile.makedirs(directory)
    if num_workers is None:
        num_workers = os.cpu_count() or 1
    tasks = list(_chunks(items, num_shards, chunk_size))
    summary = ConversionSummary(shard_paths=paths, shard_sizes=[0] * num_shards)
    temp_paths = [p + ".incomplete" for p in paths]
    writers = [tf.io.TFRecordWriter(p) for p in temp_paths]
    shard_classes = [[] for _ in paths]
    progress = Progress(len(items), name=name, stream=progress_stream)
    start = time.monotonic()
    pool = None
    try:
        if num_workers > 1 and len(tasks) > 1:
            context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
            pool = context.Pool(min(num_workers, len(tasks)))
            results = pool.imap(
                _ChunkRunner(convert_fn), (chunk for _, chunk in tasks), chunksize=1
            )
        else:
            results = (_convert_chunk(convert_fn, chunk) for _, chunk in tasks)
        for (shard, _), converted_chunk in zip(tasks, results, strict=True):
            for converted in converted_chunk:
                for message in converted.warnings:
                    warn(message)
                summary.add(converted)
                if converted.serialized is not None:
                    writers[shard].write(converted.serialized)
                    summary.shard_sizes[shard] += 1
                    shard_classes[shard].append(_class_ids(converted.serialized))
            progress.update(len(converted_chunk))
        if pool is not None:
            pool.close()
            pool.join()
            pool = None
    except BaseException:
        if pool is not None:
            pool.terminate()
            pool.join()
        for writer in writers:
            writer.close()
        for path in temp_paths:
            if tf.io.gfile.exists(path):
                tf.io.gfile.remove(path)
        raise
    for writer in writers:
        writer.close()
    for temp, final, classes in zip(temp_paths, paths, shard_classes, strict=True):
        tf.io.gfile.rename(temp, final, overwrite=True)
        sampling.write_classes_sidecar(final, classes)
    progress.close()
    summary.seconds = time.monotonic() - start
    return summary


def _class_ids(serialized: bytes) -> list[int]:
    """The category ids of a serialized Model Garden TF Example."""
    example = tf.train.Example.FromString(serialized)
    return list(example.features.feature[schema.CLASS_LABEL].int64_list.value)


class _ChunkRunner:
    """Picklable wrapper that converts one chunk in a worker process."""

    def __init__(self, convert_fn: Callable[[Any], ConvertedImage]):
        self._convert_fn = convert_fn

    def __call__(self, chunk: Sequence[Any]) -> list[ConvertedImage]:
        return _convert_chunk(self._convert_fn, chunk)


def write_json(path: str, value: Any) -> None:
    """Writes `value` as indented JSON (creating the directory)."""
    directory = os.path.dirname(path)
    if directory:
        tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(value, indent=1, sort_keys=False) + "\n")

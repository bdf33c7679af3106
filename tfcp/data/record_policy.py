"""What a training pipeline does with a bad record: fail naming it, or skip and count it.

`decode_stage` turns the record reader's `(position, record_name, serialized)` stream into
`(position, decoded example)` with `tfcp.data.validation.decode_checked`:

- `on_bad_record='raise'` (default): the first bad record stops the input with
  `InvalidArgumentError: bad record /path/train-00003-of-00008.tfrecord:17 (source_id 42):
  2 masks for 3 boxes ...`, naming the file, the record's index in it and what is wrong.
- `on_bad_record='skip'`: bad records are dropped; each is printed to stderr as a warning
  with the same words, and counted in a process-wide counter (`skipped_count`) that the
  trainer logs, writes to TensorBoard (`bad_records_skipped`) and to metrics.json.
  Resume stays exact up to the skipped records: the resumed stream starts at the position
  the step implies, so it repeats as many records as were skipped before that point.

A pipeline that pairs records before decoding them (Copy-Paste, `tfcp.data.pair_stage`)
uses `check_stage` instead, the same policy on the undecoded records (sizes from the image
headers), and `decode_or_fail` in its pair map.

Limits (see `tfcp.data.validation`): a record that is not a tf.train.Example, or an image
whose bytes are complete but corrupt inside, still raises TF's own decode error.
"""

from __future__ import annotations

import re
import sys

import tensorflow as tf

from tfcp.data import validation

POLICIES = ("raise", "skip")
_HINT = " (train/build_dataset.on_bad_record = 'skip' skips and counts bad records)"
_counter: tf.Variable | None = None


class BadRecordError(ValueError):
    """A training record failed validation (the message names it and says why)."""


def as_bad_record_error(error: tf.errors.OpError) -> BadRecordError | None:
    """The `BadRecordError` an input-pipeline error stands for, or None if it is another."""
    match = re.search(r"bad record .*?skips and counts bad records\)", error.message, re.S)
    # Assert's message prints its data like a Python string literal: quotes come escaped.
    return BadRecordError(match.group(0).replace("\\'", "'")) if match else None


def skipped_counter() -> tf.Variable:
    """The process-wide int64 count of skipped bad records (created on first use)."""
    global _counter
    if _counter is None:
        with tf.init_scope():
            _counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_records_skipped")
    return _counter


def skipped_count() -> int:
    """Bad training records skipped so far by this process's pipelines."""
    return 0 if _counter is None else int(_counter.numpy())


def decode_stage(
    dataset: tf.data.Dataset,
    *,
    on_bad_record: str,
    include_mask: bool,
    num_classes: int | None,
    num_parallel_calls: int,
) -> tf.data.Dataset:
    """Decodes and checks records: `(position, name, serialized)` -> `(position, decoded)`.

    Args:
      dataset: the record reader's training stream (`tfcp.data.records.train_records`),
        `(position, record_name, serialized, *extra)`: trailing components (e.g. Balanced
        Mosaic's partner records) pass through unchanged.
      on_bad_record: 'raise' or 'skip' (see the module doc).
      include_mask: decode the instance masks.
      num_classes: class ids must be in [1, num_classes); None checks ids >= 1 only.
      num_parallel_calls: parallelism of the decode map.

    Returns:
      A dataset of `(position int64 [], decoded dict, *extra)`, `decoded` as
      `decoder.decode`'s.

    Raises:
      ValueError: an unknown policy.
    """
    _check_policy(on_bad_record)
    if on_bad_record == "raise":

        def decode(position, record_name, serialized, *extra):
            decoded = decode_or_fail(
                record_name, serialized, include_mask=include_mask, num_classes=num_classes
            )
            return (position, decoded, *extra)

        return dataset.map(decode, num_parallel_calls=num_parallel_calls, deterministic=True)

    def check(position, record_name, serialized, *extra):
        decoded, ok, reason = validation.decode_checked(
            serialized, include_mask=include_mask, num_classes=num_classes
        )
        message = validation.format_error(record_name, decoded, reason)
        return ((position, decoded), ok, message, *extra)

    dataset = dataset.map(check, num_parallel_calls=num_parallel_calls, deterministic=True)
    return _skip_bad(dataset).map(lambda item, *extra: (*item, *extra))


def check_stage(
    dataset: tf.data.Dataset,
    *,
    on_bad_record: str,
    include_mask: bool,
    num_classes: int | None,
    num_parallel_calls: int,
) -> tf.data.Dataset:
    """Applies the policy to records before they are decoded, for a pipeline that pairs them.

    'raise': the records pass unchanged (`decode_or_fail` raises on the bad one). 'skip':
    bad records are dropped, warned about and counted as in `decode_stage`, judged by
    `validation.check_record` (no pixels decoded).

    Args:
      dataset: `(position, record_name, serialized)` records.
      on_bad_record, include_mask, num_classes, num_parallel_calls: as `decode_stage`'s.

    Returns:
      The `(position, record_name, serialized)` records to decode.
    """
    _check_policy(on_bad_record)
    if on_bad_record == "raise":
        return dataset

    def check(position, record_name, serialized):
        source_id, ok, reason = validation.check_record(
            serialized, include_mask=include_mask, num_classes=num_classes
        )
        message = validation.format_error(record_name, source_id, reason)
        return ((position, record_name, serialized), ok, message)

    dataset = dataset.map(check, num_parallel_calls=num_parallel_calls, deterministic=True)
    return _skip_bad(dataset).map(lambda record: record)  # (record,) -> record


def decode_or_fail(
    record_name: tf.Tensor, serialized: tf.Tensor, *, include_mask: bool, num_classes: int | None
) -> dict:
    """`decoder.decode` of one record, failing as `decode_stage`'s 'raise' when it is bad.

    Args:
      record_name: string [], the record's name for the error.
      serialized: string [], the record.
      include_mask, num_classes: as `decode_stage`'s.

    Returns:
      The decoded example (`decoder.decode`'s dict).
    """
    decoded, ok, reason = validation.decode_checked(
        serialized, include_mask=include_mask, num_classes=num_classes
    )
    message = validation.format_error(record_name, decoded, reason)
    with tf.control_dependencies([assert_good(ok, message)]):
        return {key: tf.identity(value) for key, value in decoded.items()}


def _check_policy(on_bad_record: str) -> None:
    if on_bad_record not in POLICIES:
        raise ValueError(f"on_bad_record must be one of {POLICIES}, got {on_bad_record!r}")


def _skip_bad(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`(item, ok, message, *extra)` -> `(item, *extra)` of the good elements; each bad one is
    warned about on stderr and counted in `skipped_counter`."""
    counter = skipped_counter()

    def report(item, ok, message, *extra):
        def skip():
            warn = tf.print("WARNING: skipping", message, output_stream=sys.stderr)
            with tf.control_dependencies([warn]):
                counted = counter.assign_add(1)
            with tf.control_dependencies([counted]):
                return tf.constant(False)

        return tf.cond(ok, lambda: tf.constant(True), skip)

    return dataset.filter(report).map(lambda item, ok, message, *extra: (item, *extra))


def assert_good(ok: tf.Tensor, message: tf.Tensor) -> tf.Operation:
    """An op failing with `message` and the policy hint (`as_bad_record_error` finds it)
    when `ok` is false."""
    return tf.debugging.Assert(ok, [tf.strings.join([message, tf.constant(_HINT)])], summarize=1)

"""Copy-Paste pairs of records: pair first, then decode, jitter, paste and label in one map.

One training source with Copy-Paste (and no Balanced Mosaic) pairs consecutive records of
the stream while they are still serialized, and one map function turns a pair into its two
training examples: decode both records (`record_policy.decode_or_fail`), drop difficult
objects if asked, jitter each into its view(s) (`paste_stage.decode_views`), paste each
onto the other and compute the Mask R-CNN targets (`paste_stage.cross_views`).

Pairing the small serialized records instead of decoded S x S views keeps the pipeline's
buffers free of full-resolution images and masks between stages (less memory and more
throughput: `docs/pipeline_profile.md`). The examples are bit-identical to the ragged
pairing of views it replaces: every draw still derives from the stream seed and the
example's position.

A pair call runs its two examples concurrently (the function's independent ops run in
parallel), so the pair map runs half as many calls as the per-example maps would
(`pair_parallelism`): as many examples in flight as cores, like Model Garden's parser map.
Autotuned, the pair map kept two pair calls (four examples) in flight on two cores: a little
faster, a lot more memory on crowded images (`docs/pipeline_profile.md`).

With `on_bad_record='skip'` the bad records are dropped before pairing
(`record_policy.check_stage`, which judges a record without decoding its pixels), so the
pairs are those of the good records, as before.
"""

from __future__ import annotations

import functools
import os

import tensorflow as tf

from tfcp.data import decoder, paste_stage, record_policy


@tf.autograph.experimental.do_not_convert
def cross_record_pair(
    positions: tf.Tensor,
    record_names: tf.Tensor,
    serialized: tf.Tensor,
    *,
    stream_seed: tf.Tensor,
    options: paste_stage.ExampleOptions,
    num_classes: int | None,
    skip_difficult: bool,
) -> tuple:
    """Two consecutive records -> their two Copy-Paste training examples.

    Args:
      positions: int64 [2], the records' positions in the stream.
      record_names: string [2], their names ('file:index') for errors.
      serialized: string [2], the serialized `tf.train.Example`s.
      stream_seed: int64 [2], the stream's seed.
      options: the stage options (`options.paste` is true).
      num_classes: class ids must be in [1, num_classes); None checks ids >= 1 only.
      skip_difficult: drop difficult objects after decoding (`decoder.drop_difficult`).

    Returns:
      `(image uint8 [2, S, S, 3], labels)`, each label with a leading dim of 2.

    Raises:
      tf.errors.InvalidArgumentError: a bad record, named (`record_policy.decode_or_fail`).
    """
    views = []
    for k in (0, 1):
        example = record_policy.decode_or_fail(
            record_names[k], serialized[k], include_mask=True, num_classes=num_classes
        )
        if skip_difficult:
            example = decoder.drop_difficult(example)
        views.append(paste_stage.decode_views(positions[k], example, stream_seed, options))
    return paste_stage.cross_views(
        [view[0] for view in views],
        [view[1] for view in views],
        [view[2] if len(view) == 3 else paste_stage.source_part(view[1]) for view in views],
        options,
    )


def pair_parallelism(num_parallel_calls: int) -> int:
    """Pair calls in flight for a pipeline whose maps run `num_parallel_calls` examples.

    Args:
      num_parallel_calls: the examples' parallelism, or `tf.data.AUTOTUNE`: the schedulable
        cores of the machine that builds the dataset (with the tf.data service, the
        trainer's, not the workers').

    Returns:
      ceil(n / 2), at least 1.
    """
    if num_parallel_calls == tf.data.AUTOTUNE:
        if hasattr(os, "sched_getaffinity"):
            num_parallel_calls = len(os.sched_getaffinity(0))
        else:
            num_parallel_calls = os.cpu_count() or 1
    return max(1, (int(num_parallel_calls) + 1) // 2)


def paired_examples(
    records: tf.data.Dataset,
    *,
    stream_seed: tf.Tensor,
    options: paste_stage.ExampleOptions,
    on_bad_record: str,
    num_classes: int | None,
    skip_difficult: bool,
    drop: int,
    num_parallel_calls: int,
) -> tf.data.Dataset:
    """The record reader's stream -> unbatched Copy-Paste training examples.

    Args:
      records: `(position, record_name, serialized)` (`tfcp.data.records.open_records`).
      stream_seed: int64 [2], the stream's seed.
      options: the stage options.
      on_bad_record: 'raise' or 'skip' (`tfcp.data.record_policy`).
      num_classes: class ids must be in [1, num_classes); None checks ids >= 1 only.
      skip_difficult: drop difficult objects (VOC) after decoding.
      drop: leading examples to drop after pairing (a resumed stream at an odd position).
      num_parallel_calls: parallelism of the checks; the pair map runs
        `pair_parallelism(num_parallel_calls)` pairs at a time.

    Returns:
      A dataset of `(image uint8 [S, S, 3], labels)`.
    """
    records = record_policy.check_stage(
        records,
        on_bad_record=on_bad_record,
        include_mask=True,
        num_classes=num_classes,
        num_parallel_calls=num_parallel_calls,
    )
    pair = functools.partial(
        cross_record_pair,
        stream_seed=stream_seed,
        options=options,
        num_classes=num_classes,
        skip_difficult=skip_difficult,
    )
    pairs = records.batch(2, drop_remainder=True)
    pairs = pairs.map(
        pair, num_parallel_calls=pair_parallelism(num_parallel_calls), deterministic=True
    )
    return pairs.unbatch().skip(drop)

"""Two sampled streams in every batch, for the double classifier (LVIS 2020 challenge report).

The report retrains two box classifiers on the same features: head a on images drawn by
repeat factor sampling, head b on images drawn by class-aware sampling (a fixed number of
images per category and epoch). tfcp interleaves the two streams inside every per-replica
batch: the first half of the batch comes from the repeat-factor stream, the second half from
the class-aware stream, and `labels['classifier_stream']` (int32 [B], 0 or 1) tells the loss
which head an image trains (`tfcp.modeling.double_classifier`). Both heads thus see the same
number of images at every step and one optimizer step updates both; alternating steps would
give each head a stale momentum half of the time.

Each stream is a complete training pipeline (`tfcp.data.pipeline.build_dataset` with half
the batch), so each one keeps exact resume and per-seed determinism; the class-aware stream
uses `seed + CLASS_AWARE_SEED_OFFSET` so that its augmentations are not those of the other
stream's same positions.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from tfcp.data import records, service

STREAM_KEY = "classifier_stream"
CLASS_AWARE_SEED_OFFSET = 1_000_003


def half_batch(global_batch_size: int) -> int:
    """The global batch size of each stream; raises on an odd global batch size."""
    if global_batch_size % 2:
        raise ValueError(
            "the double classifier's two streams split every batch in half: global_batch_size "
            f"must be even, got {global_batch_size}"
        )
    return global_batch_size // 2


def interleave(repeat_factor: tf.data.Dataset, class_aware: tf.data.Dataset) -> tf.data.Dataset:
    """Concatenates per-replica batches of the two streams and tags each image's stream.

    Args:
      repeat_factor: batches `(images [b, S, S, 3], labels)` of the repeat-factor stream.
      class_aware: batches of the class-aware stream with the same structure.

    Returns:
      Batches `(images [2b, S, S, 3], labels)`: the repeat-factor images first; labels
      gain `classifier_stream` int32 [2b] (0 repeat-factor, 1 class-aware).
    """

    def concat(a, b):
        (images_a, labels_a), (images_b, labels_b) = a, b
        images = tf.concat([images_a, images_b], axis=0)
        labels = tf.nest.map_structure(lambda x, y: tf.concat([x, y], axis=0), labels_a, labels_b)
        labels[STREAM_KEY] = tf.concat(
            [
                tf.zeros([tf.shape(images_a)[0]], tf.int32),
                tf.ones([tf.shape(images_b)[0]], tf.int32),
            ],
            axis=0,
        )
        return images, labels

    return tf.data.Dataset.zip((repeat_factor, class_aware)).map(
        concat, num_parallel_calls=tf.data.AUTOTUNE
    )


def two_streams(build_dataset: Callable[..., tf.data.Dataset], args: dict) -> tf.data.Dataset:
    """`build_dataset(classifier_streams=True, ...)`: the two half-batch streams, interleaved.

    Args:
      build_dataset: `tfcp.data.pipeline.build_dataset`.
      args: all of its arguments, as given (`classifier_streams=True`).

    Returns:
      `interleave` of the repeat-factor stream and the class-aware stream, each built by
      `build_dataset` with half the global batch; the tf.data service, if asked, serves
      the interleaved batches.

    Raises:
      ValueError: eval, a missing sampler setting, pseudo-labeled data, an odd batch.
    """
    if not args["is_training"]:
        raise ValueError("classifier_streams is for training; evaluate on one stream")
    if not args["repeat_factor_threshold"] or not args["images_per_category"]:
        raise ValueError(
            "classifier_streams needs repeat_factor_threshold (the stream of head a) and "
            "images_per_category (the class-aware stream of head b)"
        )
    if args["pseudo_file_pattern"] is not None:
        raise ValueError("classifier_streams and pseudo_file_pattern do not combine")
    common = dict(
        args,
        classifier_streams=False,
        global_batch_size=half_batch(args["global_batch_size"]),
        data_service_address=None,
    )
    dataset = interleave(
        build_dataset(**dict(common, images_per_category=None)),
        build_dataset(
            **dict(
                common,
                seed=args["seed"] + CLASS_AWARE_SEED_OFFSET,
                # the class-aware stream keeps the repeat factors only for mosaic partners
                repeat_factor_threshold=(
                    args["repeat_factor_threshold"] if args["mosaic_prob"] > 0 else None
                ),
            )
        ),
    )
    if args["data_service_address"]:
        pipeline_id = records.pipeline_layout(args["input_context"], 1)[1]
        dataset = service.distribute(
            dataset,
            args["data_service_address"],
            processing_mode=args["data_service_processing_mode"],
            job_name=service.job_name(
                args["data_service_job_name"], pipeline_id, args["start_step"]
            ),
        )
    return dataset.prefetch(tf.data.AUTOTUNE)

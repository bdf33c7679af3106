"""The eval half of the Mask R-CNN input pipeline (see `tfcp.data.pipeline`)."""

from __future__ import annotations

import tensorflow as tf
from official.vision.ops import preprocess_ops

from tfcp.data import decoder, targets
from tfcp.ops import scale_jitter

_no_autograph = tf.autograph.experimental.do_not_convert


def eval_dataset(
    dataset,
    *,
    image_size,
    batch_size,
    pad_value,
    anchor_config,
    max_num_instances,
    numeric_source_id,
    include_difficult,
    num_parallel_calls,
    include_anchor_boxes=False,
):
    """The eval batches of `tfcp.data.pipeline.build_dataset(is_training=False)`.

    Deterministic resize to [S, S] (`scale_jitter.resize_for_eval`), Model Garden's eval
    labels (`targets.maskrcnn_eval_targets`), every image kept (the last batch may be
    partial). `dataset` holds serialized records; the other arguments are build_dataset's.

    Returns:
      A dataset of `(images uint8 [B, S, S, 3], labels)` with `image_info` and
      `groundtruths` (`anchor_boxes` too with `include_anchor_boxes`; plus
      `groundtruths['difficult']` int32 [B, K] with `include_difficult`).
    """

    @_no_autograph
    def parse(serialized):
        decoded = decoder.decode(serialized, include_mask=False)
        if include_difficult:
            num = tf.shape(decoded["groundtruth_classes"])[0]
            check = tf.debugging.Assert(
                num <= max_num_instances,
                ["eval: image", decoded["source_id"], "has", num, "objects > max_num_instances"],
            )
            with tf.control_dependencies([check]):
                decoded["image"] = tf.identity(decoded["image"])
        resized = scale_jitter.resize_for_eval(
            {"image": decoded["image"], "groundtruth_boxes": decoded["groundtruth_boxes"]},
            output_size=image_size,
            pad_value=pad_value,
        )
        image, labels = targets.maskrcnn_eval_targets(
            decoded,
            resized["image"],
            resized["image_info"],
            image_size=image_size,
            anchor_config=anchor_config,
            max_num_instances=max_num_instances,
            numeric_source_id=numeric_source_id,
            include_anchor_boxes=include_anchor_boxes,
        )
        if include_difficult:
            labels["groundtruths"]["difficult"] = preprocess_ops.clip_or_pad_to_fixed_size(
                tf.cast(decoded["groundtruth_difficult"], tf.int32), max_num_instances, 0
            )
        return image, labels

    dataset = dataset.map(parse, num_parallel_calls=num_parallel_calls, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=False)
    return dataset.prefetch(tf.data.AUTOTUNE)

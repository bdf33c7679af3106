"""Semantic-segmentation input pipeline: TFRecords -> scale jitter/crop/flip -> batches.

Records carry `image/encoded` and `image/segmentation/class/encoded` (a one-channel PNG of
class ids, 255 = ignore), as written by `tfcp.data.create_voc_tfrecord --task segmentation`, and
are decoded by `tfcp.data.decoder.decode_segmentation`.

Training: the image and its label map go through the same `tfcp.ops.scale_jitter`
transform (random scale of the output size, random crop, horizontal flip, bottom/right
padding): the image bilinearly with gray padding, the label by nearest neighbour (the
label rides along as a one-object "instance mask" holding `label + 1`, so the padding's
0 becomes `ignore_label`). Every random choice derives from `seed` and the example's
position in the shuffled stream (stateless ops).

Eval: the image is resized to fit the output size (aspect ratio kept, padded
bottom/right); the ORIGINAL label is kept at full resolution, padded with `ignore_label`
to `eval_groundtruth_size` so that images of different sizes batch, and the task maps
the logits back to original pixels (mIoU is computed at the original resolution, as the
VOC devkit does).

Outputs:
  training `(images float32 [B, S, S, 3] normalized, {'masks': int32 [B, S, S, 1],
  'valid_masks': bool [B, S, S, 1], 'image_info': float32 [B, 4, 2]})`;
  eval `(images, {'image_info': float32 [B, 4, 2], 'groundtruth': int32 [B, P, P],
  'source_id': string [B]})`.
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import tensorflow as tf
from official.vision.ops import preprocess_ops

from tfcp.data import decoder, records
from tfcp.ops import scale_jitter

IGNORE_LABEL = 255
_no_autograph = tf.autograph.experimental.do_not_convert


def _as_example(image: tf.Tensor, label: tf.Tensor) -> dict[str, tf.Tensor]:
    """Wraps the label map as one whole-image object whose mask is `label + 1` (int32)."""
    shifted = tf.cast(tf.convert_to_tensor(label)[..., 0], tf.int32) + 1
    return {
        "image": tf.convert_to_tensor(image),
        "groundtruth_boxes": tf.constant([[0.0, 0.0, 1.0, 1.0]]),
        "groundtruth_instance_masks": shifted[None],
    }


def _unwrap(example: dict[str, tf.Tensor], ignore_label: int) -> tuple[tf.Tensor, tf.Tensor]:
    shifted = example["groundtruth_instance_masks"][0]
    label = tf.where(shifted > 0, shifted - 1, ignore_label)
    return example["image"], label[..., None]


def jitter_image_and_label(
    image: tf.Tensor,
    label: tf.Tensor,
    seed: tf.Tensor,
    *,
    output_size: int | Sequence[int],
    scale_range: Sequence[float] = (0.5, 2.0),
    flip_prob: float = 0.5,
    pad_value: float = scale_jitter.DEFAULT_PAD_VALUE,
    ignore_label: int = IGNORE_LABEL,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Random scale + crop + flip of an image and its label map to a fixed size.

    Args:
      image: uint8 [H, W, 3].
      label: integer [H, W, 1] class ids (`ignore_label` allowed).
      seed: int [2] stateless seed.
      output_size: S or (S_h, S_w).
      scale_range: (min, max) random scale of the output size (1, 1 = plain resize).
      flip_prob: horizontal flip probability.
      pad_value: image value of the padding.
      ignore_label: label value of the padding.

    Returns:
      `image` uint8 [S_h, S_w, 3], `label` int32 [S_h, S_w, 1] (padding =
      `ignore_label`) and `image_info` float32 [4, 2] (Model Garden layout).
    """
    jittered = scale_jitter.scale_jitter(
        _as_example(image, label),
        seed,
        output_size=output_size,
        scale_range=scale_range,
        flip_prob=flip_prob,
        pad_value=pad_value,
        drop_empty=False,
    )
    out_image, out_label = _unwrap(jittered, ignore_label)
    return out_image, out_label, jittered["image_info"]


def resize_image_and_label_for_eval(
    image: tf.Tensor,
    label: tf.Tensor,
    *,
    output_size: int | Sequence[int],
    pad_value: float = scale_jitter.DEFAULT_PAD_VALUE,
    ignore_label: int = IGNORE_LABEL,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Deterministic resize (fit, pad bottom/right, no flip) of an image and its label.

    Returns:
      As `jitter_image_and_label`, with `image_info` offsets zero.
    """
    resized = scale_jitter.resize_for_eval(
        _as_example(image, label), output_size=output_size, pad_value=pad_value
    )
    out_image, out_label = _unwrap(resized, ignore_label)
    return out_image, out_label, resized["image_info"]


def pad_label(
    label: tf.Tensor, size: int, ignore_label: int = IGNORE_LABEL, source_id: tf.Tensor = ""
) -> tf.Tensor:
    """Pads an [H, W, 1] label map to int32 [size, size] with `ignore_label`.

    Raises:
      tf.errors.InvalidArgumentError: H or W exceeds `size` (message names `source_id`).
    """
    label = tf.cast(tf.convert_to_tensor(label)[..., 0], tf.int32)
    height, width = tf.shape(label)[0], tf.shape(label)[1]
    check = tf.debugging.Assert(
        tf.logical_and(height <= size, width <= size),
        [
            "segmentation eval: image",
            source_id,
            "is larger than eval_groundtruth_size",
            size,
            height,
            width,
        ],
    )
    with tf.control_dependencies([check]):
        padded = tf.pad(
            label, [[0, size - height], [0, size - width]], constant_values=ignore_label
        )
    padded.set_shape([size, size])
    return padded


@gin.configurable
def build_segmentation_dataset(
    file_pattern: str | Sequence[str] = gin.REQUIRED,
    is_training: bool = True,
    global_batch_size: int = 8,
    image_size: int = 512,
    input_context: tf.distribute.InputContext | None = None,
    seed: int = 0,
    shuffle_buffer: int = 256,
    scale_range: Sequence[float] = (0.5, 2.0),
    flip_prob: float = 0.5,
    pad_value: float = scale_jitter.DEFAULT_PAD_VALUE,
    ignore_label: int = IGNORE_LABEL,
    eval_groundtruth_size: int = 512,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    start_step: int = 0,
) -> tf.data.Dataset:
    """Builds the semantic-segmentation training or eval dataset.

    Args:
      file_pattern: TFRecord glob(s): comma-separated or a list (e.g. VOC12 train plus
        SBD-style extra data); every pattern must match a file.
      is_training: jitter, shuffle, repeat, drop remainder; or eval (one pass in file
        order, deterministic resize, final partial batch kept).
      global_batch_size: batch over all replicas (per replica via `input_context`).
      image_size: S, the square model input size.
      input_context: `tf.distribute.InputContext` for sharding and per-replica batch.
      seed: seed of shuffling and augmentation.
      shuffle_buffer: records per shuffled window (training; `tfcp.data.records`).
      scale_range: random scale range of the output size (training).
      flip_prob: horizontal flip probability (training).
      pad_value: image padding value.
      ignore_label: label of unlabeled pixels and of the padding.
      eval_groundtruth_size: P, eval labels are padded to [P, P] (>= the largest
        original image side; VOC images are at most 500 px).
      num_parallel_calls: parallelism of the map stage.
      start_step: training: the global step the (resumable, index-keyed) stream starts at.

    Returns:
      A `tf.data.Dataset`, see the module docstring.

    Raises:
      ValueError: a pattern matches no file.
    """
    dataset, _, pipeline_id, batch_size = records.open_records(
        file_pattern,
        is_training=is_training,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
        input_context=input_context,
        global_batch_size=global_batch_size,
        start_step=start_step,
    )
    if is_training:
        base_seed = tf.constant([seed, pipeline_id], tf.int64)

        @_no_autograph
        def parse_train(index, record_name, serialized):
            del record_name
            decoded = decoder.decode_segmentation(serialized)
            image, label, image_info = jitter_image_and_label(
                decoded["image"],
                decoded["label"],
                tf.random.experimental.stateless_fold_in(base_seed, index),
                output_size=image_size,
                scale_range=scale_range,
                flip_prob=flip_prob,
                pad_value=pad_value,
                ignore_label=ignore_label,
            )
            labels = {
                "masks": label,
                "valid_masks": tf.not_equal(label, ignore_label),
                "image_info": image_info,
            }
            return preprocess_ops.normalize_image(image), labels

        dataset = dataset.map(parse_train, num_parallel_calls=num_parallel_calls)
        dataset = dataset.batch(batch_size, drop_remainder=True)
        return dataset.prefetch(tf.data.AUTOTUNE)

    @_no_autograph
    def parse_eval(serialized):
        decoded = decoder.decode_segmentation(serialized)
        image, _, image_info = resize_image_and_label_for_eval(
            decoded["image"],
            decoded["label"],
            output_size=image_size,
            pad_value=pad_value,
            ignore_label=ignore_label,
        )
        labels = {
            "image_info": image_info,
            "groundtruth": pad_label(
                decoded["label"], eval_groundtruth_size, ignore_label, decoded["source_id"]
            ),
            "source_id": decoded["source_id"],
        }
        return preprocess_ops.normalize_image(image), labels

    dataset = dataset.map(parse_eval, num_parallel_calls=num_parallel_calls, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=False)
    return dataset.prefetch(tf.data.AUTOTUNE)

"""Decodes Model Garden TF Examples into the dict that `tfcp.ops.copy_paste` takes.

Unlike Model Garden's `TfExampleDecoder`, instance masks stay uint8 (4x less memory than
float32 at full resolution) and count mismatches fail with the record's source id.
"""

from __future__ import annotations

import tensorflow as tf

from tfcp.data import schema

_FEATURES = {
    schema.IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string),
    schema.IMAGE_SOURCE_ID: tf.io.FixedLenFeature((), tf.string, ""),
    schema.IMAGE_HEIGHT: tf.io.FixedLenFeature((), tf.int64, -1),
    schema.IMAGE_WIDTH: tf.io.FixedLenFeature((), tf.int64, -1),
    schema.BBOX_YMIN: tf.io.VarLenFeature(tf.float32),
    schema.BBOX_XMIN: tf.io.VarLenFeature(tf.float32),
    schema.BBOX_YMAX: tf.io.VarLenFeature(tf.float32),
    schema.BBOX_XMAX: tf.io.VarLenFeature(tf.float32),
    schema.CLASS_LABEL: tf.io.VarLenFeature(tf.int64),
    schema.IS_CROWD: tf.io.VarLenFeature(tf.int64),
    schema.AREA: tf.io.VarLenFeature(tf.float32),
    schema.DIFFICULT: tf.io.VarLenFeature(tf.int64),
}
_MASK_FEATURE = {schema.MASK: tf.io.VarLenFeature(tf.string)}
_SEGMENTATION_FEATURE = {schema.SEGMENTATION_ENCODED: tf.io.FixedLenFeature((), tf.string, "")}


def _dense(parsed, key):
    value = parsed[key]
    if isinstance(value, tf.SparseTensor):
        default = "" if value.dtype == tf.string else 0
        return tf.sparse.to_dense(value, default_value=default)
    return value


def _per_object(parsed, key, num, dtype):
    """Per-object optional feature: its values, or zeros when the record has none."""
    values = _dense(parsed, key)
    values = tf.cond(
        tf.size(values) > 0,
        lambda: tf.cast(values, dtype),
        lambda: tf.zeros([num], dtype),
    )
    tf.debugging.assert_equal(
        tf.size(values),
        num,
        message=f"{key}: number of values differs from the number of objects",
        data=[parsed[schema.IMAGE_SOURCE_ID]],
    )
    return values


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """Decodes JPEG/PNG/BMP/GIF bytes to uint8 RGB [H, W, 3] (grayscale and RGBA converted)."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def decode_masks(pngs: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """Decodes N PNG masks to uint8 0/1 [N, height, width]."""

    def _decode(png):
        mask = tf.io.decode_png(png, channels=1)[:, :, 0]
        return tf.cast(mask > 0, tf.uint8)

    masks = tf.map_fn(
        _decode,
        pngs,
        fn_output_signature=tf.TensorSpec([None, None], tf.uint8),
    )
    masks = tf.cond(
        tf.size(pngs) > 0,
        lambda: masks,
        lambda: tf.zeros([0, height, width], tf.uint8),
    )
    return tf.ensure_shape(masks, [None, None, None])


def decode(serialized: tf.Tensor, include_mask: bool = True) -> dict[str, tf.Tensor]:
    """Decodes one serialized Model Garden TF Example.

    Args:
      serialized: scalar string tensor, a serialized `tf.train.Example`.
      include_mask: decode `image/object/mask` into `groundtruth_instance_masks`.

    Returns:
      A dict with
        - `source_id`: string scalar.
        - `image`: uint8 [H, W, 3].
        - `height`, `width`: int32 scalars.
        - `groundtruth_boxes`: float32 [N, 4], normalized [ymin, xmin, ymax, xmax].
        - `groundtruth_classes`: int64 [N].
        - `groundtruth_is_crowd`: bool [N].
        - `groundtruth_area`: float32 [N] (box area in pixels where the record has none).
        - `groundtruth_difficult`: bool [N] (false where the record has none).
        - `groundtruth_instance_masks`: uint8 0/1 [N, H, W] if `include_mask`.
    Raises:
      tf.errors.InvalidArgumentError: when per-object counts disagree or mask sizes differ
        from the image size; the message carries the record's source id.
    """
    features = dict(_FEATURES)
    if include_mask:
        features.update(_MASK_FEATURE)
    parsed = tf.io.parse_single_example(serialized, features)
    source_id = parsed[schema.IMAGE_SOURCE_ID]
    image = decode_image(parsed[schema.IMAGE_ENCODED])
    height = tf.shape(image)[0]
    width = tf.shape(image)[1]
    ymin, xmin, ymax, xmax = (
        _dense(parsed, k)
        for k in (schema.BBOX_YMIN, schema.BBOX_XMIN, schema.BBOX_YMAX, schema.BBOX_XMAX)
    )
    boxes = tf.stack([ymin, xmin, ymax, xmax], axis=-1)
    classes = _dense(parsed, schema.CLASS_LABEL)
    num = tf.shape(classes)[0]
    tf.debugging.assert_equal(
        tf.shape(boxes)[0],
        num,
        message="number of boxes differs from the number of class labels",
        data=[source_id],
    )
    box_area = (ymax - ymin) * (xmax - xmin) * tf.cast(height * width, tf.float32)
    area = _dense(parsed, schema.AREA)
    area = tf.cond(tf.size(area) > 0, lambda: area, lambda: box_area)
    tf.debugging.assert_equal(
        tf.size(area), num, message="image/object/area count mismatch", data=[source_id]
    )
    decoded = {
        "source_id": source_id,
        "image": image,
        "height": height,
        "width": width,
        "groundtruth_boxes": boxes,
        "groundtruth_classes": classes,
        "groundtruth_is_crowd": tf.cast(
            _per_object(parsed, schema.IS_CROWD, num, tf.int64), tf.bool
        ),
        "groundtruth_area": area,
        "groundtruth_difficult": tf.cast(
            _per_object(parsed, schema.DIFFICULT, num, tf.int64), tf.bool
        ),
    }
    if include_mask:
        pngs = _dense(parsed, schema.MASK)
        masks = decode_masks(pngs, height, width)
        tf.debugging.assert_equal(
            tf.shape(masks),
            tf.stack([num, height, width]),
            message="instance masks [N, H, W] do not match the objects and the image size",
            data=[source_id],
        )
        decoded["groundtruth_instance_masks"] = masks
    return decoded


def decode_segmentation(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Decodes a semantic-segmentation example.

    Args:
      serialized: scalar string tensor.

    Returns:
      `source_id`, `image` uint8 [H, W, 3] and `label` uint8 [H, W, 1] (255 = ignore).
    """
    features = {
        schema.IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string),
        schema.IMAGE_SOURCE_ID: tf.io.FixedLenFeature((), tf.string, ""),
        **_SEGMENTATION_FEATURE,
    }
    parsed = tf.io.parse_single_example(serialized, features)
    image = decode_image(parsed[schema.IMAGE_ENCODED])
    label = tf.io.decode_png(parsed[schema.SEGMENTATION_ENCODED], channels=1)
    tf.debugging.assert_equal(
        tf.shape(label)[:2],
        tf.shape(image)[:2],
        message="segmentation label size differs from the image size",
        data=[parsed[schema.IMAGE_SOURCE_ID]],
    )
    return {"source_id": parsed[schema.IMAGE_SOURCE_ID], "image": image, "label": label}

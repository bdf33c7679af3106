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
_SEGMENTATION_FEATURE = {schema.SEGMENTATION_ENCODED: tf.io.FixedLenFeature((), tf.string)}


def _dense(parsed, key):
    value = parsed[key]
    if isinstance(value, tf.SparseTensor):
        default = "" if value.dtype == tf.string else 0
        return tf.sparse.to_dense(value, default_value=default)
    return value


def _check(condition, message, source_id, *values):
    """An assertion whose InvalidArgumentError names the record's source id."""
    return tf.debugging.Assert(
        condition, [f"{message}; source_id:", source_id, *values], summarize=16
    )


def _per_object(parsed, key, num, dtype):
    """Per-object optional feature: (values, check op); zeros when the record has none."""
    values = _dense(parsed, key)
    values = tf.cond(
        tf.size(values) > 0,
        lambda: tf.cast(values, dtype),
        lambda: tf.zeros([num], dtype),
    )
    check = _check(
        tf.equal(tf.size(values), num),
        f"{key}: number of values differs from the number of objects",
        parsed[schema.IMAGE_SOURCE_ID],
        tf.size(values),
        num,
    )
    return values, check


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """Decodes JPEG/PNG/BMP/GIF bytes to uint8 RGB [H, W, 3] (grayscale and RGBA converted)."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def decode_masks(
    pngs: tf.Tensor, height: tf.Tensor, width: tf.Tensor, source_id: tf.Tensor | str = ""
) -> tf.Tensor:
    """Decodes PNG masks to uint8 0/1 masks of the image size.

    Args:
      pngs: string [N], PNG-encoded masks.
      height: int32 scalar, the image height.
      width: int32 scalar, the image width.
      source_id: string scalar named in the error message.

    Returns:
      uint8 [N, height, width] with values 0/1.

    Raises:
      tf.errors.InvalidArgumentError: a mask is not [height, width] (names `source_id`).
    """

    def _decode(png):
        mask = tf.io.decode_png(png, channels=1)
        check = _check(
            tf.reduce_all(tf.equal(tf.shape(mask)[:2], tf.stack([height, width]))),
            "instance mask size differs from the image size",
            source_id,
            tf.shape(mask),
            height,
            width,
        )
        with tf.control_dependencies([check]):
            return tf.cast(mask[:, :, 0] > 0, tf.uint8)

    return tf.cond(
        tf.size(pngs) > 0,
        lambda: tf.map_fn(_decode, pngs, fn_output_signature=tf.TensorSpec([None, None], tf.uint8)),
        lambda: tf.zeros([0, height, width], tf.uint8),
    )


def decode(serialized: tf.Tensor, include_mask: bool = True) -> dict[str, tf.Tensor]:
    """Decodes one serialized Model Garden TF Example.

    Args:
      serialized: scalar string tensor, a serialized `tf.train.Example`.
      include_mask: decode `image/object/mask` into `groundtruth_instance_masks`.

    Returns:
      A dict with
        - `source_id`: string scalar.
        - `image`: uint8 [H, W, 3] (grayscale and RGBA images converted to RGB).
        - `height`, `width`: int32 scalars.
        - `groundtruth_boxes`: float32 [N, 4], normalized [ymin, xmin, ymax, xmax].
        - `groundtruth_classes`: int64 [N].
        - `groundtruth_is_crowd`: bool [N].
        - `groundtruth_area`: float32 [N] (box area in pixels where the record has none).
        - `groundtruth_difficult`: bool [N] (false where the record has none).
        - `groundtruth_instance_masks`: uint8 0/1 [N, H, W] if `include_mask`.
    Raises:
      tf.errors.InvalidArgumentError: when per-object counts disagree, or the image, the
        record's image/height, image/width and the masks disagree on the size; the
        message carries the record's source id.
    """
    features = dict(_FEATURES)
    if include_mask:
        features.update(_MASK_FEATURE)
    parsed = tf.io.parse_single_example(serialized, features)
    source_id = parsed[schema.IMAGE_SOURCE_ID]
    image = decode_image(parsed[schema.IMAGE_ENCODED])
    height = tf.shape(image)[0]
    width = tf.shape(image)[1]
    record_hw = tf.cast(
        tf.stack([parsed[schema.IMAGE_HEIGHT], parsed[schema.IMAGE_WIDTH]]), tf.int32
    )
    checks = [
        _check(
            tf.reduce_all(
                tf.logical_or(tf.equal(record_hw, -1), tf.equal(record_hw, [height, width]))
            ),
            "image/height, image/width differ from the decoded image size",
            source_id,
            record_hw,
            tf.shape(image),
        )
    ]
    ymin, xmin, ymax, xmax = (
        _dense(parsed, k)
        for k in (schema.BBOX_YMIN, schema.BBOX_XMIN, schema.BBOX_YMAX, schema.BBOX_XMAX)
    )
    classes = _dense(parsed, schema.CLASS_LABEL)
    num = tf.shape(classes)[0]
    sizes = tf.stack([tf.size(ymin), tf.size(xmin), tf.size(ymax), tf.size(xmax)])
    checks.append(
        _check(
            tf.reduce_all(tf.equal(sizes, num)),
            "number of box coordinates differs from the number of class labels",
            source_id,
            sizes,
            num,
        )
    )
    with tf.control_dependencies(checks):
        boxes = tf.stack([ymin, xmin, ymax, xmax], axis=-1)
    box_area = (ymax - ymin) * (xmax - xmin) * tf.cast(height * width, tf.float32)
    area = _dense(parsed, schema.AREA)
    with tf.control_dependencies(checks):
        area = tf.cond(tf.size(area) > 0, lambda: area, lambda: box_area)
    checks.append(
        _check(
            tf.equal(tf.size(area), num),
            "image/object/area count differs from the number of objects",
            source_id,
            tf.size(area),
            num,
        )
    )
    is_crowd, check = _per_object(parsed, schema.IS_CROWD, num, tf.int64)
    checks.append(check)
    difficult, check = _per_object(parsed, schema.DIFFICULT, num, tf.int64)
    checks.append(check)
    decoded = {
        "source_id": source_id,
        "image": image,
        "height": height,
        "width": width,
        "groundtruth_boxes": boxes,
        "groundtruth_classes": classes,
        "groundtruth_is_crowd": tf.cast(is_crowd, tf.bool),
        "groundtruth_area": area,
        "groundtruth_difficult": tf.cast(difficult, tf.bool),
    }
    if include_mask:
        masks = decode_masks(_dense(parsed, schema.MASK), height, width, source_id)
        checks.append(
            _check(
                tf.reduce_all(tf.equal(tf.shape(masks), tf.stack([num, height, width]))),
                "instance masks [N, H, W] do not match the objects and the image size",
                source_id,
                tf.shape(masks),
                num,
                height,
                width,
            )
        )
        decoded["groundtruth_instance_masks"] = masks
    with tf.control_dependencies(checks):
        return {k: tf.identity(v) for k, v in decoded.items()}


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
    check = _check(
        tf.reduce_all(tf.equal(tf.shape(label)[:2], tf.shape(image)[:2])),
        "segmentation label size differs from the image size",
        parsed[schema.IMAGE_SOURCE_ID],
        tf.shape(label),
        tf.shape(image),
    )
    with tf.control_dependencies([check]):
        label = tf.identity(label)
    return {"source_id": parsed[schema.IMAGE_SOURCE_ID], "image": image, "label": label}

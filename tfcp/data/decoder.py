"""Decodes Model Garden TF Examples into the dict that `tfcp.ops.copy_paste` takes.

Unlike Model Garden's `TfExampleDecoder`, instance masks stay uint8 (4x less memory than
float32 at full resolution) and are 0/1 whatever the PNG holds (0/1 or 0/255, 8 or 16
bits). `decode` fails fast on a bad record with its source id and what is wrong
(`tfcp.data.record_checks`); `tfcp.data.validation.decode_checked` reports the same
problems instead of raising. Both share this module's steps: `parse` reads the features
once, the checks run on its output, `build` decodes.
"""

from __future__ import annotations

import tensorflow as tf

from tfcp.data import record_checks, schema

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


def parse(serialized: tf.Tensor, include_mask: bool) -> dict[str, tf.Tensor]:
    """Reads the features of one serialized example, without decoding anything.

    Args:
      serialized: scalar string tensor, a serialized `tf.train.Example`.
      include_mask: also read `image/object/mask`.

    Returns:
      A dict: `source_id`, `encoded` string scalars; `record_hw` int32 [2] (-1 where the
      record has no image/height, image/width); the four box coordinates under their
      feature keys, float32 [?] each; `classes` int64 [N] (N = number of class labels);
      `image/object/is_crowd`, `image/object/area`, `image/object/difficult` as stored
      ([0] when absent); `masks` string [M] if `include_mask`.
    """
    features = dict(_FEATURES)
    if include_mask:
        features.update(_MASK_FEATURE)
    parsed = tf.io.parse_single_example(serialized, features)
    fields = {key: _dense(parsed, key) for key in record_checks.COORDS + record_checks.OPTIONAL}
    fields["source_id"] = parsed[schema.IMAGE_SOURCE_ID]
    fields["encoded"] = parsed[schema.IMAGE_ENCODED]
    fields["record_hw"] = tf.cast(
        tf.stack([parsed[schema.IMAGE_HEIGHT], parsed[schema.IMAGE_WIDTH]]), tf.int32
    )
    fields["classes"] = _dense(parsed, schema.CLASS_LABEL)
    if include_mask:
        fields["masks"] = _dense(parsed, schema.MASK)
    return fields


def _assert_ok(problems, source_id):
    """An assertion whose InvalidArgumentError names the record's source id and the problem."""
    ok, reason = record_checks.first_problem(problems)
    return tf.debugging.Assert(ok, ["bad record; source_id:", source_id, reason])


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """Decodes JPEG/PNG/BMP/GIF bytes to uint8 RGB [H, W, 3] (grayscale and RGBA converted)."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def decode_masks(
    pngs: tf.Tensor, height: tf.Tensor, width: tf.Tensor, source_id: tf.Tensor | str = ""
) -> tf.Tensor:
    """Decodes PNG masks to uint8 0/1 masks of the image size.

    Any non-zero pixel is foreground: 0/1 and 0/255 masks, 8 or 16 bits, decode alike.

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
        # A 16-bit PNG decodes as uint16: uint8 would scale its 0/1 down to all zeros.
        header = tf.strings.join([tf.strings.substr(png, 0, 25), b"\0" * 25])
        mask = tf.cond(
            tf.equal(tf.strings.substr(header, 24, 1), b"\x10"),  # IHDR bit depth
            lambda: tf.cast(tf.io.decode_png(png, channels=1, dtype=tf.uint16) > 0, tf.uint8),
            lambda: tf.cast(tf.io.decode_png(png, channels=1) > 0, tf.uint8),
        )
        check = tf.debugging.Assert(
            tf.reduce_all(tf.equal(tf.shape(mask)[:2], tf.stack([height, width]))),
            ["instance mask size differs from the image size; source_id:", source_id]
            + [tf.shape(mask), height, width],
        )
        with tf.control_dependencies([check]):
            return mask[:, :, 0]

    return tf.cond(
        tf.size(pngs) > 0,
        lambda: tf.map_fn(_decode, pngs, fn_output_signature=tf.TensorSpec([None, None], tf.uint8)),
        lambda: tf.zeros([0, height, width], tf.uint8),
    )


def build(fields: dict[str, tf.Tensor], image: tf.Tensor) -> dict[str, tf.Tensor]:
    """The decoded example from a record without problems and its decoded image.

    Args:
      fields: `parse` output without `record_checks.structure_problems` (counts agree).
      image: uint8 [H, W, 3], `decode_image(fields['encoded'])`.

    Returns:
      The `decode` output (see there).
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    ymin, xmin, ymax, xmax = (fields[key] for key in record_checks.COORDS)
    classes = fields["classes"]
    num = tf.size(classes)

    def _optional(key, dtype, default):
        values = fields[key]
        return tf.cond(tf.size(values) > 0, lambda: tf.cast(values, dtype), lambda: default)

    box_area = (ymax - ymin) * (xmax - xmin) * tf.cast(height * width, tf.float32)
    decoded = {
        "source_id": fields["source_id"],
        "image": image,
        "height": height,
        "width": width,
        "groundtruth_boxes": tf.stack([ymin, xmin, ymax, xmax], axis=-1),
        "groundtruth_classes": classes,
        "groundtruth_is_crowd": _optional(schema.IS_CROWD, tf.bool, tf.zeros([num], tf.bool)),
        "groundtruth_area": _optional(schema.AREA, tf.float32, box_area),
        "groundtruth_difficult": _optional(schema.DIFFICULT, tf.bool, tf.zeros([num], tf.bool)),
    }
    if "masks" in fields:
        decoded["groundtruth_instance_masks"] = decode_masks(
            fields["masks"], height, width, fields["source_id"]
        )
    return decoded


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
      tf.errors.InvalidArgumentError: "bad record; source_id: <id> <reason>" when the image
        or a mask is empty, not a JPEG/PNG or truncated, per-object counts disagree, or the
        image, the record's image/height, image/width and the masks disagree on the size
        (`record_checks.REASONS`). Box values and class ids are not checked here
        (`validation.decode_checked` does).
    """
    fields = parse(serialized, include_mask)
    problems = record_checks.structure_problems(fields, check_values=False)
    check = _assert_ok(problems, fields["source_id"])
    with tf.control_dependencies([check]):
        image = decode_image(fields["encoded"])
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    check = _assert_ok(record_checks.size_problems(fields, height, width), fields["source_id"])
    with tf.control_dependencies([check]):
        decoded = build(fields, image)
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
    check = tf.debugging.Assert(
        tf.reduce_all(tf.equal(tf.shape(label)[:2], tf.shape(image)[:2])),
        [
            "segmentation label size differs from the image size; source_id:",
            parsed[schema.IMAGE_SOURCE_ID],
            tf.shape(label),
            tf.shape(image),
        ],
        summarize=16,
    )
    with tf.control_dependencies([check]):
        label = tf.identity(label)
    return {"source_id": parsed[schema.IMAGE_SOURCE_ID], "image": image, "label": label}


def drop_difficult(decoded: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Removes difficult objects (VOC's `difficult` flag) from every `groundtruth_*` field.

    Args:
      decoded: a `decode` output with `groundtruth_difficult` bool [N].

    Returns:
      The same dict with the N' non-difficult objects kept, in order.
    """
    keep = tf.where(tf.logical_not(decoded["groundtruth_difficult"]))[:, 0]
    return {
        key: tf.gather(value, keep) if key.startswith("groundtruth_") else value
        for key, value in decoded.items()
    }

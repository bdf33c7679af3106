"""Record validation that reports instead of raising: bad training records are named, not fatal.

`decode_checked` runs inside `tf.data` map functions (graph mode, unknown shapes) and never
raises on bad data: it checks the encoded bytes before decoding (a JPEG must start with
FFD8FF and hold an end-of-image marker after its last start-of-scan marker; a PNG, image or
mask, needs its signature, IHDR and IEND chunks), decodes only records that pass, and
checks counts, sizes, box values and class ids. A bad record yields `ok=False`, a reason in
words and a placeholder example of the same structure (`placeholder`), so the pipeline can
fail naming the record or skip and count it. Reasons (`record_checks.REASONS`, sizes are
height x width):

    empty image/encoded
    image/encoded is not a JPEG or PNG
    truncated JPEG (no end-of-image marker)
    truncated PNG (no IEND chunk)
    box coordinates: 3 ymin, 3 xmin, 2 ymax, 3 xmax for 3 class labels
    2 image/object/is_crowd values for 3 objects        (also area, difficult)
    2 masks for 3 boxes
    mask 1 is empty | mask 1 is not a PNG | mask 1 is a truncated PNG (no IEND chunk)
    box 2 is NaN | box 2 is infinite
    box 0 is inverted (ymin > ymax or xmin > xmax)
    class id 0 < 1 (object 2; 0 is background)
    class id 95 >= num_classes 91 (object 2)
    image is 48x64 but image/height, image/width say 50x64
    mask 1 is 32x40, image is 48x64

Class ids follow Model Garden (and both converters): 0 is background, objects have ids
1..num_classes - 1.

Limits: a record that is not a `tf.train.Example` with the schema's feature types still
raises in `tf.io.parse_single_example`, and an image or mask whose bytes are complete but
corrupt inside (a damaged PNG IDAT, a broken JPEG header) still raises in the decode: no
graph op decodes without raising. Neither comes out of the converters, which decode every
image and check every record with `record_checks.example_problem` before writing it;
TFRecord CRCs catch corruption after writing.

`record_checks.example_problem` is the same check in Python, for writers.
"""

from __future__ import annotations

import tensorflow as tf

from tfcp.data import decoder, record_checks


def placeholder(source_id: tf.Tensor, include_mask: bool) -> dict[str, tf.Tensor]:
    """A 1x1 black example with no objects, typed like `decoder.decode`'s output.

    Args:
      source_id: string scalar, kept so that the bad record can be named.
      include_mask: add `groundtruth_instance_masks` uint8 [0, 1, 1].

    Returns:
      The `decoder.decode` dict.
    """
    example = {
        "source_id": source_id,
        "image": tf.zeros([1, 1, 3], tf.uint8),
        "height": tf.constant(1, tf.int32),
        "width": tf.constant(1, tf.int32),
        "groundtruth_boxes": tf.zeros([0, 4], tf.float32),
        "groundtruth_classes": tf.zeros([0], tf.int64),
        "groundtruth_is_crowd": tf.zeros([0], tf.bool),
        "groundtruth_area": tf.zeros([0], tf.float32),
        "groundtruth_difficult": tf.zeros([0], tf.bool),
    }
    if include_mask:
        example["groundtruth_instance_masks"] = tf.zeros([0, 1, 1], tf.uint8)
    return example


def decode_checked(
    serialized: tf.Tensor, *, include_mask: bool, num_classes: int | None
) -> tuple[dict[str, tf.Tensor], tf.Tensor, tf.Tensor]:
    """Decodes one serialized example, or reports what is wrong with it; never raises on bad data.

    Args:
      serialized: scalar string tensor, a serialized `tf.train.Example`.
      include_mask: decode `image/object/mask` (and check the masks).
      num_classes: classes including background 0; ids must be in [1, num_classes). None
        checks only that ids are >= 1.

    Returns:
      (decoded, ok, reason):
        - decoded: when ok, exactly `decoder.decode(serialized, include_mask)`; otherwise
          `placeholder` (the record's `source_id`, a 1x1 image, no objects). Same
          structure and dtypes either way.
        - ok: bool scalar.
        - reason: string scalar, what is wrong ('' when ok); see the module docstring.
    """
    fields, ok, reason = _parse_and_check(serialized, include_mask, num_classes)

    def _bad(why):
        return placeholder(fields["source_id"], include_mask), tf.constant(False), why

    def _decode():
        image = decoder.decode_image(fields["encoded"])
        sizes_ok, why = record_checks.first_problem(
            record_checks.size_problems(fields, tf.shape(image)[0], tf.shape(image)[1])
        )
        return tf.cond(
            sizes_ok,
            lambda: (decoder.build(fields, image), tf.constant(True), tf.constant("")),
            lambda: _bad(why),
        )

    return tf.cond(ok, _decode, lambda: _bad(reason))


def check_record(
    serialized: tf.Tensor, *, include_mask: bool, num_classes: int | None
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """`decode_checked`'s verdict on one record, without decoding its pixels.

    The image size comes from the JPEG or PNG header (`record_checks.image_size_from_header`)
    instead of the decoded image; everything else is `decode_checked`'s checks. A pipeline
    uses it to drop bad records before it pairs them, and decodes the good ones later.

    Args:
      serialized: scalar string tensor, a serialized `tf.train.Example`.
      include_mask: check `image/object/mask` too.
      num_classes: as `decode_checked`'s.

    Returns:
      (source_id string [], ok bool [], reason string [], '' when ok).
    """
    fields, ok, reason = _parse_and_check(serialized, include_mask, num_classes)

    def _sizes():
        height_width = record_checks.image_size_from_header(fields["encoded"])
        return record_checks.first_problem(
            record_checks.size_problems(fields, height_width[0], height_width[1])
        )

    ok, reason = tf.cond(ok, _sizes, lambda: (ok, reason))
    return fields["source_id"], ok, reason


def _parse_and_check(serialized, include_mask, num_classes):
    """(`decoder.parse` fields, ok, reason) of everything that shows before decoding."""
    fields = decoder.parse(serialized, include_mask)
    problems = record_checks.structure_problems(fields, check_values=True, num_classes=num_classes)
    return (fields, *record_checks.first_problem(problems))


def format_error(
    record_name: tf.Tensor | str, decoded: dict[str, tf.Tensor] | tf.Tensor, reason: tf.Tensor
) -> tf.Tensor:
    """ "bad record {record_name} (source_id {source_id}): {reason}" as a string scalar.

    Args:
      record_name: string scalar naming the record (e.g. "train-00003.tfrecord:17").
      decoded: `decode_checked`'s example (for its `source_id`), or the source id itself.
      reason: `decode_checked`'s reason.
    """
    source_id = decoded["source_id"] if isinstance(decoded, dict) else decoded
    return tf.strings.join(["bad record ", record_name, " (source_id ", source_id, "): ", reason])

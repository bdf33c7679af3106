"""What can be wrong with a parsed training record, as graph-mode checks that never raise.

Shared by `tfcp.data.decoder.decode` (which asserts them, naming the record's source id)
and `tfcp.data.validation.decode_checked` (which reports them). They run on the output of
`decoder.parse`, inside `tf.data` map functions, with unknown shapes: `structure_problems`
before anything is decoded (the bytes of the image and the masks, counts, box values, class
ids), `size_problems` once the image is decoded. Each problem is (bad: bool scalar,
reason: a function building the string); `first_problem` builds only the reason it reports.

Records hold JPEG or PNG images (`schema.py`). A JPEG is complete when an end-of-image
marker (FFD9) follows its last start-of-scan marker (FFDA), so bytes after the image are
fine; a PNG (image or mask) when it holds the IEND chunk. Mask sizes come from their IHDR
chunk, before decoding. Class ids follow Model Garden: 0 is background, objects have ids
1..num_classes - 1.

`example_problem` and `encoded_image_problem` are the same checks in Python, with the same
reasons, for writers (the converters) to refuse what training would reject.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

import tensorflow as tf

from tfcp.data import schema

Problem = tuple[tf.Tensor, Callable[[], tf.Tensor]]  # (bad: bool [], reason: () -> string [])
COORDS = (schema.BBOX_YMIN, schema.BBOX_XMIN, schema.BBOX_YMAX, schema.BBOX_XMAX)
OPTIONAL = (schema.IS_CROWD, schema.AREA, schema.DIFFICULT)
JPEG_SOI = b"\xff\xd8\xff"
JPEG_SOS = b"\xff\xda"
JPEG_EOI = b"\xff\xd9"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the whole chunk: length, type, CRC

# What is wrong with a record, in words; `{}` are integers (sizes are height x width).
# `tfcp.data.validation` formats the same templates in Python.
REASONS = {
    "empty_image": "empty image/encoded",
    "not_jpeg_png": "image/encoded is not a JPEG or PNG",
    "truncated_jpeg": "truncated JPEG (no end-of-image marker)",
    "truncated_png": "truncated PNG (no IEND chunk)",
    "box_counts": "box coordinates: {} ymin, {} xmin, {} ymax, {} xmax for {} class labels",
    "feature_count": "{} %s values for {} objects",
    "mask_count": "{} masks for {} boxes",
    "empty_mask": "mask {} is empty",
    "not_png_mask": "mask {} is not a PNG",
    "truncated_mask": "mask {} is a truncated PNG (no IEND chunk)",
    "nan_box": "box {} is NaN",
    "inf_box": "box {} is infinite",
    "inverted_box": "box {} is inverted (ymin > ymax or xmin > xmax)",
    "class_too_small": "class id {} < 1 (object {}; 0 is background)",
    "class_too_large": "class id {} >= num_classes {} (object {})",
    "record_size": "image is {}x{} but image/height, image/width say {}x{}",
    "mask_size": "mask {} is {}x{}, image is {}x{}",
}


def _reason(key, *values, template=None):
    """A function building the reason; `first_problem` calls it only for bad records."""
    return lambda: tf.strings.format(
        template or REASONS[key], [tf.cast(v, tf.int64) for v in values]
    )


def _first(bad):
    """Index (int32) of the first true element of bool [N], N when there is none."""
    found = tf.cast(tf.where(bad)[:, 0], tf.int32)
    return tf.reduce_min(tf.concat([found, [tf.size(bad)]], 0))


def _at(values, index):
    """values[index] with one zero row appended, so index N is valid (for messages)."""
    pad = tf.zeros(tf.concat([[1], tf.shape(values)[1:]], 0), values.dtype)
    return tf.gather(tf.concat([values, pad], 0), index)


def _per_item(bad, key, values=None):
    """(any bad, reason function naming the first bad item); `values(index)` fill the template."""

    def reason():
        index = _first(bad)
        return _reason(key, *(values(index) if values else [index]))()

    return tf.reduce_any(bad), reason


def _ends_with(strings, suffix):
    """bool, per string: ends with the bytes `suffix` (shorter strings do not)."""
    start = tf.maximum(tf.strings.length(strings) - len(suffix), 0)
    return tf.equal(
        tf.strings.substr(strings, start, tf.fill(tf.shape(start), len(suffix))), suffix
    )


def _searched(encoded, jpeg):
    """JPEG: an EOI after the last SOS. PNG: the IEND chunk anywhere (copies the bytes)."""
    if jpeg:
        scans = tf.strings.split(encoded, sep=JPEG_SOS)
        tail = tf.strings.split(scans[-1], sep=JPEG_EOI)
        return tf.logical_and(tf.size(scans) > 1, tf.size(tail) > 1)
    return tf.size(tf.strings.split(encoded, sep=PNG_IEND)) > 1


def _image_problems(encoded):
    is_jpeg = tf.equal(tf.strings.substr(encoded, 0, 3), JPEG_SOI)
    is_png = tf.equal(tf.strings.substr(encoded, 0, 8), PNG_SIGNATURE)
    # The usual file ends with its marker; only other files are searched.
    jpeg_ok = tf.cond(
        is_jpeg & tf.logical_not(_ends_with(encoded, JPEG_EOI)),
        lambda: _searched(encoded, jpeg=True),
        lambda: tf.constant(True),
    )
    png_ok = tf.cond(
        is_png & tf.logical_not(_ends_with(encoded, PNG_IEND)),
        lambda: _searched(encoded, jpeg=False),
        lambda: tf.constant(True),
    )
    return [
        (tf.equal(tf.strings.length(encoded), 0), _reason("empty_image")),
        (tf.logical_not(is_jpeg | is_png), _reason("not_jpeg_png")),
        (tf.logical_not(jpeg_ok), _reason("truncated_jpeg")),
        (tf.logical_not(png_ok), _reason("truncated_png")),
    ]


def _png_headers(pngs):
    """(bool [M] signature and IHDR present, int32 [M, 2] IHDR (height, width))."""
    header = tf.strings.join([tf.strings.substr(pngs, 0, 24), b"\0" * 24])
    valid = tf.equal(tf.strings.substr(header, 0, 8), PNG_SIGNATURE) & tf.equal(
        tf.strings.substr(header, 12, 4), b"IHDR"
    )
    width_height = tf.reshape(
        tf.io.decode_raw(tf.strings.substr(header, 16, 8), tf.int32, little_endian=False), [-1, 2]
    )
    return valid, tf.reverse(width_height, [1])


def image_size_from_header(encoded: tf.Tensor) -> tf.Tensor:
    """The (height, width) of a JPEG or PNG image from its header, without decoding it.

    Args:
      encoded: string [], the image bytes; `structure_problems` found nothing wrong with them.

    Returns:
      int32 [2], what decoding the image gives as its first two dimensions.
    """
    is_png = tf.equal(tf.strings.substr(encoded, 0, 8), PNG_SIGNATURE)
    return tf.cond(
        is_png,
        lambda: _png_headers(tf.reshape(encoded, [1]))[1][0],
        lambda: tf.image.extract_jpeg_shape(encoded)[:2],
    )


def _fit(values, num):
    """`values` cut or zero-padded to `num` elements, so checks run on miscounted records."""
    return tf.concat([values, tf.zeros([num], values.dtype)], 0)[:num]


def structure_problems(
    fields: dict[str, tf.Tensor], *, check_values: bool, num_classes: int | None = None
) -> list[Problem]:
    """Everything wrong with a parsed record that shows before decoding, in report order.

    Args:
      fields: `parse` output.
      check_values: also check box values (NaN, infinite, inverted) and class ids
        (< 1, >= `num_classes`).
      num_classes: classes including background (0); None = no upper bound.

    Returns:
      A list of (bad: bool scalar, reason: function returning the string scalar, built
      by `first_problem` only when needed). Nothing here raises on bad data.
    """
    classes = fields["classes"]
    num = tf.size(classes)
    problems = _image_problems(fields["encoded"])
    sizes = [tf.size(fields[key]) for key in COORDS]
    problems.append((tf.reduce_any(tf.not_equal(sizes, num)), _reason("box_counts", *sizes, num)))
    for key in OPTIONAL:
        size = tf.size(fields[key])
        template = REASONS["feature_count"] % key
        bad = tf.logical_and(size > 0, tf.not_equal(size, num))
        problems.append((bad, _reason("", size, num, template=template)))
    if "masks" in fields:
        pngs = fields["masks"]
        problems.append(
            (tf.not_equal(tf.size(pngs), num), _reason("mask_count", tf.size(pngs), num))
        )
        empty = tf.equal(tf.strings.length(pngs), 0)
        valid, _ = _png_headers(pngs)
        ends = _ends_with(pngs, PNG_IEND)
        complete = tf.cond(
            tf.reduce_all(ends),
            lambda: ends,
            lambda: tf.strings.split(pngs, sep=PNG_IEND).row_lengths() > 1,
        )
        problems.append(_per_item(empty, "empty_mask"))
        problems.append(_per_item(tf.logical_not(valid), "not_png_mask"))
        problems.append(_per_item(tf.logical_not(complete), "truncated_mask"))
    if check_values:
        boxes = tf.stack([_fit(fields[key], num) for key in COORDS], axis=-1)
        problems.append(_per_item(tf.reduce_any(tf.math.is_nan(boxes), -1), "nan_box"))
        problems.append(_per_item(tf.reduce_any(tf.math.is_inf(boxes), -1), "inf_box"))
        inverted = (boxes[:, 0] > boxes[:, 2]) | (boxes[:, 1] > boxes[:, 3])
        problems.append(_per_item(inverted, "inverted_box"))
        problems.append(_per_item(classes < 1, "class_too_small", lambda i: (_at(classes, i), i)))
        if num_classes is not None:
            problems.append(
                _per_item(
                    classes >= num_classes,
                    "class_too_large",
                    lambda i: (_at(classes, i), num_classes, i),
                )
            )
    return problems


def size_problems(
    fields: dict[str, tf.Tensor], height: tf.Tensor, width: tf.Tensor
) -> list[Problem]:
    """The decoded image size against image/height, image/width and the mask PNG headers.

    Args:
      fields: `parse` output whose `structure_problems` are all false.
      height: int32 scalar, the decoded image height.
      width: int32 scalar, the decoded image width.

    Returns:
      A list of (bad, reason) as `structure_problems`.
    """
    record_hw = fields["record_hw"]
    bad = tf.reduce_any(
        tf.not_equal(record_hw, -1) & tf.not_equal(record_hw, tf.stack([height, width]))
    )
    problems = [(bad, _reason("record_size", height, width, record_hw[0], record_hw[1]))]
    if "masks" in fields:
        _, mask_hw = _png_headers(fields["masks"])
        wrong = tf.not_equal(mask_hw[:, 0], height) | tf.not_equal(mask_hw[:, 1], width)
        problems.append(
            _per_item(
                wrong,
                "mask_size",
                lambda i: (i, _at(mask_hw, i)[0], _at(mask_hw, i)[1], height, width),
            )
        )
    return problems


def first_problem(problems: list[Problem]) -> tuple[tf.Tensor, tf.Tensor]:
    """(ok: bool scalar, reason: string scalar of the first bad problem, '' when ok).

    The reasons are only built (a few string ops each) when a problem is bad.
    """
    ok = tf.logical_not(tf.reduce_any(tf.stack([bad for bad, _ in problems])))

    def _reason():
        reason = tf.constant("")
        for bad, text in reversed(problems):
            reason = tf.where(bad, text(), reason)
        return reason

    return ok, tf.cond(ok, lambda: tf.constant(""), _reason)


# The same checks in Python, for writers.


def encoded_image_problem(encoded: bytes) -> str:
    """What is wrong with image bytes as the graph checks see them ('' when fine)."""
    if not encoded:
        return REASONS["empty_image"]
    if encoded.startswith(JPEG_SOI):
        sos = encoded.rfind(JPEG_SOS)
        if encoded.endswith(JPEG_EOI) or 0 <= sos < encoded.find(JPEG_EOI, sos + 2):
            return ""
        return REASONS["truncated_jpeg"]
    if encoded.startswith(PNG_SIGNATURE):
        return "" if PNG_IEND in encoded else REASONS["truncated_png"]
    return REASONS["not_jpeg_png"]


def _first_reason(key: str, items, *values) -> str:
    """The reason for the first true item of `items` (a bool per object), or ''."""
    for index, bad in enumerate(items):
        if bad:
            return REASONS[key].format(*(v(index) for v in values) if values else [index])
    return ""


def _png_header(png: bytes) -> tuple[bool, int, int]:
    """(signature and IHDR present, height, width) from the first 24 bytes."""
    header = png[:24].ljust(24, b"\0")
    width, height = struct.unpack(">ii", header[16:24])
    return header[:8] == PNG_SIGNATURE and header[12:16] == b"IHDR", height, width


def example_problem(example: tf.train.Example, *, num_classes: int | None = None) -> str:
    """What `validation.decode_checked` would report for `example` ('' when fine).

    For writers (the converters) to refuse bad records. The image size is taken from
    image/height, image/width; masks are checked when the record has the mask feature.

    Args:
      example: the example to write.
      num_classes: classes including background 0, or None for no upper bound.

    Returns:
      The first reason of the module docstring that applies, or ''.
    """
    feature = example.features.feature

    def values(key):
        if key not in feature:
            return []
        kind = feature[key].WhichOneof("kind")
        return list(getattr(feature[key], kind).value) if kind else []

    problem = encoded_image_problem(b"".join(values(schema.IMAGE_ENCODED)[:1]))
    if problem:
        return problem
    classes = values(schema.CLASS_LABEL)
    num = len(classes)
    coords = [values(key) for key in COORDS]
    if any(len(c) != num for c in coords):
        return REASONS["box_counts"].format(*(len(c) for c in coords), num)
    for key in OPTIONAL:
        size = len(values(key))
        if size and size != num:
            return (REASONS["feature_count"] % key).format(size, num)
    pngs = values(schema.MASK)
    if schema.MASK in feature and len(pngs) != num:
        return REASONS["mask_count"].format(len(pngs), num)
    headers = [_png_header(png) for png in pngs]
    boxes = list(zip(*coords, strict=True))
    problems = [
        _first_reason("empty_mask", [not png for png in pngs]),
        _first_reason("not_png_mask", [not valid for valid, _, _ in headers]),
        _first_reason("truncated_mask", [PNG_IEND not in png for png in pngs]),
        _first_reason("nan_box", [any(map(math.isnan, box)) for box in boxes]),
        _first_reason("inf_box", [any(map(math.isinf, box)) for box in boxes]),
        _first_reason("inverted_box", [box[0] > box[2] or box[1] > box[3] for box in boxes]),
        _first_reason("class_too_small", [c < 1 for c in classes], classes.__getitem__, int),
    ]
    if num_classes is not None:
        problems.append(
            _first_reason(
                "class_too_large",
                [c >= num_classes for c in classes],
                classes.__getitem__,
                lambda _: num_classes,
                int,
            )
        )
    height, width = ((values(k) or [-1])[0] for k in (schema.IMAGE_HEIGHT, schema.IMAGE_WIDTH))
    problems.append(
        _first_reason(
            "mask_size",
            [(h, w) != (height, width) and height >= 0 for _, h, w in headers],
            int,
            lambda i: headers[i][1],
            lambda i: headers[i][2],
            lambda _: height,
            lambda _: width,
        )
    )
    return next((p for p in problems if p), "")

"""Tiny TFRecord files of good records and bad ones, one bad kind per record (a test helper).

    from tests import bad_records   # (tests/*_test.py at the top level: import bad_records)
    written = bad_records.write_records(path, ["good", "nan_box", "good", "bad_class"])
    written.bad_indices  -> (1, 3)
    written.bad_kinds    -> ("nan_box", "bad_class")
    written.reasons[1]   -> "box 1 is NaN"  (what `validation.decode_checked` reports)

Records follow the Model Garden TF Example schema (`tfcp.data.schema.make_example`): a
JPEG of `image_size` x `image_size` pixels, gray with two colored rectangles (objects 0 and
1) and their 0/1 PNG masks, class ids in 1..num_classes - 1, source id "<index>-<kind>".
A bad record differs from a good one only by what its kind names (in object 1 for the
per-object kinds).
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import tensorflow as tf
from PIL import Image

from tfcp.data import schema

# kind -> expected reason; {size}, {half} and {num_classes} are filled in by `expected_reason`.
_REASONS = {
    "good": "",
    "mask_count": "1 masks for 2 boxes",
    "mask_size": "mask 1 is {half}x{size}, image is {size}x{size}",
    "empty_image": "empty image/encoded",
    "not_an_image": "image/encoded is not a JPEG or PNG",
    "truncated_jpeg": "truncated JPEG (no end-of-image marker)",
    "truncated_png": "truncated PNG (no IEND chunk)",
    "corrupt_mask": "mask 1 is a truncated PNG (no IEND chunk)",
    "nan_box": "box 1 is NaN",
    "inverted_box": "box 1 is inverted (ymin > ymax or xmin > xmax)",
    "bad_class": "class id {num_classes} >= num_classes {num_classes} (object 1)",
    "background_class": "class id 0 < 1 (object 1; 0 is background)",
    "size_field": "image is {size}x{size} but image/height, image/width say {plus}x{size}",
}
KINDS = tuple(_REASONS)
BAD_KINDS = KINDS[1:]
MASK_KINDS = ("mask_count", "mask_size", "corrupt_mask")


@dataclasses.dataclass(frozen=True)
class RecordFile:
    """What `write_records` wrote.

    Attributes:
      path: the TFRecord file.
      kinds: the kind of every record, in file order.
      source_ids: the source id of every record.
      reasons: the reason `decode_checked` gives for every record ('' for good ones).
      bad_indices: indices of the bad records in the file, in order.
      bad_kinds: their kinds.
    """

    path: str
    kinds: tuple[str, ...]
    source_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    bad_indices: tuple[int, ...]
    bad_kinds: tuple[str, ...]


def expected_reason(kind: str, image_size: int = 64, num_classes: int = 4) -> str:
    """The reason `validation.decode_checked` reports for a record of `kind`."""
    return _REASONS[kind].format(
        size=image_size, half=image_size // 2, plus=image_size + 1, num_classes=num_classes
    )


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, quality=95)
    return buffer.getvalue()


def make_example(
    kind: str, index: int = 0, *, image_size: int = 64, num_classes: int = 4, include_masks=True
) -> tf.train.Example:
    """One record of `kind` (see `KINDS`); `index` varies the scene and names the record."""
    if kind not in _REASONS:
        raise ValueError(f"unknown kind {kind!r}; kinds are {KINDS}")
    if kind in MASK_KINDS and not include_masks:
        raise ValueError(f"kind {kind!r} needs include_masks=True")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (0 is background), got {num_classes}")
    size = image_size
    if size < 16:
        raise ValueError(f"image_size must be >= 16, got {size}")
    image = np.full([size, size, 3], 128, np.uint8)
    masks = np.zeros([2, size, size], np.uint8)
    shift = index % max(size // 8, 1)
    rects = [
        (size // 8 + shift, size // 8, size // 2 + shift, size // 2),  # y0, x0, y1, x1
        (size // 2, size // 2 - shift, size - size // 8, size - size // 8 - shift),
    ]
    for k, (y0, x0, y1, x1) in enumerate(rects):
        image[y0:y1, x0:x1] = [(200, 40, 40), (40, 40, 200)][k]
        masks[k, y0:y1, x0:x1] = 1
    boxes = np.array(rects, np.float32) / size
    classes = [1 + (index + k) % (num_classes - 1) for k in range(2)]
    fmt = "png" if kind == "truncated_png" else "jpeg"
    example = schema.make_example(
        encoded_image=_encode(image, fmt.upper()),
        image_format=fmt,
        height=size,
        width=size,
        source_id=f"{index}-{kind}",
        boxes=boxes,
        classes=classes,
        is_crowd=[0, 0],
        areas=[float(m.sum()) for m in masks],
        masks=masks if include_masks else None,
    )
    feature = example.features.feature
    encoded = feature[schema.IMAGE_ENCODED].bytes_list.value
    pngs = feature[schema.MASK].bytes_list.value
    if kind == "mask_count":
        del pngs[1]
    elif kind == "mask_size":
        pngs[1] = schema.encode_png(masks[1, : size // 2])
    elif kind == "corrupt_mask":
        pngs[1] = pngs[1][: len(pngs[1]) // 2]
    elif kind == "empty_image":
        encoded[0] = b""
    elif kind == "not_an_image":
        encoded[0] = b"GIF89a" + bytes(64)
    elif kind in ("truncated_jpeg", "truncated_png"):
        encoded[0] = encoded[0][: len(encoded[0]) * 2 // 3]
    elif kind == "nan_box":
        feature[schema.BBOX_YMIN].float_list.value[1] = float("nan")
    elif kind == "inverted_box":
        ymin = feature[schema.BBOX_YMIN].float_list.value
        ymax = feature[schema.BBOX_YMAX].float_list.value
        ymin[1], ymax[1] = ymax[1], ymin[1]
    elif kind == "bad_class":
        feature[schema.CLASS_LABEL].int64_list.value[1] = num_classes
    elif kind == "background_class":
        feature[schema.CLASS_LABEL].int64_list.value[1] = 0
    elif kind == "size_field":
        feature[schema.IMAGE_HEIGHT].int64_list.value[0] = size + 1
    return example


def write_records(
    path: str,
    kinds: list[str] | tuple[str, ...] = KINDS,
    *,
    image_size: int = 64,
    num_classes: int = 4,
    include_masks: bool = True,
) -> RecordFile:
    """Writes one record per entry of `kinds` to the TFRecord file `path`.

    Args:
      path: output file (its directory must exist).
      kinds: 'good' or a bad kind of `BAD_KINDS` per record, in file order.
      image_size: images are image_size x image_size JPEGs (>= 16).
      num_classes: classes including background 0; good records use ids 1..num_classes - 1,
        'bad_class' uses num_classes.
      include_masks: write instance masks (the mask kinds need them).

    Returns:
      A `RecordFile`.
    """
    with tf.io.TFRecordWriter(path) as writer:
        for index, kind in enumerate(kinds):
            example = make_example(
                kind,
                index,
                image_size=image_size,
                num_classes=num_classes,
                include_masks=include_masks,
            )
            writer.write(example.SerializeToString())
    bad = [(i, k) for i, k in enumerate(kinds) if k != "good"]
    return RecordFile(
        path=path,
        kinds=tuple(kinds),
        source_ids=tuple(f"{i}-{k}" for i, k in enumerate(kinds)),
        reasons=tuple(expected_reason(k, image_size, num_classes) for k in kinds),
        bad_indices=tuple(i for i, _ in bad),
        bad_kinds=tuple(k for _, k in bad),
    )

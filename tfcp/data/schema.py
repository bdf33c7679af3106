"""Model Garden's TF Example schema for detection and segmentation records.

The keys are the ones `official.vision.dataloaders.tf_example_decoder.TfExampleDecoder`
and `official.vision.dataloaders.segmentation_input.Decoder` read, plus
`image/object/difficult` (PASCAL VOC) and `image/object/class/text`. Instance masks are
PNG-encoded uint8 images with values 0/1, at the full image resolution.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from PIL import Image

IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_SOURCE_ID = "image/source_id"
IMAGE_FILENAME = "image/filename"
IMAGE_KEY_SHA256 = "image/key/sha256"
BBOX_XMIN = "image/object/bbox/xmin"
BBOX_XMAX = "image/object/bbox/xmax"
BBOX_YMIN = "image/object/bbox/ymin"
BBOX_YMAX = "image/object/bbox/ymax"
CLASS_LABEL = "image/object/class/label"
CLASS_TEXT = "image/object/class/text"
IS_CROWD = "image/object/is_crowd"
AREA = "image/object/area"
MASK = "image/object/mask"
DIFFICULT = "image/object/difficult"
SEGMENTATION_ENCODED = "image/segmentation/class/encoded"
SEGMENTATION_FORMAT = "image/segmentation/class/format"


def _bytes(values: Sequence[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _floats(values) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def _ints(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def encode_png(array: np.ndarray) -> bytes:
    """PNG-encodes a uint8 array of shape [H, W] (grayscale) or [H, W, 3] (RGB).

    Args:
      array: uint8 numpy array.

    Returns:
      The PNG bytes.
    """
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_example(
    *,
    encoded_image: bytes,
    image_format: str,
    height: int,
    width: int,
    source_id: str,
    filename: str = "",
    boxes: np.ndarray | None = None,
    classes: Sequence[int] = (),
    class_texts: Sequence[str] | None = None,
    is_crowd: Sequence[int] | None = None,
    areas: Sequence[float] | None = None,
    masks: np.ndarray | None = None,
    difficult: Sequence[int] | None = None,
    segmentation_png: bytes | None = None,
) -> tf.train.Example:
    """Builds one Model Garden TF Example.

    Args:
      encoded_image: the JPEG/PNG bytes of the image, stored as they are (no re-encode).
      image_format: 'jpeg' or 'png'.
      height: image height in pixels.
      width: image width in pixels.
      source_id: unique id of the image (COCO image id as a string, VOC file stem).
      filename: the image's file name.
      boxes: float array [N, 4] of normalized [ymin, xmin, ymax, xmax] in [0, 1].
      classes: N integer class ids.
      class_texts: optional N class names.
      is_crowd: optional N 0/1 crowd flags.
      areas: optional N areas in pixels (mask area, as COCO's `area`).
      masks: optional uint8 array [N, H, W] of 0/1 instance masks (PNG-encoded here).
      difficult: optional N 0/1 VOC difficult flags.
      segmentation_png: optional PNG of the semantic label map (VOC segmentation).

    Returns:
      A `tf.train.Example`.
    """
    boxes = np.zeros([0, 4], np.float32) if boxes is None else np.asarray(boxes, np.float32)
    num = len(classes)
    if boxes.shape != (num, 4):
        raise ValueError(f"{source_id}: boxes shape {boxes.shape} does not match {num} classes")
    feature = {
        IMAGE_ENCODED: _bytes([encoded_image]),
        IMAGE_FORMAT: _bytes([image_format.encode()]),
        IMAGE_HEIGHT: _ints([height]),
        IMAGE_WIDTH: _ints([width]),
        IMAGE_SOURCE_ID: _bytes([str(source_id).encode()]),
        IMAGE_FILENAME: _bytes([filename.encode()]),
        IMAGE_KEY_SHA256: _bytes([hashlib.sha256(encoded_image).hexdigest().encode()]),
        BBOX_YMIN: _floats(boxes[:, 0]),
        BBOX_XMIN: _floats(boxes[:, 1]),
        BBOX_YMAX: _floats(boxes[:, 2]),
        BBOX_XMAX: _floats(boxes[:, 3]),
        CLASS_LABEL: _ints(classes),
    }
    optional = {
        CLASS_TEXT: class_texts,
        IS_CROWD: is_crowd,
        AREA: areas,
        DIFFICULT: difficult,
    }
    for key, values in optional.items():
        if values is None:
            continue
        if len(values) != num:
            raise ValueError(f"{source_id}: {key} has {len(values)} values for {num} objects")
        if key == CLASS_TEXT:
            feature[key] = _bytes([t.encode() for t in values])
        elif key == AREA:
            feature[key] = _floats(values)
        else:
            feature[key] = _ints(values)
    if masks is not None:
        masks = np.asarray(masks)
        if masks.shape != (num, height, width):
            raise ValueError(
                f"{source_id}: masks shape {masks.shape} != ({num}, {height}, {width})"
            )
        feature[MASK] = _bytes([encode_png((m > 0).astype(np.uint8)) for m in masks])
    if segmentation_png is not None:
        feature[SEGMENTATION_ENCODED] = _bytes([segmentation_png])
        feature[SEGMENTATION_FORMAT] = _bytes([b"png"])
    return tf.train.Example(features=tf.train.Features(feature=feature))


def image_format_of(encoded: bytes) -> str | None:
    """'jpeg' or 'png' from the file's magic bytes, or None for anything else."""
    if encoded[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if encoded[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return None


def verify_image(encoded: bytes) -> tuple[str, int, int]:
    """Fully decodes JPEG/PNG bytes to check them.

    Args:
      encoded: the file's bytes.

    Returns:
      (format, height, width) with format 'jpeg' or 'png'.

    Raises:
      ValueError: the bytes are not a JPEG/PNG, or are truncated or corrupt.
    """
    image_format = image_format_of(encoded)
    if image_format is None:
        raise ValueError("not a JPEG or PNG file (unknown magic bytes)")
    try:
        with Image.open(io.BytesIO(encoded)) as image:
            image.load()
            width, height = image.size
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"corrupt {image_format.upper()}: {e}") from e
    return image_format, height, width

"""PASCAL VOC (detection XML or segmentation PNG) -> Model Garden TFRecords.

`voc_root` is a `VOCdevkit` folder containing `VOC2007/` and/or `VOC2012/`, each with
`JPEGImages/`, `Annotations/`, `SegmentationClass/` and `ImageSets/{Main,Segmentation}/`.

Conventions:
- classes: 1..20 in VOC's alphabetical order (aeroplane=1 ... tvmonitor=20), 0 = background.
  `{output_prefix}_label_map.json` maps id -> name (with 0 for segmentation).
- boxes: VOC XML boxes are 1-based inclusive pixel indices; pixel `i` covers the
  continuous interval `[i - 1, i]`. A box therefore spans `[xmin - 1, xmax]`, stored
  normalized as `[(ymin - 1) / H, (xmin - 1) / W, ymax / H, xmax / W]`. The inverse is
  exact: `xmin = xmin_n * W + 1`, `xmax = xmax_n * W`. Box area = `(xmax - xmin + 1) *
  (ymax - ymin + 1)` pixels.
- detection records keep every object, with `image/object/difficult` (absent in the XML ->
  0, as in some VOC2012 files) and `image/object/class/text`; `is_crowd` is 0.
- segmentation records hold `image/segmentation/class/encoded`: a grayscale PNG of the
  class indices of `SegmentationClass/<id>.png` (palette indices; 255 = ignore, kept).
- `source_id` is the image id (`000005`, `2008_000008`), unique across VOC2007 and VOC2012.
- images are stored as their original JPEG bytes (no re-encode).

Bad input:
- errors (`ConversionError` naming the XML/PNG/image file): a missing or malformed XML
  field, an object name that is not a VOC class, a box entirely outside the image, an
  image size that differs from the XML's, a label PNG that is not palette/grayscale, has
  another size than the image or values outside 0..20 and 255, a missing split file or
  XML, a missing or corrupt image file (unless `skip_bad_images`).
- counted skips with a warning: boxes with `xmax < xmin` or `ymax < ymin`; images with a
  missing/corrupt file or wrong size when `skip_bad_images`. Corrupt includes bytes that
  PIL decodes but TensorFlow does not (`tfcp.data.record_checks.encoded_image_problem`).
- counted repairs: boxes partly outside the image are clipped to it.
- so no record that training's `tfcp.data.validation.decode_checked` rejects is written
  (finite, non-inverted boxes; class ids 1..20); each record is checked once more with
  `record_checks.example_problem` before it is written.
"""

from __future__ import annotations

import dataclasses
import io
import os
import xml.etree.ElementTree as ET
from typing import TextIO

import numpy as np
import tensorflow as tf
from PIL import Image

from tfcp.data import record_checks, schema
from tfcp.data.converters.tfrecord_io import (
    ConversionError,
    ConversionSummary,
    ConvertedImage,
    write_json,
    write_sharded,
)
from tfcp.data.voc_classes import VOC_CLASSES

CLASS_ID = {name: i + 1 for i, name in enumerate(VOC_CLASSES)}
IGNORE_LABEL = 255
YEARS = ("2007", "2012")
SPLITS = ("train", "val", "trainval", "test")
TASKS = ("detection", "segmentation")


def label_map(task: str) -> dict[int, str]:
    """{class id: name}: 1..20 for detection, plus 0 = background for segmentation."""
    names = {i + 1: name for i, name in enumerate(VOC_CLASSES)}
    return {0: "background", **names} if task == "segmentation" else names


@dataclasses.dataclass(frozen=True)
class VocObject:
    name: str
    difficult: int
    xmin: float
    ymin: float
    xmax: float
    ymax: float


@dataclasses.dataclass(frozen=True)
class VocAnnotation:
    width: int
    height: int
    objects: tuple[VocObject, ...]


def _text(element: ET.Element, path: str, xml_path: str, where: str) -> str:
    found = element.find(path)
    if found is None or found.text is None or not found.text.strip():
        raise ConversionError(f"{xml_path}: {where}missing field <{path}>")
    return found.text.strip()


def _number(element: ET.Element, path: str, xml_path: str, where: str) -> float:
    text = _text(element, path, xml_path, where)
    try:
        value = float(text)
    except ValueError as e:
        raise ConversionError(f"{xml_path}: {where}<{path}> is not a number: {text!r}") from e
    if not np.isfinite(value):
        raise ConversionError(f"{xml_path}: {where}<{path}> is not finite: {text!r}")
    return value


def parse_voc_xml(xml_path: str) -> VocAnnotation:
    """Parses a VOC `Annotations/<id>.xml`.

    Raises:
      ConversionError: unreadable XML, a missing or non-numeric field, an unknown class
        name, a `difficult` flag other than 0/1; the message names the file and object.
    """
    try:
        with tf.io.gfile.GFile(xml_path, "rb") as f:
            root = ET.fromstring(f.read())
    except tf.errors.NotFoundError as e:
        raise ConversionError(f"{xml_path}: annotation file not found") from e
    except ET.ParseError as e:
        raise ConversionError(f"{xml_path}: malformed XML: {e}") from e
    width = _number(root, "size/width", xml_path, "")
    height = _number(root, "size/height", xml_path, "")
    if width <= 0 or height <= 0 or width != int(width) or height != int(height):
        raise ConversionError(f"{xml_path}: bad image size {width}x{height}")
    objects = []
    for index, obj in enumerate(root.findall("object")):
        where = f"object #{index}: "
        name = _text(obj, "name", xml_path, where)
        if name not in CLASS_ID:
            raise ConversionError(f"{xml_path}: {where}'{name}' is not a VOC class")
        difficult = 0
        if obj.find("difficult") is not None:
            difficult = _number(obj, "difficult", xml_path, where)
            if difficult not in (0, 1):
                raise ConversionError(f"{xml_path}: {where}difficult must be 0 or 1")
        coords = [
            _number(obj, f"bndbox/{k}", xml_path, where) for k in ("xmin", "ymin", "xmax", "ymax")
        ]
        objects.append(VocObject(name, int(difficult), *coords))
    return VocAnnotation(int(width), int(height), tuple(objects))


def normalized_box(
    obj: VocObject, height: int, width: int, where: str
) -> tuple[list[float] | None, bool]:
    """A VOC box (1-based inclusive pixels) -> normalized [ymin, xmin, ymax, xmax], clipped.

    Returns:
      (box, clipped): box is None when `xmax < xmin` or `ymax < ymin`.

    Raises:
      ConversionError: the box lies entirely outside the image.
    """
    if obj.xmax < obj.xmin or obj.ymax < obj.ymin:
        return None, False
    if obj.xmin > width or obj.ymin > height or obj.xmax < 1 or obj.ymax < 1:
        raise ConversionError(
            f"{where}: box ({obj.xmin}, {obj.ymin}, {obj.xmax}, {obj.ymax}) lies entirely "
            f"outside the {width}x{height} image"
        )
    xmin, ymin = max(obj.xmin, 1.0), max(obj.ymin, 1.0)
    xmax, ymax = min(obj.xmax, float(width)), min(obj.ymax, float(height))
    clipped = (xmin, ymin, xmax, ymax) != (obj.xmin, obj.ymin, obj.xmax, obj.ymax)
    return [(ymin - 1) / height, (xmin - 1) / width, ymax / height, xmax / width], clipped


def read_split(voc_root: str, year: str, split: str, task: str) -> list[str]:
    """Image ids of `VOC<year>/ImageSets/{Main|Segmentation}/<split>.txt`."""
    folder = "Main" if task == "detection" else "Segmentation"
    path = os.path.join(voc_root, f"VOC{year}", "ImageSets", folder, f"{split}.txt")
    if not tf.io.gfile.exists(path):
        raise ConversionError(f"{path}: split file not found (is --voc_root a VOCdevkit?)")
    with tf.io.gfile.GFile(path, "r") as f:
        return [line.split()[0] for line in f if line.strip()]


@dataclasses.dataclass(frozen=True)
class VocItem:
    """One image to convert (picklable work item); paths relative to `voc_root`."""

    image_id: str
    image_file: str
    annotation_file: str  # XML for detection, label PNG for segmentation


def _label_png(png_path: str, height: int, width: int) -> bytes:
    """Re-encodes a VOC class PNG (palette indices) as a grayscale PNG of the indices."""
    try:
        with tf.io.gfile.GFile(png_path, "rb") as f:
            label_image = Image.open(io.BytesIO(f.read()))
            label_image.load()
    except tf.errors.NotFoundError as e:
        raise ConversionError(f"{png_path}: segmentation label file not found") from e
    except (OSError, SyntaxError) as e:
        raise ConversionError(f"{png_path}: corrupt label PNG: {e}") from e
    if label_image.mode not in ("P", "L"):
        raise ConversionError(
            f"{png_path}: label PNG has mode {label_image.mode}; expected palette indices (P or L)"
        )
    labels = np.asarray(label_image, np.uint8)
    if labels.shape != (height, width):
        raise ConversionError(
            f"{png_path}: label size {labels.shape[1]}x{labels.shape[0]} differs from the "
            f"image size {width}x{height}"
        )
    bad = np.setdiff1d(np.unique(labels), [*range(len(VOC_CLASSES) + 1), IGNORE_LABEL])
    if bad.size:
        raise ConversionError(f"{png_path}: label values {bad.tolist()} are not 0..20 or 255")
    return schema.encode_png(labels)


@dataclasses.dataclass(frozen=True)
class VocConverter:
    """Converts one `VocItem` into a serialized TF Example (picklable for workers)."""

    voc_root: str
    task: str
    skip_bad_images: bool = False

    def _skip(self, item: VocItem, reason: str, message: str) -> ConvertedImage:
        if not self.skip_bad_images:
            raise ConversionError(message)
        return ConvertedImage(
            serialized=None, image_skip_reason=reason, warnings=[f"skipped image: {message}"]
        )

    def __call__(self, item: VocItem) -> ConvertedImage:
        image_path = os.path.join(self.voc_root, item.image_file)
        annotation_path = os.path.join(self.voc_root, item.annotation_file)
        annotation = None
        if self.task == "detection":
            annotation = parse_voc_xml(annotation_path)
        if not tf.io.gfile.exists(image_path):
            return self._skip(item, "missing_file", f"{image_path}: image file not found")
        with tf.io.gfile.GFile(image_path, "rb") as f:
            encoded = f.read()
        try:
            image_format, height, width = schema.verify_image(encoded)
        except ValueError as e:
            return self._skip(item, "corrupt_file", f"{image_path}: {e}")
        problem = record_checks.encoded_image_problem(encoded)  # e.g. a PNG without IEND
        if problem:
            return self._skip(item, "corrupt_file", f"{image_path}: {problem}")
        if annotation is not None and (annotation.height, annotation.width) != (height, width):
            return self._skip(
                item,
                "size_mismatch",
                f"{image_path} is {width}x{height} but {annotation_path} says "
                f"{annotation.width}x{annotation.height}",
            )
        result = ConvertedImage(serialized=None)
        common = dict(
            encoded_image=encoded,
            image_format=image_format,
            height=height,
            width=width,
            source_id=item.image_id,
            filename=item.image_file,
        )
        if annotation is None:
            example = schema.make_example(
                **common, segmentation_png=_label_png(annotation_path, height, width)
            )
        else:
            boxes, classes, texts, difficult, areas = [], [], [], [], []
            for index, obj in enumerate(annotation.objects):
                where = f"{annotation_path}: object #{index} ({obj.name})"
                box, clipped = normalized_box(obj, height, width, where)
                if box is None:
                    result.objects_skipped["empty_box"] += 1
                    result.warnings.append(f"{where}: skipped, xmax < xmin or ymax < ymin")
                    continue
                if clipped:
                    result.objects_modified["box_clipped"] += 1
                boxes.append(box)
                classes.append(CLASS_ID[obj.name])
                texts.append(obj.name)
                difficult.append(obj.difficult)
                areas.append((box[2] - box[0]) * (box[3] - box[1]) * height * width)
            example = schema.make_example(
                **common,
                boxes=np.asarray(boxes, np.float32).reshape([-1, 4]),
                classes=classes,
                class_texts=texts,
                is_crowd=[0] * len(classes),
                areas=areas,
                difficult=difficult,
            )
            result.num_objects = len(classes)
        # The last line of defence: what training's `decode_checked` would reject is never
        # written (the checks above make each case impossible or an error of its own).
        problem = record_checks.example_problem(example, num_classes=len(VOC_CLASSES) + 1)
        if problem:
            raise ConversionError(f"{image_path}: refusing to write a bad record: {problem}")
        result.serialized = example.SerializeToString(deterministic=True)
        return result


def voc_items(voc_root: str, year: str, split: str, task: str) -> list[VocItem]:
    """The work items of `year` ('2007', '2012' or '2007+2012'), `split` and `task`."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    years = year.split("+")
    if not years or any(y not in YEARS for y in years):
        raise ValueError(f"year must be 2007, 2012 or 2007+2012, got {year!r}")
    items, seen = [], {}
    for y in years:
        for image_id in read_split(voc_root, y, split, task):
            if image_id in seen:
                raise ConversionError(
                    f"image id {image_id} appears twice (VOC{seen[image_id]} and VOC{y})"
                )
            seen[image_id] = y
            if task == "detection":
                annotation = f"VOC{y}/Annotations/{image_id}.xml"
            else:
                annotation = f"VOC{y}/SegmentationClass/{image_id}.png"
            items.append(VocItem(image_id, f"VOC{y}/JPEGImages/{image_id}.jpg", annotation))
    return items


def convert_voc(
    voc_root: str,
    year: str,
    split: str,
    task: str,
    output_prefix: str,
    num_shards: int = 8,
    *,
    skip_bad_images: bool = False,
    num_workers: int | None = None,
    progress_stream: TextIO | None = None,
) -> ConversionSummary:
    """Converts a VOC split into sharded TFRecords.

    Writes `{output_prefix}-0000i-of-0000N.tfrecord`, `{output_prefix}_label_map.json` and
    `{output_prefix}_summary.json` (the returned counts).

    Args:
      voc_root: the `VOCdevkit` folder.
      year: '2007', '2012' or '2007+2012'.
      split: 'train', 'val', 'trainval' or 'test'.
      task: 'detection' (boxes from Annotations/) or 'segmentation' (SegmentationClass/).
      output_prefix: output path prefix.
      num_shards: number of TFRecord files.
      skip_bad_images: skip (and count) missing/corrupt images instead of failing.
      num_workers: conversion processes (None = number of CPUs, 0 = in this process).
      progress_stream: where the progress line goes (stderr by default).

    Returns:
      The `ConversionSummary`.

    Raises:
      ConversionError: bad input, naming the file (and object).
    """
    items = voc_items(voc_root, year, split, task)
    summary = write_sharded(
        output_prefix,
        items,
        VocConverter(voc_root, task, skip_bad_images),
        num_shards,
        num_workers=num_workers,
        name=os.path.basename(output_prefix),
        progress_stream=progress_stream,
    )
    write_json(f"{output_prefix}_label_map.json", {str(k): v for k, v in label_map(task).items()})
    write_json(f"{output_prefix}_summary.json", summary.to_dict())
    return summary

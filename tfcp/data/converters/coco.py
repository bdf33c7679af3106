"""COCO / LVIS instance JSON -> Model Garden TFRecords (boxes, classes, crowd, PNG masks).

Conventions (the same as Model Garden's `create_coco_tf_record.py` unless noted):
- class label = the original `category_id` (COCO 1..90, LVIS 1..1203), so
  `num_classes = max id + 1`; `{output_prefix}_label_map.json` maps id -> name.
- boxes: COCO `[x, y, w, h]` in pixels -> normalized `[ymin, xmin, ymax, xmax]` =
  `[y/H, x/W, (y+h)/H, (x+w)/W]`.
- masks: polygons, uncompressed RLE and compressed RLE rasterized by pycocotools at the
  full image resolution, stored as PNGs of 0/1. Crowd objects (`iscrowd=1`) are kept with
  `image/object/is_crowd=1`.
- area: the JSON's `area` (what COCO evaluation uses).
- images are stored as their original bytes (no re-encode); the format comes from the bytes.
- images without annotations are written as examples with zero objects.
- LVIS: images have `coco_url` and no `file_name`; the file is `image_dir/<basename>` or,
  if that does not exist, `image_dir/<split folder>/<basename>` (LVIS val draws from COCO
  train2017 and val2017). `neg_category_ids`, `not_exhaustive_category_ids` and category
  `frequency` are kept in `{output_prefix}_lvis_info.json` for federated evaluation.

Bad input:
- errors (`ConversionError` naming the JSON file and the annotation/image id): unknown
  `image_id` or `category_id` (ids are positive: 0 is background), duplicate ids, a
  missing or non-finite `bbox`, an `area` that is not a finite number >= 0, a box entirely
  outside the image, a malformed segmentation, an RLE whose size is not the image size, a
  `file_name` that is absolute or leaves `image_dir`, a JSON height/width that differs from
  the image file, a missing or corrupt image file (unless `skip_bad_images`). Corrupt
  includes bytes that PIL decodes but TensorFlow does not (a PNG without its IEND chunk,
  see `tfcp.data.record_checks.encoded_image_problem`).
- counted skips, with a warning: objects with a box of zero width or height, objects whose
  polygons all have fewer than 3 points, images with missing/corrupt files when
  `skip_bad_images`.
- counted repairs (object written): box partly outside the image -> clipped; polygon parts
  of fewer than 3 points dropped while others remain; mask rasterizing to zero pixels.
- so no record that training's `tfcp.data.validation.decode_checked` rejects is written:
  masks are rasterized at the image size, one per box; boxes are finite and not inverted
  (negative width/height counts as an empty box); class ids are the label map's. Each
  record is checked once more with `record_checks.example_problem` before it is written.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any, TextIO

import numpy as np
import tensorflow as tf
from pycocotools import mask as mask_utils

from tfcp.data import record_checks, schema
from tfcp.data.converters.coco_json import CocoImage, load_coco_json
from tfcp.data.converters.tfrecord_io import (
    ConversionError,
    ConversionSummary,
    ConvertedImage,
    write_json,
    write_sharded,
)


def normalized_box(
    bbox: list[float], height: int, width: int, where: str
) -> tuple[list[float] | None, bool]:
    """COCO `[x, y, w, h]` pixels -> normalized `[ymin, xmin, ymax, xmax]`, clipped.

    Args:
      bbox: COCO box.
      height: image height.
      width: image width.
      where: "<json>: annotation id <id>" for the error message.

    Returns:
      (box, clipped): box is None when the box has zero width or height; clipped is True
      when the box reached outside the image and was clipped to it.

    Raises:
      ConversionError: the box lies entirely outside the image.
    """
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return None, False
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise ConversionError(
            f"{where}: bbox {bbox} lies entirely outside the {width}x{height} image"
        )
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, float(width)), min(y + h, float(height))
    clipped = (x0, y0, x1, y1) != (x, y, x + w, y + h)
    return [y0 / height, x0 / width, y1 / height, x1 / width], clipped


def valid_polygons(segmentation: list, where: str) -> tuple[list[list[float]], int]:
    """Splits COCO polygons into usable ones (>= 3 points) and a count of dropped ones.

    Raises:
      ConversionError: a polygon that is not a flat list of numbers of even length.
    """
    kept = []
    for polygon in segmentation:
        if (
            not isinstance(polygon, (list, tuple))
            or len(polygon) % 2
            or not all(isinstance(v, (int, float)) for v in polygon)
        ):
            raise ConversionError(
                f"{where}: polygon must be a flat list of x, y numbers, got {polygon!r:.200}"
            )
        if len(polygon) >= 6:
            kept.append([float(v) for v in polygon])
    return kept, len(segmentation) - len(kept)


def segmentation_to_mask(segmentation: Any, height: int, width: int, where: str) -> np.ndarray:
    """Rasterizes a COCO segmentation (polygons or RLE) to a uint8 0/1 [height, width] mask.

    Args:
      segmentation: a list of polygons (each with >= 3 points), an uncompressed RLE
        (`counts` a list of ints) or a compressed RLE (`counts` a string).
      height: image height.
      width: image width.
      where: "<json>: annotation id <id>" for the error message.

    Raises:
      ConversionError: malformed segmentation or an RLE size that is not [height, width].
    """
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if list(segmentation["size"]) != [height, width]:
            raise ConversionError(
                f"{where}: RLE size {segmentation['size']} differs from the image size "
                f"[{height}, {width}]"
            )
        counts = segmentation["counts"]
        try:
            if isinstance(counts, list):
                rle = mask_utils.frPyObjects(segmentation, height, width)
            else:
                counts = counts.encode() if isinstance(counts, str) else counts
                rle = {"size": [height, width], "counts": counts}
            mask = mask_utils.decode(rle)
        except (ValueError, TypeError) as e:
            raise ConversionError(f"{where}: malformed RLE: {e}") from e
        if mask.shape != (height, width):
            raise ConversionError(f"{where}: RLE decodes to shape {mask.shape}")
        return (mask > 0).astype(np.uint8)
    else:
        raise ConversionError(
            f"{where}: segmentation must be polygons or RLE, got {segmentation!r:.200}"
        )
    return (mask_utils.decode(rle) > 0).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class CocoImageConverter:
    """Converts one `CocoImage` into a serialized TF Example (picklable for workers)."""

    image_dir: str
    json_path: str
    categories: dict[int, str]
    include_masks: bool = True
    skip_bad_images: bool = False

    def _read_image(self, image: CocoImage) -> tuple[bytes, str, str] | str:
        """(bytes, format, relative path), or the skip reason if skip_bad_images."""
        where = f"{self.json_path}: image id {image.image_id}"

        def bad(reason: str, message: str) -> str:
            if self.skip_bad_images:
                return reason
            raise ConversionError(f"{where}: {message}")

        paths = [os.path.join(self.image_dir, name) for name in image.file_names]
        found = [i for i, p in enumerate(paths) if tf.io.gfile.exists(p)]
        if not found:
            return bad("missing_file", f"image file not found: {' or '.join(paths)}")
        path = paths[found[0]]
        with tf.io.gfile.GFile(path, "rb") as f:
            encoded = f.read()
        try:
            image_format, height, width = schema.verify_image(encoded)
        except ValueError as e:
            return bad("corrupt_file", f"{path}: {e}")
        problem = record_checks.encoded_image_problem(encoded)  # e.g. a PNG without IEND
        if problem:
            return bad("corrupt_file", f"{path}: {problem}")
        if (height, width) != (image.height, image.width):
            return bad(
                "size_mismatch",
                f"{path} is {width}x{height} but the JSON says {image.width}x{image.height}",
            )
        return encoded, image_format, image.file_names[found[0]]

    def __call__(self, image: CocoImage) -> ConvertedImage:
        read = self._read_image(image)
        if isinstance(read, str):
            num = len(image.annotations)
            return ConvertedImage(
                serialized=None,
                image_skip_reason=read,
                objects_skipped=collections.Counter({f"image_skipped_{read}": num} if num else {}),
                warnings=[
                    f"{self.json_path}: image id {image.image_id}: skipped ({read}) with its "
                    f"{num} objects"
                ],
            )
        encoded, image_format, file_name = read
        h, w = image.height, image.width
        result = ConvertedImage(serialized=None)
        boxes, classes, texts, crowd, areas, masks = [], [], [], [], [], []
        for annotation in image.annotations:
            where = (
                f"{self.json_path}: annotation id {annotation['id']} (image id {image.image_id})"
            )
            box, clipped = normalized_box(annotation["bbox"], h, w, where)
            if box is None:
                result.objects_skipped["empty_box"] += 1
                result.warnings.append(f"{where}: skipped, bbox {annotation['bbox']} is empty")
                continue
            segmentation = annotation.get("segmentation")
            if isinstance(segmentation, list):
                segmentation, dropped = valid_polygons(segmentation, where)
                if not segmentation:
                    result.objects_skipped["degenerate_polygon"] += 1
                    result.warnings.append(
                        f"{where}: skipped, every polygon has fewer than 3 points"
                    )
                    continue
                if dropped:
                    result.objects_modified["polygon_part_dropped"] += 1
            elif segmentation is None and self.include_masks:
                raise ConversionError(f"{where}: no 'segmentation' (needed for masks)")
            if clipped:
                result.objects_modified["box_clipped"] += 1
            if self.include_masks:
                mask = segmentation_to_mask(segmentation, h, w, where)
                if not mask.any():
                    result.objects_modified["empty_mask"] += 1
                masks.append(mask)
            category_id = int(annotation["category_id"])
            boxes.append(box)
            classes.append(category_id)
            texts.append(self.categories[category_id])
            crowd.append(int(annotation.get("iscrowd", 0)))
            if "area" in annotation:
                areas.append(float(annotation["area"]))
            elif self.include_masks:
                areas.append(float(masks[-1].sum()))
            else:
                areas.append((box[2] - box[0]) * (box[3] - box[1]) * h * w)
        example = schema.make_example(
            encoded_image=encoded,
            image_format=image_format,
            height=h,
            width=w,
            source_id=str(image.image_id),
            filename=file_name,
            boxes=np.asarray(boxes, np.float32).reshape([-1, 4]),
            classes=classes,
            class_texts=texts,
            is_crowd=crowd,
            areas=areas,
            masks=np.asarray(masks, np.uint8).reshape([-1, h, w]) if self.include_masks else None,
        )
        # The last line of defence: what training's `decode_checked` would reject is never
        # written (the checks above make each case impossible or an error of its own).
        problem = record_checks.example_problem(
            example, num_classes=max(self.categories, default=0) + 1
        )
        if problem:
            raise ConversionError(
                f"{self.json_path}: image id {image.image_id}: refusing to write a bad record: "
                f"{problem}"
            )
        result.serialized = example.SerializeToString(deterministic=True)
        result.num_objects = len(classes)
        return result


def convert_coco(
    image_dir: str,
    annotations_json: str,
    output_prefix: str,
    num_shards: int,
    *,
    include_masks: bool = True,
    skip_bad_images: bool = False,
    num_workers: int | None = None,
    progress_stream: TextIO | None = None,
) -> ConversionSummary:
    """Converts a COCO/LVIS instances JSON and its images into sharded TFRecords.

    Writes `{output_prefix}-0000i-of-0000N.tfrecord`, `{output_prefix}_label_map.json`
    ({category id: name}), `{output_prefix}_summary.json` (the returned counts) and, for
    LVIS, `{output_prefix}_lvis_info.json`.

    Args:
      image_dir: folder of the images (the JSON's `file_name`s are relative to it).
      annotations_json: COCO or LVIS instances JSON.
      output_prefix: output path prefix.
      num_shards: number of TFRecord files.
      include_masks: write PNG instance masks.
      skip_bad_images: skip (and count) images whose file is missing, corrupt or of
        another size than the JSON says, instead of failing.
      num_workers: conversion processes (None = number of CPUs, 0 = in this process).
      progress_stream: where the progress line goes (stderr by default).

    Returns:
      The `ConversionSummary`.

    Raises:
      ConversionError: bad input, naming the file and the annotation or image id.
    """
    dataset = load_coco_json(annotations_json)
    converter = CocoImageConverter(
        image_dir=image_dir,
        json_path=annotations_json,
        categories=dataset.categories,
        include_masks=include_masks,
        skip_bad_images=skip_bad_images,
    )
    summary = write_sharded(
        output_prefix,
        dataset.images,
        converter,
        num_shards,
        num_workers=num_workers,
        name=os.path.basename(output_prefix),
        progress_stream=progress_stream,
    )
    write_json(
        f"{output_prefix}_label_map.json",
        {str(k): v for k, v in sorted(dataset.categories.items())},
    )
    if dataset.lvis_info is not None:
        write_json(f"{output_prefix}_lvis_info.json", dataset.lvis_info)
    write_json(f"{output_prefix}_summary.json", summary.to_dict())
    return summary

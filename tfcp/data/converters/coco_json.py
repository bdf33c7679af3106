"""COCO / LVIS instances JSON: loading and checking (ids, categories, image file names).

`load_coco_json` reads the JSON once and indexes it for `tfcp.data.converters.coco`; every
error is a `ConversionError` naming the JSON file and the offending image/annotation id.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import posixpath
import urllib.parse
from typing import Any

import numpy as np
import tensorflow as tf

from tfcp.data.converters.tfrecord_io import ConversionError


@dataclasses.dataclass(frozen=True)
class CocoImage:
    """One image entry of the JSON with its annotations (a picklable work item)."""

    image_id: int
    file_names: tuple[str, ...]  # candidate paths relative to image_dir, first found wins
    height: int
    width: int
    annotations: tuple[dict, ...]


@dataclasses.dataclass
class CocoDataset:
    """A validated COCO/LVIS annotation file."""

    json_path: str
    images: list[CocoImage]
    categories: dict[int, str]
    lvis_info: dict[str, Any] | None


def _fail(json_path: str, what: str, message: str) -> ConversionError:
    return ConversionError(f"{json_path}: {what}: {message}")


def safe_relative_path(file_name: str, json_path: str, image_id: Any) -> str:
    """Checks that `file_name` stays inside the image directory.

    Args:
      file_name: the JSON's `file_name`.
      json_path: the JSON file (for the error message).
      image_id: the image id (for the error message).

    Returns:
      The normalized relative path.

    Raises:
      ConversionError: absolute path, empty name or a path that leaves the directory.
    """
    if not isinstance(file_name, str) or not file_name:
        raise _fail(json_path, f"image id {image_id}", f"bad file_name {file_name!r}")
    posix = file_name.replace("\\", "/")
    normalized = posixpath.normpath(posix)
    if (
        posixpath.isabs(posix)
        or os.path.isabs(file_name)
        or (len(posix) > 1 and posix[1] == ":")
        or normalized == ".."
        or normalized.startswith("../")
    ):
        raise _fail(
            json_path,
            f"image id {image_id}",
            f"file_name {file_name!r} escapes --image_dir (absolute path or '..')",
        )
    return normalized


def _image_file_names(image: dict, json_path: str) -> tuple[str, ...]:
    image_id = image.get("id")
    if "file_name" in image:
        return (safe_relative_path(image["file_name"], json_path, image_id),)
    if "coco_url" in image:
        parts = urllib.parse.urlparse(image["coco_url"]).path.split("/")
        base = parts[-1]
        names = [safe_relative_path(base, json_path, image_id)]
        if len(parts) >= 2 and parts[-2]:
            names.append(safe_relative_path(f"{parts[-2]}/{base}", json_path, image_id))
        return tuple(names)
    raise _fail(json_path, f"image id {image_id}", "has neither file_name nor coco_url")


def _positive_int(value: Any, json_path: str, what: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise _fail(json_path, what, f"{field} must be an integer, got {value!r}")
    if value <= 0:
        raise _fail(json_path, what, f"{field} must be positive, got {value!r}")
    return int(value)


def load_coco_json(json_path: str) -> CocoDataset:
    """Reads and validates a COCO or LVIS instances JSON.

    Args:
      json_path: path of the JSON file.

    Returns:
      A `CocoDataset` with images in JSON order, each with its annotations.

    Raises:
      ConversionError: structural problems (see the module docstring), naming the file
        and the image/annotation id.
    """
    try:
        with tf.io.gfile.GFile(json_path, "r") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ConversionError(f"{json_path}: not valid JSON: {e}") from e
    except tf.errors.NotFoundError as e:
        raise ConversionError(f"{json_path}: no such annotations file") from e
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise ConversionError(f"{json_path}: missing or non-list top-level '{key}'")
    categories: dict[int, str] = {}
    frequency: dict[str, str] = {}
    for category in data["categories"]:
        if "id" not in category or "name" not in category:
            raise _fail(json_path, f"category {category!r}", "needs 'id' and 'name'")
        cid = _positive_int(category["id"], json_path, f"category {category}", "id")
        if cid in categories:
            raise _fail(json_path, f"category id {cid}", "duplicate category id")
        categories[cid] = str(category["name"])
        if "frequency" in category:
            frequency[str(cid)] = category["frequency"]

    image_info: dict[int, dict] = {}
    lvis_images: dict[str, dict] = {}
    for image in data["images"]:
        image_id = image.get("id")
        what = f"image id {image_id}"
        if isinstance(image_id, bool) or not isinstance(image_id, int):
            raise _fail(json_path, f"image {image!r:.200}", "needs an integer 'id'")
        if image_id in image_info:
            raise _fail(json_path, what, "duplicate image id")
        image_info[image_id] = {
            "file_names": _image_file_names(image, json_path),
            "height": _positive_int(image.get("height"), json_path, what, "height"),
            "width": _positive_int(image.get("width"), json_path, what, "width"),
        }
        extra = {
            k: image[k] for k in ("neg_category_ids", "not_exhaustive_category_ids") if k in image
        }
        if extra:
            lvis_images[str(image_id)] = extra

    per_image: dict[int, list[dict]] = collections.defaultdict(list)
    annotation_ids: set = set()
    for annotation in data.get("annotations", []):
        ann_id = annotation.get("id")
        what = f"annotation id {ann_id}"
        if ann_id is None:
            raise _fail(json_path, f"annotation {annotation!r:.200}", "has no 'id'")
        if ann_id in annotation_ids:
            raise _fail(json_path, what, "duplicate annotation id")
        annotation_ids.add(ann_id)
        if annotation.get("image_id") not in image_info:
            raise _fail(
                json_path, what, f"image_id {annotation.get('image_id')!r} is not in 'images'"
            )
        if annotation.get("category_id") not in categories:
            raise _fail(
                json_path,
                what,
                f"category_id {annotation.get('category_id')!r} is not in 'categories'",
            )
        bbox = annotation.get("bbox")
        if (
            not isinstance(bbox, (list, tuple))
            or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in bbox)
        ):
            raise _fail(json_path, what, f"bbox must be 4 finite numbers, got {bbox!r}")
        if annotation.get("iscrowd", 0) not in (0, 1):
            raise _fail(json_path, what, f"iscrowd must be 0 or 1, got {annotation['iscrowd']!r}")
        area = annotation.get("area", 0.0)
        if (
            isinstance(area, bool)
            or not isinstance(area, (int, float))
            or not (np.isfinite(area) and area >= 0)
        ):
            raise _fail(json_path, what, f"area must be a finite number >= 0, got {area!r}")
        per_image[annotation["image_id"]].append(annotation)

    images = [
        CocoImage(
            image_id=image_id,
            annotations=tuple(per_image.get(image_id, ())),
            **info,
        )
        for image_id, info in image_info.items()
    ]
    lvis_info = None
    if lvis_images or frequency:
        lvis_info = {"images": lvis_images, "category_frequency": frequency}
    return CocoDataset(json_path, images, categories, lvis_info)

"""Pseudo labels as COCO annotations: which files, their ids, masks -> RLE, the output JSON.

The pure half of `tfcp.pseudo_label` (see its docstring for the output format):
`annotate` turns one image's serving outputs into COCO annotations, `coco_json` assembles
the per-image records into the final JSON.
"""

from __future__ import annotations

import collections
import os
import posixpath
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from pycocotools import mask as mask_utils

from tfcp.data import record_checks, schema

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png")


def list_images(image_dir: str, image_glob: str | None = None) -> list[str]:
    """Sorted '/'-separated paths, relative to `image_dir`, of the files to label.

    Raises:
      FileNotFoundError: `image_dir` is not a directory.
      ValueError: nothing matches.
    """
    if not tf.io.gfile.isdir(image_dir):
        raise FileNotFoundError(f"--image_dir={image_dir!r} is not a directory")
    paths = tf.io.gfile.glob(os.path.join(image_dir, image_glob or "*"))
    if image_glob is None:
        paths = [p for p in paths if p.lower().endswith(DEFAULT_EXTENSIONS)]
    prefix = os.path.join(image_dir, "")
    names = sorted(
        (p[len(prefix) :] if p.startswith(prefix) else os.path.relpath(p, image_dir)).replace(
            os.sep, "/"
        )
        for p in paths
        if not tf.io.gfile.isdir(p)
    )
    if not names:
        what = image_glob or "*.jpg/*.jpeg/*.png"
        raise ValueError(f"no image files matching {what!r} in {image_dir!r}")
    return names


def assign_image_ids(file_names: Sequence[str]) -> dict[str, int]:
    """{file name: COCO image id}: the names' numbers if distinct positive integers, else
    the 1-based position in sorted order."""
    stems = [posixpath.splitext(posixpath.basename(f))[0] for f in file_names]
    if all(re.fullmatch(r"[0-9]{1,18}", s) for s in stems):
        ids = [int(s) for s in stems]
        if len(set(ids)) == len(ids) and min(ids) > 0:
            return dict(zip(file_names, ids, strict=True))
    return {f: i + 1 for i, f in enumerate(sorted(file_names))}


def check_image(encoded: bytes) -> tuple[int, int]:
    """(height, width) of JPEG/PNG bytes the COCO converter accepts.

    Raises:
      ValueError: not a JPEG/PNG, corrupt or truncated (the converter's own checks).
    """
    _, height, width = schema.verify_image(encoded)
    problem = record_checks.encoded_image_problem(encoded)
    if problem:
        raise ValueError(problem)
    return height, width


def encode_rles(masks: np.ndarray) -> list[dict[str, Any]]:
    """bool/uint8 [K, H, W] masks -> K compressed RLEs (counts as str, JSON-ready)."""
    if masks.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(np.transpose(masks.astype(np.uint8), (1, 2, 0))))
    return [
        {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles
    ]


def annotate(
    outputs: dict[str, tf.Tensor],
    b: int,
    height: int,
    width: int,
    *,
    score_threshold: float,
    max_detections: int,
    category_ids: set[int],
) -> tuple[list[dict[str, Any]], collections.Counter]:
    """COCO annotations (without ids) of image `b` of the serving `outputs`.

    Args:
      outputs: serving outputs (see `Detector.detect`).
      b: the image's index in them.
      height, width: the image's size; masks are cut to [:height, :width].
      score_threshold: detections with a lower score are dropped.
      max_detections: at most this many annotations, the highest scores.
      category_ids: the label map's ids; other classes are dropped.

    Returns:
      (annotations by descending score, Counter of dropped detections per reason).
    """
    n = int(outputs["num_detections"][b])
    scores = outputs["detection_scores"][b, :n].numpy()
    classes = outputs["detection_classes"][b, :n].numpy()
    boxes = outputs["detection_boxes"][b, :n].numpy().astype(np.float64)
    dropped = collections.Counter()
    keep = []
    for k in np.argsort(-scores, kind="stable"):
        if not scores[k] >= score_threshold:
            dropped["below_score_threshold"] += 1
        elif int(classes[k]) not in category_ids:
            dropped["unknown_category"] += 1
        else:
            keep.append(int(k))
    indices = tf.constant(keep, tf.int32, shape=[len(keep)])
    masks = tf.gather(outputs["detection_masks"][b], indices)[:, :height, :width].numpy() > 0
    annotations = []
    for k, rle, mask in zip(keep, encode_rles(masks), masks, strict=True):
        ymin, xmin, ymax, xmax = boxes[k]
        bbox = [round(xmin, 3), round(ymin, 3), round(xmax - xmin, 3), round(ymax - ymin, 3)]
        if not mask.any():
            dropped["empty_mask"] += 1
        elif bbox[2] <= 0 or bbox[3] <= 0:
            dropped["empty_box"] += 1
        elif len(annotations) >= max_detections:
            dropped["over_max_detections"] += 1
        else:
            annotations.append(
                {
                    "category_id": int(classes[k]),
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": bbox,
                    "iscrowd": 0,
                    "score": round(float(scores[k]), 6),
                }
            )
    return annotations, dropped


def coco_json(
    names: Sequence[str],
    records: dict[str, dict[str, Any]],
    categories: list[dict[str, Any]],
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The output COCO JSON.

    Args:
      names: every listed file (relative paths, sorted); each has a record.
      records: {file name: record} as `tfcp.self_training.partial_file` stores them.
      categories: COCO categories [{id, name}].
      settings: the run's settings, copied into `info`.

    Returns:
      {"info", "images", "annotations", "categories"}: images in `names` order (failed
      ones only in `info.failed_images`), annotation ids 1, 2, ... in that order.
    """
    ids = assign_image_ids(names)
    images, annotations, failed = [], [], []
    dropped = collections.Counter()
    for name in names:
        record = records[name]
        if "error" in record:
            failed.append({"file_name": name, "error": record["error"]})
            continue
        images.append(
            {
                "id": ids[name],
                "file_name": name,
                "height": record["height"],
                "width": record["width"],
            }
        )
        dropped.update(record["dropped"])
        for annotation in record["annotations"]:
            annotations.append({"id": len(annotations) + 1, "image_id": ids[name], **annotation})
    info = {
        "description": "pseudo labels written by python -m tfcp.pseudo_label",
        **settings,
        "detections_dropped": dict(sorted(dropped.items())),
        "num_images_failed": len(failed),
        "failed_images": failed,
    }
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}

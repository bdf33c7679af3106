r"""Generated instance-segmentation datasets in the real COCO file format.

Scenes come from `tfcp.data.synthetic.scenes` (textured shapes, one appearance per class,
visible-part masks). This module (COCO) and its siblings `voc` and `lvis` write them exactly
as the real datasets are laid out, so the converters and evaluators are exercised on the
formats they will meet:

* COCO: `D/train2017/*.jpg`, `D/val2017/*.jpg`, `D/annotations/instances_{train,val}2017.json`
  with COCO's schema, 8 real COCO categories with their (non-contiguous) ids, polygons for
  most objects, uncompressed RLE for crowds (`iscrowd=1`) and for objects with holes,
  compressed-string RLE for some, `area`/`bbox` computed by pycocotools from each
  annotation's own segmentation, and images without annotations.
* VOC: `D/VOCdevkit/VOC2007` (train/val/test) and `D/VOCdevkit/VOC2012` (train/val) with
  `JPEGImages`, `Annotations` (VOC XML, 1-based inclusive pixel boxes), `SegmentationClass`
  and `SegmentationObject` palette PNGs (VOC colormap, 255 void borders), `ImageSets/Main`
  (split lists and per-class `<class>_<split>.txt`) and `ImageSets/Segmentation`.
* LVIS v1: `D/train2017`, `D/val2017`, `D/annotations/lvis_v1_{train,val}.json` with
  long-tailed categories (rare/common/frequent as LVIS counts them); see
  `tfcp.data.synthetic.lvis`.

Every image is rendered from its own `numpy.random.Generator` seeded with (seed, dataset,
split, index), so the same arguments give byte-identical files.

Usage:
  python -m tfcp.data.synthetic --output_dir=/tmp/coco --format=coco \
      [--num_train=64 --num_val=16 --image_size=256 --seed=0]
  python -m tfcp.data.synthetic --output_dir=/tmp/lvis --format=lvis \
      [--num_train=300 --num_val=50 --image_size=128 --seed=0]
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import MutableMapping

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from tfcp.data.synthetic.scenes import generate_scene, image_rng, image_shape, save_jpeg

COCO_CATEGORIES = (
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
    {"id": 13, "name": "stop sign", "supercategory": "outdoor"},
    {"id": 18, "name": "dog", "supercategory": "animal"},
    {"id": 44, "name": "bottle", "supercategory": "kitchen"},
    {"id": 53, "name": "apple", "supercategory": "food"},
    {"id": 62, "name": "chair", "supercategory": "furniture"},
    {"id": 88, "name": "teddy bear", "supercategory": "indoor"},
)
COCO_SPLITS = ("train2017", "val2017")
_COCO_SPLIT_CODES = {"train2017": 0, "val2017": 1}
_COCO_IMAGE_ID_BASE = {"train2017": 0, "val2017": 100_000_000}
_DATASET_COCO = 0

_CROWD_PROB = 0.15
_RANDOM_RLE_PROB = 0.06
_POLYGON_MIN_IOU = 0.95
_POLYGON_UPSAMPLE = 4


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE of a 0/1 [H, W] mask: column-major runs, starting with zeros."""
    flat = mask.ravel(order="F").astype(bool)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def compressed_rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE (pycocotools string counts) of a 0/1 [H, W] mask, JSON-ready."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def mask_polygons(mask: np.ndarray) -> list[list[float]] | None:
    """COCO polygons tracing a 0/1 [H, W] mask, or None if polygons cannot represent it.

    Contours are traced on a 4x nearest-upsampled crop (so they follow pixel edges, not
    pixel centres) and simplified to 0.5 px. Returns None for masks with holes or when the
    rasterized polygons overlap the mask with IoU < 0.95.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    y0, x0 = rows[0] - 1, cols[0] - 1
    crop = np.pad(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.uint8), 1)
    k = _POLYGON_UPSAMPLE
    big = cv2.resize(crop, None, fx=k, fy=k, interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(big, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None or (hierarchy[0][:, 3] >= 0).any():
        return None
    polygons = []
    for contour in contours:
        contour = cv2.approxPolyDP(contour, k / 2.0, True)
        if len(contour) < 3:
            continue
        pts = (contour.reshape(-1, 2).astype(np.float64) + 0.5) / k + [x0, y0]
        polygons.append(np.round(pts.ravel(), 2).tolist())
    if not polygons:
        return None
    h, w = mask.shape
    poly_rle = mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))
    iou = mask_utils.iou([poly_rle], [mask_utils.encode(np.asfortranarray(mask))], [0])
    return polygons if float(iou[0, 0]) >= _POLYGON_MIN_IOU else None


def segmentation_rle(segmentation, height: int, width: int) -> dict:
    """The compressed RLE that pycocotools derives from a COCO `segmentation` field."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}


def segmentation_area_bbox(segmentation, height: int, width: int) -> tuple[float, list[float]]:
    """(`area`, `bbox` [x, y, w, h]) of a COCO `segmentation`, as pycocotools computes them."""
    rle = segmentation_rle(segmentation, height, width)
    return float(mask_utils.area(rle)), [float(v) for v in mask_utils.toBbox(rle)]


def encode_segmentation(mask: np.ndarray, kind: str) -> tuple[object, str]:
    """Encodes a 0/1 [H, W] uint8 mask as COCO `segmentation`.

    Args:
      mask: the visible mask.
      kind: 'polygon' (falls back to uncompressed RLE, see `mask_polygons`), 'rle'
        (uncompressed) or 'rle_compressed'.

    Returns:
      (segmentation, the kind actually used).
    """
    if kind == "polygon":
        polygons = mask_polygons(mask)
        if polygons is not None:
            return polygons, "polygon"
        kind = "rle"
    if kind == "rle":
        return uncompressed_rle(mask), "rle"
    if kind == "rle_compressed":
        return compressed_rle(mask), "rle_compressed"
    raise ValueError(f"unknown segmentation kind {kind!r}")


def _coco_header(split: str) -> dict:
    return {
        "info": {
            "description": f"tfcp synthetic COCO-format instances ({split})",
            "url": "",
            "version": "1.0",
            "year": 2017,
            "contributor": "tfcp.data.synthetic",
            "date_created": "2017/09/01",
        },
        "licenses": [
            {
                "url": "https://creativecommons.org/publicdomain/zero/1.0/",
                "id": 1,
                "name": "CC0 1.0 Universal",
            }
        ],
    }


def _coco_split(
    output_dir: str,
    split: str,
    num_images: int,
    image_size: int,
    seed: int,
    opts: dict,
    stats: MutableMapping[str, int],
) -> tuple[str, str]:
    image_dir = os.path.join(output_dir, split)
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    need_compressed, need_crowd_rle = True, True
    for i in range(num_images):
        rng = image_rng(seed, _DATASET_COCO, _COCO_SPLIT_CODES[split], i)
        height, width = image_shape(rng, image_size, opts["image_hw"])
        crowd = i == 0 or (i != 1 and rng.random() < opts["crowd_prob"])
        scene = generate_scene(
            rng,
            height,
            width,
            len(COCO_CATEGORIES),
            num_instances=0 if i == 1 else None,
            mean_instances=opts["mean_instances"],
            max_instances=opts["max_instances"],
            crowd=crowd and i != 1,
        )
        image_id = _COCO_IMAGE_ID_BASE[split] + 3 * i + 1
        file_name = f"{image_id:012d}.jpg"
        save_jpeg(scene.image, os.path.join(image_dir, file_name), opts["jpeg_quality"])
        images.append(
            {
                "license": 1,
                "file_name": file_name,
                "coco_url": "",
                "height": height,
                "width": width,
                "date_captured": "2017-09-01 00:00:00",
                "flickr_url": "",
                "id": image_id,
            }
        )
        stats["images"] += 1
        stats["empty_images"] += int(len(scene.masks) == 0)
        stats["dropped_occluded"] += scene.num_dropped
        for k, mask in enumerate(scene.masks):
            is_crowd = bool(scene.is_crowd[k])
            if is_crowd:
                compressed = not need_crowd_rle and rng.random() < 0.25
                kind, need_crowd_rle = ("rle_compressed" if compressed else "rle"), False
            elif need_compressed:
                kind, need_compressed = "rle_compressed", False
            elif rng.random() < _RANDOM_RLE_PROB:
                kind = "rle_compressed" if rng.random() < 0.5 else "rle"
            else:
                kind = "polygon"
            segmentation, kind = encode_segmentation(mask, kind)
            area, bbox = segmentation_area_bbox(segmentation, height, width)
            annotations.append(
                {
                    "segmentation": segmentation,
                    "area": area,
                    "iscrowd": int(is_crowd),
                    "image_id": image_id,
                    "bbox": bbox,
                    "category_id": COCO_CATEGORIES[scene.class_indices[k]]["id"],
                    "id": image_id * 1000 + k + 1,
                }
            )
            stats["instances"] += 1
            stats["crowd_instances"] += int(is_crowd)
            stats[f"segmentation_{kind}"] += 1
    dataset = _coco_header(split)
    dataset.update(images=images, annotations=annotations, categories=list(COCO_CATEGORIES))
    ann_dir = os.path.join(output_dir, "annotations")
    os.makedirs(ann_dir, exist_ok=True)
    ann_path = os.path.join(ann_dir, f"instances_{split}.json")
    with open(ann_path, "w") as f:
        f.write(json.dumps(dataset, separators=(",", ":")))
    return image_dir, ann_path


def check_sizes(num_train: int, num_val: int, image_size: int, max_instances: int) -> None:
    """Raises ValueError naming the first out-of-range argument of a dataset writer."""
    if num_train < 0 or num_val < 0:
        raise ValueError(f"num_train/num_val must be >= 0, got {num_train}/{num_val}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    if not 1 <= max_instances <= 250:
        raise ValueError(f"max_instances must be in [1, 250], got {max_instances}")


def write_coco(
    output_dir: str,
    num_train: int = 64,
    num_val: int = 16,
    image_size: int = 256,
    seed: int = 0,
    *,
    image_hw: tuple[int, int] | None = None,
    mean_instances: float = 6.0,
    max_instances: int = 15,
    crowd_prob: float = _CROWD_PROB,
    jpeg_quality: int = 90,
    stats: MutableMapping[str, int] | None = None,
) -> dict[str, str]:
    """Writes a COCO-format instance-segmentation dataset (train2017 + val2017).

    The first image of every split holds a crowd region, the second has no objects, the
    first crowd of every split is stored as uncompressed RLE (as COCO's crowds) and the first
    non-crowd object as compressed RLE, so every file exercises every COCO feature.
    Existing files with the same names are overwritten.

    Args:
      output_dir: root directory D (created if missing).
      num_train: images in train2017.
      num_val: images in val2017.
      image_size: longer image side; aspect 4:3, 3:4 or 1:1 (ignored if `image_hw`).
      seed: non-negative int; same arguments -> byte-identical files.
      image_hw: fixed (height, width) for every image, e.g. (480, 640).
      mean_instances: mean objects drawn per image (1 + Poisson(mean - 1)).
      max_instances: most objects drawn per image (a crowd counts as one extra).
      crowd_prob: probability that an image (other than the first two) has a crowd.
      jpeg_quality: JPEG quality.
      stats: optional dict to accumulate counts into (images, instances, crowd_instances,
        empty_images, dropped_occluded, segmentation_{polygon,rle,rle_compressed}).

    Returns:
      {'train_images', 'val_images', 'train_annotations', 'val_annotations'} -> paths.
    """
    check_sizes(num_train, num_val, image_size, max_instances)
    if stats is None:
        stats = {}
    counts = collections.Counter()
    opts = dict(
        image_hw=image_hw,
        mean_instances=mean_instances,
        max_instances=max_instances,
        crowd_prob=crowd_prob,
        jpeg_quality=jpeg_quality,
    )
    paths = {}
    for split, n in zip(COCO_SPLITS, (num_train, num_val), strict=True):
        image_dir, ann_path = _coco_split(output_dir, split, n, image_size, seed, opts, counts)
        name = split.replace("2017", "")
        paths[f"{name}_images"], paths[f"{name}_annotations"] = image_dir, ann_path
    for key, value in counts.items():
        stats[key] = stats.get(key, 0) + value
    return paths

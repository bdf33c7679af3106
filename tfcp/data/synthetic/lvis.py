r"""Generated instance-segmentation data in the LVIS v1 file format, with long-tailed classes.

Layout (as LVIS v1, whose images are COCO 2017 images):

* `D/train2017/*.jpg`, `D/val2017/*.jpg`; `D/annotations/lvis_v1_{train,val}.json`.
* images: `id`, `height`, `width`, `license`, `coco_url`
  ('http://images.cocodataset.org/<folder>/<id:012d>.jpg', no `file_name`: readers take the
  folder and name from it), `flickr_url`, `date_captured`, `neg_category_ids` (categories
  verified absent: sampled among those not drawn in the image at all) and
  `not_exhaustive_category_ids` (a subset of the image's positive categories; when such a
  category has two or more visible instances, one of them is left un-annotated).
  As in LVIS v1, whose val split draws from COCO train2017 and val2017, every 4th val image
  (index 1, 5, ...) lives in `D/train2017`: convert val with `--image_dir D`.
* categories: `id` 1..C, `name`, `synonyms`, `def`, `synset` (describing each class's look),
  `frequency`, `image_count`, `instance_count`; the same list in both files, counted on the
  train split as LVIS defines them: `image_count` = training images with at least one
  annotation of the category, `instance_count` = its training annotations, `frequency` 'r'
  (1-10 images), 'c' (11-100) or 'f' (> 100) from `image_count`.
* annotations: `id`, `image_id`, `category_id`, `bbox` [x, y, w, h], `area`, `segmentation`
  (polygons only, as LVIS; masks with holes are cut into hole-free pieces); `area` and `bbox`
  are pycocotools' of the polygons. No `iscrowd`.

Long tail: the category of frequency rank r (a seeded permutation of the ids) is drawn into
an image with probability `P_MAX * (P_MIN / P_MAX) ** (r / (C - 1))`, and category r is also
forced into train image (C - 1 - r) mod num_train, so every category has training images
(C = 40 at the default 300 training images, seeds 0-4: 4-5 frequent, 20-22 common, 13-16
rare; the most frequent category is in ~175 images, ~7 annotations per image).
Objects look like `tfcp.data.synthetic.shapes.class_style(id - 1)` (a unique shape-colour
pair for the first 40 styles), drawn and occluded by `tfcp.data.synthetic.scenes.generate_scene`.
Every image comes from its own generator seeded with (seed, split, index): the same
arguments give byte-identical files.
"""

from __future__ import annotations

import collections
import colorsys
import json
import os
from collections.abc import Mapping, MutableMapping, Sequence

import cv2
import numpy as np

from tfcp.data.synthetic.coco import check_sizes, mask_polygons, segmentation_area_bbox
from tfcp.data.synthetic.scenes import generate_scene, image_rng, image_shape, save_jpeg
from tfcp.data.synthetic.shapes import class_style

MAX_CATEGORIES = 40  # beyond 40, styles i and i + 40 share shape and texture, colours close
RARE_MAX_IMAGES = 10  # LVIS: rare = 1-10 training images
COMMON_MAX_IMAGES = 100  # common = 11-100, frequent = more
P_MAX, P_MIN = 0.6, 0.006
LVIS_SPLITS = ("train", "val")
_SPLIT_CODES = {"train": 0, "val": 1}
_IMAGE_ID_BASE = {"train": 0, "val": 100_000_000}
_DATASET_LVIS = 2
_RANK_TAG = 1_000_000_007
_EXTRA_INSTANCES_MEAN = 0.5
_MAX_PER_CATEGORY = 4
_NOT_EXHAUSTIVE_PROB = 0.15
_NEGATIVE_PROB = 0.15
_MAX_RENDER_ATTEMPTS = 20
_POLYGON_POINT_OFFSET = 0.5
_HUES = ("red", "vermilion", "orange", "amber", "yellow", "chartreuse", "lime", "green")
_HUES += ("jade", "teal", "cyan", "azure", "blue", "indigo", "violet", "purple", "magenta")
_HUES += ("rose",)


def frequency_group(image_count: int) -> str:
    """LVIS frequency of a category seen in `image_count` training images: 'r', 'c' or 'f'.

    A category with no training image is counted as rare (LVIS's groups start at 1 image).
    """
    if image_count < 0:
        raise ValueError(f"image_count must be >= 0, got {image_count}")
    if image_count <= RARE_MAX_IMAGES:
        return "r"
    return "c" if image_count <= COMMON_MAX_IMAGES else "f"


def category_stats(annotation_json: str | Mapping) -> dict:
    """Per-category training-image counts and frequencies of an LVIS-format dataset.

    Args:
      annotation_json: path of an LVIS (or COCO) instances JSON, or its loaded dict.

    Returns:
      {'num_images': int (images in the file, with or without annotations),
       'image_count': {category id: images with >= 1 annotation of it},
       'instance_count': {category id: its annotations},
       'frequency': {category id: 'r' | 'c' | 'f' from image_count}}, with every
      category of 'categories' present (count 0 if it has no annotation).

    Raises:
      ValueError: an annotation whose category or image is not listed, naming the file.
    """
    data, name = annotation_json, "<dict>"
    if isinstance(annotation_json, str):
        name = annotation_json
        with open(annotation_json) as f:
            data = json.load(f)
    ids = [int(c["id"]) for c in data["categories"]]
    image_ids = {int(im["id"]) for im in data["images"]}
    images = {c: set() for c in ids}
    instances = dict.fromkeys(ids, 0)
    for ann in data.get("annotations", []):
        cid, image_id = int(ann["category_id"]), int(ann["image_id"])
        if cid not in images or image_id not in image_ids:
            raise ValueError(
                f"{name}: annotation id {ann.get('id')}: category {cid} or image {image_id} "
                "is not listed"
            )
        images[cid].add(image_id)
        instances[cid] += 1
    image_count = {c: len(images[c]) for c in ids}
    return {
        "num_images": len(image_ids),
        "image_count": image_count,
        "instance_count": instances,
        "frequency": {c: frequency_group(n) for c, n in image_count.items()},
    }


def _first_hole_pixel(mask: np.ndarray) -> tuple[int, int] | None:
    """(row, col) of a background pixel enclosed by the 8-connected mask, or None."""
    background = np.pad(1 - mask.astype(np.uint8), 1, constant_values=1)
    _, labels = cv2.connectedComponents(background, connectivity=4)
    holes = np.argwhere((background > 0) & (labels != labels[0, 0]))
    return None if holes.size == 0 else (int(holes[0][0]) - 1, int(holes[0][1]) - 1)


def _traced_polygons(mask: np.ndarray) -> list[list[float]]:
    """Unsimplified polygons along the pixel edges of a hole-free 0/1 [H, W] mask."""
    k = 4
    big = cv2.resize(mask.astype(np.uint8), None, fx=k, fy=k, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [
        np.round((c.reshape(-1, 2) + _POLYGON_POINT_OFFSET) / k, 2).ravel().tolist()
        for c in contours
        if len(c) >= 3
    ]


def lvis_polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons for any non-empty 0/1 [H, W] mask (LVIS stores no RLE).

    `tfcp.data.synthetic.coco.mask_polygons` where it applies; a mask with holes is cut at the
    column of a hole pixel into two pieces (each with fewer hole pixels) until none has a
    hole; a hole-free piece that simplified polygons do not cover well is traced exactly.
    """
    polygons = mask_polygons(mask)
    if polygons is not None:
        return polygons
    hole = _first_hole_pixel(mask)
    if hole is None:
        return _traced_polygons(mask)
    left, right = mask.copy(), mask.copy()
    left[:, hole[1] :] = 0
    right[:, : hole[1]] = 0
    return [p for piece in (left, right) if piece.any() for p in lvis_polygons(piece)]


def _category_name(index: int) -> tuple[str, str, str]:
    """(name, colour words, shape) describing style `index`, e.g. 'deep_green_rectangle'."""
    style = class_style(index)
    h, s, v = colorsys.rgb_to_hsv(*(style.color / 255.0))
    hue = _HUES[int(round(h * len(_HUES))) % len(_HUES)]
    tone = ("deep" if s > 0.7 else "dusky") if v <= 0.85 else ("bright" if s > 0.7 else "pale")
    return f"{tone}_{hue}_{style.shape}", f"{tone} {hue}", style.shape


def lvis_categories(num_categories: int = MAX_CATEGORIES) -> list[dict]:
    """LVIS category entries (without counts) for ids 1..num_categories."""
    if not 3 <= num_categories <= MAX_CATEGORIES:
        raise ValueError(f"num_categories must be in [3, {MAX_CATEGORIES}], got {num_categories}")
    categories, per_shape = [], collections.Counter()
    for k in range(num_categories):
        name, colour, shape = _category_name(k)
        per_shape[shape] += 1
        texture = class_style(k).texture
        categories.append(
            {
                "id": k + 1,
                "name": name,
                "synonyms": [name, f"{shape}_of_{colour.replace(' ', '_')}"],
                "def": f"a {colour} {shape} with a {texture} texture (synthetic class {k + 1})",
                "synset": f"{shape}.n.{per_shape[shape]:02d}",
            }
        )
    if len({c["name"] for c in categories}) != num_categories:
        raise AssertionError("category names are not unique")  # fixed styles: never happens
    return categories


def class_image_probs(seed: int, num_categories: int = MAX_CATEGORIES) -> np.ndarray:
    """float64 [C]: probability that category id k + 1 is drawn into an image (long tail)."""
    rank = image_rng(seed, _DATASET_LVIS, _RANK_TAG).permutation(num_categories)
    return P_MAX * (P_MIN / P_MAX) ** (rank / (num_categories - 1))


def _draw_plan(rng, probs: np.ndarray, forced: Sequence[int], max_instances: int):
    """Style indices to draw (forced categories last) and the not-exhaustive categories."""
    c = len(probs)
    u, extra = rng.random(c), rng.poisson(_EXTRA_INSTANCES_MEAN, c)
    not_exhaustive = rng.random(c) < _NOT_EXHAUSTIVE_PROB
    present = [k for k in np.argsort(u / probs, kind="stable") if u[k] < probs[k]]
    present = [k for k in present if k not in forced][: max(max_instances - len(forced), 0)]
    counts = {int(k): 1 + min(int(extra[k]), _MAX_PER_CATEGORY - 1) for k in present}
    counts.update({int(k): 1 + min(int(extra[k]), _MAX_PER_CATEGORY - 1) for k in forced})
    for k in counts:
        counts[k] = max(counts[k], 2) if not_exhaustive[k] else counts[k]
    while sum(counts.values()) > max(max_instances, len(counts)):
        k = max(counts, key=lambda j: (counts[j], -j))
        counts[k] -= 1
    others = [k for k in counts if k not in forced for _ in range(counts[k])]
    styles = [others[j] for j in rng.permutation(len(others))]
    styles += [k for k in sorted(forced) for _ in range(counts[k])]
    return styles, {k for k in counts if not_exhaustive[k]}


def _lvis_image(rng, split: str, i: int, image_size: int, probs, num_train: int, opts, stats):
    """Renders and saves image i of a split; returns (image entry, annotations)."""
    c = len(probs)
    height, width = image_shape(rng, image_size, None)
    forced = []
    if split == "train":  # category of rank r is forced into train image (C - 1 - r) % N
        order = np.argsort(-probs, kind="stable")
        forced = [int(order[r]) for r in range(c) if (c - 1 - r) % num_train == i]
    styles, not_exhaustive = _draw_plan(rng, probs, forced, opts["max_instances"])
    neg_u = rng.random(c)
    for _ in range(_MAX_RENDER_ATTEMPTS):
        scene = generate_scene(rng, height, width, c, class_indices=styles)
        kept_styles = scene.class_indices.tolist()
        if all(k in kept_styles for k in forced):
            break
        stats["render_retries"] += 1
    else:
        raise RuntimeError(
            f"{split} image {i}: forced categories {forced} not visible after "
            f"{_MAX_RENDER_ATTEMPTS} attempts"
        )
    image_id = _IMAGE_ID_BASE[split] + 3 * i + 2
    folder = "train2017" if split == "train" or i % 4 == 1 else "val2017"
    path = os.path.join(opts["output_dir"], folder, f"{image_id:012d}.jpg")
    save_jpeg(scene.image, path, opts["jpeg_quality"])
    by_category = collections.defaultdict(list)
    for j, k in enumerate(kept_styles):
        by_category[k].append(j)
    skip = set()
    for k in sorted(not_exhaustive & set(by_category)):
        if len(by_category[k]) >= 2:  # leave one visible instance un-annotated
            skip.add(by_category[k][int(rng.integers(len(by_category[k])))])
    annotations = []
    for j, k in enumerate(kept_styles):
        if j in skip:
            continue
        segmentation = lvis_polygons(scene.masks[j])
        area, bbox = segmentation_area_bbox(segmentation, height, width)
        annotations.append(
            {
                "id": image_id * 1000 + j + 1,
                "image_id": image_id,
                "category_id": k + 1,
                "bbox": bbox,
                "area": area,
                "segmentation": segmentation,
            }
        )
    drawn = set(styles)
    negatives = [k + 1 for k in range(c) if k not in drawn and neg_u[k] < _NEGATIVE_PROB]
    entry = {
        "id": image_id,
        "height": height,
        "width": width,
        "license": 1,
        "coco_url": f"http://images.cocodataset.org/{folder}/{image_id:012d}.jpg",
        "flickr_url": "",
        "date_captured": "2013-11-14 16:28:13",
        "neg_category_ids": negatives,
        "not_exhaustive_category_ids": sorted(k + 1 for k in not_exhaustive & set(by_category)),
    }
    stats["images"] += 1
    stats["instances"] += len(annotations)
    stats["unannotated_instances"] += len(skip)
    stats["dropped_occluded"] += scene.num_dropped
    stats["empty_images"] += int(not annotations)
    return entry, annotations


def _header(split: str) -> dict:
    return {
        "info": {
            "description": f"tfcp synthetic LVIS v1-format instances ({split})",
            "url": "",
            "version": "1.0",
            "year": 2020,
            "contributor": "tfcp.data.synthetic.lvis",
            "date_created": "2020-01-01",
        },
        "licenses": [
            {"url": "https://creativecommons.org/publicdomain/zero/1.0/", "id": 1, "name": "CC0"}
        ],
    }


def write_lvis(
    output_dir: str,
    num_train: int = 300,
    num_val: int = 50,
    image_size: int = 128,
    seed: int = 0,
    *,
    num_categories: int = MAX_CATEGORIES,
    max_instances: int = 15,
    jpeg_quality: int = 90,
    stats: MutableMapping[str, int] | None = None,
) -> dict[str, str]:
    """Writes an LVIS v1-format dataset with long-tailed categories (see the module doc).

    Existing files with the same names are overwritten.

    Args:
      output_dir: root directory D (created if missing).
      num_train: training images (>= 1); at 300 all of 'r', 'c' and 'f' are non-empty.
      num_val: validation images.
      image_size: longer image side; aspect 4:3, 3:4 or 1:1.
      seed: non-negative int; same arguments -> byte-identical files.
      num_categories: C in [3, 40]; ids 1..C.
      max_instances: most objects drawn per image (at least one per forced category).
      jpeg_quality: JPEG quality.
      stats: optional dict to accumulate counts into (images, instances, empty_images,
        dropped_occluded, unannotated_instances, render_retries, and
        categories_{r,c,f}).

    Returns:
      {'image_dir' (D: the converter's --image_dir for both splits), 'train_images',
       'val_images', 'train_annotations', 'val_annotations'} -> paths.
    """
    if num_train < 1:
        raise ValueError(f"num_train must be >= 1 (LVIS counts train images), got {num_train}")
    check_sizes(num_train, num_val, image_size, max_instances)
    categories = lvis_categories(num_categories)
    probs = class_image_probs(seed, num_categories)
    counts = collections.Counter()
    opts = dict(output_dir=output_dir, max_instances=max_instances, jpeg_quality=jpeg_quality)
    for folder in ("train2017", "val2017", "annotations"):
        os.makedirs(os.path.join(output_dir, folder), exist_ok=True)
    splits = {}
    for split, n in zip(LVIS_SPLITS, (num_train, num_val), strict=True):
        images, annotations = [], []
        for i in range(n):
            rng = image_rng(seed, _DATASET_LVIS, _SPLIT_CODES[split], i)
            entry, anns = _lvis_image(rng, split, i, image_size, probs, num_train, opts, counts)
            images.append(entry)
            annotations.extend(anns)
        splits[split] = {"images": images, "annotations": annotations}
    train_stats = category_stats({"categories": categories, **splits["train"]})
    counts.update(dict.fromkeys(("categories_r", "categories_c", "categories_f"), 0))
    for category in categories:
        cid = category["id"]
        category["frequency"] = train_stats["frequency"][cid]
        category["image_count"] = train_stats["image_count"][cid]
        category["instance_count"] = train_stats["instance_count"][cid]
        counts[f"categories_{category['frequency']}"] += 1
    paths = {"image_dir": output_dir}
    for split in LVIS_SPLITS:
        dataset = _header(split)
        dataset.update(splits[split], categories=categories)
        path = os.path.join(output_dir, "annotations", f"lvis_v1_{split}.json")
        with open(path, "w") as f:
            f.write(json.dumps(dataset, separators=(",", ":")))
        folder = "train2017" if split == "train" else "val2017"
        paths[f"{split}_images"] = os.path.join(output_dir, folder)
        paths[f"{split}_annotations"] = path
    if stats is not None:
        for key, value in counts.items():
            stats[key] = stats.get(key, 0) + value
    return paths

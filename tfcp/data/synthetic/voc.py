"""PASCAL VOC devkit writer for synthetic scenes (used by `python -m tfcp.data.synthetic`).

Writes `D/VOCdevkit/VOC<year>/` for each year as the real devkit has it:

* `JPEGImages/<stem>.jpg`; stems `000001` for VOC2007, `2012_000001` for VOC2012.
* `Annotations/<stem>.xml`: folder, filename, source, size (width, height, depth),
  segmented, and per object name, pose, truncated, difficult and bndbox with 1-based
  inclusive integer pixel coordinates (xmin = first column + 1) of the visible part.
* `SegmentationClass/<stem>.png` and `SegmentationObject/<stem>.png` for segmented images:
  'P'-mode PNGs with VOC's colormap; class index 1..20 (0 background) resp. object index
  1..N in XML order, and 255 ("void") on a band along every object boundary.
* `ImageSets/Main/{train,val,trainval[,test]}.txt`, per class
  `ImageSets/Main/<class>_<split>.txt` (`<stem> <label>`: 1 present, 0 only difficult,
  -1 absent) and `ImageSets/Segmentation/{train,val,trainval[,test]}.txt`.

VOC2007 has train/val/test, later years train/val, with splits interleaved over the stems.
"""

from __future__ import annotations

import collections
import os
import xml.etree.ElementTree as ET
from collections.abc import MutableMapping, Sequence

import cv2
import numpy as np
from PIL import Image

from tfcp.data.synthetic.scenes import generate_scene, image_rng, image_shape, save_jpeg
from tfcp.data.voc_classes import VOC_CLASSES

VOC_YEARS = (2007, 2012)
VOID = 255
_POSES = ("Unspecified", "Left", "Right", "Frontal", "Rear")
_POSE_PROBS = (0.6, 0.1, 0.1, 0.1, 0.1)
_DIFFICULT_VISIBLE_FRACTION = 0.3
_DIFFICULT_IMAGE_FRACTION = 0.002
_MAX_RENDER_ATTEMPTS = 10


def voc_colormap(n: int = 256) -> np.ndarray:
    """VOC's label colormap (bit-interleaved index): uint8 [n, 3]; 255 -> (224, 224, 192)."""
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def void_border(label_map: np.ndarray, radius: int = 1) -> np.ndarray:
    """Pixels within `radius` (Chebyshev) of a label change: bool [H, W].

    Args:
      label_map: uint8 [H, W] instance (or class) indices, 0 background.
      radius: half-width of the band; the band is ~2 * radius px wide across each edge.
    """
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(label_map, kernel) != cv2.erode(label_map, kernel)


def voc_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(xmin, ymin, xmax, ymax) of a non-empty 0/1 [H, W] mask, 1-based inclusive as VOC."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("voc_box of an empty mask")
    return int(cols[0]) + 1, int(rows[0]) + 1, int(cols[-1]) + 1, int(rows[-1]) + 1


def _sub(parent: ET.Element, tag: str, text: object | None = None) -> ET.Element:
    node = ET.SubElement(parent, tag)
    if text is not None:
        node.text = str(text)
    return node


def annotation_xml(
    year: int, stem: str, height: int, width: int, segmented: bool, objects: Sequence[dict]
) -> str:
    """VOC annotation XML text; `objects` hold name, pose, truncated, difficult, bbox."""
    root = ET.Element("annotation")
    _sub(root, "folder", f"VOC{year}")
    _sub(root, "filename", f"{stem}.jpg")
    source = _sub(root, "source")
    _sub(source, "database", f"The VOC{year} Database")
    _sub(source, "annotation", f"PASCAL VOC{year}")
    _sub(source, "image", "flickr")
    size = _sub(root, "size")
    _sub(size, "width", width)
    _sub(size, "height", height)
    _sub(size, "depth", 3)
    _sub(root, "segmented", int(segmented))
    for obj in objects:
        node = _sub(root, "object")
        _sub(node, "name", obj["name"])
        _sub(node, "pose", obj["pose"])
        _sub(node, "truncated", int(obj["truncated"]))
        _sub(node, "difficult", int(obj["difficult"]))
        box = _sub(node, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), obj["bbox"], strict=True):
            _sub(box, tag, value)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode") + "\n"


def save_palette_png(label_map: np.ndarray, path: str) -> None:
    """Writes uint8 [H, W] indices as a 'P'-mode PNG with VOC's colormap."""
    h, w = label_map.shape
    image = Image.frombytes("P", (w, h), np.ascontiguousarray(label_map, np.uint8).tobytes())
    image.putpalette(voc_colormap().ravel().tolist())
    image.save(path)


def _stem(year: int, k: int) -> str:
    return f"{k + 1:06d}" if year == 2007 else f"{year}_{k + 1:06d}"


def _write_lists(path: str, stems: Sequence[str]) -> None:
    with open(path, "w") as f:
        f.writelines(f"{s}\n" for s in sorted(stems))


def _write_year(
    root: str, year: int, counts: dict[str, int], image_size: int, seed: int, opts: dict, stats
) -> str:
    base = os.path.join(root, f"VOC{year}")
    dirs = {
        d: os.path.join(base, d)
        for d in ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationObject")
    }
    dirs["main"] = os.path.join(base, "ImageSets", "Main")
    dirs["seg"] = os.path.join(base, "ImageSets", "Segmentation")
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    labels = [split for split, n in counts.items() for _ in range(n)]
    order = image_rng(seed, year, 1_000_000_007).permutation(len(labels))
    splits = [labels[j] for j in order]  # split of image k, interleaved over the stems
    first_of_split = {s: splits.index(s) for s in counts if counts[s]}
    members = collections.defaultdict(list)  # split -> stems
    seg_members = collections.defaultdict(list)
    presence = collections.defaultdict(dict)  # stem -> class -> 1 (present) / 0 (difficult)
    for k, split in enumerate(splits):
        stem = _stem(year, k)
        rng = image_rng(seed, year, k)
        height, width = image_shape(rng, image_size, opts["image_hw"])
        for _ in range(_MAX_RENDER_ATTEMPTS):
            scene = generate_scene(
                rng,
                height,
                width,
                len(VOC_CLASSES),
                mean_instances=opts["mean_instances"],
                max_instances=opts["max_instances"],
            )
            stats["dropped_occluded"] += scene.num_dropped
            if len(scene.masks):
                break
            stats["rerendered_empty"] += 1
        else:
            raise RuntimeError(f"VOC{year} {stem}: no visible object in any render attempt")
        segmented = first_of_split[split] == k or rng.random() < opts["segmented_fraction"]
        objects = []
        for i, mask in enumerate(scene.masks):
            visible = int(mask.sum())
            difficult = (
                visible < _DIFFICULT_VISIBLE_FRACTION * scene.full_areas[i]
                or visible < _DIFFICULT_IMAGE_FRACTION * height * width
            )
            name = VOC_CLASSES[scene.class_indices[i]]
            objects.append(
                {
                    "name": name,
                    "pose": _POSES[int(rng.choice(len(_POSES), p=_POSE_PROBS))],
                    "truncated": bool(scene.truncated[i]),
                    "difficult": bool(difficult),
                    "bbox": voc_box(mask),
                }
            )
            presence[stem][name] = max(presence[stem].get(name, 0), 0 if difficult else 1)
            stats["difficult"] += int(difficult)
            stats["truncated"] += int(scene.truncated[i])
        stats["images"] += 1
        stats["instances"] += len(objects)
        save_jpeg(scene.image, os.path.join(dirs["JPEGImages"], f"{stem}.jpg"), opts["quality"])
        xml = annotation_xml(year, stem, height, width, segmented, objects)
        with open(os.path.join(dirs["Annotations"], f"{stem}.xml"), "w") as f:
            f.write(xml)
        members[split].append(stem)
        if segmented:
            seg_members[split].append(stem)
            stats["segmented_images"] += 1
            obj_map = np.zeros((height, width), np.uint8)
            cls_map = np.zeros((height, width), np.uint8)
            for i, mask in enumerate(scene.masks):
                obj_map[mask > 0] = i + 1
                cls_map[mask > 0] = scene.class_indices[i] + 1
            border = void_border(obj_map, max(1, round(min(height, width) / 250)))
            obj_map[border] = VOID
            cls_map[border] = VOID
            save_palette_png(cls_map, os.path.join(dirs["SegmentationClass"], f"{stem}.png"))
            save_palette_png(obj_map, os.path.join(dirs["SegmentationObject"], f"{stem}.png"))
    members["trainval"] = members["train"] + members["val"]
    seg_members["trainval"] = seg_members["train"] + seg_members["val"]
    for split in [*counts, "trainval"]:
        _write_lists(os.path.join(dirs["main"], f"{split}.txt"), members[split])
        _write_lists(os.path.join(dirs["seg"], f"{split}.txt"), seg_members[split])
        for name in VOC_CLASSES:
            with open(os.path.join(dirs["main"], f"{name}_{split}.txt"), "w") as f:
                for stem in sorted(members[split]):
                    f.write(f"{stem} {presence[stem].get(name, -1):2d}\n")
    return base


def write_voc(
    output_dir: str,
    num_train: int = 64,
    num_val: int = 16,
    image_size: int = 256,
    seed: int = 0,
    *,
    years: Sequence[int] = VOC_YEARS,
    num_test: int | None = None,
    image_hw: tuple[int, int] | None = None,
    mean_instances: float = 6.0,
    max_instances: int = 15,
    segmented_fraction: float = 0.5,
    jpeg_quality: int = 90,
    stats: MutableMapping[str, int] | None = None,
) -> dict[str, str]:
    """Writes a PASCAL VOC devkit with every year in `years` under D/VOCdevkit.

    Args:
      output_dir: root directory D (created if missing); existing files are overwritten.
      num_train: train images per year.
      num_val: val images per year.
      image_size: longer image side; aspect 4:3, 3:4 or 1:1 (ignored if `image_hw`).
      seed: non-negative int; same arguments -> byte-identical files.
      years: VOC years to write; 2007 also gets a test split.
      num_test: VOC2007 test images (default `num_val`).
      image_hw: fixed (height, width) for every image.
      mean_instances: mean objects drawn per image (every image keeps at least one).
      max_instances: most objects drawn per image (<= 250: object PNG indices are uint8).
      segmented_fraction: share of images with segmentation PNGs; the first image of every
        split is always segmented.
      jpeg_quality: JPEG quality.
      stats: optional dict to accumulate counts into (images, instances, difficult,
        truncated, segmented_images, dropped_occluded, rerendered_empty).

    Returns:
      {'voc_root': D/VOCdevkit, 'VOC2007': D/VOCdevkit/VOC2007, ...}.
    """
    if not 1 <= max_instances <= 250:
        raise ValueError(f"max_instances must be in [1, 250], got {max_instances}")
    if num_train < 0 or num_val < 0 or (num_test is not None and num_test < 0):
        raise ValueError(f"image counts must be >= 0: {num_train}, {num_val}, {num_test}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    counter = collections.Counter()
    opts = dict(
        image_hw=image_hw,
        mean_instances=mean_instances,
        max_instances=max_instances,
        segmented_fraction=segmented_fraction,
        quality=jpeg_quality,
    )
    root = os.path.join(output_dir, "VOCdevkit")
    paths = {"voc_root": root}
    for year in years:
        counts = {"train": num_train, "val": num_val}
        if year == 2007:
            counts["test"] = num_val if num_test is None else num_test
        paths[f"VOC{year}"] = _write_year(root, year, counts, image_size, seed, opts, counter)
    if stats is not None:
        for key, value in counter.items():
            stats[key] = stats.get(key, 0) + value
    return paths

"""LVIS v1 box and mask evaluation (federated), as the reference lvis-api 0.5.3 computes it.

`evaluate(annotation_json, results, iou_type)` returns AP, AP50, AP75, APs, APm, APl, APr,
APc, APf (and AR, ARs, ARm, ARl at the detection cap) equal to `lvis.LVISEval` (PyPI
`lvis==0.5.3`, which no longer runs on numpy 2); tests/evaluation/lvis_test.py cross-checks
them on random cases. The protocol:

- at most `max_dets` (300) detections per image: the top scores of the image across all
  categories (ties kept in input order), taken before anything else is filtered; score
  threshold 0;
- federated: for each image only the categories of its positive set (categories with ground
  truth in it) and of its `neg_category_ids` are evaluated; a detection of any other category
  is dropped (neither true nor false positive); a detection of a negative category is a false
  positive;
- an unmatched detection of a category in the image's `not_exhaustive_category_ids` is ignored;
- ground truth and detections with area 0 are left out (the reference's `area > 0` filter);
  areas come from the annotations' `area` field; detection areas are box w*h (`bbox`) or
  mask pixels (`segm`);
- COCO area ranges (all, small < 32^2, medium < 96^2, large), IoU thresholds 0.5:0.05:0.95,
  101-point interpolated precision; APr/APc/APf average over the categories whose `frequency`
  is 'r'/'c'/'f'. A metric with no ground truth is -1.

One difference: for `segm`, the detection area is always the mask area. The reference uses the
box area when the results also carry a `bbox` (Detectron2 removes the boxes for that reason).

`LvisEvaluator` is `tfcp.evaluation.coco.CocoEvaluator` (same `update` / `result` / `reset`,
same conversion of model outputs) with LVIS metrics.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from absl import logging
from pycocotools import mask as mask_api

from tfcp.evaluation import coco
from tfcp.evaluation import lvis_matching as matching

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
METRIC_NAMES += ("AR", "ARs", "ARm", "ARl")  # recall at the detection cap
FREQUENCIES = ("r", "c", "f")
IOU_TYPES = ("bbox", "segm")


def _load_json(path: str, what: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"LVIS {what} file not found: {path}")
    with open(path) as f:
        return json.load(f)


def _sorted_ids(ids: Iterable) -> list:
    """Image ids in the reference's order (np.unique: numeric or lexicographic)."""
    return sorted(set(ids), key=lambda i: (isinstance(i, str), i))


class LvisGroundTruth:
    """Index of an LVIS v1 annotation set, built once and reused by `evaluate`.

    Attributes:
      source: the file name (or a description) used in error messages.
      images: {image id: image dict}.
      category_ids: sorted category ids (the K columns of the precision table).
      frequency_groups: category indices (into `category_ids`) of the r, c and f groups.
    """

    def __init__(self, annotation_json: str | Mapping, source: str | None = None):
        """Indexes `annotation_json`: a path to LVIS v1 JSON or its loaded dict.

        Raises:
          FileNotFoundError: the file does not exist.
          ValueError: a list or an LVIS field (`neg_category_ids`, `not_exhaustive_category_ids`,
            `frequency`, `area`, `bbox`) is missing or wrong; an annotation's image or
            category is unknown.
        """
        if isinstance(annotation_json, str):
            self.source = source or annotation_json
            dataset = _load_json(annotation_json, "annotation")
        else:
            self.source = source or "the LVIS annotation dict"
            dataset = annotation_json
        for key in ("images", "annotations", "categories"):
            if key not in dataset:
                raise ValueError(f"{self.source} has no '{key}' list")
        self.images = {img["id"]: img for img in dataset["images"]}
        self._negative, self._not_exhaustive = {}, {}
        for img in dataset["images"]:
            for key in ("neg_category_ids", "not_exhaustive_category_ids", "height", "width"):
                if key not in img:
                    raise ValueError(
                        f"image {img['id']!r} of {self.source} has no '{key}' (not LVIS v1 "
                        "annotations? use the COCO evaluator)"
                    )
            self._negative[img["id"]] = set(img["neg_category_ids"])
            self._not_exhaustive[img["id"]] = set(img["not_exhaustive_category_ids"])
        self.category_ids = sorted(cat["id"] for cat in dataset["categories"])
        self._category_index = {c: k for k, c in enumerate(self.category_ids)}
        self.frequency_groups = [[] for _ in FREQUENCIES]
        for cat in sorted(dataset["categories"], key=lambda c: c["id"]):
            if cat.get("frequency") not in FREQUENCIES:
                raise ValueError(
                    f"category {cat['id']} of {self.source} has frequency "
                    f"{cat.get('frequency')!r}, expected one of {FREQUENCIES}"
                )
            group = self.frequency_groups[FREQUENCIES.index(cat["frequency"])]
            group.append(self._category_index[cat["id"]])
        self._gt = defaultdict(list)  # (image id, category id) -> annotations
        self._positive = defaultdict(set)
        for ann in dataset["annotations"]:
            if ann.get("image_id") not in self.images:
                raise ValueError(
                    f"annotation {ann.get('id')!r} of {self.source} has image_id "
                    f"{ann.get('image_id')!r}, which is not in its images"
                )
            if ann.get("category_id") not in self._category_index:
                raise ValueError(
                    f"annotation {ann.get('id')!r} of {self.source} has category_id "
                    f"{ann.get('category_id')!r}, which is not in its categories"
                )
            if "area" not in ann or "bbox" not in ann:
                raise ValueError(f"annotation {ann.get('id')!r} of {self.source} has no area/bbox")
            if not 0 < ann["area"] < float("inf"):
                continue  # as the reference: objects of area 0 are not evaluated
            self._gt[ann["image_id"], ann["category_id"]].append(ann)
            self._positive[ann["image_id"]].add(ann["category_id"])
        self._rle_cache: dict = {}

    def category_index(self, category_id) -> int | None:
        return self._category_index.get(category_id)

    def evaluated(self, image_id, category_id) -> bool:
        """Whether the federated protocol evaluates `category_id` on `image_id`."""
        positive = self.image_categories(image_id)
        return category_id in positive or category_id in self._negative[image_id]

    def not_exhaustive(self, image_id, category_id) -> bool:
        return category_id in self._not_exhaustive[image_id]

    def annotations(self, image_id, category_id) -> list[dict]:
        return self._gt.get((image_id, category_id), [])

    def image_categories(self, image_id) -> set:
        return self._positive.get(image_id, set())

    def rles(self, image_id, category_id) -> list[dict]:
        """Compressed RLEs of the ground truth of (image, category), cached."""
        key = (image_id, category_id)
        if key not in self._rle_cache:
            img = self.images[image_id]
            self._rle_cache[key] = [
                _to_rle(a["segmentation"], img, f"annotation {a.get('id')!r} of {self.source}")
                for a in self.annotations(image_id, category_id)
            ]
        return self._rle_cache[key]


def _to_rle(segmentation, image: Mapping, where: str) -> dict:
    """Polygons, uncompressed or compressed RLE -> one compressed RLE of the image's size."""
    height, width = int(image["height"]), int(image["width"])
    if isinstance(segmentation, list):
        if not segmentation:
            raise ValueError(f"{where}: empty segmentation")
        return mask_api.merge(mask_api.frPyObjects(segmentation, height, width))
    if not isinstance(segmentation, Mapping) or "counts" not in segmentation:
        raise ValueError(f"{where}: segmentation must be polygons or an RLE dict")
    if list(segmentation.get("size", [])) != [height, width]:
        raise ValueError(
            f"{where}: RLE size {segmentation.get('size')} differs from the image "
            f"{image['id']!r} size {[height, width]}"
        )
    if isinstance(segmentation["counts"], list):
        return mask_api.frPyObjects(dict(segmentation), height, width)
    return dict(segmentation)


def _boxes(items: Sequence[Mapping], where: str) -> np.ndarray:
    """The `bbox` fields of `items` as float64 [N, 4] xywh."""
    if not items:
        return np.zeros([0, 4])
    try:
        boxes = np.array([item["bbox"] for item in items], np.float64).reshape(len(items), -1)
    except ValueError as e:
        raise ValueError(f"{where}: a bbox is not 4 numbers: {e}") from e
    if boxes.shape[1:] != (4,):
        raise ValueError(f"{where}: bbox must be [x, y, w, h], got {items[0]['bbox']!r}")
    return boxes


def _prepare_results(
    gt: LvisGroundTruth, results: Sequence[Mapping], iou_type: str, max_dets: int
) -> dict:
    """Validated, capped, filtered detections grouped by (image id, category id).

    Returns:
      {(image id, category id): (scores float64 [D] decreasing, geometry, areas float64 [D])},
      geometry a float64 [D, 4] xywh array (`bbox`) or a list of D RLEs (`segm`).
    """
    field = "bbox" if iou_type == "bbox" else "segmentation"
    by_image = defaultdict(list)
    for index, det in enumerate(results):
        if not isinstance(det, Mapping) or any(
            k not in det for k in ("image_id", "category_id", "score", field)
        ):
            raise ValueError(
                f"LVIS result {index} needs image_id, category_id, score and {field}: {det!r:.200}"
            )
        if det["image_id"] not in gt.images:
            raise ValueError(
                f"LVIS result {index} has image_id {det['image_id']!r}, not in {gt.source}"
            )
        if not np.isfinite(det["score"]):
            raise ValueError(f"LVIS result {index} has score {det['score']!r}")
        by_image[det["image_id"]].append(det)
    grouped = defaultdict(list)
    for image_id, dets in by_image.items():
        if 0 <= max_dets < len(dets):
            order = np.argsort([-float(d["score"]) for d in dets], kind="stable")[:max_dets]
            dets = [dets[i] for i in order]
        for det in dets:
            if gt.category_index(det["category_id"]) is None:
                continue
            if gt.evaluated(image_id, det["category_id"]):
                grouped[image_id, det["category_id"]].append(det)
    prepared = {}
    for key, dets in grouped.items():
        scores = np.array([float(d["score"]) for d in dets], np.float64)
        order = np.argsort(-scores, kind="mergesort")
        if iou_type == "bbox":
            geometry = _boxes(dets, f"LVIS results of image {key[0]!r}")[order]
            areas = geometry[:, 2] * geometry[:, 3]
        else:
            where = f"an LVIS result of image {key[0]!r}"
            geometry = [_to_rle(dets[i]["segmentation"], gt.images[key[0]], where) for i in order]
            areas = mask_api.area(geometry).astype(np.float64)
        keep = (areas > 0) & (areas < float("inf"))
        if iou_type == "bbox":
            geometry = geometry[keep]
        else:
            geometry = [g for g, k in zip(geometry, keep, strict=True) if k]
        prepared[key] = (scores[order][keep], geometry, areas[keep])
    return prepared


def _evaluate_index(
    gt: LvisGroundTruth,
    results: Sequence[Mapping],
    iou_type: str,
    max_dets: int,
    image_ids: Iterable | None,
) -> dict[str, float]:
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if image_ids is None:
        image_ids = gt.images.keys()
    image_ids = _sorted_ids(image_ids)
    unknown = [i for i in image_ids if i not in gt.images]
    if unknown:
        raise ValueError(f"image ids {unknown[:5]} are not in {gt.source}")
    detections = _prepare_results(gt, results, iou_type, max_dets)
    dt_categories = defaultdict(set)
    for image_id, category_id in detections:
        dt_categories[image_id].add(category_id)
    per_category = [[] for _ in gt.category_ids]
    empty = (np.zeros([0]), np.zeros([0, 4]) if iou_type == "bbox" else [], np.zeros([0]))
    for image_id in image_ids:
        for category_id in gt.image_categories(image_id) | dt_categories[image_id]:
            anns = gt.annotations(image_id, category_id)
            scores, dt_geometry, dt_area = detections.get((image_id, category_id), empty)
            if iou_type == "bbox":
                gt_geometry = _boxes(anns, f"annotations of image {image_id!r} in {gt.source}")
            else:
                gt_geometry = gt.rles(image_id, category_id)
            if len(scores) and anns:
                ious = np.asarray(mask_api.iou(dt_geometry, gt_geometry, [0] * len(anns)))
            else:
                ious = np.zeros([len(scores), len(anns)])
            matched, dt_ignore, gt_ignore = matching.match_detections(
                ious.reshape(len(scores), len(anns)),
                np.array([a["area"] for a in anns], np.float64),
                np.array([bool(a.get("ignore", 0)) for a in anns], bool),
                dt_area,
                gt.not_exhaustive(image_id, category_id),
            )
            k = gt.category_index(category_id)
            per_category[k].append((scores, matched, dt_ignore, gt_ignore))
    precision, recall = matching.accumulate(per_category)
    return matching.summarize(precision, recall, gt.frequency_groups)


def evaluate(
    annotation_json: str | Mapping | LvisGroundTruth,
    results: Sequence[Mapping] | str,
    iou_type: str = "bbox",
    max_dets: int = 300,
    image_ids: Iterable | None = None,
) -> dict[str, float]:
    """LVIS v1 federated evaluation of detections or instance masks.

    Args:
      annotation_json: LVIS v1 annotation file path, its loaded dict (not modified) or an
        `LvisGroundTruth` built from it (to reuse the index): images with `id`,
        `height`, `width`, `neg_category_ids`, `not_exhaustive_category_ids`; categories with
        `id` and `frequency` ('r', 'c' or 'f'); annotations with `id`, `image_id`,
        `category_id`, `area`, `bbox` (xywh) and, for `segm`, `segmentation` (polygons or RLE).
      results: LVIS results (a list, or a JSON file of it): dicts with `image_id`,
        `category_id`, `score` and `bbox` [x, y, w, h] (`bbox`) or `segmentation` (compressed
        RLE of the image's size, counts str or bytes) (`segm`). Not modified.
      iou_type: 'bbox' or 'segm'.
      max_dets: detections kept per image (top scores, across categories); negative = all.
      image_ids: evaluate these images only (default: all images of the annotations).

    Returns:
      {name: float} for `METRIC_NAMES`: values in [0, 1], -1 when a metric has no ground truth
      (e.g. APr without rare categories in the evaluated images).

    Raises:
      ValueError: an unknown `iou_type`; a result without its fields, of an image not in the
        annotations, with a non-finite score or a mask of the wrong size; bad annotations
        (see `LvisGroundTruth`).
      FileNotFoundError: a file does not exist.
    """
    if isinstance(results, str):
        results = _load_json(results, "results")
        if not isinstance(results, list):
            raise ValueError("an LVIS results file must hold a list of detections")
    if isinstance(annotation_json, LvisGroundTruth):
        gt = annotation_json
    else:
        gt = LvisGroundTruth(annotation_json)
    return _evaluate_index(gt, results, iou_type, max_dets, image_ids)


class LvisEvaluator(coco.CocoEvaluator):
    """Accumulates detections and computes LVIS box (and mask) AP, APr, APc, APf.

    Same interface and model-output conversion as `tfcp.evaluation.coco.CocoEvaluator`
    (`update(predictions)` per batch, `result()`, `reset()`); the ground truth must be LVIS v1.
    `result()` returns `box_<name>` for each name of `METRIC_NAMES` (AP ... APf, AR ... ARl),
    the same with `mask_` when `include_mask`, and `num_images`; -1 for a metric with no
    ground truth among the seen images.
    """

    _BENCHMARK = "LVIS"

    def __init__(
        self,
        annotation_file: str | None = None,
        include_mask: bool = True,
        *,
        groundtruth: Mapping | None = None,
        max_dets: int = 300,
    ):
        """Creates the evaluator; arguments as `CocoEvaluator`, plus `max_dets` per image.

        Raises:
          ValueError, FileNotFoundError: as `CocoEvaluator` and `LvisGroundTruth`.
        """
        super().__init__(annotation_file, include_mask, groundtruth=groundtruth)
        self._max_dets = max_dets
        self._lvis_gt = LvisGroundTruth(self._coco_gt.dataset, source=self._source)

    def _evaluate(self, results: list[dict], iou_type: str) -> dict[str, float]:
        """{name: value} for `METRIC_NAMES` of `results` ('bbox' or 'segm') on the images seen."""
        values = _evaluate_index(
            self._lvis_gt, results, iou_type, self._max_dets, self._seen.values()
        )
        logging.info("LVIS %s evaluation: %s", iou_type, values)
        return {n: float(values[n]) for n in METRIC_NAMES}

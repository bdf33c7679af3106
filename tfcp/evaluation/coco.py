"""COCO box and mask evaluation with pycocotools (host-side numpy).

`CocoEvaluator` collects per-image detections, converts them to COCO results (xywh boxes,
compressed-RLE masks) and runs `pycocotools.cocoeval.COCOeval` for `bbox` and `segm`,
restricted to the images seen in `update`, so a partial evaluation is honest about what
it measured (`num_images` is reported). Images seen with zero detections count: their
ground truth is missed, as it should be (Model Garden's evaluator only keeps image ids
that have a detection).

As in Detectron2 and the COCO server, the `bbox` results carry no segmentation and the
`segm` results carry no box, so pycocotools derives the detection area (used for the
small/medium/large ranges) from the box for `bbox` and from the mask for `segm`.

Ground truth is a COCO JSON file (the primary path) or, when no annotation file exists,
a COCO dataset dict built from the eval TFRecords by `coco_dataset_from_tfrecords`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
from absl import logging
from pycocotools import coco as coco_api
from pycocotools import cocoeval
from pycocotools import mask as mask_api

from tfcp.data import decoder
from tfcp.ops.paste_masks import paste_masks

METRIC_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "ARmax1",
    "ARmax10",
    "ARmax100",
    "ARs",
    "ARm",
    "ARl",
)


def _id_key(source_id) -> str:
    """Canonical string form of an image id given as int, str, bytes or numpy scalar."""
    if isinstance(source_id, np.ndarray):
        source_id = source_id.item()
    if isinstance(source_id, bytes):
        source_id = source_id.decode("utf-8")
    if isinstance(source_id, (int, np.integer)):
        return str(int(source_id))
    return str(source_id).strip()


def _encode_rle(masks: np.ndarray) -> list[dict]:
    """uint8 [K, H, W] 0/1 masks -> K compressed RLEs (counts as str, JSON-ready)."""
    if masks.shape[0] == 0:
        return []
    rles = mask_api.encode(np.asfortranarray(np.transpose(masks.astype(np.uint8), (1, 2, 0))))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def _load_results(coco_gt: coco_api.COCO, anns: list[dict], iou_type: str) -> coco_api.COCO:
    """`COCO.loadRes` that also accepts an empty result list."""
    res = coco_api.COCO()
    res.dataset["images"] = list(coco_gt.dataset["images"])
    res.dataset["categories"] = copy.deepcopy(coco_gt.dataset["categories"])
    out = []
    for index, ann in enumerate(anns):
        ann = dict(ann, id=index + 1, iscrowd=0)
        if iou_type == "bbox":
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
        else:
            ann["area"] = float(mask_api.area(ann["segmentation"]))
            ann["bbox"] = mask_api.toBbox(ann["segmentation"]).tolist()
        out.append(ann)
    res.dataset["annotations"] = out
    with contextlib.redirect_stdout(io.StringIO()):
        res.createIndex()
    return res


class CocoEvaluator:
    """Accumulates detections and computes COCO box (and mask) AP/AR.

    Usage: `update(predictions)` once per batch, `result()` at the end, `reset()` before
    the next evaluation. `result()` does not reset.
    """

    _BENCHMARK = "COCO"  # names the benchmark in log messages

    def __init__(
        self,
        annotation_file: str | None = None,
        include_mask: bool = True,
        *,
        groundtruth: Mapping | None = None,
    ):
        """Creates the evaluator.

        Args:
          annotation_file: COCO-format JSON with `images`, `annotations`, `categories`.
          include_mask: also evaluate masks (`segm`) and report `mask_*` metrics.
          groundtruth: a COCO dataset dict instead of a file (e.g. from
            `coco_dataset_from_tfrecords`). Exactly one of the two must be given.

        Raises:
          ValueError: neither or both ground-truth sources given; a required list is
            missing; `include_mask` with annotations that have no segmentation.
          FileNotFoundError: the annotation file does not exist.
        """
        if (annotation_file is None) == (groundtruth is None):
            raise ValueError("Give exactly one of `annotation_file` and `groundtruth`.")
        self._include_mask = include_mask
        self._source = annotation_file or "the ground-truth dataset built from TFRecords"
        if annotation_file is not None:
            if not os.path.isfile(annotation_file):
                raise FileNotFoundError(f"COCO annotation file not found: {annotation_file}")
            with open(annotation_file) as f:
                dataset = json.load(f)
        else:
            dataset = copy.deepcopy(dict(groundtruth))
        for key in ("images", "annotations", "categories"):
            if key not in dataset:
                raise ValueError(f"{self._source} has no '{key}' list")
        self._coco_gt = coco_api.COCO()
        self._coco_gt.dataset = dataset
        with contextlib.redirect_stdout(io.StringIO()):
            self._coco_gt.createIndex()
        self._images = {_id_key(i): self._coco_gt.imgs[i] for i in self._coco_gt.getImgIds()}
        self._category_ids = set(self._coco_gt.getCatIds())
        if include_mask:
            missing = [a["id"] for a in dataset["annotations"] if not a.get("segmentation")]
            if missing:
                raise ValueError(
                    f"include_mask=True but {len(missing)} annotations of {self._source} have "
                    f"no segmentation (ids {missing[:5]}...); use include_mask=False"
                )
        self.reset()

    def reset(self) -> None:
        """Forgets all detections and seen images."""
        self._box_results: list[dict] = []
        self._mask_results: list[dict] = []
        self._seen: dict[str, object] = {}
        self._unknown_category = 0

    def _image(self, source_id) -> dict:
        key = _id_key(source_id)
        if key not in self._images:
            raise ValueError(f"image id {key!r} in the predictions is not in {self._source}")
        if key in self._seen:
            raise ValueError(f"image id {key!r} was given to update() twice")
        return self._images[key]

    def _image_masks(self, predictions, b: int, n: int, image: dict) -> np.ndarray:
        """Full-image uint8 [n, h, w] masks of image `b` of the batch."""
        height, width = int(image["height"]), int(image["width"])
        if "detection_masks" in predictions:
            masks = np.asarray(predictions["detection_masks"][b][:n])
            if masks.shape[1] < height or masks.shape[2] < width:
                raise ValueError(
                    f"detection_masks of image {image['id']!r} are {masks.shape[1:]} but the "
                    f"image is {height}x{width} in {self._source}"
                )
            return (masks[:, :height, :width] > 0).astype(np.uint8)
        if "detection_masks_relative" in predictions:
            relative = np.asarray(predictions["detection_masks_relative"][b][:n], np.float32)
            boxes = np.asarray(predictions["detection_boxes"][b][:n], np.float32)
            return paste_masks(relative, boxes, height, width).numpy()
        raise ValueError(
            "include_mask=True but the predictions have neither `detection_masks` nor "
            "`detection_masks_relative`"
        )

    def update(self, predictions: Mapping[str, np.ndarray]) -> None:
        """Adds one batch of detections.

        Args:
          predictions: numpy arrays (or eager tensors) with a leading batch axis B:
            `source_id` [B] (int, str or bytes image ids of the annotation file);
            `detection_boxes` float [B, K, 4] (ymin, xmin, ymax, xmax) in original-image
            pixels; `detection_scores` float [B, K]; `detection_classes` int [B, K]
            (category ids of the annotation file); `num_detections` int [B] (optional,
            default K); with `include_mask`, either `detection_masks` uint8 [B, K, H', W']
            full-image 0/1 masks (H' >= image height, W' >= width; the top-left
            image-sized window is used) or `detection_masks_relative` float [B, K, m, m]
            box-relative probabilities, pasted with `tfcp.ops.paste_masks`.

        Raises:
          ValueError: an image id not in the ground truth, or already updated; missing
            masks; masks smaller than the image.
        """
        predictions = {k: np.asarray(v) for k, v in predictions.items()}
        source_ids = np.reshape(predictions["source_id"], [-1])
        boxes = predictions["detection_boxes"]
        scores = predictions["detection_scores"]
        classes = predictions["detection_classes"]
        num_detections = predictions.get(
            "num_detections", np.full([len(source_ids)], boxes.shape[1], np.int64)
        )
        for b, source_id in enumerate(source_ids):
            image = self._image(source_id)
            n = int(min(num_detections[b], boxes.shape[1]))
            image_boxes = boxes[b, :n].astype(np.float64)
            known = np.array([int(c) in self._category_ids for c in classes[b, :n]], bool)
            self._unknown_category += int(np.sum(~known))
            masks = self._image_masks(predictions, b, n, image) if self._include_mask else None
            rles = _encode_rle(masks[known]) if masks is not None else None
            for j, k in enumerate(np.flatnonzero(known)):
                ymin, xmin, ymax, xmax = image_boxes[k]
                common = {
                    "image_id": image["id"],
                    "category_id": int(classes[b, k]),
                    "score": float(scores[b, k]),
                }
                self._box_results.append(
                    dict(
                        common,
                        bbox=[float(xmin), float(ymin), float(xmax - xmin), float(ymax - ymin)],
                    )
                )
                if rles is not None:
                    self._mask_results.append(dict(common, segmentation=rles[j]))
            self._seen[_id_key(source_id)] = image["id"]

    def _evaluate(self, results: list[dict], iou_type: str) -> dict[str, float]:
        """{metric name: value} of `results` ('bbox' or 'segm') on the images seen."""
        coco_dt = _load_results(self._coco_gt, results, iou_type)
        evaluator = cocoeval.COCOeval(self._coco_gt, coco_dt, iouType=iou_type)
        evaluator.params.imgIds = sorted(self._seen.values(), key=str)
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        logging.info("COCO %s evaluation:\n%s", iou_type, summary.getvalue())
        return {n: float(v) for n, v in zip(METRIC_NAMES, evaluator.stats, strict=True)}

    def result(self) -> dict[str, float]:
        """Metrics over the images seen since the last `reset` (a warning is logged when
        they are not all the images of the ground truth). Subclasses change the metrics by
        overriding `_evaluate` (e.g. `tfcp.evaluation.lvis.LvisEvaluator`).

        Returns:
          `box_AP, box_AP50, box_AP75, box_APs, box_APm, box_APl, box_ARmax1,
          box_ARmax10, box_ARmax100, box_ARs, box_ARm, box_ARl`, the same with `mask_`
          when `include_mask`, and `num_images`. Values follow pycocotools: in [0, 1],
          and -1 for a metric with no ground truth in its area range.

        Raises:
          ValueError: `update` was never called.
        """
        if not self._seen:
            raise ValueError(f"{type(self).__name__}.result() called before any update()")
        name = self._BENCHMARK
        if len(self._seen) < len(self._images):
            logging.warning(
                "%s eval: predictions cover %d of the %d images of %s; the metrics are over "
                "those %d images only",
                name,
                len(self._seen),
                len(self._images),
                self._source,
                len(self._seen),
            )
        if self._unknown_category:
            logging.warning(
                "%s eval: %d detections have category ids absent from %s; they are not evaluated",
                name,
                self._unknown_category,
                self._source,
            )
        metrics = {}
        kinds = [("box", "bbox", self._box_results)]
        if self._include_mask:
            kinds.append(("mask", "segm", self._mask_results))
        for prefix, iou_type, results in kinds:
            values = self._evaluate(results, iou_type)
            metrics.update({f"{prefix}_{n}": v for n, v in values.items()})
        metrics["num_images"] = len(self._seen)
        return metrics


def _source_id_value(raw: str):
    return int(raw) if raw.isdigit() else raw


def coco_dataset_from_tfrecords(
    file_pattern: str, include_mask: bool = True, label_map: Mapping[int, str] | None = None
) -> dict:
    """Builds a COCO ground-truth dataset dict from Model Garden TF Example records.

    Used when no annotation JSON exists (`EVAL_ANNOTATIONS` unset). Numeric source ids
    become int image ids, others stay strings.

    Args:
      file_pattern: glob (or comma-separated globs) of TFRecord files.
      include_mask: decode the instance masks into compressed-RLE `segmentation`s.
      label_map: optional {category id: name}; by default categories are the class ids
        seen, named by their id.

    Returns:
      {"images", "annotations", "categories"} in COCO format; boxes are xywh pixels.

    Raises:
      ValueError: no file matches, a record fails to decode (naming file and record
        index), or a source id repeats.
    """
    files = sorted(tf.io.gfile.glob([p.strip() for p in file_pattern.split(",") if p.strip()]))
    if not files:
        raise ValueError(f"no TFRecord file matches {file_pattern!r}")
    images, annotations, seen = [], [], {}
    for path in files:
        dataset = tf.data.TFRecordDataset(path)
        for index, serialized in enumerate(dataset):
            try:
                example = decoder.decode(serialized, include_mask=include_mask)
            except (tf.errors.InvalidArgumentError, ValueError) as e:
                raise ValueError(f"{path}, record {index}: cannot decode: {e}") from e
            raw_id = example["source_id"].numpy().decode("utf-8")
            if raw_id in seen:
                raise ValueError(
                    f"{path}, record {index}: source id {raw_id!r} already seen in {seen[raw_id]}"
                )
            seen[raw_id] = f"{path}, record {index}"
            image_id = _source_id_value(raw_id)
            height, width = int(example["height"]), int(example["width"])
            images.append({"id": image_id, "height": height, "width": width})
            boxes = example["groundtruth_boxes"].numpy() * [height, width, height, width]
            rles = (
                _encode_rle(example["groundtruth_instance_masks"].numpy()) if include_mask else None
            )
            for k, (ymin, xmin, ymax, xmax) in enumerate(boxes.tolist()):
                ann = {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(example["groundtruth_classes"][k]),
                    "bbox": [xmin, ymin, xmax - xmin, ymax - ymin],
                    "area": float(example["groundtruth_area"][k]),
                    "iscrowd": int(example["groundtruth_is_crowd"][k]),
                }
                if rles is not None:
                    ann["segmentation"] = rles[k]
                annotations.append(ann)
    if label_map is not None:
        categories = [{"id": int(i), "name": str(n)} for i, n in sorted(label_map.items())]
    else:
        ids = sorted({a["category_id"] for a in annotations})
        categories = [{"id": i, "name": str(i)} for i in ids]
    return {"images": images, "annotations": annotations, "categories": categories}

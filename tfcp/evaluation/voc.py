"""PASCAL VOC detection mAP (host-side numpy), as the VOC devkit computes it.

Per class, all detections of the class over all images are sorted by descending score
(ties keep update order) and matched greedily: a detection takes the ground-truth box of
its class in its image with the highest IoU (difficult boxes included). If that IoU is
>= `iou_threshold` (the devkit's `VOCevaldet.m` uses `>=`):
  - the box is difficult -> the detection is ignored (neither TP nor FP);
  - the box is not yet matched -> TP, and the box is now matched;
  - the box is already matched -> FP (duplicate detection).
Otherwise the detection is a FP. Recall is over the non-difficult ground-truth boxes.

AP definitions: the 11-point interpolated AP of VOC2007 (mean over recall thresholds
0, 0.1, ..., 1 of the maximum precision at recall >= t) and the all-point AP of VOC2010+
(area under the monotone precision envelope). `voc_mAP50` is the one chosen by
`use_07_metric`; both are always reported. The mean is over classes with at least one
non-difficult ground-truth box; other classes have no defined AP and are left out.

Pixel convention: the devkit works on integer, inclusive, 1-based pixel boxes and adds 1
to widths and heights. Our boxes are continuous pixel coordinates: the model predicts
them, and `tfcp.data.converters.voc` stores a devkit box `[xmin, xmax]` as the continuous
interval `[xmin - 1, xmax]`, whose length is the devkit's `xmax - xmin + 1`. So the default
(`use_voc_pixel_convention=False`, continuous IoU) on converted ground truth equals the
devkit's IoU on the original integer boxes. Set it to True only for boxes given in the
devkit's own inclusive integer convention.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tfcp.data.voc_classes import VOC_CLASSES


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray, pixel_convention: bool = False):
    """Pairwise IoU.

    Args:
      boxes_a: float [N, 4] (ymin, xmin, ymax, xmax) pixels.
      boxes_b: float [M, 4] (ymin, xmin, ymax, xmax) pixels.
      pixel_convention: VOC devkit's inclusive integer boxes (+1 on width and height).

    Returns:
      float64 [N, M] IoU (0 where the union is empty).
    """
    a = np.asarray(boxes_a, np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(boxes_b, np.float64).reshape(-1, 4)[None, :, :]
    one = 1.0 if pixel_convention else 0.0
    inter_h = np.maximum(
        np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + one, 0
    )
    inter_w = np.maximum(
        np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + one, 0
    )
    inter = inter_h * inter_w
    area_a = np.maximum(a[..., 2] - a[..., 0] + one, 0) * np.maximum(a[..., 3] - a[..., 1] + one, 0)
    area_b = np.maximum(b[..., 2] - b[..., 0] + one, 0) * np.maximum(b[..., 3] - b[..., 1] + one, 0)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def average_precision(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """VOC AP from the cumulative recall/precision of score-sorted detections.

    Args:
      recall: float [D] non-decreasing recall after each detection.
      precision: float [D] precision after each detection.
      use_07_metric: 11-point interpolated AP (VOC2007) instead of all-point (VOC2010+).

    Returns:
      The AP in [0, 1]; 0 for no detections.
    """
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.linspace(0.0, 1.0, 11):
            above = precision[recall >= t]
            ap += (above.max() if above.size else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


class VocDetectionEvaluator:
    """Accumulates per-image ground truth and detections; computes VOC AP per class."""

    def __init__(
        self,
        num_classes: int = 20,
        class_names: Sequence[str] | None = None,
        iou_threshold: float = 0.5,
        use_07_metric: bool = True,
        use_voc_pixel_convention: bool = False,
    ):
        """Creates the evaluator.

        Args:
          num_classes: foreground classes, with ids 1..num_classes.
          class_names: names for ids 1..num_classes (default: VOC's 20 when
            num_classes == 20, else the id as text).
          iou_threshold: minimum IoU of a true positive.
          use_07_metric: `voc_mAP50` is the 11-point VOC2007 AP (else all-point).
          use_voc_pixel_convention: +1 on box widths/heights (see module docstring).
        """
        if class_names is None:
            class_names = (
                VOC_CLASSES if num_classes == 20 else [str(i) for i in range(1, num_classes + 1)]
            )
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self._num_classes = num_classes
        self._class_names = list(class_names)
        self._iou_threshold = iou_threshold
        self._use_07_metric = use_07_metric
        self._pixel_convention = use_voc_pixel_convention
        self.reset()

    def reset(self) -> None:
        """Forgets everything accumulated."""
        self._groundtruths: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._detections: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []

    def _check_classes(self, classes: np.ndarray, what: str) -> None:
        bad = classes[(classes < 1) | (classes > self._num_classes)]
        if bad.size:
            raise ValueError(
                f"{what} class ids must be in 1..{self._num_classes}, got {sorted(set(bad))}"
            )

    def _add_image(self, groundtruths: Mapping, predictions: Mapping) -> None:
        gt_classes = np.asarray(groundtruths["classes"], np.int64).reshape(-1)
        num_gt = int(groundtruths.get("num_groundtruths", gt_classes.size))
        gt_boxes = np.asarray(groundtruths["boxes"], np.float64).reshape(-1, 4)[:num_gt]
        gt_classes = gt_classes[:num_gt]
        difficult = groundtruths.get("difficult")
        difficult = (
            np.zeros([num_gt], bool)
            if difficult is None
            else np.asarray(difficult, bool).reshape(-1)[:num_gt]
        )
        if not gt_boxes.shape[0] == gt_classes.size == difficult.size:
            raise ValueError(
                f"ground truth count mismatch: {gt_boxes.shape[0]} boxes, {gt_classes.size} "
                f"classes, {difficult.size} difficult flags"
            )
        self._check_classes(gt_classes, "ground-truth")
        det_classes = np.asarray(predictions["detection_classes"], np.int64).reshape(-1)
        num_det = int(predictions.get("num_detections", det_classes.size))
        det_classes = det_classes[:num_det]
        det_boxes = np.asarray(predictions["detection_boxes"], np.float64).reshape(-1, 4)
        det_scores = np.asarray(predictions["detection_scores"], np.float64).reshape(-1)
        det_boxes, det_scores = det_boxes[:num_det], det_scores[:num_det]
        self._check_classes(det_classes, "detection")
        image = len(self._groundtruths)
        self._groundtruths.append((gt_boxes, gt_classes, difficult))
        self._detections.append((image, det_boxes, det_scores, det_classes))

    def update(self, groundtruths: Mapping, predictions: Mapping) -> None:
        """Adds one image, or a batch of images.

        Args:
          groundtruths: `boxes` float [N, 4] (ymin, xmin, ymax, xmax) original-image
            pixels, `classes` int [N] in 1..num_classes, optional `difficult` bool [N],
            optional `num_groundtruths` (entries beyond it are padding).
          predictions: `detection_boxes` float [K, 4] in the same frame,
            `detection_scores` float [K], `detection_classes` int [K], optional
            `num_detections` (entries beyond it are padding). With a leading batch axis on
            every array of both dicts ([B, N, 4], [B, K, 4], `num_*` [B]) a batch is added.

        Raises:
          ValueError: class ids outside 1..num_classes, or inconsistent counts.
        """
        if np.ndim(predictions["detection_boxes"]) == 3:
            for b in range(np.shape(predictions["detection_boxes"])[0]):
                self._add_image(
                    {k: np.asarray(v)[b] for k, v in groundtruths.items()},
                    {k: np.asarray(v)[b] for k, v in predictions.items()},
                )
        else:
            self._add_image(groundtruths, predictions)

    def _class_pr(self, class_id: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Cumulative (recall, precision) over score-sorted detections and #positives."""
        gts = {}
        num_positives = 0
        for image, (boxes, classes, difficult) in enumerate(self._groundtruths):
            keep = classes == class_id
            gts[image] = (boxes[keep], difficult[keep], np.zeros([int(keep.sum())], bool))
            num_positives += int(np.sum(~difficult[keep]))
        images, boxes, scores = [], [], []
        for image, det_boxes, det_scores, det_classes in self._detections:
            keep = det_classes == class_id
            images.extend([image] * int(keep.sum()))
            boxes.append(det_boxes[keep])
            scores.append(det_scores[keep])
        scores = np.concatenate(scores) if scores else np.zeros([0])
        boxes = np.concatenate(boxes) if boxes else np.zeros([0, 4])
        order = np.argsort(-scores, kind="stable")
        tp = np.zeros([order.size])
        fp = np.zeros([order.size])
        for rank, d in enumerate(order):
            gt_boxes, gt_difficult, matched = gts[images[d]]
            if gt_boxes.shape[0] == 0:
                fp[rank] = 1
                continue
            ious = box_iou(boxes[d : d + 1], gt_boxes, self._pixel_convention)[0]
            j = int(np.argmax(ious))
            if ious[j] >= self._iou_threshold:
                if gt_difficult[j]:
                    continue
                if matched[j]:
                    fp[rank] = 1
                else:
                    tp[rank] = 1
                    matched[j] = True
            else:
                fp[rank] = 1
        counted = (tp + fp) > 0  # ignored detections do not enter the curve
        tp, fp = np.cumsum(tp[counted]), np.cumsum(fp[counted])
        recall = tp / max(num_positives, 1)
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        return recall, precision, num_positives

    def result(self) -> dict[str, float]:
        """Per-class and mean AP over the images added since the last `reset`.

        Returns:
          `voc_mAP{T}` (T = 100 * iou_threshold, e.g. `voc_mAP50`) by the chosen
          definition, `voc_mAP{T}_07` and `voc_mAP{T}_10`, `AP{T}/<class name>` for every
          class with a non-difficult ground-truth box, and `num_images`.

        Raises:
          ValueError: no class has a non-difficult ground-truth box.
        """
        tag = f"{round(100 * self._iou_threshold)}"
        metrics: dict[str, float] = {}
        aps_07, aps_10 = [], []
        for class_id, name in enumerate(self._class_names, start=1):
            recall, precision, num_positives = self._class_pr(class_id)
            if num_positives == 0:
                continue
            ap_07 = average_precision(recall, precision, use_07_metric=True)
            ap_10 = average_precision(recall, precision, use_07_metric=False)
            aps_07.append(ap_07)
            aps_10.append(ap_10)
            metrics[f"AP{tag}/{name}"] = ap_07 if self._use_07_metric else ap_10
        if not aps_07:
            raise ValueError("VOC eval: no class has a non-difficult ground-truth box")
        metrics[f"voc_mAP{tag}_07"] = float(np.mean(aps_07))
        metrics[f"voc_mAP{tag}_10"] = float(np.mean(aps_10))
        metrics[f"voc_mAP{tag}"] = metrics[
            f"voc_mAP{tag}_07" if self._use_07_metric else f"voc_mAP{tag}_10"
        ]
        metrics["num_images"] = len(self._groundtruths)
        return metrics

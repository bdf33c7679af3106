"""Semantic-segmentation mIoU from an accumulated confusion matrix (host-side numpy).

Pixels whose label is `ignore_label` (255 on PASCAL VOC object borders) are left out,
whatever is predicted there. Per class, IoU = TP / (TP + FP + FN) over all accumulated
pixels (dataset-level, not a mean of per-image IoUs, as the VOC devkit and Model Garden
compute it). A class absent from both the ground truth and the predictions (TP + FP + FN
= 0) has no defined IoU: it is left out of the mean and of the per-class keys. A class
that is predicted but never present counts with IoU 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfcp.data.voc_classes import VOC_SEGMENTATION_CLASSES


class SegmentationEvaluator:
    """Accumulates a [C, C] confusion matrix (rows: ground truth, columns: prediction)."""

    def __init__(
        self,
        num_classes: int = 21,
        ignore_label: int = 255,
        class_names: Sequence[str] | None = None,
    ):
        """Creates the evaluator.

        Args:
          num_classes: C; labels and predictions are ids in [0, C).
          ignore_label: ground-truth value of pixels that are not evaluated.
          class_names: C names (default: VOC's 21 when C == 21, else the id as text).
        """
        if class_names is None:
            class_names = (
                VOC_SEGMENTATION_CLASSES
                if num_classes == 21
                else [str(i) for i in range(num_classes)]
            )
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self._num_classes = num_classes
        self._ignore_label = ignore_label
        self._class_names = list(class_names)
        self.reset()

    def reset(self) -> None:
        """Zeroes the confusion matrix."""
        self._confusion = np.zeros([self._num_classes, self._num_classes], np.int64)
        self._num_images = 0

    @property
    def confusion_matrix(self) -> np.ndarray:
        """int64 [C, C] pixel counts; entry [i, j] = ground truth i predicted as j."""
        return self._confusion.copy()

    def update(self, labels, predictions) -> None:
        """Adds one image [H, W] or a batch [B, H, W].

        Args:
          labels: int ground truth, [H, W] or [B, H, W] (a trailing channel of size 1,
            as the decoder's [H, W, 1], is accepted); values in [0, C) or `ignore_label`.
          predictions: int class ids of the same shape (without the channel), in [0, C).

        Raises:
          ValueError: shapes differ, or a label/prediction id is out of range.
        """
        labels = np.asarray(labels)
        predictions = np.asarray(predictions)
        if labels.ndim == predictions.ndim + 1 and labels.shape[-1] == 1:
            labels = labels[..., 0]
        if labels.shape != predictions.shape or labels.ndim not in (2, 3):
            raise ValueError(
                f"labels {labels.shape} and predictions {predictions.shape} must both be "
                "[H, W] or [B, H, W]"
            )
        num_images = 1 if labels.ndim == 2 else labels.shape[0]
        labels = labels.astype(np.int64).reshape(-1)
        predictions = predictions.astype(np.int64).reshape(-1)
        valid = labels != self._ignore_label
        labels, predictions = labels[valid], predictions[valid]
        for name, values in (("label", labels), ("prediction", predictions)):
            bad = values[(values < 0) | (values >= self._num_classes)]
            if bad.size:
                raise ValueError(
                    f"{name} ids must be in [0, {self._num_classes}) (or the ignore label "
                    f"{self._ignore_label}), got {sorted(set(bad.tolist()))[:10]}"
                )
        counts = np.bincount(
            labels * self._num_classes + predictions, minlength=self._num_classes**2
        )
        self._confusion += counts.reshape(self._num_classes, self._num_classes)
        self._num_images += num_images

    def result(self) -> dict[str, float]:
        """mIoU, per-class IoU and pixel accuracy over the pixels accumulated.

        Returns:
          `mIoU` (mean over classes present in the ground truth or the predictions),
          `IoU/<class name>` for those classes, `pixel_accuracy` (correct / evaluated
          pixels), `num_pixels` (evaluated pixels) and `num_images`.

        Raises:
          ValueError: no pixel has been evaluated.
        """
        total = int(self._confusion.sum())
        if total == 0:
            raise ValueError("SegmentationEvaluator.result(): no non-ignored pixel was added")
        true_positives = np.diag(self._confusion).astype(np.float64)
        union = self._confusion.sum(0) + self._confusion.sum(1) - true_positives
        present = union > 0
        iou = np.where(present, true_positives / np.where(present, union, 1), 0.0)
        metrics = {
            f"IoU/{name}": float(iou[c]) for c, name in enumerate(self._class_names) if present[c]
        }
        metrics["mIoU"] = float(iou[present].mean())
        metrics["pixel_accuracy"] = float(true_positives.sum() / total)
        metrics["num_pixels"] = total
        metrics["num_images"] = self._num_images
        return metrics

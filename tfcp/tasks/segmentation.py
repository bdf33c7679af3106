"""Semantic-segmentation task (PASCAL VOC 2012 style): fine-tuning and mIoU evaluation.

Model: `tfcp.modeling.segmentation.build_segmentation_model` (Model Garden
`SegmentationModel`: backbone + FPN or ASPP + segmentation head). Inputs:
`tfcp.data.segmentation_pipeline.build_segmentation_dataset` (gin scopes `train` /
`eval`). Loss: per-pixel softmax cross-entropy with the ignore label left out, Model
Garden's `SegmentationLoss` (logits bilinearly resized to the label size). Evaluation:
logits resampled to ORIGINAL image pixels, arg-max, `tfcp.evaluation.segmentation.
SegmentationEvaluator` (confusion-matrix mIoU over `num_classes`, ignore label left out).
Initialization: backbone (+ FPN) from a tfcp checkpoint or an exported feature extractor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gin
import tensorflow as tf
import tf_keras
from absl import logging
from official.vision.losses import segmentation_losses

from tfcp.modeling import init_checkpoint as init_checkpoint_lib
from tfcp.modeling import segmentation as segmentation_model
from tfcp.tasks import base

_INIT_MODULES = (("backbone",), ("backbone", "decoder"))


def check_init_modules(modules: Sequence[str]) -> tuple[str, ...]:
    """Validates `init_checkpoint_modules`: ('backbone',) or ('backbone', 'decoder')."""
    modules = tuple(modules)
    if modules not in _INIT_MODULES:
        raise ValueError(
            f"init_checkpoint_modules must be ('backbone',) or ('backbone', 'decoder'), "
            f"got {modules!r}"
        )
    return modules


def initialize_backbone(
    model: tf_keras.Model, init_checkpoint: str | None, modules: Sequence[str]
) -> list[str]:
    """Restores `model.backbone` (+ `model.decoder`) from a checkpoint or SavedModel.

    Args:
      model: a built model with `backbone` and `decoder` attributes.
      init_checkpoint: tfcp checkpoint (prefix or directory) or exported feature-extractor
        SavedModel directory; None / '' does nothing.
      modules: ('backbone',) or ('backbone', 'decoder'); the decoder is restored when the
        checkpoint has one.

    Returns:
      The restored module names (empty without `init_checkpoint`).

    Raises:
      FileNotFoundError: `init_checkpoint` does not exist.
      ValueError: incompatible checkpoint (the message names the path and the mismatch).
    """
    if not init_checkpoint:
        return []
    decoder = model.decoder if "decoder" in check_init_modules(modules) else None
    restored = init_checkpoint_lib.restore_backbone_and_decoder(
        init_checkpoint, model.backbone, decoder
    )
    logging.info("Initialized %s from %s", " + ".join(restored), init_checkpoint)
    return restored


def logits_to_original_labels(
    logits: tf.Tensor, image_info: tf.Tensor, output_size: int
) -> tf.Tensor:
    """Per-pixel class ids in original-image pixels, padded to [P, P].

    The model saw the original image scaled by `image_info[:, 2]` (and padded
    bottom/right, no offset). Original pixel (y, x) has its center at input-frame
    coordinate `(y + 0.5) * scale`; the logits are resampled there bilinearly
    (half-pixel centers, edge-clamped, as `tf.image.resize`) and arg-maxed. Pixels beyond
    the original size are filled too: the padded ground truth ignores them.

    Args:
      logits: float [B, h, w, C] over the model input frame [S_h, S_w] (any h, w).
      image_info: float32 [B, 4, 2] Model Garden image info (row 1: [S_h, S_w], row 2:
        scale, row 3: offset, zero in eval).
      output_size: P.

    Returns:
      int32 [B, P, P] class ids.
    """
    logits = tf.cast(logits, tf.float32)
    height = tf.cast(tf.shape(logits)[1], tf.float32)
    width = tf.cast(tf.shape(logits)[2], tf.float32)
    # One replicated edge pixel on each side keeps border samples inside the grid.
    padded = tf.pad(logits, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    image_info = tf.cast(image_info, tf.float32)
    ratio_y = image_info[:, 2, 0] * height / image_info[:, 1, 0]  # logit px / original px
    ratio_x = image_info[:, 2, 1] * width / image_info[:, 1, 1]
    # Sample i (0..P-1) must sit at padded row (i + 0.5) * r + 0.5 (= unpadded (i + 0.5) r - 0.5);
    # crop_and_resize puts it at y1 * (h + 1) + i * (y2 - y1) * (h + 1) / (P - 1).
    y1 = (0.5 * ratio_y + 0.5) / (height + 1.0)
    x1 = (0.5 * ratio_x + 0.5) / (width + 1.0)
    y2 = y1 + ratio_y * (output_size - 1) / (height + 1.0)
    x2 = x1 + ratio_x * (output_size - 1) / (width + 1.0)
    boxes = tf.stack([y1, x1, y2, x2], axis=1)
    resampled = tf.image.crop_and_resize(
        padded,
        boxes,
        tf.range(tf.shape(logits)[0]),
        [output_size, output_size],
        method="bilinear",
    )
    return tf.argmax(resampled, axis=-1, output_type=tf.int32)


@gin.configurable
class SegmentationTask(base.Task):
    """Trains and evaluates a Model Garden `SegmentationModel` (mIoU)."""

    def __init__(
        self,
        model_builder: Callable[[], tf_keras.Model] = segmentation_model.build_segmentation_model,
        num_classes: int = 21,
        ignore_label: int = 255,
        class_names: Sequence[str] | None = None,
        label_smoothing: float = 0.0,
        class_weights: Sequence[float] = (),
        top_k_percent_pixels: float = 1.0,
        init_checkpoint_modules: Sequence[str] = ("backbone", "decoder"),
    ):
        """Creates the task.

        Args:
          model_builder: zero-argument callable returning the built model (default the gin
            builder `build_segmentation_model`).
          num_classes: classes including background (VOC: 21); the model must output as
            many logits.
          ignore_label: label of pixels left out of loss and metric (VOC: 255).
          class_names: names of the classes for `IoU/<name>` (default VOC's when 21).
          label_smoothing, class_weights, top_k_percent_pixels: Model Garden
            `SegmentationLoss` settings.
          init_checkpoint_modules: ('backbone',) (e.g. ASPP models) or ('backbone',
            'decoder') (FPN models: the pretrained FPN is restored when present).
        """
        self._model_builder = model_builder
        self._num_classes = int(num_classes)
        self._ignore_label = int(ignore_label)
        self._class_names = class_names
        self._loss = segmentation_losses.SegmentationLoss(
            label_smoothing=label_smoothing,
            class_weights=list(class_weights),
            ignore_label=ignore_label,
            use_groundtruth_dimension=True,
            top_k_percent_pixels=top_k_percent_pixels,
        )
        self._init_modules = check_init_modules(init_checkpoint_modules)
        self._evaluator = None

    def build_model(self) -> tf_keras.Model:
        model = self._model_builder()
        num_logits = model.head.get_config()["num_classes"]
        if num_logits != self._num_classes:
            raise ValueError(
                f"SegmentationTask.num_classes={self._num_classes} but the model outputs "
                f"{num_logits} classes"
            )
        return model

    def build_inputs(
        self,
        is_training: bool,
        input_context: tf.distribute.InputContext | None = None,
        start_step: int = 0,
    ) -> tf.data.Dataset:
        from tfcp.data import segmentation_pipeline  # noqa: PLC0415 - only needed here

        return base.scoped_dataset(
            segmentation_pipeline.build_segmentation_dataset, is_training, input_context, start_step
        )

    def build_losses(
        self, model: tf_keras.Model, features: Any, labels: Any, training: bool
    ) -> dict[str, tf.Tensor]:
        """Per-pixel softmax cross-entropy over non-ignored pixels.

        Args:
          features: float [B, S, S, 3] normalized images.
          labels: `masks` int [B, S, S, 1] class ids (ignore label allowed).

        Returns:
          {'total_loss', 'segmentation_loss'} float32 scalars (equal).
        """
        logits = tf.cast(model(features, training=training)["logits"], tf.float32)
        loss = self._loss(logits, tf.convert_to_tensor(labels["masks"]))
        return {"total_loss": loss, "segmentation_loss": loss}

    def validation_step(self, model: tf_keras.Model, features: Any, labels: Any) -> dict[str, Any]:
        """Inference: class ids at original resolution.

        Returns:
          `predictions` int32 [B, P, P], `groundtruth` int32 [B, P, P] (padded with the
          ignore label) and `source_id` [B].
        """
        logits = model(features, training=False)["logits"]
        size = labels["groundtruth"].shape[1]
        return {
            "predictions": logits_to_original_labels(logits, labels["image_info"], size),
            "groundtruth": tf.cast(labels["groundtruth"], tf.int32),
            "source_id": labels["source_id"],
        }

    def evaluator_begin(self) -> None:
        if self._evaluator is None:
            from tfcp.evaluation import segmentation  # noqa: PLC0415

            self._evaluator = segmentation.SegmentationEvaluator(
                self._num_classes, self._ignore_label, self._class_names
            )
        self._evaluator.reset()

    def evaluator_update(self, step_outputs: dict[str, Any]) -> None:
        if self._evaluator is None:
            raise RuntimeError("evaluator_update called before evaluator_begin")
        self._evaluator.update(step_outputs["groundtruth"], step_outputs["predictions"])

    def evaluator_result(self) -> dict[str, float]:
        if self._evaluator is None:
            raise RuntimeError("evaluator_result called before evaluator_begin")
        return {k: float(v) for k, v in self._evaluator.result().items()}

    def initialize(self, model: tf_keras.Model, init_checkpoint: str | None) -> None:
        """Restores the backbone (+ FPN); see `initialize_backbone`."""
        initialize_backbone(model, init_checkpoint, self._init_modules)

"""CP2 pretraining task: Copy-Paste contrastive pretraining of a segmentation encoder.

CP2 (Wang et al., ECCV 2022; reference code wangf3014/CP2) pastes a random crop of one image
onto two background images and trains a MoCo-v2 pair of dense encoders (backbone + ASPP +
projection) to (1) match the two composites that share a foreground (instance loss, InfoNCE
against a queue) and (2) tell foreground pixels from background pixels (dense loss).

Model: `tfcp.modeling.cp2.build_cp2_model` (gin). Inputs:
`tfcp.data.cp2_pipeline.build_cp2_dataset` (gin scopes `train` / `eval`). Losses:
`CP2Model.compute_losses`: total = instance + dense_weight x dense, logged with the
reference's instance and dense accuracies (percent). Only the query encoder is trained
(`trainable_variables`); the key encoder follows it by momentum, the queue is updated in the
step, and both are checkpointed with the model, so a resumed run continues exactly.

Evaluation (optional, `--mode=train_and_eval` with `EVAL_FILES`): the same losses and
accuracies on fixed composites of held-out images, without any state update; metrics.json
gets `instance_loss`, `dense_loss`, `total_loss`, `instance_accuracy`, `dense_accuracy`
(image-weighted means).

Initialization ("quick tuning"): `init_checkpoint` = a tfcp checkpoint or exported feature
extractor whose backbone (+ ASPP decoder when it has a compatible one and
`init_checkpoint_modules` asks for it) is restored into the query encoder, then copied to
the key encoder.

Transfer: the trained backbone (+ ASPP) exports with `export/export_saved_model.py
--feature_extractor`, or the training checkpoint serves directly as `INIT_CHECKPOINT` of
`gin_configs/voc/segmentation_*.gin` (`restore_backbone_and_decoder` finds the query
encoder's `backbone/`, the shortest object path).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gin
import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging
from PIL import Image

from tfcp import draw
from tfcp.modeling import cp2 as cp2_model
from tfcp.tasks import base
from tfcp.tasks import segmentation as segmentation_task

METRICS = ("total_loss", "instance_loss", "dense_loss", "instance_accuracy", "dense_accuracy")


def draw_pairs(
    features: dict[str, Any],
    labels: dict[str, Any],
    num_pairs: int | None = None,
    size: int | None = None,
) -> list[np.ndarray]:
    """Pictures of composed query/key pairs with their pasted-foreground outlines.

    Args:
      features: {'query_images', 'key_images'}: float [B, S, S, 3], normalized.
      labels: {'query_masks', 'key_masks'}: float [B, S, S], 1 = pasted foreground.
      num_pairs: draw the first n pairs (None: all).
      size: T, the side each image is scaled to before drawing (None: S).

    Returns:
      uint8 [T, 2 T + 4, 3] tiles: query | key, the foreground region outlined in yellow
      and the background dimmed.
    """
    tiles = []
    num = len(features["query_images"]) if num_pairs is None else num_pairs
    for i in range(num):
        halves = []
        for side in ("query", "key"):
            image = draw.unnormalize_image(np.asarray(features[f"{side}_images"][i]))
            mask = np.asarray(labels[f"{side}_masks"][i]) > 0.5
            if size:
                image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
                mask = np.asarray(
                    Image.fromarray(mask.astype(np.uint8)).resize((size, size), Image.NEAREST)
                ).astype(bool)
            shaded = image.astype(np.float32)
            shaded[~mask] *= 0.6
            shaded = shaded.astype(np.uint8)
            width = max(1, image.shape[0] // 64)
            shaded[draw.mask_outline(mask, width)] = (255, 221, 0)
            halves.append(shaded)
        gap = np.full([halves[0].shape[0], 4, 3], 255, np.uint8)
        tiles.append(np.concatenate([halves[0], gap, halves[1]], axis=1))
    return tiles


@gin.configurable
class CP2Task(base.Task):
    """Pretrains a `CP2Model` (instance + dense contrastive losses)."""

    def __init__(
        self,
        model_builder: Callable[[], tf_keras.Model] = cp2_model.build_cp2_model,
        init_checkpoint_modules: Sequence[str] = ("backbone",),
        num_sample_images: int = 4,
    ):
        """Creates the task.

        Args:
          model_builder: zero-argument callable returning the built `CP2Model` (default the
            gin builder `build_cp2_model`).
          init_checkpoint_modules: what `init_checkpoint` restores into the query encoder:
            ('backbone',) (e.g. an ImageNet backbone for quick tuning) or ('backbone',
            'decoder') (also the ASPP, from a CP2 checkpoint of the same architecture).
          num_sample_images: pairs drawn to TensorBoard (`sample_images`).
        """
        self._model_builder = model_builder
        self._init_modules = segmentation_task.check_init_modules(init_checkpoint_modules)
        self._num_sample_images = int(num_sample_images)
        self._sums: dict[str, float] = {}
        self._count = 0

    def build_model(self) -> tf_keras.Model:
        model = self._model_builder()
        if not isinstance(model, cp2_model.CP2Model):
            raise TypeError(f"CP2Task needs a CP2Model, the builder returned {type(model)}")
        return model

    def build_inputs(
        self,
        is_training: bool,
        input_context: tf.distribute.InputContext | None = None,
        start_step: int = 0,
    ) -> tf.data.Dataset:
        from tfcp.data import cp2_pipeline  # noqa: PLC0415 - only needed here

        return base.scoped_dataset(
            cp2_pipeline.build_cp2_dataset, is_training, input_context, start_step
        )

    def trainable_variables(self, model: tf_keras.Model) -> list[tf.Variable]:
        """The query encoder's variables (the key encoder follows by momentum)."""
        return list(model.query_variables)

    def build_losses(
        self, model: tf_keras.Model, features: Any, labels: Any, training: bool
    ) -> dict[str, tf.Tensor]:
        """`CP2Model.compute_losses`: {'total_loss', 'instance_loss', 'dense_loss',
        'instance_accuracy', 'dense_accuracy'} float32 scalars (accuracies in percent)."""
        return model.compute_losses(features, labels, training=training)

    def validation_step(self, model: tf_keras.Model, features: Any, labels: Any) -> dict[str, Any]:
        """The losses and accuracies of a held-out batch (no state update).

        Returns:
          Each of `METRICS` as float32 [1] (concatenated over replicas) and `num_images`
          float32 [1], the batch size that weights them.
        """
        outputs = model.compute_losses(features, labels, training=False)
        batch = tf.cast(tf.shape(features["query_images"])[0], tf.float32)
        result = {k: tf.reshape(tf.cast(outputs[k], tf.float32), [1]) for k in METRICS}
        result["num_images"] = tf.reshape(batch, [1])
        return result

    def evaluator_begin(self) -> None:
        self._sums = {k: 0.0 for k in METRICS}
        self._count = 0

    def evaluator_update(self, step_outputs: dict[str, Any]) -> None:
        weights = np.asarray(step_outputs["num_images"], np.float64).reshape(-1)
        for key in METRICS:
            values = np.asarray(step_outputs[key], np.float64).reshape(-1)
            self._sums[key] += float(np.sum(values * weights))
        self._count += int(weights.sum())

    def evaluator_result(self) -> dict[str, float]:
        if not self._count:
            raise ValueError("CP2 evaluation saw no image (fewer eval images than a batch?)")
        return {k: v / self._count for k, v in self._sums.items()} | {
            "num_images": float(self._count)
        }

    def initialize(self, model: tf_keras.Model, init_checkpoint: str | None) -> None:
        """Quick tuning: restores the query backbone (+ ASPP), then copies it to the key."""
        restored = segmentation_task.initialize_backbone(model, init_checkpoint, self._init_modules)
        if restored:
            model.copy_query_to_key()
            logging.info("CP2: key encoder set to the restored query encoder")

    def sample_images(
        self, features: Any, labels: Any, outputs: dict[str, Any] | None = None
    ) -> np.ndarray | None:
        """Composed query | key pairs with the foreground outlined, uint8 [N, S, 2S+4, 3]."""
        if outputs is not None:
            return None
        n = self._num_sample_images
        features = {k: np.asarray(v[:n]) for k, v in features.items()}
        labels = {k: np.asarray(v[:n]) for k, v in labels.items()}
        return np.stack(draw_pairs(features, labels))

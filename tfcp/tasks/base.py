"""The Task protocol the trainer (tfcp/trainer.py) drives.

A task bundles everything model-specific: how to build the Keras model, the per-replica
input datasets, the training losses, the inference-mode validation step, the host-side
evaluator and checkpoint initialization. The trainer owns the loop, the optimizer, the
distribution strategy, checkpoints and summaries, and talks to the model only through this
interface.

`Task` itself is a plain Python class; concrete tasks are `@gin.configurable`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import gin
import numpy as np
import tensorflow as tf
import tf_keras


def scoped_dataset(
    builder: Callable[..., tf.data.Dataset],
    is_training: bool,
    input_context: tf.distribute.InputContext | None,
    start_step: int,
) -> tf.data.Dataset:
    """Calls a gin-configured dataset builder in gin scope 'train' or 'eval'.

    Training passes `start_step` (exact resume); evaluation builders take no such argument.
    The `build_inputs` of every tfcp task.
    """
    with gin.config_scope("train" if is_training else "eval"):
        kwargs = {"start_step": start_step} if is_training else {}
        return builder(is_training=is_training, input_context=input_context, **kwargs)


class Task(abc.ABC):
    """Abstract base of a trainable/evaluable model task."""

    @abc.abstractmethod
    def build_model(self) -> tf_keras.Model:
        """Builds and returns the (un-compiled) Keras model with its variables created."""

    @abc.abstractmethod
    def build_inputs(
        self,
        is_training: bool,
        input_context: tf.distribute.InputContext | None = None,
        start_step: int = 0,
    ) -> tf.data.Dataset:
        """Builds the per-replica input dataset.

        Args:
          is_training: True for the training dataset, False for evaluation.
          input_context: given by `strategy.distribute_datasets_from_function`; used to
            shard the files and to compute the per-replica batch size.
          start_step: training only: the global step the stream starts at. A resumed run
            passes its checkpoint's step and must get exactly the batches an uninterrupted
            run would get from that step on, at a cost that does not grow with the step
            (see `tfcp.data.records`).

        Returns:
          A `tf.data.Dataset` of per-replica batches `(features, labels)`.
        """

    @abc.abstractmethod
    def build_losses(
        self, model: tf_keras.Model, features: Any, labels: Any, training: bool
    ) -> dict[str, tf.Tensor]:
        """Runs the forward pass and computes the losses.

        Returns:
          A dict of scalar float32 tensors. It must contain `total_loss`: the per-replica
          mean loss, NOT yet divided by the number of replicas and NOT including weight
          decay (the trainer adds `model.losses` and scales). Every other entry is logged
          as a scalar summary.
        """

    @abc.abstractmethod
    def validation_step(self, model: tf_keras.Model, features: Any, labels: Any) -> dict[str, Any]:
        """Runs the forward pass in inference mode.

        Returns:
          A (nested) dict of tensors that the trainer converts to numpy and hands to
          `evaluator_update`: predictions plus ground-truth ids/info.
        """

    @abc.abstractmethod
    def evaluator_begin(self) -> None:
        """Resets (or creates) the host-side evaluator before an evaluation pass."""

    @abc.abstractmethod
    def evaluator_update(self, step_outputs: dict[str, Any]) -> None:
        """Feeds one (possibly replica-concatenated) `validation_step` output, as numpy."""

    @abc.abstractmethod
    def evaluator_result(self) -> dict[str, float]:
        """Returns the metrics of the pass, e.g. {'box_AP': .., 'mask_AP': ..}."""

    def initialize(self, model: tf_keras.Model, init_checkpoint: str | None) -> None:
        """Restores pretrained weights into `model` before training from scratch.

        Args:
          model: the built model.
          init_checkpoint: a `tf.train` checkpoint (file prefix or directory) of a tfcp
            model, or an exported feature-extractor SavedModel directory; None or '' means
            no initialization.

        Raises:
          FileNotFoundError / ValueError: missing or incompatible checkpoint.
        """
        del model
        if init_checkpoint:
            raise NotImplementedError(
                f"{type(self).__name__} does not support init_checkpoint={init_checkpoint!r}"
            )

    def trainable_variables(self, model: tf_keras.Model) -> list[tf.Variable]:
        """The variables the optimizer updates (default: all of `model.trainable_variables`).

        Override (or configure, see `tfcp.modeling.freeze`) to train a subset, e.g. only the
        final classifier in LVIS stage-2 training. Weight decay applies to these only.
        """
        return list(model.trainable_variables)

    def sample_images(
        self, features: Any, labels: Any, outputs: dict[str, Any] | None = None
    ) -> np.ndarray | None:
        """Optional: uint8 [N, H, W, 3] pictures for TensorBoard, or None."""
        del features, labels, outputs
        return None

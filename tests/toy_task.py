"""A tiny deterministic Task for the trainer's mechanics tests (seconds, not minutes).

Linear regression y = x . w* + b* on an endless stream of examples indexed n = 0, 1, ...;
example n is a pure function of n, so batches are reproducible and the data position is
observable: the losses dict reports `first_index`, the smallest example index in the batch.
"""

from __future__ import annotations

import gin
import numpy as np
import tensorflow as tf
import tf_keras

from tfcp.tasks.base import Task

NUM_FEATURES = 4
TRUE_W = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
TRUE_B = 0.25


def example(n):
    """Example n: x float32 [NUM_FEATURES] in [-1, 1), y float32 scalar."""
    seed = tf.stack([tf.cast(n, tf.int64), tf.constant(7, tf.int64)])
    x = tf.random.stateless_uniform([NUM_FEATURES], seed=seed, minval=-1.0, maxval=1.0)
    y = tf.reduce_sum(x * TRUE_W) + TRUE_B
    return {"x": x, "index": tf.cast(n, tf.int64)}, {"y": y}


@gin.configurable
class ToyTask(Task):
    """Regression task; `nan_at_step` makes the loss NaN on that (0-based) global step."""

    def __init__(
        self,
        global_batch_size: int = 8,
        num_eval_examples: int = 10,
        nan_at_step: int = -1,
        hidden_units: int = 0,
    ):
        self.global_batch_size = global_batch_size
        self.num_eval_examples = num_eval_examples
        self.nan_at_step = nan_at_step
        self.hidden_units = hidden_units
        self._seen = []

    def build_model(self):
        inputs = tf_keras.Input([NUM_FEATURES], name="x")
        h = inputs
        if self.hidden_units:
            h = tf_keras.layers.Dense(self.hidden_units, activation="tanh", name="hidden")(h)
        out = tf_keras.layers.Dense(1, name="out", dtype="float32")(h)
        return tf_keras.Model(inputs, out)

    def build_inputs(self, is_training, input_context=None, start_step=0):
        batch = self.global_batch_size
        if input_context is not None:
            batch = input_context.get_per_replica_batch_size(self.global_batch_size)
        if is_training:
            # Global batch b holds examples b*B .. b*B+B-1 (split over pipelines below).
            ds = tf.data.Dataset.range(start_step * self.global_batch_size, 2**40)
        else:
            ds = tf.data.Dataset.range(self.num_eval_examples)
        if input_context is not None and input_context.num_input_pipelines > 1:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        ds = ds.map(example)
        return ds.batch(batch, drop_remainder=is_training)

    def build_losses(self, model, features, labels, training):
        pred = model(features["x"], training=training)[:, 0]
        loss = tf.reduce_mean(tf.square(pred - labels["y"]))
        step = features["index"] // self.global_batch_size
        loss = tf.where(
            tf.reduce_any(tf.equal(step, self.nan_at_step)), tf.constant(np.nan, tf.float32), loss
        )
        return {
            "total_loss": loss,
            "first_index": tf.cast(tf.reduce_min(features["index"]), tf.float32),
        }

    def validation_step(self, model, features, labels):
        pred = model(features["x"], training=False)[:, 0]
        return {"index": features["index"], "pred": pred, "y": labels["y"]}

    def evaluator_begin(self):
        self._seen = []

    def evaluator_update(self, step_outputs):
        self._seen.append(step_outputs)

    def evaluator_result(self):
        index = np.concatenate([o["index"] for o in self._seen])
        err = np.concatenate([o["pred"] - o["y"] for o in self._seen])
        return {
            "mse": float(np.mean(err**2)),
            "num_examples": int(len(index)),
            "num_unique_examples": int(len(np.unique(index))),
        }

    def sample_images(self, features, labels, outputs=None):
        n = int(tf.shape(features["x"])[0])
        return np.full([min(n, 2), 8, 8, 3], 128, np.uint8)


@gin.configurable
class PipelineFingerprintTask(ToyTask):
    """The real Mask R-CNN input pipeline under a trivial model, for resume tests.

    Its logged "losses" fingerprint each step's batch (sums of images and box targets), so
    two runs saw the same batches at a step iff their logged fingerprints are equal.
    """

    def __init__(self, file_pattern: str, global_batch_size: int = 4, **pipeline_kwargs):
        super().__init__(global_batch_size=global_batch_size)
        self.file_pattern = file_pattern
        self.pipeline_kwargs = pipeline_kwargs

    def build_model(self):
        inputs = tf_keras.Input([None, None, 3], name="images")
        pooled = tf_keras.layers.GlobalAveragePooling2D()(inputs)
        return tf_keras.Model(inputs, tf_keras.layers.Dense(1, name="out")(pooled))

    def build_inputs(self, is_training, input_context=None, start_step=0):
        from tfcp.data import pipeline  # noqa: PLC0415

        return pipeline.build_dataset(
            file_pattern=self.file_pattern,
            is_training=is_training,
            global_batch_size=self.global_batch_size,
            input_context=input_context,
            start_step=start_step,
            **self.pipeline_kwargs,
        )

    def build_losses(self, model, features, labels, training):
        pred = model(features, training=training)[:, 0]
        return {
            "total_loss": tf.reduce_mean(tf.square(pred)),
            "image_sum": tf.reduce_sum(tf.cast(features, tf.float64)),
            "box_sum": tf.reduce_sum(tf.cast(labels["gt_boxes"], tf.float64)),
        }

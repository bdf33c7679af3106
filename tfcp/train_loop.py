"""The distributed training step of tfcp's trainer, and its host-side loss bookkeeping.

`make_train_loop` returns one `tf.function` that runs `num_steps` steps of any `Task` under a
`tf.distribute.Strategy` (loss scaled per replica, weight decay on kernels, optional fp16
loss scaling) and stops at the first non-finite loss without counting that step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

MAX_LOSSES = 64


def weight_decay_loss(
    model: tf_keras.Model, weight_decay: float, variables: Sequence[tf.Variable] | None = None
) -> tf.Tensor:
    """`weight_decay * sum(||w||^2) / 2` over trainable kernels (no bias, no norm params).

    The gradient is `weight_decay * w`, i.e. the usual SGD weight decay (paper: 4e-5).
    Variables count when their last name component contains 'kernel' (kernel,
    depthwise_kernel, ...); batch-norm gamma/beta and biases never do.

    Args:
      model: the model.
      weight_decay: the coefficient.
      variables: the variables being trained (default `model.trainable_variables`).

    Returns:
      A float32 scalar.
    """
    kernels = [
        v
        for v in (model.trainable_variables if variables is None else variables)
        if "kernel" in v.name.split("/")[-1] and "batch_norm" not in v.name
    ]
    if weight_decay == 0.0 or not kernels:
        return tf.constant(0.0)
    return weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in kernels])


class LossAccumulator:
    """Host-side sums of the per-step mean losses between two log lines."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.sums, self.images, self.steps = None, 0.0, 0

    def add(self, loss_sums: np.ndarray, images: float, steps: int):
        self.sums = loss_sums if self.sums is None else self.sums + loss_sums
        self.images += images
        self.steps += steps

    def means(self, names: Sequence[str]) -> dict[str, float]:
        if self.sums is None:
            return {}
        return {n: float(self.sums[i]) / max(self.steps, 1) for i, n in enumerate(names)}


def make_train_loop(
    strategy: tf.distribute.Strategy,
    task,
    model: tf_keras.Model,
    optimizer,
    *,
    weight_decay: float,
    loss_scaling: bool,
    global_step: tf.Variable,
    bad_step: tf.Variable,
    bad_loss: tf.Variable,
    on_loss_names: Callable[[list[str]], None],
):
    """Returns `train_loop(iterator, num_steps) -> (loss sums float32 [MAX_LOSSES], images)`.

    Args:
      strategy, task, model, optimizer: what to train, and how it is distributed.
      weight_decay: L2 weight decay on kernels (`weight_decay_loss`).
      loss_scaling: the optimizer is a `LossScaleOptimizer` (mixed_float16).
      global_step: int64 variable, incremented once per finite step.
      bad_step, bad_loss: set to the step and loss of the first non-finite total loss (the
        loop stops there without incrementing `global_step`).
      on_loss_names: called at trace time with the logged loss names: 'total_loss', the
        task's other entries sorted, then 'regularization_loss'. Their cross-replica means
        are summed over the loop's steps (zero-padded to `MAX_LOSSES`).
    """

    variables = task.trainable_variables(model)
    if not variables:
        raise ValueError(f"{type(task).__name__}.trainable_variables selected no variable")

    def replica_step(inputs):
        features, labels = inputs
        num_replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        with tf.GradientTape() as tape:
            losses = task.build_losses(model, features, labels, training=True)
            if "total_loss" not in losses:
                raise KeyError(f"task.build_losses must return 'total_loss', got {list(losses)}")
            total = tf.cast(losses["total_loss"], tf.float32)
            reg = weight_decay_loss(model, weight_decay, variables)
            if model.losses:
                reg += tf.add_n([tf.cast(x, tf.float32) for x in model.losses])
            loss = (total + reg) / tf.cast(num_replicas, tf.float32)
            if loss_scaling:
                loss = optimizer.get_scaled_loss(loss)
        grads = tape.gradient(loss, variables)
        if loss_scaling:
            grads = optimizer.get_unscaled_gradients(grads)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        names = ["total_loss"] + sorted(k for k in losses if k != "total_loss")
        names.append("regularization_loss")
        if len(names) > MAX_LOSSES:
            raise ValueError(f"at most {MAX_LOSSES} loss entries are logged, got {names}")
        on_loss_names(names)
        values = [tf.cast(losses[k], tf.float32) for k in names[:-1]] + [reg]
        packed = tf.pad(tf.stack(values), [[0, MAX_LOSSES - len(values)]])
        batch = tf.cast(tf.shape(tf.nest.flatten(features)[0])[0], tf.float32)
        return packed, batch

    @tf.function
    def train_loop(iterator, num_steps):
        loss_sums = tf.zeros([MAX_LOSSES], tf.float32)
        images = tf.zeros([], tf.float32)
        for _ in tf.range(num_steps):
            packed, batch = strategy.run(replica_step, args=(next(iterator),))
            packed = strategy.reduce(tf.distribute.ReduceOp.MEAN, packed, axis=None)
            loss_sums += packed
            images += strategy.reduce(tf.distribute.ReduceOp.SUM, batch, axis=None)
            if not tf.math.is_finite(packed[0]):
                bad_step.assign(global_step)
                bad_loss.assign(packed[0])
                break
            global_step.assign_add(1)
        return loss_sums, images

    return train_loop

"""Optimizer and learning-rate schedule builders (gin entry points).

The paper's recipe (Ghiasi et al. 2021, Sec. 4): SGD with momentum 0.9, weight decay 4e-5
(applied by the trainer as an L2 term, see `tfcp.trainer`), learning rate 0.32 for a global
batch of 256 with a linear warm-up over the first 1000 steps, and step decay by 0.1 at
0.9, 0.95 and 0.975 of training. The learning rate scales linearly with the global batch.
`build_cosine_learning_rate` is the cosine schedule of MoCo v2 / CP2 pretraining.
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import numpy as np
import tensorflow as tf
import tf_keras


def scale_learning_rate(
    base_learning_rate: float, base_batch_size: int, global_batch_size: int
) -> float:
    """Linear scaling rule: `base_learning_rate * global_batch_size / base_batch_size`."""
    if base_batch_size <= 0 or global_batch_size <= 0:
        raise ValueError(
            f"batch sizes must be positive, got base_batch_size={base_batch_size}, "
            f"global_batch_size={global_batch_size}"
        )
    return float(base_learning_rate) * float(global_batch_size) / float(base_batch_size)


class WarmupStepDecay(tf_keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up followed by piecewise-constant step decay.

    lr(step) = warmup_lr + (lr - warmup_lr) * step / warmup_steps   for step < warmup_steps
             = lr * decay_rate ** (number of boundaries <= step)      otherwise

    Steps are 0-based: the first update uses lr(0) = warmup_learning_rate.
    """

    def __init__(
        self,
        learning_rate: float,
        warmup_learning_rate: float,
        warmup_steps: int,
        boundaries: Sequence[int],
        decay_rate: float = 0.1,
    ):
        super().__init__()
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if list(boundaries) != sorted(boundaries):
            raise ValueError(f"boundaries must be increasing, got {list(boundaries)}")
        self.learning_rate = float(learning_rate)
        self.warmup_learning_rate = float(warmup_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.boundaries = [int(b) for b in boundaries]
        self.decay_rate = float(decay_rate)

    def __call__(self, step):
        """Returns the float32 scalar learning rate for the (int or float) `step`."""
        step = tf.cast(step, tf.float32)
        num_decays = tf.zeros([], tf.float32)
        for boundary in self.boundaries:
            num_decays += tf.cast(step >= float(boundary), tf.float32)
        decayed = self.learning_rate * tf.pow(self.decay_rate, num_decays)
        if self.warmup_steps == 0:
            return decayed
        fraction = step / float(self.warmup_steps)
        warmup = self.warmup_learning_rate + (
            self.learning_rate - self.warmup_learning_rate
        ) * tf.minimum(fraction, 1.0)
        return tf.where(step < float(self.warmup_steps), warmup, decayed)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "warmup_learning_rate": self.warmup_learning_rate,
            "warmup_steps": self.warmup_steps,
            "boundaries": self.boundaries,
            "decay_rate": self.decay_rate,
        }


@gin.configurable(module="tfcp")
def build_learning_rate(
    train_steps: int = gin.REQUIRED,
    global_batch_size: int = gin.REQUIRED,
    base_learning_rate: float = 0.32,
    base_batch_size: int = 256,
    warmup_steps: int = 1000,
    warmup_learning_rate: float | None = None,
    warmup_factor: float = 0.01,
    decay_fractions: Sequence[float] = (0.9, 0.95, 0.975),
    decay_rate: float = 0.1,
) -> WarmupStepDecay:
    """Builds the paper's warm-up + step-decay schedule, scaled to the global batch.

    Args:
      train_steps: total number of training steps; decay boundaries are
        `int(fraction * train_steps)`.
      global_batch_size: images per step over all replicas.
      base_learning_rate: learning rate at `base_batch_size` (paper: 0.32 at 256).
      base_batch_size: batch size `base_learning_rate` refers to.
      warmup_steps: length of the linear warm-up (never longer than `train_steps`).
      warmup_learning_rate: learning rate at step 0 for `base_batch_size` (scaled like
        the base rate; paper: 0.0032 at 256); default `warmup_factor * lr`.
      warmup_factor: used when `warmup_learning_rate` is None.
      decay_fractions: fractions of `train_steps` at which lr is multiplied by `decay_rate`.
      decay_rate: multiplicative decay.

    Returns:
      A `WarmupStepDecay` schedule.
    """
    lr = scale_learning_rate(base_learning_rate, base_batch_size, global_batch_size)
    if warmup_learning_rate is None:
        warmup_learning_rate = warmup_factor * lr
    else:
        warmup_learning_rate = scale_learning_rate(
            warmup_learning_rate, base_batch_size, global_batch_size
        )
    for f in decay_fractions:
        if not 0.0 < f <= 1.0:
            raise ValueError(f"decay_fractions must be in (0, 1], got {list(decay_fractions)}")
    boundaries = [int(f * train_steps) for f in decay_fractions]
    return WarmupStepDecay(
        learning_rate=lr,
        warmup_learning_rate=warmup_learning_rate,
        warmup_steps=min(int(warmup_steps), int(train_steps)),
        boundaries=boundaries,
        decay_rate=decay_rate,
    )


class WarmupCosineDecay(tf_keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then cosine decay to 0 at `train_steps` (MoCo / CP2 schedule).

    lr(step) = lr * step / warmup_steps                                   for step < warmup
             = lr * 0.5 * (1 + cos(pi * t))                                otherwise,
    t = (step - warmup) / (train_steps - warmup), or with `steps_per_epoch` the epoch
    fraction floor(step / steps_per_epoch) * steps_per_epoch / train_steps (the reference's
    per-epoch `adjust_learning_rate`, constant within an epoch; no warm-up).
    """

    def __init__(
        self,
        learning_rate: float,
        train_steps: int,
        warmup_steps: int = 0,
        steps_per_epoch: int | None = None,
    ):
        super().__init__()
        if train_steps <= 0 or not 0 <= warmup_steps < train_steps:
            raise ValueError(
                f"need train_steps > 0 and 0 <= warmup_steps < train_steps, got "
                f"{train_steps}, {warmup_steps}"
            )
        if steps_per_epoch is not None and (steps_per_epoch <= 0 or warmup_steps):
            raise ValueError("steps_per_epoch must be positive, and excludes a warm-up")
        self.learning_rate = float(learning_rate)
        self.train_steps = int(train_steps)
        self.warmup_steps = int(warmup_steps)
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)

    def __call__(self, step):
        """Returns the float32 scalar learning rate for the (int or float) `step`."""
        step = tf.cast(step, tf.float32)
        if self.steps_per_epoch:
            epoch_start = tf.floor(step / self.steps_per_epoch) * self.steps_per_epoch
            fraction = epoch_start / float(self.train_steps)
        else:
            fraction = (step - self.warmup_steps) / float(self.train_steps - self.warmup_steps)
        fraction = tf.clip_by_value(fraction, 0.0, 1.0)
        cosine = self.learning_rate * 0.5 * (1.0 + tf.cos(float(np.pi) * fraction))
        if not self.warmup_steps:
            return cosine
        warmup = self.learning_rate * step / float(self.warmup_steps)
        return tf.where(step < float(self.warmup_steps), warmup, cosine)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "train_steps": self.train_steps,
            "warmup_steps": self.warmup_steps,
            "steps_per_epoch": self.steps_per_epoch,
        }


@gin.configurable(module="tfcp")
def build_cosine_learning_rate(
    train_steps: int = gin.REQUIRED,
    global_batch_size: int = gin.REQUIRED,
    base_learning_rate: float = 0.015,
    base_batch_size: int = 256,
    warmup_steps: int = 0,
    steps_per_epoch: int | None = None,
) -> WarmupCosineDecay:
    """Cosine decay scaled to the global batch (CP2 / MoCo v2: 0.015 per 256, no warm-up).

    Args:
      train_steps: total number of training steps (lr reaches 0 there).
      global_batch_size: images per step over all replicas.
      base_learning_rate: learning rate at `base_batch_size`.
      base_batch_size: batch size `base_learning_rate` refers to.
      warmup_steps: optional linear warm-up from 0.
      steps_per_epoch: if set, the rate is constant within each epoch (the reference).

    Returns:
      A `WarmupCosineDecay` schedule.
    """
    lr = scale_learning_rate(base_learning_rate, base_batch_size, global_batch_size)
    return WarmupCosineDecay(lr, train_steps, warmup_steps, steps_per_epoch)


@gin.configurable(module="tfcp")
def build_optimizer(
    learning_rate=gin.REQUIRED,
    momentum: float = 0.9,
    nesterov: bool = False,
    global_clipnorm: float | None = None,
) -> tf_keras.optimizers.Optimizer:
    """Builds SGD with momentum (weight decay is the trainer's L2 term, not here).

    Args:
      learning_rate: a float or a `LearningRateSchedule` (e.g. `@build_learning_rate()`).
      momentum: SGD momentum (paper: 0.9).
      nesterov: Nesterov momentum.
      global_clipnorm: optional clipping of the global gradient norm.

    Returns:
      A `tf_keras.optimizers.SGD`.
    """
    return tf_keras.optimizers.SGD(
        learning_rate=learning_rate,
        momentum=momentum,
        nesterov=nesterov,
        global_clipnorm=global_clipnorm,
    )

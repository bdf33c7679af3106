"""The generic tf.distribute trainer: train / eval / train_and_eval for any `Task`.

The trainer owns the loop, the optimizer, the strategy, mixed precision, checkpoints,
summaries and metrics.json; everything model-specific goes through the `Task` protocol
(tfcp/tasks/base.py). Configure it with gin (`Trainer.*`); `python -m tfcp.train` is its CLI.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Sequence

import gin
import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging

from tfcp import checkpointing, distribute_utils, eval_loop, optimization, summaries, train_loop
from tfcp.data import mosaic_stage, record_policy

MODES = ("train", "eval", "train_and_eval")
PREEMPTED = "preempted"
COMPLETED = "completed"


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss becomes NaN or Inf."""


@gin.configurable(module="tfcp")
class Trainer:
    """Trains and evaluates a `Task` under a `tf.distribute.Strategy`.

    Args:
      model_dir: where checkpoints, summaries (train/, eval/), config.gin and
        metrics.json go.
      task: the `tfcp.tasks.base.Task` (gin: `Trainer.task = @MaskRCNNTask()`).
      train_steps: total number of training steps (gin macro TRAIN_STEPS).
      strategy: a strategy; default `tfcp.distribute_utils.build_strategy()` (gin).
      steps_per_loop: steps run inside one `tf.function` call (`tf.range` loop).
      log_interval: steps between log lines / TensorBoard scalars.
      checkpoint_interval: steps between checkpoints (one is always written at the end).
      eval_interval: train_and_eval: steps between evaluations (and one at the end);
        None evaluates only at the end.
      max_checkpoints_to_keep: number of checkpoints kept.
      weight_decay: L2 weight decay on kernels (paper 4e-5); added to `model.losses`.
      optimizer_fn: builds the optimizer (default `build_optimizer`, gin-configured).
      mixed_precision: 'float32', 'mixed_bfloat16', 'mixed_float16' (loss scaling) or
        'auto': mixed_bfloat16 under a TPU strategy, mixed_float16 when GPUs are visible,
        float32 otherwise (`distribute_utils.resolve_mixed_precision`).
      init_checkpoint: passed to `task.initialize` on a fresh start only (never on resume).
      resume_data_position: 'exact' (default): a resumed run asks the task for the input
        stream from the checkpoint's step (`Task.build_inputs(start_step=...)`) and gets
        exactly the batches an uninterrupted run would, at a cost that does not grow with
        the step (see tfcp/data/records.py); 'restart': the input starts over from its
        first batch (the pre-0.2 behaviour of the paper configs).
      image_summaries: write `task.sample_images` pictures to TensorBoard.
      seed: None (default) leaves weight initialization unseeded; an int seeds Python,
        NumPy and TF (`tf_keras.utils.set_random_seed`) before the model is built, so
        runs with the same seed start from the same weights (the input pipeline has its
        own `build_dataset.seed`).
      gin_files, gin_bindings: the command line, recorded at the top of config.gin.
    """

    def __init__(
        self,
        model_dir: str = gin.REQUIRED,
        task=gin.REQUIRED,
        train_steps: int = gin.REQUIRED,
        strategy: tf.distribute.Strategy | None = None,
        steps_per_loop: int = 100,
        log_interval: int = 100,
        checkpoint_interval: int = 1000,
        eval_interval: int | None = None,
        max_checkpoints_to_keep: int = 5,
        weight_decay: float = 0.0,
        optimizer_fn=optimization.build_optimizer,
        mixed_precision: str = "float32",
        init_checkpoint: str | None = None,
        resume_data_position: str = "exact",
        image_summaries: bool = True,
        seed: int | None = None,
        gin_files: Sequence[str] = (),
        gin_bindings: Sequence[str] = (),
    ):
        for name, value in [
            ("train_steps", train_steps),
            ("steps_per_loop", steps_per_loop),
            ("log_interval", log_interval),
            ("checkpoint_interval", checkpoint_interval),
        ]:
            if int(value) <= 0:
                raise ValueError(f"Trainer.{name} must be positive, got {value}")
        if resume_data_position not in ("exact", "restart"):
            raise ValueError(
                "Trainer.resume_data_position must be 'exact' or 'restart' ('skip' was "
                f"replaced by 'exact'), got {resume_data_position!r}"
            )
        if mixed_precision not in distribute_utils.MIXED_PRECISION_POLICIES:
            raise ValueError(f"unknown Trainer.mixed_precision {mixed_precision!r}")
        self.model_dir = model_dir
        self.task = task
        self.train_steps = int(train_steps)
        self.steps_per_loop = int(steps_per_loop)
        self.log_interval = int(log_interval)
        self.checkpoint_interval = int(checkpoint_interval)
        self.eval_interval = eval_interval
        self.weight_decay = float(weight_decay)
        self.init_checkpoint = init_checkpoint or None
        self.resume_data_position = resume_data_position
        self.image_summaries = image_summaries
        self._gin_files, self._gin_bindings = list(gin_files), list(gin_bindings)
        self._max_to_keep = max_checkpoints_to_keep
        self._stop_requested = False

        self.strategy = strategy or distribute_utils.build_strategy()
        record_policy.skipped_counter()  # created outside the strategy's scope
        self._skipped_before = record_policy.skipped_count()  # the counter is process-wide
        mosaic_stage.mosaic_counters()  # also process-wide, outside the strategy's scope
        mixed_precision = distribute_utils.resolve_mixed_precision(mixed_precision, self.strategy)
        self._mixed_precision = mixed_precision
        tf_keras.mixed_precision.set_global_policy(mixed_precision)
        self.chief = distribute_utils.is_chief(self.strategy)
        self._write_dir = checkpointing.write_dir(
            model_dir, self.chief, distribute_utils.worker_id(self.strategy)
        )
        if seed is not None:
            tf_keras.utils.set_random_seed(int(seed))
        with self.strategy.scope():
            self.model = task.build_model()
            optimizer = optimizer_fn()
            if mixed_precision == "mixed_float16":
                optimizer = tf_keras.mixed_precision.LossScaleOptimizer(optimizer)
            self.optimizer = optimizer
            self.optimizer.build(self.model.trainable_variables)
            self.global_step = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="global_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )  # fmt: skip
            self._bad_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
            self._bad_loss = tf.Variable(0.0, dtype=tf.float32, trainable=False)
        self._loss_names: list[str] = []

    # ----------------------------------------------------------------- helpers

    def _schedule_lr(self) -> float:
        opt = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        lr = opt._learning_rate  # float, variable or schedule
        if isinstance(lr, tf_keras.optimizers.schedules.LearningRateSchedule):
            return float(lr(opt.iterations))
        return float(tf.convert_to_tensor(lr))

    def _write_config(self):
        """Writes config.gin: at the start, and again after each evaluation (whose
        pipeline and evaluator bindings only become operative when they are first used)."""
        if self.chief:
            summaries.write_operative_config(self.model_dir, self._gin_files, self._gin_bindings)

    def _distribute_inputs(self, is_training: bool, start_step: int = 0):
        def dataset_fn(ctx):
            if is_training:
                return self.task.build_inputs(True, ctx, start_step=start_step)
            return self.task.build_inputs(False, ctx)

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def _per_replica_context(self) -> tf.distribute.InputContext:
        """The input context of this worker's first input pipeline (per-replica batches)."""
        return tf.distribute.InputContext(
            num_input_pipelines=max(distribute_utils.num_workers(self.strategy), 1),
            input_pipeline_id=distribute_utils.worker_id(self.strategy),
            num_replicas_in_sync=self.strategy.num_replicas_in_sync,
        )

    def _evaluate_and_record(self, step: int) -> dict:
        record = self.evaluate_model(step)
        self._write_config()
        return record

    def _needs_eval_on_resume(self, step: int) -> bool:
        """A run killed during an evaluation resumes at its checkpoint: evaluate it first."""
        if step == 0 or not (
            step >= self.train_steps or (self.eval_interval and step % self.eval_interval == 0)
        ):
            return False
        last = summaries.read_metrics(self.model_dir)
        return last is None or int(last.get("step", -1)) < step

    def _bad_records_skipped(self) -> int:
        """Bad training records skipped since this trainer was created."""
        return record_policy.skipped_count() - self._skipped_before

    def _request_stop(self, signum, frame):
        del frame
        logging.warning("Received signal %d: will checkpoint and stop after this loop.", signum)
        self._stop_requested = True

    # -------------------------------------------------------------- train step

    def _make_train_loop(self):
        def set_names(names):
            self._loss_names = names

        return train_loop.make_train_loop(
            self.strategy,
            self.task,
            self.model,
            self.optimizer,
            weight_decay=self.weight_decay,
            loss_scaling=self._mixed_precision == "mixed_float16",
            global_step=self.global_step,
            bad_step=self._bad_step,
            bad_loss=self._bad_loss,
            on_loss_names=set_names,
        )

    # ------------------------------------------------------------------- train

    def train(self, evaluate: bool = False) -> str:
        """Trains to `train_steps` (resuming from the latest checkpoint in model_dir).

        Args:
          evaluate: also evaluate every `eval_interval` steps and at the end.

        Returns:
          'completed', or 'preempted' when stopped by SIGTERM/SIGINT after a checkpoint.

        Raises:
          NonFiniteLossError: the loss became NaN/Inf (no checkpoint is written then).
        """
        tf.io.gfile.makedirs(self.model_dir)
        latest = checkpointing.latest_checkpoint(self.model_dir)
        ckpt = checkpointing.TrainCheckpoint(
            self._write_dir,
            self.model,
            self.optimizer,
            self.global_step,
            max_to_keep=self._max_to_keep,
        )
        if latest:
            ckpt.restore(latest)
        else:
            self.task.initialize(self.model, self.init_checkpoint)
        self._write_config()
        step = int(self.global_step.numpy())
        if evaluate and self._needs_eval_on_resume(step):
            logging.info("Step %d has no evaluation in metrics.json: evaluating it now.", step)
            self._evaluate_and_record(step)
        if step >= self.train_steps:
            checkpointing.remove_temp_dir(self._write_dir, self.chief)
            return COMPLETED
        start_step = step if self.resume_data_position == "exact" else 0
        if start_step:
            logging.info("Input stream resumes at step %d.", start_step)
        iterator = iter(self._distribute_inputs(True, start_step))
        writer = summaries.SummaryWriter(
            os.path.join(self.model_dir, "train") if self.chief else None
        )
        if self.image_summaries and self.chief:
            self._write_input_images(writer, step, start_step)

        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                handlers[sig] = signal.signal(sig, self._request_stop)
        loop = self._make_train_loop()
        throughput = summaries.Throughput(step)
        acc = train_loop.LossAccumulator()
        last_saved = step if latest else -1
        status = COMPLETED
        try:
            while step < self.train_steps:
                num_steps = min(
                    self.steps_per_loop,
                    self.train_steps - step,
                    self.log_interval - step % self.log_interval,
                    self.checkpoint_interval - step % self.checkpoint_interval,
                )
                if evaluate and self.eval_interval:
                    num_steps = min(num_steps, self.eval_interval - step % self.eval_interval)
                try:
                    loss_sums, images = loop(iterator, tf.constant(num_steps, tf.int32))
                except tf.errors.InvalidArgumentError as e:
                    bad = record_policy.as_bad_record_error(e)
                    if bad is None:
                        raise
                    raise bad from None
                acc.add(loss_sums.numpy(), float(images), num_steps)
                bad_step = int(self._bad_step.numpy())
                if bad_step >= 0:
                    raise NonFiniteLossError(
                        f"non-finite total loss ({float(self._bad_loss.numpy())}) at step "
                        f"{bad_step}; stopping without saving. Last good checkpoint: "
                        f"{checkpointing.latest_checkpoint(self.model_dir)}"
                    )
                step = int(self.global_step.numpy())
                if step % self.log_interval == 0 or step == self.train_steps:
                    self._log(writer, step, throughput.update(step), acc)
                if step % self.checkpoint_interval == 0 or step == self.train_steps:
                    ckpt.save()
                    last_saved = step
                if evaluate and (
                    step == self.train_steps
                    or (self.eval_interval and step % self.eval_interval == 0)
                ):
                    self._evaluate_and_record(step)
                if distribute_utils.any_worker(self.strategy, self._stop_requested):
                    if last_saved != step:
                        ckpt.save()
                    logging.warning("Stopped at step %d after a checkpoint (preempted).", step)
                    status = PREEMPTED
                    break
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            writer.close()
            checkpointing.remove_temp_dir(self._write_dir, self.chief)
        return status

    def _log(self, writer, step, steps_per_sec, acc):
        losses = acc.means(self._loss_names)
        images_per_sec = acc.images / max(acc.steps, 1) * steps_per_sec
        lr = self._schedule_lr()
        logging.info(
            summaries.format_train_log(
                step, self.train_steps, losses, lr, steps_per_sec, images_per_sec
            )
        )
        scalars = dict(losses)
        scalars.update(learning_rate=lr, steps_per_sec=steps_per_sec, images_per_sec=images_per_sec)
        skipped = self._bad_records_skipped()
        if skipped:
            logging.warning("%d bad training record(s) skipped so far (named above).", skipped)
            scalars["bad_records_skipped"] = skipped
        mosaics, dropped = mosaic_stage.mosaic_counts()
        if mosaics:  # host-side input counts (this process's pipelines, prefetch included)
            scalars.update(mosaic_images=mosaics, mosaic_objects_dropped=dropped)
        writer.scalars(step, scalars)
        acc.reset()

    def _write_input_images(self, writer, step, start_step):
        """Draws the first per-replica batch of this worker's stream (never a global batch:
        with the paper configs that would be 256 images at 1024 px)."""
        dataset = self.task.build_inputs(True, self._per_replica_context(), start_step=start_step)
        for features, labels in dataset.take(1):
            writer.images(step, "train/inputs", self.task.sample_images(features, labels))

    # -------------------------------------------------------------------- eval

    def evaluate_model(self, step: int) -> dict:
        """Evaluates the current weights over the whole eval set; writes metrics.

        Every eval batch, including the last partial one, goes through
        `task.validation_step` under the strategy; with several workers (each reading its
        own shard) the outputs of all of them are gathered to the chief, which feeds them
        to `task.evaluator_update` (see tfcp/eval_loop.py).

        Returns:
          The metrics record {'step': step, **task.evaluator_result()} (on every worker).
        """
        metrics, images = eval_loop.evaluate(
            self.strategy,
            self.task,
            self.model,
            self._distribute_inputs(False),
            step=step,
            chief=self.chief,
            gather=distribute_utils.num_workers(self.strategy) > 1,
            image_summaries=self.image_summaries,
        )
        if self._bad_records_skipped():  # on_bad_record='skip' dropped some records
            metrics = dict(metrics, bad_records_skipped=self._bad_records_skipped())
        record = {"step": int(step), **metrics}
        if self.chief:
            writer = summaries.SummaryWriter(os.path.join(self.model_dir, "eval"))
            writer.scalars(step, {k: v for k, v in metrics.items() if np.isscalar(v)})
            writer.images(step, "eval/predictions", images)
            writer.close()
            summaries.write_metrics(self.model_dir, step, metrics)
        return record

    def evaluate(self) -> dict:
        """Eval mode: restores the latest checkpoint of model_dir and evaluates it.

        Raises:
          FileNotFoundError: no checkpoint in model_dir.
        """
        path = checkpointing.require_latest_checkpoint(self.model_dir)
        status = tf.train.Checkpoint(model=self.model, global_step=self.global_step).restore(path)
        status.expect_partial()
        status.assert_existing_objects_matched()
        self._write_config()
        return self._evaluate_and_record(int(self.global_step.numpy()))


def run(
    model_dir: str,
    mode: str = "train",
    gin_files: Sequence[str] = (),
    gin_bindings: Sequence[str] = (),
    strategy: tf.distribute.Strategy | None = None,
):
    """Library entry point of `python -m tfcp.train` (gin must already be parsed).

    Returns:
      'completed' or 'preempted' for train modes; the metrics record for eval.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    kwargs = dict(model_dir=model_dir, gin_files=gin_files, gin_bindings=gin_bindings)
    if strategy is not None:  # otherwise `Trainer.strategy` from gin, or the default
        kwargs["strategy"] = strategy
    trainer = Trainer(**kwargs)
    if mode == "eval":
        return trainer.evaluate()
    return trainer.train(evaluate=(mode == "train_and_eval"))

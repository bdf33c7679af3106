"""Checkpoint helpers for the trainer: atomic saves, resume and the data position.

`tf.train.CheckpointManager` makes saves atomic: the shards are written to a temporary
directory and renamed into place, and only then is the `checkpoint` state file rewritten
(itself by write-then-rename). A process killed at any point therefore leaves the previous
(or the new) checkpoint loadable, never a half-written one as "latest".

Data position: when the input iterator is checkpointable it is saved with the model, so a
resumed run continues with exactly the next batch. In TF 2.20 the iterators of
`strategy.distribute_datasets_from_function` (`input_lib.DistributedIterator`, for every
strategy) are not `Trackable`, so `tf.train.Checkpoint` rejects them; iterators whose state
cannot be serialized fail at save time. In both cases the trainer falls back, with a log
line, to `resume_data_position`: 'skip' makes the resumed pipeline skip the
`global_step * replicas_per_pipeline` batches already consumed (exact for a deterministic
pipeline, but the skipped batches are still produced, so this costs input-pipeline time
proportional to the step), 'restart' starts the pipeline from its beginning.
"""

from __future__ import annotations

import os
import shutil

import tensorflow as tf
from absl import logging

GLOBAL_STEP_KEY = "global_step/.ATTRIBUTES/VARIABLE_VALUE"
ITERATOR_KEY_PREFIX = "iterator/"


def latest_checkpoint(model_dir: str) -> str | None:
    """Returns the newest checkpoint prefix in `model_dir`, or None."""
    if not tf.io.gfile.isdir(model_dir):
        return None
    return tf.train.latest_checkpoint(model_dir)


def require_latest_checkpoint(model_dir: str) -> str:
    """Like `latest_checkpoint` but raises a clear FileNotFoundError when there is none."""
    path = latest_checkpoint(model_dir)
    if path is None:
        raise FileNotFoundError(
            f"no checkpoint found in --model_dir={model_dir!r} (expected a 'checkpoint' "
            "state file written by `python -m tfcp.train --mode=train`)"
        )
    return path


def checkpoint_step(path: str) -> int:
    """Reads the global step stored in the checkpoint `path`."""
    return int(tf.train.load_variable(path, GLOBAL_STEP_KEY))


def has_iterator_state(path: str) -> bool:
    """True if the checkpoint `path` contains the saved input-iterator position."""
    return any(name.startswith(ITERATOR_KEY_PREFIX) for name, _ in tf.train.list_variables(path))


def is_checkpointable(obj) -> bool:
    """True if `obj` can be put in a `tf.train.Checkpoint`."""
    return isinstance(obj, tf.__internal__.tracking.Trackable)


def write_dir(model_dir: str, chief: bool, worker_id: int) -> str:
    """Where this process writes checkpoints: `model_dir` on the chief, a temp dir otherwise.

    In multi-worker training every worker must take part in a save (the variables are
    read collectively), but only the chief's files are kept.
    """
    if chief:
        return model_dir
    return os.path.join(model_dir, ".worker_tmp", f"worker_{worker_id}")


def remove_temp_dir(path: str, chief: bool) -> None:
    """Deletes a non-chief worker's temporary checkpoint directory."""
    if not chief and tf.io.gfile.exists(path):
        shutil.rmtree(path, ignore_errors=True)


class TrainCheckpoint:
    """Model + optimizer + global step (+ input iterator) under a CheckpointManager.

    Args:
      directory: where to write (see `write_dir`).
      model, optimizer, global_step: the trackables to save.
      iterator: the distributed input iterator, or None to not checkpoint the position.
      max_to_keep: number of checkpoints to keep.
    """

    def __init__(self, directory, model, optimizer, global_step, iterator=None, max_to_keep=5):
        self._directory = directory
        self._trackables = dict(model=model, optimizer=optimizer, global_step=global_step)
        self._global_step = global_step
        self._max_to_keep = max_to_keep
        if iterator is not None and not is_checkpointable(iterator):
            logging.info(
                "%s is not checkpointable: the input position is restored by the "
                "trainer's resume_data_position policy instead.",
                type(iterator).__name__,
            )
            iterator = None
        self.iterator_saved = iterator is not None
        if iterator is not None:
            self._trackables["iterator"] = iterator
        self._make_manager()

    def _make_manager(self):
        self.checkpoint = tf.train.Checkpoint(**self._trackables)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            directory=self._directory,
            max_to_keep=self._max_to_keep,
            step_counter=self._global_step,
        )

    def restore(self, path: str) -> None:
        """Restores everything the checkpoint has; iterator state only if it was saved."""
        status = self.checkpoint.restore(path)
        status.expect_partial()
        status.assert_existing_objects_matched()
        logging.info("Restored checkpoint %s at step %d", path, int(self._global_step.numpy()))

    def save(self) -> str:
        """Saves at the current global step and returns the checkpoint prefix.

        If the iterator cannot be serialized, logs a warning, drops it from the
        checkpoint (later resumes skip the consumed batches instead) and saves again.
        """
        step = int(self._global_step.numpy())
        try:
            path = self.manager.save(checkpoint_number=step)
        except (tf.errors.OpError, NotImplementedError, ValueError, TypeError) as e:
            if not self.iterator_saved:
                raise
            logging.warning(
                "Could not checkpoint the input iterator at step %d (%s: %s); saving without "
                "it (resume then follows the trainer's resume_data_position policy).",
                step,
                type(e).__name__,
                e,
            )
            del self._trackables["iterator"]
            self.iterator_saved = False
            self._make_manager()
            path = self.manager.save(checkpoint_number=step)
        logging.info("Saved checkpoint %s", path)
        return path

"""Checkpoint helpers for the trainer: atomic saves, resume and the data position.

`tf.train.CheckpointManager` makes saves atomic: the shards are written to a temporary
directory and renamed into place, and only then is the `checkpoint` state file rewritten
(itself by write-then-rename). A process killed at any point therefore leaves the previous
(or the new) checkpoint loadable, never a half-written one as "latest".

Data position: checkpoints hold no input state. The trainer resumes the input by asking the
task for the stream from the checkpoint's step (`Task.build_inputs(start_step=...)`), which
tfcp's pipelines produce exactly and at a constant cost (tfcp/data/records.py). (In TF 2.20
the iterators of `strategy.distribute_datasets_from_function` are not `Trackable`, and a
tf.data checkpoint would hold the shuffle buffer's serialized images.)
"""

from __future__ import annotations

import os
import shutil

import tensorflow as tf
from absl import logging

GLOBAL_STEP_KEY = "global_step/.ATTRIBUTES/VARIABLE_VALUE"


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
    """Model + optimizer + global step under a CheckpointManager.

    Args:
      directory: where to write (see `write_dir`).
      model, optimizer, global_step: the trackables to save.
      max_to_keep: number of checkpoints to keep.
    """

    def __init__(self, directory, model, optimizer, global_step, max_to_keep=5):
        self._global_step = global_step
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=optimizer, global_step=global_step
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            directory=directory,
            max_to_keep=max_to_keep,
            step_counter=global_step,
        )

    def restore(self, path: str) -> None:
        """Restores model, optimizer and step from `path` (every saved object must match)."""
        status = self.checkpoint.restore(path)
        status.expect_partial()
        status.assert_existing_objects_matched()
        logging.info("Restored checkpoint %s at step %d", path, int(self._global_step.numpy()))

    def save(self) -> str:
        """Saves at the current global step and returns the checkpoint prefix."""
        path = self.manager.save(checkpoint_number=int(self._global_step.numpy()))
        logging.info("Saved checkpoint %s", path)
        return path

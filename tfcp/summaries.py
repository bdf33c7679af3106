"""Logging, TensorBoard summaries, metrics.json and config.gin for the trainer."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence

import gin
import numpy as np
import tensorflow as tf

METRICS_FILE = "metrics.json"
METRICS_HISTORY_FILE = "metrics_history.jsonl"
CONFIG_FILE = "config.gin"


def format_duration(seconds: float) -> str:
    """Formats seconds as 'H:MM:SS' (or '?' when unknown)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def format_train_log(
    step: int,
    total_steps: int,
    losses: Mapping[str, float],
    learning_rate: float,
    steps_per_sec: float,
    images_per_sec: float,
) -> str:
    """One training log line: step/total, losses, lr, throughput and ETA."""
    eta = (total_steps - step) / steps_per_sec if steps_per_sec > 0 else float("nan")
    parts = [f"step {step}/{total_steps}", f"loss {losses.get('total_loss', float('nan')):.4f}"]
    parts += [f"{k} {v:.4f}" for k, v in sorted(losses.items()) if k != "total_loss"]
    parts += [
        f"lr {learning_rate:.6g}",
        f"{steps_per_sec:.3f} steps/s",
        f"{images_per_sec:.2f} images/s",
        f"ETA {format_duration(eta)}",
    ]
    return " | ".join(parts)


class Throughput:
    """Measures steps/s between two calls of `update`."""

    def __init__(self, step: int):
        self._step = step
        self._time = time.time()

    def update(self, step: int) -> float:
        now = time.time()
        elapsed = max(now - self._time, 1e-9)
        rate = (step - self._step) / elapsed
        self._step, self._time = step, now
        return rate


class SummaryWriter:
    """A `tf.summary` file writer, or a no-op on non-chief workers."""

    def __init__(self, logdir: str | None):
        self._writer = tf.summary.create_file_writer(logdir) if logdir else None

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        if self._writer is None:
            return
        with self._writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, float(value))
        self._writer.flush()

    def images(self, step: int, name: str, images: np.ndarray | None, max_outputs: int = 4):
        """Writes uint8 [N, H, W, 3] images (ignored when None or empty)."""
        if self._writer is None or images is None or len(images) == 0:
            return
        with self._writer.as_default(step=step):
            tf.summary.image(name, np.asarray(images, np.uint8), max_outputs=max_outputs)
        self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()


def _to_builtin(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def write_metrics(model_dir: str, step: int, metrics: Mapping[str, float]) -> dict:
    """Writes `metrics.json` ({"step": step, **metrics}) atomically and appends history.

    Returns:
      The written record.
    """
    record = {"step": int(step)}
    record.update({k: _to_builtin(v) for k, v in metrics.items()})
    text = json.dumps(record, sort_keys=False)
    path = os.path.join(model_dir, METRICS_FILE)
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text + "\n")
    tf.io.gfile.rename(tmp, path, overwrite=True)
    with tf.io.gfile.GFile(os.path.join(model_dir, METRICS_HISTORY_FILE), "a") as f:
        f.write(text + "\n")
    return record


def read_metrics(model_dir: str) -> dict | None:
    """The last record `write_metrics` wrote to `model_dir`, or None."""
    path = os.path.join(model_dir, METRICS_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


def write_operative_config(
    model_dir: str, gin_files: Sequence[str] = (), gin_bindings: Sequence[str] = ()
) -> str:
    """Writes `config.gin`: the command line as comments, then the operative config."""
    lines = ["# Written by tfcp.train. Command-line configuration:"]
    lines += [f"#   --gin_file={f}" for f in gin_files]
    lines += [f"#   --gin_bindings={b}" for b in gin_bindings]
    text = "\n".join(lines) + "\n\n" + gin.operative_config_str()
    path = os.path.join(model_dir, CONFIG_FILE)
    tf.io.gfile.makedirs(model_dir)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)
    return path

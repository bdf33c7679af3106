"""Repeat factor sampling (Gupta et al., LVIS, 2019): per-record repeat factors.

For a threshold t (the paper's 0.001), category c gets r_c = max(1, sqrt(t / f_c)), f_c the
fraction of training images that contain c, and image i gets r_i = max over its categories
(1 for an image without objects). `tfcp.data.records.train_records(repeat_factors=...)`
then repeats record i floor(r_i) times per epoch, plus once more with probability
frac(r_i), seeded by (seed, epoch, record) (`repeat_copies`).

The categories of each record are read from a sidecar `.tfcp_classes/<file name>.json`
beside the file when the converter wrote one (`write_classes_sidecar`; in a hidden folder so
that record globs like `train-*` never match it), else from the records themselves in one pass
that parses only the class labels (no image decode; logged).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tfcp.data import records, schema

SIDECAR_DIR = ".tfcp_classes"


def sidecar_path(path: str) -> str:
    """Where the category sidecar of the TFRecord file `path` lives."""
    return os.path.join(os.path.dirname(path), SIDECAR_DIR, os.path.basename(path) + ".json")


def write_classes_sidecar(path: str, classes: Sequence[Sequence[int]]) -> str:
    """Writes `sidecar_path(path)`: the category ids of each record of `path`, in order."""
    sidecar = sidecar_path(path)
    tf.io.gfile.makedirs(os.path.dirname(sidecar))
    payload = {
        "num_records": len(classes),
        "classes": [sorted({int(c) for c in x}) for x in classes],
    }
    with tf.io.gfile.GFile(sidecar, "w") as f:
        f.write(json.dumps(payload))
    return sidecar


def _read_labels(path: str) -> list[np.ndarray]:
    spec = {schema.CLASS_LABEL: tf.io.VarLenFeature(tf.int64)}
    dataset = tf.data.TFRecordDataset(path).map(
        lambda r: tf.sparse.to_dense(tf.io.parse_single_example(r, spec)[schema.CLASS_LABEL])
    )
    return [np.unique(x) for x in dataset.as_numpy_iterator()]


def record_classes(files: Sequence[str]) -> list[list[np.ndarray]]:
    """Per file, per record: the sorted unique category ids (int64) of its objects.

    Raises:
      ValueError: a sidecar whose record count differs from its file's (names both).
    """
    out, parsed, start = [], 0, time.time()
    for path in files:
        sidecar = sidecar_path(path)
        if tf.io.gfile.exists(sidecar):
            with tf.io.gfile.GFile(sidecar) as f:
                payload = json.load(f)
            classes = [np.asarray(x, np.int64) for x in payload["classes"]]
            expected = records.count_records(path)
            if len(classes) != expected:
                raise ValueError(
                    f"{sidecar} lists {len(classes)} records but {path} has {expected}: "
                    "delete the stale sidecar or reconvert"
                )
        else:
            classes = _read_labels(path)
            parsed += 1
        out.append(classes)
    if parsed:
        logging.info(
            "Repeat factors: parsed the class labels of %d file(s) in %.1fs (no %s/ sidecar).",
            parsed,
            time.time() - start,
            SIDECAR_DIR,
        )
    return out


def category_repeat_factors(per_record: Sequence[np.ndarray], threshold: float) -> dict[int, float]:
    """r_c = max(1, sqrt(t / f_c)) for every category present in `per_record`."""
    num_images = len(per_record)
    if num_images == 0:
        return {}
    ids, counts = np.unique(np.concatenate([np.asarray(x, np.int64) for x in per_record] + [
        np.zeros([0], np.int64)]), return_counts=True)  # fmt: skip
    fractions = counts / num_images
    factors = np.maximum(1.0, np.sqrt(threshold / fractions))
    return {int(c): float(r) for c, r in zip(ids, factors, strict=True)}


def repeat_factors(per_record: Sequence[np.ndarray], threshold: float) -> np.ndarray:
    """r_i = max over the record's categories of r_c (1.0 without objects): float64 [N].

    Args:
      per_record: the unique category ids of each training record (all files, in order).
      threshold: t, e.g. 0.001.
    """
    if threshold <= 0:
        raise ValueError(f"repeat_factor_threshold must be positive, got {threshold}")
    by_category = category_repeat_factors(per_record, threshold)
    return np.array(
        [max([by_category[int(c)] for c in x], default=1.0) for x in per_record], np.float64
    )


def _epoch_counts(base, frac, seed, epoch):
    """Copies of each record in `epoch`: floor(r) + Bernoulli(frac(r)), int64 [N]."""
    # The same int64 epoch on the host and in the graph: fold_in depends on the dtype.
    epoch_seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(epoch, tf.int64))
    u = tf.random.stateless_uniform(tf.shape(frac), epoch_seed, dtype=tf.float64)
    return base + tf.cast(u < frac, tf.int64)


def repeat_copies(
    files: Sequence[str],
    repeat_factors: Sequence[np.ndarray] | None,
    my_files: Sequence[str],
    counts: np.ndarray,
    seed: tf.Tensor,
) -> records.EpochCopies:
    """The copies of an input pipeline's records per epoch under repeat factor sampling.

    Args:
      files: all training files; `repeat_factors` has one float array per file (None:
        one copy of every record, every epoch).
      my_files, counts: the files this pipeline reads and their record counts.
      seed: int64 [2], the stateless seed of the draws (folded with the epoch).

    Raises:
      ValueError: factors < 1 or not one per record (names the files).
    """
    num_records = int(np.sum(counts))
    if repeat_factors is None:
        ones = tf.ones([num_records], tf.int64)
        return records.EpochCopies(lambda _: ones, None, num_records, num_records)
    by_file = dict(zip(files, repeat_factors, strict=True))
    factors = np.concatenate([np.asarray(by_file[f], np.float64) for f in my_files])
    if len(factors) != num_records or not np.all(factors >= 1.0):
        raise ValueError(
            f"repeat factors must be >= 1, one per record ({num_records} records in "
            f"{list(my_files)[:4]}...), got {len(factors)}"
        )
    base = np.floor(factors).astype(np.int64)
    base_t, frac = tf.constant(base), tf.constant(factors - base)

    def totals(first, num):  # one vectorized draw per epoch
        draws = [_epoch_counts(base, frac, seed, e) for e in range(first, first + num)]
        return np.array([int(np.sum(x)) for x in draws], np.int64)

    def epoch_counts(epoch):
        return _epoch_counts(base_t, frac, seed, epoch)

    return records.EpochCopies(epoch_counts, totals, None, int(base.sum()))


def file_repeat_factors(files: Sequence[str], threshold: float) -> list[np.ndarray]:
    """`repeat_factors` over all records of `files`, split back per file."""
    per_file = record_classes(files)
    flat = repeat_factors([x for file_classes in per_file for x in file_classes], threshold)
    splits = np.cumsum([len(x) for x in per_file])[:-1]
    factors = np.split(flat, splits)
    logging.info(
        "Repeat factor sampling (t=%g): %d records, mean factor %.3f (epoch %.0f records), "
        "max %.2f",
        threshold,
        len(flat),
        float(flat.mean()) if len(flat) else 0.0,
        float(flat.sum()),
        float(flat.max()) if len(flat) else 0.0,
    )
    return factors

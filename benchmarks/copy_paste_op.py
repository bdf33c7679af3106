"""Benchmark of the Copy-Paste op alone, on ONE CPU core, in graph mode (as inside tf.data).

Pairs of synthetic COCO-like examples: Poisson(7) instances clipped to [1, 40], elliptical
uint8 masks with diameters 10-400 px, classes 1-80, uint8 images. A pool of examples is
generated first (not timed); the op runs under `tf.function` with None dims in its
input_signature, after a warm-up. Prints one JSON line last, e.g.

  python benchmarks/copy_paste_op.py            # 1024x1024 and 512x512
  python benchmarks/copy_paste_op.py --size=640 --num_pairs=200

The MMDetection anchors (pairs/s of its CopyPaste transform on one core of this kind of
machine, 1024 and 512 px) are given by the project's issue, not measured here.
"""

from __future__ import annotations

import json
import os
import sys
import time

import tensorflow as tf

# One core, set before any op runs.
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from tfcp.ops import copy_paste as cp  # noqa: E402

MMDET_ANCHOR_PAIRS_PER_S = {1024: 37.0, 512: 170.0}

_SIZE = flags.DEFINE_integer("size", 1024, "Image height and width.")
_NUM_PAIRS = flags.DEFINE_integer("num_pairs", 100, "Timed pairs per size.")
_WARMUP = flags.DEFINE_integer("warmup", 10, "Untimed pairs before timing.")
_POOL = flags.DEFINE_integer("pool", 12, "Pre-generated examples per size.")
_SELECTION = flags.DEFINE_enum("selection", "random_subset", list(cp.SELECTIONS), "Selection.")
_BLEND_SIGMA = flags.DEFINE_float("blend_sigma", 0.0, "Alpha blur sigma (0 = hard paste).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the synthetic data and of the op.")
_DYNAMIC = flags.DEFINE_bool(
    "dynamic_shapes",
    False,
    "None for H and W in the input_signature too (default: static H, W and unknown N, as after "
    "scale jittering to a fixed output size in the input pipeline).",
)


def make_example(rng: np.random.Generator, size: int) -> dict:
    """One synthetic example: uint8 image, Poisson(7) elliptical uint8 masks, tight boxes."""
    n = int(np.clip(rng.poisson(7), 1, 40))
    masks = np.zeros([n, size, size], np.uint8)
    boxes = np.zeros([n, 4], np.float32)
    yy, xx = np.arange(size)[:, None], np.arange(size)[None, :]
    for i in range(n):
        dy, dx = rng.uniform(10, 400, size=2)
        cy, cx = rng.uniform(0, size, size=2)
        inside = ((yy - cy) / (dy / 2)) ** 2 + ((xx - cx) / (dx / 2)) ** 2 <= 1.0
        masks[i] = inside
        rows, cols = np.nonzero(inside.any(1))[0], np.nonzero(inside.any(0))[0]
        boxes[i] = [rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]
    boxes /= size
    return {
        "image": rng.integers(0, 256, [size, size, 3], dtype=np.uint8),
        "groundtruth_boxes": boxes,
        "groundtruth_classes": rng.integers(1, 81, [n]).astype(np.int64),
        "groundtruth_instance_masks": masks,
        "groundtruth_is_crowd": np.zeros([n], bool),
        "groundtruth_area": masks.sum((1, 2)).astype(np.float32),
    }


def measure(size: int) -> tuple[float, float]:
    """Returns (wall-clock pairs/s, process-CPU-time pairs/s) of the op at `size` x `size`."""
    rng = np.random.default_rng(_SEED.value)
    pool = [
        {k: tf.constant(v) for k, v in make_example(rng, size).items()} for _ in range(_POOL.value)
    ]
    spec = {k: tf.TensorSpec([None] * v.shape.rank, v.dtype) for k, v in pool[0].items()}
    if not _DYNAMIC.value:
        spec["image"] = tf.TensorSpec([size, size, 3], tf.uint8)
        spec["groundtruth_instance_masks"] = tf.TensorSpec([None, size, size], tf.uint8)
        spec["groundtruth_boxes"] = tf.TensorSpec([None, 4], tf.float32)
    op = tf.function(
        lambda t, s, seed: cp.copy_paste(
            t, s, seed, selection=_SELECTION.value, blend_sigma=_BLEND_SIGMA.value
        ),
        input_signature=[spec, spec, tf.TensorSpec([2], tf.int64)],
    )

    def run(i):
        t, s = pool[i % len(pool)], pool[(i + 1) % len(pool)]
        out = op(t, s, tf.constant([_SEED.value, i], tf.int64))
        return out["groundtruth_boxes"].shape[0]

    for i in range(_WARMUP.value):
        run(i)
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(_NUM_PAIRS.value):
        run(_WARMUP.value + i)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return _NUM_PAIRS.value / wall, _NUM_PAIRS.value / cpu


def main(argv):
    del argv
    size = _SIZE.value
    pps, cpu_pps = measure(size)
    pps_512, cpu_pps_512 = (pps, cpu_pps) if size == 512 else measure(512)
    anchor = MMDET_ANCHOR_PAIRS_PER_S.get(size)
    result = {
        "size": size,
        "pairs_per_s": round(pps, 1),
        "ms_per_pair": round(1000.0 / pps, 2),
        "pairs_per_s_512": round(pps_512, 1),
        "mmdet_anchor_pairs_per_s": anchor,
        "mmdet_anchor_pairs_per_s_512": MMDET_ANCHOR_PAIRS_PER_S[512],
        "speedup_vs_mmdet": round(pps / anchor, 2) if anchor else None,
        "speedup_vs_mmdet_512": round(pps_512 / MMDET_ANCHOR_PAIRS_PER_S[512], 2),
        # Pairs per second of this process's CPU time: less sensitive to other processes
        # competing for the core (on a quiet machine it is close to pairs_per_s).
        "cpu_time_pairs_per_s": round(cpu_pps, 1),
        "cpu_time_pairs_per_s_512": round(cpu_pps_512, 1),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "static_hw": not _DYNAMIC.value,
        "selection": _SELECTION.value,
        "blend_sigma": _BLEND_SIGMA.value,
        "threads": 1,
    }
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)

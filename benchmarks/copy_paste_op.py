"""Benchmark of the Copy-Paste op alone, on ONE CPU core, in graph mode (as inside tf.data).

Pairs of synthetic COCO-like examples: Poisson(7) instances clipped to [1, 40], elliptical
uint8 masks with diameters 10-400 px, classes 1-80, uint8 images. A pool of examples is
generated first (not timed); the op runs under `tf.function` with None dims in its
input_signature, after a warm-up. Prints one JSON line last, e.g.

  python benchmarks/copy_paste_op.py            # 1024x1024 and 512x512
  python benchmarks/copy_paste_op.py --size=640 --num_pairs=200

This benchmark measures tfcp only. It prints no ratio to MMDetection: a peer's figure must
come from running the peer on the same examples in the same session (a peer benchmark under
benchmarks/peers/ is tracked separately), not from a constant.
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
from synthetic_pairs import make_example  # noqa: E402  (benchmarks/, this script's dir)

from tfcp.ops import copy_paste as cp  # noqa: E402

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


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of fn()."""
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu_start


def measure(size: int) -> dict:
    """Pairs/s of the op at `size` x `size`: called as a tf.function and inside tf.data.

    Returns:
      dict with `function` and `tf_data`, each (wall pairs/s, process-CPU-time pairs/s).
    """
    rng = np.random.default_rng(_SEED.value)
    pool = [make_example(rng, size) for _ in range(_POOL.value)]
    tensors = [{k: tf.constant(v) for k, v in ex.items()} for ex in pool]
    spec = {k: tf.TensorSpec([None] * v.shape.rank, v.dtype) for k, v in tensors[0].items()}
    if not _DYNAMIC.value:
        spec["image"] = tf.TensorSpec([size, size, 3], tf.uint8)
        spec["groundtruth_instance_masks"] = tf.TensorSpec([None, size, size], tf.uint8)
        spec["groundtruth_boxes"] = tf.TensorSpec([None, 4], tf.float32)
    kwargs = {"selection": _SELECTION.value, "blend_sigma": _BLEND_SIGMA.value}
    op = tf.function(
        lambda t, s, seed: cp.copy_paste(t, s, seed, **kwargs),
        input_signature=[spec, spec, tf.TensorSpec([2], tf.int64)],
    )
    n = _NUM_PAIRS.value

    def run(i):
        t, s = tensors[i % len(pool)], tensors[(i + 1) % len(pool)]
        return op(t, s, tf.constant([_SEED.value, i], tf.int64))

    def run_all():
        for i in range(n):
            run(_WARMUP.value + i)

    for i in range(_WARMUP.value):
        run(i)
    wall, cpu = _timed(run_all)
    result = {"function": (n / wall, n / cpu)}

    # The same pairs inside tf.data (cached in memory, one thread). One iterator serves the
    # warm-up (which also instantiates the map function, ~0.1 s) and the timed elements;
    # each is fetched with `next` (its Python cost is counted). The map returns every output
    # of the op, so that nothing of it can be pruned.
    pairs = tf.data.Dataset.from_generator(
        lambda: ((pool[i], pool[(i + 1) % len(pool)]) for i in range(len(pool))),
        output_signature=(spec, spec),
    ).cache()
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = False
    ds = (
        pairs.repeat()
        .enumerate()
        .map(lambda i, ts: cp.copy_paste(ts[0], ts[1], tf.stack([_SEED.value, i]), **kwargs))
        .with_options(options)
    )
    it = iter(ds)
    for _ in range(_WARMUP.value + len(pool)):  # fills the cache
        next(it)

    def fetch_all():
        for _ in range(n):
            next(it)

    wall, cpu = _timed(fetch_all)
    result["tf_data"] = (n / wall, n / cpu)
    return result


def main(argv):
    del argv
    size = _SIZE.value
    main_size = measure(size)
    small = main_size if size == 512 else measure(512)
    pps, cpu_pps = main_size["function"]
    pps_512, cpu_pps_512 = small["function"]
    result = {
        "size": size,
        "pairs_per_s": round(pps, 1),
        "ms_per_pair": round(1000.0 / pps, 2),
        "pairs_per_s_512": round(pps_512, 1),
        # Pairs per second of this process's CPU time: less sensitive to other processes
        # competing for the core (on a quiet machine it is close to the wall-clock figure).
        "cpu_time_pairs_per_s": round(cpu_pps, 1),
        "cpu_time_pairs_per_s_512": round(cpu_pps_512, 1),
        # The op inside tf.data.Dataset.map (one iterator, `next` per pair), wall and CPU time.
        "tf_data_pairs_per_s": round(main_size["tf_data"][0], 1),
        "tf_data_pairs_per_s_512": round(small["tf_data"][0], 1),
        "tf_data_cpu_time_pairs_per_s": round(main_size["tf_data"][1], 1),
        "tf_data_cpu_time_pairs_per_s_512": round(small["tf_data"][1], 1),
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

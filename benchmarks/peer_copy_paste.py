"""tfcp's Copy-Paste op vs MMDetection 3.3's CopyPaste, one core each, on identical examples.

Both ops run in this one invocation, on the same pairs of synthetic COCO-like examples
(`benchmarks/synthetic_pairs.py`: Poisson(7) instances clipped to [1, 40], elliptical uint8
masks 10-400 px, classes 1-80) at 1024 and 512 px, and paste the same objects: the examples
and tfcp's random subset for each pair (the op's own stateless draw, seed [seed, pair]) are
written to an .npz once and read back by both sides; MMDetection's transform takes the subset
from the file instead of drawing it (`--own_draws`: it draws its own). tfcp runs here (graph
mode, `tf.function` with static H, W and unknown N as after scale jittering, one intra/inter-op
thread); MMDetection in its own venv (`benchmarks/peers/setup_mmdet.sh`) through
`benchmarks/peers/mmdet_copy_paste.py`, one thread. Each side times only the op/transform call
per pair, its inputs built beforehand. tfcp's call is the traced graph (the tf.function's
`ConcreteFunction`), which still pays TF's Python dispatch of 13 input tensors (~0.3 ms per call
on this machine) but not the tf.function's per-call signature check and cache lookup (another
~0.25 ms). Two more tfcp figures are printed: through the tf.function
(`ratio_tf_function_call`), and inside `tf.data.Dataset.map` where the op runs in training
(`ratio_tf_data`: one iterator, warmed up, each element fetched with `next`).

  bash benchmarks/peers/setup_mmdet.sh          # once (or `make bench-peers`)
  python benchmarks/peer_copy_paste.py --runs=3

Prints one JSON line: per run and size, pairs/s (wall and process CPU time) of tfcp with
MMDetection's occlusion rule (`ratio`, `cpu_time_ratio`: the same semantics; and through the
tf.function or inside tf.data, `ratio_tf_function_call`, `ratio_tf_data`), of tfcp with its
default (the paper's) rule (`ratio_paper_rule`), and of MMDetection; load averages
before/after each run. On a loaded machine the CPU-time ratio (each process's own CPU
seconds) varies less than the wall-clock one.
`outputs_identical` compares both ops' outputs (image, masks, boxes, classes) on the first
pairs. Not a quiet-machine figure unless the load averages say so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import tensorflow as tf

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import numpy as np  # noqa: E402
import synthetic_pairs as sp  # noqa: E402  (benchmarks/, this script's dir)
from absl import app, flags  # noqa: E402

from tfcp.ops import copy_paste as cp  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PEER_SCRIPT = os.path.join(HERE, "peers", "mmdet_copy_paste.py")
DEFAULT_PEER_PYTHON = os.path.join(HERE, "peers", ".venv-mmdet", "bin", "python")
# MMDetection's defaults (bbox_occluded_thr=10, mask_occluded_thr=300: area > 300) in tfcp's op.
MMDET_RULE = {"occluded_box_threshold": 10.0, "occluded_area_threshold": 301.0}

_SIZES = flags.DEFINE_list("sizes", ["1024", "512"], "Image sizes (square), pixels.")
_NUM_PAIRS = flags.DEFINE_integer("num_pairs", 50, "Timed pairs per size and side.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed pairs per size and side.")
_POOL = flags.DEFINE_integer("pool", 12, "Generated examples per size.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the examples and of both ops' draws.")
_RUNS = flags.DEFINE_integer("runs", 1, "Repetitions (each reported).")
_CHECK_PAIRS = flags.DEFINE_integer("check_pairs", 4, "First pairs whose outputs are compared.")
_OWN_DRAWS = flags.DEFINE_bool("own_draws", False, "MMDetection draws its own subsets.")
_PEER_PYTHON = flags.DEFINE_string("peer_python", DEFAULT_PEER_PYTHON, "Peer venv's python.")


def _tensors(example: dict) -> dict:
    return {k: tf.constant(v) for k, v in example.items()}


def _spec(size: int) -> dict:
    """One example's TensorSpecs: static H, W and unknown N, as after scale jittering."""
    return {
        sp.IMAGE: tf.TensorSpec([size, size, 3], tf.uint8),
        sp.BOXES: tf.TensorSpec([None, 4], tf.float32),
        sp.CLASSES: tf.TensorSpec([None], tf.int64),
        sp.MASKS: tf.TensorSpec([None, size, size], tf.uint8),
        sp.IS_CROWD: tf.TensorSpec([None], tf.bool),
        sp.AREA: tf.TensorSpec([None], tf.float32),
    }


def _op(size: int, **kwargs):
    spec = _spec(size)
    return tf.function(
        lambda t, s, seed: cp.copy_paste(t, s, seed, **kwargs),
        input_signature=[spec, spec, tf.TensorSpec([2], tf.int64)],
    )


def _tf_data_seconds(pool: list[dict], pairs: np.ndarray, size: int, **kwargs) -> float:
    """Wall seconds of the op on every pair inside `tf.data.Dataset.map`, one thread.

    The pairs (and seeds) are cached in memory; one iterator serves a warm-up pass (which
    also instantiates the map function, ~0.1 s) and the timed pass, each element fetched
    with `next` (its Python cost, ~0.06 ms at 512, is counted). The map returns every output
    of the op, so that nothing of it can be pruned.
    """
    spec = _spec(size)
    seeds = [np.array([_SEED.value, i], np.int64) for i in range(len(pairs))]
    ds = tf.data.Dataset.from_generator(
        lambda: ((pool[t], pool[s], seeds[i]) for i, (t, s) in enumerate(pairs)),
        output_signature=(spec, spec, tf.TensorSpec([2], tf.int64)),
    )
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.autotune.enabled = False
    ds = ds.cache().repeat().map(lambda t, s, seed: cp.copy_paste(t, s, seed, **kwargs))
    it = iter(ds.with_options(options))
    for _ in range(len(pairs)):
        next(it)
    start = time.perf_counter()
    for _ in range(len(pairs)):
        next(it)
    return time.perf_counter() - start


def draw_subsets(pool: list[dict], pairs: np.ndarray) -> list[np.ndarray]:
    """tfcp's random subset of each pair's source objects (the op's own draw, same seeds)."""
    out = []
    for i, (_, s) in enumerate(pairs):
        pasteable = (pool[s][sp.AREA] > 0) & ~pool[s][sp.IS_CROWD]
        seed = tf.constant([_SEED.value, i], tf.int64)
        out.append(cp.select_objects(pasteable, seed, "random_subset", 100).numpy())
    return out


def _time_calls(fn, tensors: list, pairs: np.ndarray) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of `fn` on every pair, call only."""
    cpu, wall = 0.0, 0.0
    for i, (t, s) in enumerate(pairs):
        seed = tf.constant([_SEED.value, i], tf.int64)
        start, cpu_start = time.perf_counter(), time.process_time()
        fn(tensors[t], tensors[s], seed)
        wall += time.perf_counter() - start
        cpu += time.process_time() - cpu_start
    return wall, cpu


def measure_tfcp(pool: list[dict], pairs: np.ndarray, size: int, **kwargs) -> dict:
    """Pairs/s (wall, process CPU time) of tfcp's op on `pairs`, op call only.

    The traced graph (`ConcreteFunction`), then the tf.function, then the op inside tf.data
    are timed one after the other on the same pairs and seeds.
    """
    tensors = [_tensors(ex) for ex in pool]
    op = _op(size, **kwargs)
    graph = op.get_concrete_function()
    for fn in (graph, op):
        for i in range(_WARMUP.value):
            t, s = pairs[i % len(pairs)]
            fn(tensors[t], tensors[s], tf.constant([_SEED.value, i % len(pairs)], tf.int64))
    wall, cpu = _time_calls(graph, tensors, pairs)
    tf_function_wall, _ = _time_calls(op, tensors, pairs)
    return {
        "pairs_per_s": len(pairs) / wall,
        "cpu_time_pairs_per_s": len(pairs) / cpu,
        "tf_function_pairs_per_s": len(pairs) / tf_function_wall,
        "tf_data_pairs_per_s": len(pairs) / _tf_data_seconds(pool, pairs, size, **kwargs),
    }


def compare_outputs(pool: list[dict], pairs: np.ndarray, check_file: str) -> dict:
    """tfcp's outputs (MMDetection's rule) vs MMDetection's on the first pairs, same draws."""
    size = pool[0][sp.IMAGE].shape[0]
    op = _op(size, **MMDET_RULE)
    with np.load(check_file) as data:
        ref = {k: data[k] for k in data.files}
    differences = []
    for k in range(int(ref["num_pairs"])):
        t, s = pairs[k]
        out = op(_tensors(pool[t]), _tensors(pool[s]), tf.constant([_SEED.value, k], tf.int64))
        yxyx = out[sp.BOXES].numpy() * size
        ours = {
            "img": out[sp.IMAGE].numpy().astype(np.int64),
            "boxes_xyxy": yxyx[:, [1, 0, 3, 2]],
            "labels": out[sp.CLASSES].numpy(),
            "masks": out[sp.MASKS].numpy(),
            "ignore_flags": out[sp.IS_CROWD].numpy(),
        }
        for name, value in ours.items():
            theirs = ref[f"{name}_{k}"]
            same = value.shape == theirs.shape and (
                np.allclose(value, theirs, atol=1e-3)
                if name == "boxes_xyxy"
                else np.array_equal(value, theirs.astype(value.dtype))
            )
            if not same:
                differences.append(f"pair {k}: {name} {value.shape} vs {theirs.shape}")
    return {
        "identical": not differences,
        "pairs": int(ref["num_pairs"]),
        "differences": differences,
    }


def run_peer(paths: list[str], check_pairs: int) -> dict:
    """Runs the MMDetection script in its venv on the examples files; returns its JSON."""
    env = dict(os.environ)
    env.update({v: "1" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    cmd = [_PEER_PYTHON.value, PEER_SCRIPT, f"--warmup={_WARMUP.value}", f"--seed={_SEED.value}"]
    cmd += [f"--examples={p}" for p in paths] + [f"--check_pairs={check_pairs}"]
    cmd += ["--own_draws"] if _OWN_DRAWS.value else []
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"MMDetection peer failed, exit {proc.returncode}: {' '.join(cmd)}\n"
            f"{proc.stderr[-3000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _by_size(runs: list[dict], sizes: list[int], key: str) -> dict:
    return {str(s): [run["sizes"][str(s)][key] for run in runs] for s in sizes}


def _summary(same: dict, paper: dict, peer: dict) -> dict:
    """One size of one run: both sides' pairs/s and their ratios."""
    return {
        "tfcp_pairs_per_s": round(same["pairs_per_s"], 1),
        "tfcp_cpu_time_pairs_per_s": round(same["cpu_time_pairs_per_s"], 1),
        "tfcp_tf_function_pairs_per_s": round(same["tf_function_pairs_per_s"], 1),
        "tfcp_tf_data_pairs_per_s": round(same["tf_data_pairs_per_s"], 1),
        "tfcp_paper_rule_pairs_per_s": round(paper["pairs_per_s"], 1),
        "mmdet_pairs_per_s": round(peer["pairs_per_s"], 1),
        "mmdet_cpu_time_pairs_per_s": round(peer["cpu_time_pairs_per_s"], 1),
        "ratio": round(same["pairs_per_s"] / peer["pairs_per_s"], 2),
        "cpu_time_ratio": round(same["cpu_time_pairs_per_s"] / peer["cpu_time_pairs_per_s"], 2),
        "ratio_tf_function_call": round(same["tf_function_pairs_per_s"] / peer["pairs_per_s"], 2),
        "ratio_tf_data": round(same["tf_data_pairs_per_s"] / peer["pairs_per_s"], 2),
        "ratio_paper_rule": round(paper["pairs_per_s"] / peer["pairs_per_s"], 2),
        "tfcp_mean_pasted": round(float(same["mean_pasted"]), 2),
        "mmdet_mean_pasted": round(peer["mean_pasted"], 2),
        "mmdet_draws": peer["draws"],
    }


def run_once(data: dict, paths: dict, digests: dict, check: bool, identical: dict):
    """One run: tfcp (both rules) then MMDetection at every size.

    Returns:
      (run, peer): this run's load averages and per-size figures; the peer's JSON. Fills
      `identical` (size -> comparison) when `check`.
    """
    load_before = _load()
    ours = {}
    for size, (pool, pairs, selected) in data.items():
        same = measure_tfcp(pool, pairs, size, **MMDET_RULE)
        same["mean_pasted"] = np.mean([len(x) for x in selected])
        ours[size] = (same, measure_tfcp(pool, pairs, size))
    peer = run_peer(list(paths.values()), _CHECK_PAIRS.value if check else 0)
    sizes = {}
    for res in peer["results"]:
        size = res["size"]
        if res["examples_digest"] != digests[size]:
            raise RuntimeError(f"peer read other examples than {paths[size]}")
        if "check_file" in res:
            identical[str(size)] = compare_outputs(*data[size][:2], res["check_file"])
            if not identical[str(size)]["identical"]:
                print(f"WARNING: outputs differ at {size}: {identical[str(size)]}", file=sys.stderr)
        sizes[str(size)] = _summary(*ours[size], res)
    run = {"load_avg_before": load_before, "load_avg_after": _load(), "sizes": sizes}
    return run, peer


def main(argv):
    del argv
    if not os.access(_PEER_PYTHON.value, os.X_OK):
        sys.exit(
            f"peer_copy_paste: no MMDetection peer venv at {_PEER_PYTHON.value}. Build it with "
            "`bash benchmarks/peers/setup_mmdet.sh` (or run `make bench-peers`), or pass "
            "--peer_python=<python of a venv with mmdet 3.3>."
        )
    sizes = [int(s) for s in _SIZES.value]
    work = tempfile.mkdtemp(prefix="tfcp_peer_")
    try:
        data, paths, digests = {}, {}, {}
        for size in sizes:
            paths[size] = os.path.join(work, f"pairs_{size}.npz")
            pool = sp.make_pool(_SEED.value, size, _POOL.value)
            pairs = sp.pair_indices(_POOL.value, _NUM_PAIRS.value)
            sp.write_pool(paths[size], pool, pairs, draw_subsets(pool, pairs))
            data[size] = sp.read_pool(paths[size])  # what the peer reads, byte for byte
            digests[size] = sp.file_digest(paths[size])
        runs, identical = [], {}
        for r in range(_RUNS.value):
            run, peer = run_once(data, paths, digests, r == 0, identical)
            runs.append({"run": r + 1, **run})
        examples = {
            str(s): {
                "pool": len(data[s][0]),
                "mean_instances": round(
                    float(np.mean([len(e[sp.CLASSES]) for e in data[s][0]])), 2
                ),
                "digest": digests[s],
            }
            for s in sizes
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "Copy-Paste op, tfcp vs MMDetection 3.3 CopyPaste, one core each",
        "ratio_by_size": _by_size(runs, sizes, "ratio"),
        "cpu_time_ratio_by_size": _by_size(runs, sizes, "cpu_time_ratio"),
        "ratio_tf_function_call_by_size": _by_size(runs, sizes, "ratio_tf_function_call"),
        "ratio_tf_data_by_size": _by_size(runs, sizes, "ratio_tf_data"),
        "runs": runs,
        "outputs_identical": identical,
        "examples": examples,
        "num_pairs": _NUM_PAIRS.value,
        "warmup": _WARMUP.value,
        "threads": 1,
        "tfcp_rule": MMDET_RULE,
        "mmdet_transform": peer["results"][0]["transform"],
        "versions": {
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
            "peer": peer["versions"],
        },
        "command": " ".join(["python", os.path.relpath(sys.argv[0])] + sys.argv[1:]),
    }
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)

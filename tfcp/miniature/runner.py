"""Runs the paper-in-miniature grids: generated data, `python -m tfcp.train` runs, results.

Layout of an output directory D:
  D/data/coco/            generated COCO-format dataset (`python -m tfcp.data.synthetic`)
  D/data/records/         TFRecords (`python -m tfcp.data.create_coco_tfrecord`): the val
                          set, the whole train set (train_f100-*) and each fraction's
                          fixed random subset (train_f010-*: the same images for every
                          arm and seed)
  D/data/regime.json      the data settings; a rerun with other settings is refused
  D/runs/<run_id>/        one model dir per run: train.log, config.gin, metrics.json,
                          metrics_history.jsonl, TensorBoard events (checkpoints are
                          deleted once the run's row is written, unless asked to keep them)
  D/results.jsonl         one line per finished run, appended as soon as it finishes

A grid that is stopped (Ctrl-C, SIGTERM, the end of a session) resumes when the same
command is run again: finished runs are read from results.jsonl and not repeated, and an
unfinished run resumes from its last checkpoint (tfcp's exact resume).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from tfcp.miniature.grids import Grid, RunSpec, runs_of

RESULTS_FILE = "results.jsonl"
PREEMPTED_EXIT_CODE = 143


@dataclasses.dataclass(frozen=True)
class Regime:
    """Data size and schedule, the same for every arm of every grid.

    Attributes:
      num_train: generated training images (100 %).
      num_val: generated validation images (the same val set for every run).
      image_size: longer side of the generated images (training crops are 128 px).
      steps: training steps of every run (batch 2).
      seeds: seeds per arm.
      data_seed: seed of the generated dataset and of the fraction subsets.
    """

    num_train: int = 400
    num_val: int = 100
    image_size: int = 128
    steps: int = 2000
    seeds: int = 3
    data_seed: int = 0

    def data_settings(self) -> dict:
        return {
            "num_train": self.num_train,
            "num_val": self.num_val,
            "image_size": self.image_size,
            "data_seed": self.data_seed,
        }


QUICK = Regime(num_train=40, num_val=8, steps=10, seeds=1)


class GridError(RuntimeError):
    """A run failed, or the output directory holds results of another regime."""


@dataclasses.dataclass(frozen=True)
class Data:
    """Paths of the prepared data."""

    records_dir: str
    val_annotations: str
    num_classes: int
    train_images: dict  # fraction -> number of training images

    def train_files(self, fraction: float) -> str:
        return os.path.join(self.records_dir, f"train_f{round(fraction * 100):03d}-*")

    @property
    def eval_files(self) -> str:
        return os.path.join(self.records_dir, "val-*")


def _python(*args: str, log: str | None = None) -> None:
    cmd = [sys.executable, "-m", *args]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if log:
        with open(log, "a") as f:
            f.write(result.stdout + result.stderr)
    if result.returncode:
        raise GridError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-2000:]}")


def subset_annotations(coco: dict, fraction: float, seed: int) -> dict:
    """A fixed random subset of the COCO dataset's images with their annotations.

    Args:
      coco: a COCO instances JSON (dict).
      fraction: in (0, 1]; at least one image is kept.
      seed: subset seed (the same subset for every arm and run seed).

    Returns:
      A COCO dict with round(fraction * #images) images (sorted by id) and their
      annotations; categories and info unchanged.
    """
    ids = sorted(image["id"] for image in coco["images"])
    count = max(1, round(fraction * len(ids)))
    keep = set(np.random.default_rng(seed).choice(ids, count, replace=False).tolist())
    return {
        **coco,
        "images": [
            im for im in sorted(coco["images"], key=lambda im: im["id"]) if im["id"] in keep
        ],
        "annotations": [a for a in coco["annotations"] if a["image_id"] in keep],
    }


def prepare_data(output_dir: str, regime: Regime, fractions: Sequence[float]) -> Data:
    """Generates the dataset and writes the TFRecords each fraction needs (once)."""
    data_dir = os.path.join(output_dir, "data")
    coco_dir = os.path.join(data_dir, "coco")
    records_dir = os.path.join(data_dir, "records")
    regime_file = os.path.join(data_dir, "regime.json")
    settings = regime.data_settings()
    if os.path.exists(regime_file):
        with open(regime_file) as f:
            existing = json.load(f)
        if existing != settings:
            raise GridError(
                f"{output_dir} holds data generated with {existing}, not {settings}: "
                "use another --output_dir"
            )
    else:
        shutil.rmtree(data_dir, ignore_errors=True)
        log = os.path.join(output_dir, "data.log")
        os.makedirs(records_dir)
        _python(
            "tfcp.data.synthetic", f"--output_dir={coco_dir}", "--format=coco",
            f"--num_train={regime.num_train}", f"--num_val={regime.num_val}",
            f"--image_size={regime.image_size}", f"--seed={regime.data_seed}", log=log,
        )  # fmt: skip
        _convert(coco_dir, "val2017", _annotations(coco_dir, "val2017"), records_dir, "val", log)
        with open(regime_file, "w") as f:
            json.dump(settings, f)
    with open(_annotations(coco_dir, "train2017")) as f:
        train = json.load(f)
    train_images = {}
    for fraction in sorted(set(fractions)):
        prefix = f"train_f{round(fraction * 100):03d}"
        subset = subset_annotations(train, fraction, regime.data_seed)
        train_images[fraction] = len(subset["images"])
        if not os.path.exists(os.path.join(records_dir, f"{prefix}_summary.json")):
            path = os.path.join(coco_dir, "annotations", f"{prefix}.json")
            with open(path, "w") as f:
                json.dump(subset, f)
            log = os.path.join(output_dir, "data.log")
            _convert(coco_dir, "train2017", path, records_dir, prefix, log)
    return Data(
        records_dir=records_dir,
        val_annotations=_annotations(coco_dir, "val2017"),
        num_classes=max(c["id"] for c in train["categories"]) + 1,
        train_images=train_images,
    )


def _annotations(coco_dir: str, split: str) -> str:
    return os.path.join(coco_dir, "annotations", f"instances_{split}.json")


def _convert(coco_dir, split, annotations, records_dir, prefix, log) -> None:
    _python(
        "tfcp.data.create_coco_tfrecord", f"--image_dir={os.path.join(coco_dir, split)}",
        f"--annotations_json={annotations}",
        f"--output_prefix={os.path.join(records_dir, prefix)}", "--num_shards=2", log=log,
    )  # fmt: skip


def load_results(output_dir: str) -> dict[str, dict]:
    """Rows of D/results.jsonl by run id (a torn last line from a kill is ignored)."""
    path = os.path.join(output_dir, RESULTS_FILE)
    rows: dict[str, dict] = {}
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):  # written while the process was killed
                print(f"{path}:{number}: ignoring a torn last line", file=sys.stderr)
                continue
            raise GridError(f"{path}:{number}: not JSON: {e}") from e
        rows[row["run_id"]] = row
    return rows


def train_command(spec: RunSpec, data: Data, model_dir: str) -> list[str]:
    """The `python -m tfcp.train` command of one run."""
    bindings = [
        f"TRAIN_FILES='{data.train_files(spec.fraction)}'",
        f"EVAL_FILES='{data.eval_files}'",
        f"EVAL_ANNOTATIONS='{data.val_annotations}'",
        f"NUM_CLASSES={data.num_classes}",
        f"TRAIN_STEPS={spec.steps}",
        f"SEED={spec.seed}",
        *spec.arm.bindings,
    ]
    return [
        sys.executable, "-m", "tfcp.train", f"--gin_file={spec.arm.gin_file}",
        *[f"--gin_bindings={b}" for b in bindings],
        f"--model_dir={model_dir}", "--mode=train_and_eval",
    ]  # fmt: skip


def _terminate_with_parent() -> None:
    """In the child (Linux): SIGTERM when the grid process dies, even by SIGKILL."""
    try:
        import ctypes  # noqa: PLC0415

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: a killed grid may leave its current run training to the end


def _run_process(cmd: list[str], log_path: str) -> int:
    """Runs `cmd` with output to `log_path`; SIGTERM/SIGINT are passed on to it, and it is
    terminated (checkpointing) if this process dies."""
    with open(log_path, "a") as log:
        process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_terminate_with_parent
        )
        previous = {}

        def forward(signum, frame):
            process.send_signal(signal.SIGTERM)  # the trainer checkpoints and exits 143

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, forward)
        try:
            return process.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def train_and_evaluate(spec: RunSpec, data: Data, output_dir: str, keep_checkpoints: bool):
    """Trains and evaluates one run (resuming its checkpoint), returns (metrics, seconds).

    Raises:
      GridError: the run failed (the message has the end of its log).
      KeyboardInterrupt: the run was stopped by a signal after checkpointing.
    """
    model_dir = os.path.join(output_dir, "runs", spec.run_id)
    os.makedirs(model_dir, exist_ok=True)
    log_path = os.path.join(model_dir, "train.log")
    attempts_path = os.path.join(model_dir, "attempts.jsonl")
    start = time.monotonic()
    returncode = _run_process(train_command(spec, data, model_dir), log_path)
    seconds = time.monotonic() - start
    with open(attempts_path, "a") as f:
        f.write(json.dumps({"seconds": round(seconds, 1), "returncode": returncode}) + "\n")
    if returncode == PREEMPTED_EXIT_CODE or returncode < 0:
        raise KeyboardInterrupt(f"run {spec.run_id} stopped at its last checkpoint")
    if returncode:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise GridError(f"run {spec.run_id} failed ({returncode}); log {log_path}:\n{tail}")
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    with open(attempts_path) as f:
        total = sum(json.loads(line)["seconds"] for line in f if line.strip())
    if not keep_checkpoints:
        for name in os.listdir(model_dir):
            if name.startswith("ckpt-") or name == "checkpoint":
                os.remove(os.path.join(model_dir, name))
    return metrics, total


def result_row(grid: Grid, spec: RunSpec, data: Data, regime: Regime, metrics, seconds):
    """One line of results.jsonl."""
    return {
        "grid": grid.name,
        "run_id": spec.run_id,
        "arm": spec.arm.name,
        "seed": spec.seed,
        "data_fraction": spec.fraction,
        "train_images": data.train_images[spec.fraction],
        "steps": spec.steps,
        "box_AP": metrics["box_AP"],
        "mask_AP": metrics["mask_AP"],
        "box_AP50": metrics["box_AP50"],
        "mask_AP50": metrics["mask_AP50"],
        "eval_step": metrics["step"],
        "wall_time_s": round(seconds, 1),
        "gin_file": spec.arm.gin_file,
        "bindings": list(spec.arm.bindings),
        "regime": regime.data_settings(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def check_row(row: dict, spec: RunSpec, regime: Regime, path: str) -> None:
    """Refuses a results.jsonl row made with another configuration than `spec`."""
    expected = (spec.arm.gin_file, list(spec.arm.bindings), regime.data_settings())
    found = (row.get("gin_file"), row.get("bindings"), row.get("regime"))
    if found != expected:
        raise GridError(
            f"{path} has run {spec.run_id} with {found}, but this command would run it "
            f"with {expected}: use another --output_dir"
        )


RunFn = Callable[[RunSpec, Data, str, bool], tuple[dict, float]]


def run_grids(
    grids: Sequence[Grid],
    output_dir: str,
    regime: Regime,
    keep_checkpoints: bool = False,
    run_fn: RunFn = train_and_evaluate,
    log: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Runs every run of `grids` that results.jsonl lacks; returns all rows by run id.

    Runs are done seed-major within each grid (every arm's first seed first); a run
    shared by two grids (same arm, fraction, seed and steps) is done once.
    """
    os.makedirs(output_dir, exist_ok=True)
    data = prepare_data(output_dir, regime, [f for g in grids for f in g.fractions])
    rows = load_results(output_dir)
    results_path = os.path.join(output_dir, RESULTS_FILE)
    plan = []
    for grid in grids:
        for spec in runs_of(grid, regime.seeds, regime.steps):
            if spec.run_id in rows:
                check_row(rows[spec.run_id], spec, regime, results_path)
            elif spec.run_id not in {s.run_id for _, s in plan}:
                plan.append((grid, spec))
    log(f"{len(plan)} runs to do, {len(rows)} already in {results_path}")
    done_seconds = []
    for number, (grid, spec) in enumerate(plan, 1):
        eta = ""
        if done_seconds:
            left = np.mean(done_seconds) * (len(plan) - number + 1)
            eta = f", ETA {time.strftime('%H:%M:%S', time.gmtime(left))}"
        log(f"[{number}/{len(plan)}] {grid.name} {spec.run_id}{eta}")
        metrics, seconds = run_fn(spec, data, output_dir, keep_checkpoints)
        row = result_row(grid, spec, data, regime, metrics, seconds)
        with open(results_path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        rows[spec.run_id] = row
        done_seconds.append(seconds)
        log(
            f"[{number}/{len(plan)}] {spec.run_id}: box AP {row['box_AP']:.3f}, "
            f"mask AP {row['mask_AP']:.3f}, {seconds:.0f} s"
        )
    return rows

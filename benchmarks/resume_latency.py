"""Resume cost: time from process start to the first resumed training step, by checkpoint step.

Trains the demo's tiny Mask R-CNN (LSJ + Copy-Paste, 128 px, batch 2) on generated COCO-format
data to each step in --steps (real training, once; kept in --work_dir), then, --repeats times
and alternating between the steps, copies each run's model dir and reruns
`python -m tfcp.train` with TRAIN_STEPS = step + 1, timing from process start to the log line of
that first resumed step. With exact O(1) resume the times are equal within noise whatever the
step. Prints one JSON line:

  python benchmarks/resume_latency.py                       # steps 10 and 2000, 3 repeats
  python benchmarks/resume_latency.py --steps=10,500 --repeats=5
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = "gin_configs/demo/maskrcnn_tiny_copy_paste.gin"

_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/tfcp_resume_bench", "Data and model dirs.")
_STEPS = flags.DEFINE_list("steps", ["10", "2000"], "Checkpoint steps to resume from.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed resumes per step.")


def _run(cmd, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(cmd, cwd=REPO, env=env, check=True, **kwargs)


def _data(work_dir):
    """Generated COCO-format data (256 train, 8 val images at 256 px) as TFRecords."""
    coco, records = os.path.join(work_dir, "coco"), os.path.join(work_dir, "records")
    if not os.path.exists(os.path.join(records, "done")):
        _run([sys.executable, "-m", "tfcp.data.synthetic", "--output_dir", coco, "--format",
              "coco", "--num_train", "256", "--num_val", "8", "--image_size", "256"])  # fmt: skip
        for split in ("train", "val"):
            _run([sys.executable, "-m", "tfcp.data.create_coco_tfrecord", "--image_dir",
                  f"{coco}/{split}2017", "--annotations_json",
                  f"{coco}/annotations/instances_{split}2017.json", "--output_prefix",
                  f"{records}/{split}", "--num_shards", "2"])  # fmt: skip
        open(os.path.join(records, "done"), "w").close()
    with open(f"{coco}/annotations/instances_train2017.json") as f:
        num_classes = max(c["id"] for c in json.load(f)["categories"]) + 1
    return [
        f"--gin_bindings=TRAIN_FILES='{records}/train-*'",
        f"--gin_bindings=EVAL_FILES='{records}/val-*'",
        f"--gin_bindings=EVAL_ANNOTATIONS='{coco}/annotations/instances_val2017.json'",
        f"--gin_bindings=NUM_CLASSES={num_classes}",
    ]


def _train_cmd(model_dir, bindings, steps, *extra):
    return [sys.executable, "-m", "tfcp.train", f"--gin_file={GIN}", f"--model_dir={model_dir}",
            "--mode=train", *bindings, f"--gin_bindings=TRAIN_STEPS={steps}",
            "--gin_bindings=tfcp.Trainer.image_summaries=False", *extra]  # fmt: skip


def _time_to_first_step(model_dir, bindings, step):
    """Seconds from process start to the log line of step `step + 1`."""
    cmd = _train_cmd(
        model_dir, bindings, step + 1,
        "--gin_bindings=tfcp.Trainer.log_interval=1",
        "--gin_bindings=tfcp.Trainer.steps_per_loop=1",
    )  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    pattern = re.compile(rf"step {step + 1}/{step + 1} \|")
    seconds, resumed_at = None, None
    for line in proc.stderr:
        match = re.search(r"Input stream resumes at step (\d+)", line)
        if match:
            resumed_at = int(match.group(1))
        if seconds is None and pattern.search(line):
            seconds = time.perf_counter() - start
    if proc.wait() != 0 or seconds is None:
        raise RuntimeError(f"resume from step {step} failed: {' '.join(cmd)}")
    if resumed_at != step:
        raise RuntimeError(f"expected the input to resume at step {step}, got {resumed_at}")
    return seconds


def main(argv):
    del argv
    work_dir = _WORK_DIR.value
    os.makedirs(work_dir, exist_ok=True)
    bindings = _data(work_dir)
    steps = [int(s) for s in _STEPS.value]
    trained = {}
    for step in steps:
        model_dir = os.path.join(work_dir, f"model_{step}")
        if not os.path.exists(os.path.join(model_dir, f"ckpt-{step}.index")):
            shutil.rmtree(model_dir, ignore_errors=True)
            _run(_train_cmd(model_dir, bindings, step,
                            f"--gin_bindings=tfcp.Trainer.checkpoint_interval={step}",
                            "--gin_bindings=tfcp.Trainer.log_interval=100",
                            "--gin_bindings=tfcp.Trainer.steps_per_loop=50"),
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        trained[step] = model_dir
    if _REPEATS.value < 1:  # only prepare the data and the trained runs
        print(json.dumps({"trained": {str(s): d for s, d in trained.items()}}))
        return
    times = {step: [] for step in steps}
    loads = []
    for _ in range(_REPEATS.value):
        for step in steps:
            with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
                copy = os.path.join(tmp, "model")
                shutil.copytree(trained[step], copy)
                loads.append(os.getloadavg()[0])
                times[step].append(round(_time_to_first_step(copy, bindings, step), 2))
    medians = {str(s): statistics.median(t) for s, t in times.items()}
    print(
        json.dumps(
            {
                "seconds_to_first_resumed_step": {str(s): t for s, t in times.items()},
                "median": medians,
                "ratio_last_to_first": round(medians[str(steps[-1])] / medians[str(steps[0])], 3),
                "load_avg_1min": [round(x, 2) for x in loads],
            }
        )
    )


if __name__ == "__main__":
    app.run(main)

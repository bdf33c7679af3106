r"""The paper's Figure 1 and Tables 10-11 in miniature: does tfcp's Copy-Paste help?

Trains the tiny Mask R-CNN (gin_configs/miniature/) with `python -m tfcp.train` on a
generated COCO-format dataset, one run per (arm, training-set fraction, seed), evaluates
COCO box and mask AP on the same generated val set, and writes
  D/results.jsonl  one line per run (appended when the run finishes)
  D/summary.md     mean +- std per arm, paired per-seed differences to the reference arms
  D/summary.png    the same as bars with error bars and one dot per seed
A stopped grid resumes when the same command is run again (see tfcp/miniature/runner.py).

  python benchmarks/paper_in_miniature.py --grid fig1|table10|table11|schedule|all \
      [--seeds 3] [--quick] [--report_only] --output_dir D

--quick: 1 seed, 40 training images, 10 steps: checks the machinery, not Copy-Paste.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import time

from absl import app, flags

from tfcp.miniature import grids as grids_lib
from tfcp.miniature import report, runner

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "grid",
    "all",
    "fig1, table10, table11, schedule, a comma-separated list, or all (the first three).",
)
flags.DEFINE_integer("seeds", None, "Seeds per arm (default 3; --quick: 1).")
flags.DEFINE_bool("quick", False, "Tiny data and steps: a machinery check (minutes).")
flags.DEFINE_string("output_dir", None, "Data, runs, results.jsonl, summary.md/png.")
flags.DEFINE_integer("steps", None, "Training steps of every run (default: the regime's).")
flags.DEFINE_integer("num_train", None, "Generated training images (default: the regime's).")
flags.DEFINE_bool("keep_checkpoints", False, "Keep each run's checkpoints.")
flags.DEFINE_bool(
    "report_only",
    False,
    "Train nothing: write summary.md/png of the selected grids from D/results.jsonl (e.g. one "
    "summary of several grids run by separate commands).",
)
flags.mark_flag_as_required("output_dir")


def _regime() -> runner.Regime:
    regime = runner.QUICK if FLAGS.quick else runner.Regime()
    overrides = {
        "seeds": FLAGS.seeds,
        "steps": FLAGS.steps,
        "num_train": FLAGS.num_train,
    }
    return dataclasses.replace(regime, **{k: v for k, v in overrides.items() if v is not None})


def _header(regime: runner.Regime, command: str, load: tuple) -> str:
    return "\n".join(
        [
            "# Paper in miniature: does Copy-Paste help? (measured)",
            "",
            f"Command: `{command}`",
            "",
            f"Regime: tiny Mask R-CNN (ResNet-18 FPN, 128 px, batch 2), {regime.steps} steps "
            f"per run (x3 in the schedule grid), every arm of a grid the same; "
            f"generated COCO-format data, "
            f"{regime.num_train} training images ({regime.image_size} px), "
            f"{regime.num_val} val images, data seed {regime.data_seed}; "
            f"{regime.seeds} seed(s) per arm (seed = weights + augmentation).",
            "",
            f"Written {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPU cores; "
            f"load average at the start of this invocation {load[0]:.2f}, at its end "
            f"{os.getloadavg()[0]:.2f}.",
        ]
    )


def main(argv) -> None:
    del argv
    regime = _regime()
    try:
        selected = grids_lib.select(FLAGS.grid)
    except ValueError as e:
        sys.exit(f"ERROR: {e}")
    command = "python benchmarks/paper_in_miniature.py " + shlex.join(sys.argv[1:])
    load = os.getloadavg()
    start = time.monotonic()
    stopped = None
    try:
        if FLAGS.report_only:
            rows = runner.load_results(FLAGS.output_dir)
        else:
            rows = runner.run_grids(selected, FLAGS.output_dir, regime, FLAGS.keep_checkpoints)
    except KeyboardInterrupt as e:
        stopped = str(e) or "stopped"
        rows = runner.load_results(FLAGS.output_dir)
    except runner.GridError as e:
        sys.exit(f"ERROR: {e}")
    header = _header(regime, command, load)
    summary = report.summary_markdown(selected, rows, regime.seeds, regime.steps, header)
    with open(os.path.join(FLAGS.output_dir, "summary.md"), "w") as f:
        f.write(summary)
    report.summary_plot(
        selected, rows, regime.seeds, regime.steps, os.path.join(FLAGS.output_dir, "summary.png")
    )
    print(summary)
    print(f"this invocation: {time.monotonic() - start:.0f} s; files in {FLAGS.output_dir}")
    if stopped:
        sys.exit(f"STOPPED: {stopped}; rerun the same command to resume")


if __name__ == "__main__":
    app.run(main)

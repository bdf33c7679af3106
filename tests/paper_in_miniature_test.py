"""End-to-end test of benchmarks/paper_in_miniature.py --quick (files and structure only)."""

import json
import os
import subprocess
import sys

from cli_utils import REPO, env
from PIL import Image

from tfcp.miniature import grids, runner

SCRIPT = os.path.join(REPO, "benchmarks", "paper_in_miniature.py")
# Rows of table11's --quick grid written as if by an earlier, stopped invocation: only the
# fourth arm (cp_ssj_lsj) is trained, which is enough to check resume and the written files.
PRE_WRITTEN = ("cp_ssj_ssj", "lsj_cp", "cp_lsj_ssj")


def _run(out):
    return subprocess.run(
        [sys.executable, SCRIPT, "--grid=table11", "--quick", f"--output_dir={out}"],
        env=env(), cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def _stopped_grid(out):
    """The state a killed `--grid table11 --quick` leaves: data and three runs' rows written."""
    data = runner.prepare_data(out, runner.QUICK, [1.0])
    with open(os.path.join(out, runner.RESULTS_FILE), "w") as f:
        for arm in PRE_WRITTEN:
            spec = grids.RunSpec(grids.ARMS[arm], 1.0, 0, runner.QUICK.steps)
            metrics = {"box_AP": 0.1, "mask_AP": 0.1, "box_AP50": 0.2, "mask_AP50": 0.2, "step": 10}
            row = runner.result_row(grids.GRIDS["table11"], spec, data, runner.QUICK, metrics, 1.0)
            f.write(json.dumps(row) + "\n")
            os.makedirs(os.path.join(out, "runs", spec.run_id))
            with open(os.path.join(out, "runs", spec.run_id, "metrics.json"), "w") as m:
                json.dump(metrics, m)


def test_quick_grid_resumes_writes_results_summary_and_plot(tmp_path):
    out = str(tmp_path / "mini")
    _stopped_grid(out)  # three of the four runs are done: only cp_ssj_lsj is trained
    first = _run(out)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "1 runs to do, 3 already in" in first.stdout
    with open(os.path.join(out, "results.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert sorted(r["arm"] for r in rows) == ["cp_lsj_ssj", "cp_ssj_lsj", "cp_ssj_ssj", "lsj_cp"]
    for row in rows:
        assert row["grid"] == "table11" and row["seed"] == 0 and row["steps"] == 10
        assert row["data_fraction"] == 1.0 and row["train_images"] == 40
        assert 0.0 <= row["box_AP"] <= 1.0 and 0.0 <= row["mask_AP"] <= 1.0
        assert row["wall_time_s"] > 0 and row["eval_step"] == 10
        if row["arm"] in PRE_WRITTEN:
            continue  # written by _stopped_grid
        model_dir = os.path.join(out, "runs", row["run_id"])
        assert os.path.exists(os.path.join(model_dir, "metrics.json"))
        assert not any(n.startswith("ckpt-") for n in os.listdir(model_dir))
    with open(os.path.join(out, "runs", "cp_ssj_lsj-f100-s0-n10", "config.gin")) as f:
        config = f.read()
    assert "paste_scale_range = (0.1, 2.0)" in config and "main_scale_range = (0.8, 1.25)" in config
    with open(os.path.join(out, "summary.md")) as f:
        summary = f.read()
    assert "Command: `python benchmarks/paper_in_miniature.py --grid=table11 --quick" in summary
    assert "4 of 4 runs finished." in summary
    assert "| 100 % (40 images) | (LSJ, LSJ) | 1 |" in summary
    assert "| 100 % (40 images) | (LSJ, SSJ) − (SSJ, SSJ) | 1 |" in summary
    with Image.open(os.path.join(out, "summary.png")) as image:
        assert image.format == "PNG" and image.width >= 1000

    second = _run(out)  # everything is in results.jsonl: nothing is trained again
    assert second.returncode == 0, second.stderr[-3000:]
    assert "0 runs to do, 4 already in" in second.stdout
    with open(os.path.join(out, "results.jsonl")) as f:
        assert len(f.read().splitlines()) == 4

    # --report_only: one summary of several grids from results.jsonl, nothing trained.
    report = subprocess.run(
        [sys.executable, SCRIPT, "--grid=table11,fig1", "--quick", "--report_only",
         f"--output_dir={out}"],
        env=env(), cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    assert "runs to do" not in report.stdout
    with open(os.path.join(out, "summary.md")) as f:
        summary = f.read()
    # fig1 shares its 100 % LSJ + Copy-Paste run with table11's (LSJ, LSJ).
    assert "4 of 4 runs finished." in summary and "1 of 6 runs finished." in summary
    assert not os.path.exists(os.path.join(out, "runs", "ssj-f010-s0-n10"))

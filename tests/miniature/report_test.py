"""Tests of tfcp.miniature.report: hand-checked means, stds and paired differences."""

import os

from tfcp.miniature import grids, report


def _rows(values):
    """results rows of table10 from {(arm name, seed): box AP} (mask AP = box AP / 2)."""
    rows = {}
    for (arm, seed), ap in values.items():
        spec = grids.RunSpec(grids.ARMS[arm], 1.0, seed, 5)
        rows[spec.run_id] = {
            "run_id": spec.run_id, "box_AP": ap, "mask_AP": ap / 2,
            "train_images": 40, "wall_time_s": 1800.0,
        }  # fmt: skip
    return rows


ROWS = _rows(
    {
        ("lsj_cp", 0): 0.20, ("lsj_cp", 1): 0.22, ("lsj_cp", 2): 0.24,
        ("lsj_cp_all", 0): 0.19, ("lsj_cp_all", 1): 0.25,
        ("lsj_cp_one", 2): 0.10,
    }
)  # fmt: skip


def test_grid_markdown_means_stds_and_paired_differences():
    text = report.grid_markdown(grids.GRIDS["table10"], ROWS, seeds=3, steps=5)
    # random subset: 20, 22, 24 points -> mean 22.0, sample std 2.0
    assert "| 100 % (40 images) | random subset | 3 | 22.0 ± 2.0 | 11.0 ± 1.0 |" in text
    # all: seeds 0, 1 only; one: one seed (no std); blend: none
    assert "| all | 2 | 22.0 ± 4.2 |" in text
    assert "| one | 1 | 10.0 | 5.0 |" in text
    assert "| random subset + blend 1 | 0 | - | - |" in text
    assert "6 of 12 runs finished." in text
    # all - random subset per seed: -1, +3 -> mean 1.0, std 2.8
    assert "| all − random subset | 2 | 1.0 ± 2.8 [-1.0, +3.0] |" in text
    assert "| one − random subset | 1 | -14.0 [-14.0] |" in text


def test_tiny_negative_values_print_as_zero():
    assert report._points([-0.0001]) == "0.0"
    assert report._one(-0.0004, "+") == "+0.0"


def test_summary_files(tmp_path):
    selected = grids.select("table10")
    text = report.summary_markdown(selected, ROWS, 3, 5, header="# H")
    assert text.startswith("# H")
    assert "wall time of these runs: 3.00 h" in text  # 6 runs x 1800 s
    path = str(tmp_path / "summary.png")
    report.summary_plot(selected, ROWS, 3, 5, path)
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 1000
    assert os.path.getsize(path) > 10_000


def test_wall_time_counts_the_runs_of_a_longer_schedule_grid():
    """The schedule grid's runs train 3x the regime's steps: their times, not the 1x runs'."""
    rows = {}
    for steps, seconds in ((5, 100.0), (15, 900.0)):  # 1x and 3x runs of the same arms
        for arm in ("ssj", "lsj_cp"):
            spec = grids.RunSpec(grids.ARMS[arm], 1.0, 0, steps)
            rows[spec.run_id] = {
                "run_id": spec.run_id, "box_AP": 0.3, "mask_AP": 0.3,
                "train_images": 40, "wall_time_s": seconds,
            }  # fmt: skip
    text = report.summary_markdown(grids.select("schedule"), rows, 1, 5, header="# H")
    assert "wall time of these runs: 0.50 h" in text  # 2 x 900 s, not 2 x 100 s

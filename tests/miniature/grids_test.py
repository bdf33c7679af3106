"""Tests of tfcp.miniature.grids: the grids are well formed and select/runs_of behave."""

import pytest

from tfcp.miniature import grids


def test_every_grid_is_well_formed():
    for grid in grids.GRIDS.values():
        labels = [label for label, _ in grid.arms]
        assert len(set(labels)) == len(labels)
        for label, name in grid.arms:
            assert grid.arm(label) is grids.ARMS[name]
        for label, reference in grid.comparisons:
            assert label in labels and reference in labels and label != reference
        ids = [spec.run_id for spec in grids.runs_of(grid, seeds=3, steps=100)]
        assert len(set(ids)) == len(ids) == 3 * len(grid.fractions) * len(grid.arms)


def test_select_and_runs_of():
    assert [g.name for g in grids.select("all")] == ["fig1", "table10", "table11"]
    assert [g.name for g in grids.select("table11, schedule")] == ["table11", "schedule"]
    with pytest.raises(ValueError, match="unknown grid"):
        grids.select("fig2")
    runs = grids.runs_of(grids.GRIDS["fig1"], seeds=2, steps=50)
    assert [r.seed for r in runs] == [0] * 6 + [1] * 6  # seed-major
    assert runs[0].run_id == "ssj-f010-s0-n50"
    schedule = grids.runs_of(grids.GRIDS["schedule"], seeds=1, steps=50)
    assert [r.run_id for r in schedule] == [
        "ssj-f100-s0-n150",
        "lsj-f100-s0-n150",
        "lsj_cp-f100-s0-n150",
    ]
    # Table 11's (LSJ, LSJ) is fig1's LSJ + Copy-Paste on 100 %: the same run.
    t11 = grids.runs_of(grids.GRIDS["table11"], seeds=1, steps=50)
    assert "lsj_cp-f100-s0-n50" in {r.run_id for r in runs} & {r.run_id for r in t11}

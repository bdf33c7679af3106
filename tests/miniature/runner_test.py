"""Tests of tfcp.miniature.runner: data preparation, resume, shared runs, refusals."""

import json
import os

import pytest

from tfcp.miniature import grids, runner

REGIME = runner.Regime(num_train=20, num_val=4, image_size=64, steps=7, seeds=2)


def test_subset_annotations_is_fixed_and_keeps_matching_annotations():
    coco = {
        "images": [{"id": i} for i in range(10, 0, -1)],
        "annotations": [{"id": 100 + i, "image_id": i} for i in range(1, 11)],
        "categories": [{"id": 3}],
    }
    a = runner.subset_annotations(coco, 0.3, seed=5)
    b = runner.subset_annotations(coco, 0.3, seed=5)
    assert a == b
    ids = [im["id"] for im in a["images"]]
    assert len(ids) == 3 and ids == sorted(ids)
    assert sorted(x["image_id"] for x in a["annotations"]) == ids
    assert a["categories"] == coco["categories"]
    assert len(runner.subset_annotations(coco, 0.01, seed=0)["images"]) == 1
    assert len(runner.subset_annotations(coco, 1.0, seed=0)["images"]) == 10


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Generated data and records of REGIME (fractions 0.1 and 1.0), prepared once."""
    out = str(tmp_path_factory.mktemp("mini"))
    runner.prepare_data(out, REGIME, [0.1, 1.0])
    return out


def test_prepare_data_writes_each_fraction_and_refuses_another_regime(data_dir):
    data = runner.prepare_data(data_dir, REGIME, [0.1, 1.0])  # second call: no rework
    assert data.train_images == {0.1: 2, 1.0: 20}
    assert data.num_classes == 89  # generated COCO categories, max id 88
    records = os.listdir(data.records_dir)
    for prefix in ("train_f010", "train_f100", "val"):
        assert any(name.startswith(prefix + "-") for name in records), records
        with open(os.path.join(data.records_dir, f"{prefix}_summary.json")) as f:
            summary = json.load(f)
        expected = {"train_f010": 2, "train_f100": 20, "val": 4}[prefix]
        assert sum(summary["shard_sizes"]) == expected
    with pytest.raises(runner.GridError, match="another --output_dir"):
        runner.prepare_data(data_dir, runner.Regime(num_train=21, num_val=4), [1.0])


class FakeRuns:
    """Stands in for train_and_evaluate: AP from the run id; can stop after k runs."""

    def __init__(self, stop_after=None):
        self.calls = []
        self.stop_after = stop_after

    def __call__(self, spec, data, output_dir, keep_checkpoints):
        if self.stop_after is not None and len(self.calls) == self.stop_after:
            raise KeyboardInterrupt("stopped")
        self.calls.append(spec.run_id)
        ap = 0.1 + 0.01 * spec.seed + (0.05 if "cp" in spec.arm.name else 0.0)
        return {"box_AP": ap, "mask_AP": ap / 2, "box_AP50": 0.5, "mask_AP50": 0.4, "step": 7}, 3.0


def test_run_grids_resumes_and_shares_runs_between_grids(data_dir, tmp_path):
    out = str(tmp_path / "out")
    os.makedirs(out)
    os.symlink(os.path.join(data_dir, "data"), os.path.join(out, "data"))
    selected = grids.select("fig1,table11")
    stopping = FakeRuns(stop_after=4)
    with pytest.raises(KeyboardInterrupt):
        runner.run_grids(selected, out, REGIME, run_fn=stopping, log=lambda _: None)
    rows = runner.load_results(out)
    assert list(rows) == stopping.calls and len(rows) == 4
    # Seed-major: every fig1 arm's seed 0 before any seed 1.
    assert [r["seed"] for r in rows.values()] == [0, 0, 0, 0]

    resumed = FakeRuns()
    rows = runner.run_grids(selected, out, REGIME, run_fn=resumed, log=lambda _: None)
    assert not set(resumed.calls) & set(stopping.calls)
    # fig1: 3 arms x 2 fractions x 2 seeds; table11 adds 3 arms x 2 seeds ((LSJ, LSJ) is
    # fig1's LSJ + Copy-Paste on 100 %, trained once).
    assert len(rows) == 12 + 6
    assert len(stopping.calls) + len(resumed.calls) == 18
    shared = rows["lsj_cp-f100-s1-n7"]
    assert shared["grid"] == "fig1" and shared["train_images"] == 20
    assert rows["lsj_cp-f010-s0-n7"]["train_images"] == 2
    with open(os.path.join(out, runner.RESULTS_FILE)) as f:
        assert len(f.read().splitlines()) == 18

    again = FakeRuns()
    runner.run_grids(selected, out, REGIME, run_fn=again, log=lambda _: None)
    assert again.calls == []


def test_results_torn_last_line_is_ignored_and_changed_arm_refused(data_dir, tmp_path):
    out = str(tmp_path)
    os.symlink(os.path.join(data_dir, "data"), os.path.join(out, "data"))
    runner.run_grids(grids.select("table10"), out, REGIME, run_fn=FakeRuns(), log=lambda _: None)
    path = os.path.join(out, runner.RESULTS_FILE)
    with open(path) as f:
        lines = f.read().splitlines()
    first = json.loads(lines[0])
    with open(path, "a") as f:
        f.write('{"run_id": "torn')  # a kill during the write
    assert len(runner.load_results(out)) == len(lines)

    first["bindings"] = ["train/build_dataset.blend_sigma = 3.0"]
    with open(path, "w") as f:
        f.write("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    with pytest.raises(runner.GridError, match=first["run_id"]):
        runner.run_grids(grids.select("table10"), out, REGIME, run_fn=FakeRuns())


def test_train_command_binds_the_run():
    data = runner.Data("/r", "/a/val.json", 89, {0.1: 4})
    spec = grids.RunSpec(grids.ARMS["cp_lsj_ssj"], 0.1, 2, 50)
    cmd = runner.train_command(spec, data, "/m")
    assert cmd[1:4] == ["-m", "tfcp.train", "--gin_file=miniature/lsj_copy_paste.gin"]
    for binding in (
        "TRAIN_FILES='/r/train_f010-*'",
        "EVAL_FILES='/r/val-*'",
        "SEED=2",
        "TRAIN_STEPS=50",
        "train/build_dataset.paste_scale_range = (0.8, 1.25)",
    ):
        assert f"--gin_bindings={binding}" in cmd
    assert spec.run_id == "cp_lsj_ssj-f010-s2-n50"

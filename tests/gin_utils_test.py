"""tfcp.gin_utils: config lookup, every missing macro at once, TRAIN_EPOCHS, export placeholders."""

import json
import logging
import os
import sys

import gin
import pytest
import tensorflow as tf
from absl import logging as absl_logging
from cli_utils import run_train, write_toy_gin

from tfcp import gin_utils, optimization, schedule
from tfcp.data.converters import tfrecord_io

DEMO = "demo/maskrcnn_tiny_copy_paste.gin"
DEMO_MISSING = {"TRAIN_FILES", "EVAL_FILES", "EVAL_ANNOTATIONS", "NUM_CLASSES", "TRAIN_STEPS"}
DATA = ["EVAL_FILES='e*'", "EVAL_ANNOTATIONS='a.json'", "NUM_CLASSES=3"]


@pytest.fixture(autouse=True)
def _clear_gin(monkeypatch):
    # As in gin_configs_test: keep tests/ sub-directories away from gin's include reader.
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    monkeypatch.setattr(
        sys, "path", [p for p in sys.path if os.path.abspath(p or ".") != tests_dir]
    )
    gin.clear_config()
    yield
    gin.clear_config()


def _write_records(path, n):
    with tf.io.TFRecordWriter(path) as writer:  # counted, never decoded
        for i in range(n):
            writer.write(b"record %d" % i)


def _write_summary(prefix, shards, sizes):
    """The converters' `<prefix>_summary.json` (their own ConversionSummary format)."""
    summary = tfrecord_io.ConversionSummary(shard_paths=shards, shard_sizes=sizes)
    with open(f"{prefix}_summary.json", "w") as f:
        json.dump(summary.to_dict(), f)


@pytest.fixture
def records(tmp_path):
    """Two converted shards (7 + 6 records by their summary; 3 + 3 really) and a
    summary-less file of 4 records."""
    shards = [str(tmp_path / f"train-0000{i}-of-00002.tfrecord") for i in range(2)]
    for shard in shards:
        _write_records(shard, 3)
    _write_summary(str(tmp_path / "train"), shards, [7, 6])
    _write_records(str(tmp_path / "extra.tfrecord"), 4)
    return tmp_path


# ------------------------------------------------------------------------- lookup
def test_gin_file_is_found_from_any_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = os.path.join(gin_utils.GIN_CONFIGS_DIR, "demo", "maskrcnn_tiny.gin")
    assert gin_utils.resolve_gin_file("demo/maskrcnn_tiny.gin") == expected
    assert gin_utils.resolve_gin_file("gin_configs/demo/maskrcnn_tiny.gin") == expected
    with pytest.raises(gin_utils.GinConfigError, match="no_such.gin"):
        gin_utils.resolve_gin_file("demo/no_such.gin")


# ----------------------------------------------------------------- missing macros
def test_every_missing_macro_is_listed_with_its_file_and_an_example():
    with pytest.raises(gin_utils.MissingMacrosError) as raised:
        gin_utils.parse_gin([DEMO])
    message = str(raised.value)
    assert set(raised.value.missing) == DEMO_MISSING
    assert message.startswith("5 gin macros are used but not bound:")
    for line in (
        "TRAIN_FILES       used by data/lsj_copy_paste.gin:",
        "train/build_dataset.file_pattern = %TRAIN_FILES",
        "EVAL_ANNOTATIONS  used by models/maskrcnn_tiny.gin:",
        "TRAIN_STEPS       used by runs/demo_cpu.gin:",
        """e.g. --gin_bindings="TRAIN_FILES='/data/coco/train-*.tfrecord'\"""",
        """e.g. --gin_bindings="NUM_CLASSES=91\"""",
        """--gin_bindings="TRAIN_STEPS=1000"   or   --gin_bindings="TRAIN_EPOCHS=12\"""",
        f"(gin files: {DEMO};",
    ):
        assert line in message
    assert "Parameters for" not in message  # no operative-config dump
    # The line numbers point at the use.
    where = message.split("TRAIN_FILES       used by data/lsj_copy_paste.gin:")[1]
    line_num = int(where.split(":")[0])
    with open(os.path.join(gin_utils.GIN_CONFIGS_DIR, "data", "lsj_copy_paste.gin")) as f:
        assert "%TRAIN_FILES" in f.readlines()[line_num - 1]


def test_macro_used_by_a_command_line_binding_and_bound_ones_are_not_listed():
    with pytest.raises(gin_utils.MissingMacrosError) as raised:
        gin_utils.parse_gin(
            [DEMO], [*DATA, "TRAIN_FILES='t*'", "TRAIN_STEPS=2", "tfcp.Trainer.seed = %MY_SEED"]
        )
    assert set(raised.value.missing) == {"MY_SEED"}
    assert "MY_SEED  used by --gin_bindings: tfcp.Trainer.seed = %MY_SEED" in str(raised.value)
    assert '--gin_bindings="MY_SEED=<value>"' in str(raised.value)


def test_partial_configuration_is_allowed_without_finalize():
    gin_utils.parse_gin([DEMO], finalize_config=False)  # tfcp.visualize's use
    assert gin.query_parameter("%IMAGE_SIZE") == 128


def test_train_cli_prints_the_list_and_nothing_of_the_config(tmp_path):
    result = run_train(str(tmp_path / "m"), [DEMO], ["NUM_CLASSES=3"])
    assert result.returncode == 1
    assert "ERROR: 4 gin macros are used but not bound:" in result.stderr
    for name in DEMO_MISSING - {"NUM_CLASSES"}:
        assert f"  {name}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "# Parameters for" not in result.stderr
    assert "build_maskrcnn" not in result.stderr


# -------------------------------------------------------------------- TRAIN_EPOCHS
def test_record_count_uses_the_summary_else_the_record_headers(records):
    count = schedule.count_training_records(f"{records}/train-*,{records}/extra.tfrecord")
    assert (count.num_records, count.num_files) == (7 + 6 + 4, 3)
    assert count.summaries == (f"{records}/train_summary.json",)
    assert count.counted == (f"{records}/extra.tfrecord",)
    assert "17 records in 3 file(s) (from train_summary.json, 1 file(s) counted" in (
        count.describe()
    )
    # A shard rewritten after its summary is counted from its headers.
    shard = f"{records}/train-00001-of-00002.tfrecord"
    stat = os.stat(f"{records}/train_summary.json")
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert schedule.count_training_records(f"{records}/train-*").num_records == 7 + 3
    with pytest.raises(ValueError, match="No file matches"):
        schedule.count_training_records(f"{records}/nothing-*")


def test_epochs_to_steps_rounds_up_and_rejects_bad_values():
    assert schedule.epochs_to_steps(1, 13, 2) == 7
    assert schedule.epochs_to_steps(12, 118287, 256) == 5545  # ceil(5544.70)
    assert schedule.epochs_to_steps(0.1, 30, 3) == 1  # exact: 0.1 * 30 / 3 = 1
    for bad in (0, -1, float("inf"), True, "1"):
        with pytest.raises(ValueError, match="TRAIN_EPOCHS must be a positive number"):
            schedule.epochs_to_steps(bad, 10, 2)
    with pytest.raises(ValueError, match="GLOBAL_BATCH_SIZE"):
        schedule.epochs_to_steps(1, 10, 0)
    with pytest.raises(ValueError, match="no record"):
        schedule.epochs_to_steps(1, 0, 2)


@pytest.fixture
def absl_info():
    """absl INFO on for one test (an earlier `FLAGS.unparse_flags()` resets it to WARNING)."""
    before = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    yield
    absl_logging.set_verbosity(before)


def test_train_epochs_alone_sets_train_steps_logs_it_and_config_records_it(
    records, caplog, absl_info
):
    caplog.set_level(logging.INFO)
    files = f"TRAIN_FILES='{records}/train-*'"
    gin_utils.parse_gin([DEMO], [*DATA, files, "TRAIN_EPOCHS=1"])
    assert gin.query_parameter("%TRAIN_STEPS") == 7  # ceil(13 / GLOBAL_BATCH_SIZE 2)
    assert "TRAIN_EPOCHS=1: 13 records in 2 file(s)" in caplog.text
    assert "-> TRAIN_STEPS=7" in caplog.text
    optimization.build_learning_rate()  # uses %TRAIN_STEPS
    assert "\nTRAIN_STEPS = 7\n" in gin.operative_config_str()


def test_train_epochs_of_a_two_source_student_count_passes_over_the_labeled_files(
    records, caplog, absl_info
):
    caplog.set_level(logging.INFO)
    files = f"TRAIN_FILES='{records}/train-*'"
    student = "self_training/maskrcnn_tiny_student.gin"  # batch 4 = 2 labeled + 2 pseudo
    pseudo = "PSEUDO_FILES='/pseudo/p-*'"
    gin_utils.parse_gin([student], [*DATA, files, pseudo, "TRAIN_EPOCHS=1"])
    assert gin.query_parameter("%TRAIN_STEPS") == 7  # ceil(13 / 2 labeled per step)
    assert "(2 labeled per step, pseudo_fraction=0.5) -> TRAIN_STEPS=7" in caplog.text
    gin.clear_config()
    quarter = "train/build_dataset.pseudo_fraction = 0.25"  # 3 labeled + 1 pseudo
    gin_utils.parse_gin([student], [*DATA, files, pseudo, quarter, "TRAIN_EPOCHS=1"])
    assert gin.query_parameter("%TRAIN_STEPS") == 5  # ceil(13 / 3)
    gin.clear_config()
    one_source = "train/build_dataset.pseudo_file_pattern = None"
    gin_utils.parse_gin([student], [*DATA, files, pseudo, one_source, "TRAIN_EPOCHS=1"])
    assert gin.query_parameter("%TRAIN_STEPS") == 4  # ceil(13 / 4)


def test_later_source_wins_and_one_source_binding_both_is_an_error(records, tmp_path):
    files = f"TRAIN_FILES='{records}/train-*'"
    steps_file = tmp_path / "steps.gin"
    steps_file.write_text(f"include '{DEMO}'\nTRAIN_STEPS = 1000\n")
    # The command line's TRAIN_EPOCHS replaces the file's TRAIN_STEPS (e.g. runs/mmdet_*).
    gin_utils.parse_gin([str(steps_file)], [*DATA, files, "TRAIN_EPOCHS=2"])
    assert gin.query_parameter("%TRAIN_STEPS") == 13
    # The command line's TRAIN_STEPS replaces a file's TRAIN_EPOCHS: no conversion.
    gin.clear_config()
    epochs_file = tmp_path / "epochs.gin"
    epochs_file.write_text(f"include '{DEMO}'\nTRAIN_EPOCHS = 3\n")
    gin_utils.parse_gin(
        [str(epochs_file)], [*DATA, "TRAIN_FILES='/nonexistent/*'", "TRAIN_STEPS=5"]
    )
    assert gin.query_parameter("%TRAIN_STEPS") == 5
    # Both in one source (the command line; a file with its includes): an error.
    both_file = tmp_path / "both.gin"
    both_file.write_text(f"include '{steps_file}'\nTRAIN_EPOCHS = 3\n")
    for source_files, bindings in [
        ([DEMO], [*DATA, files, "TRAIN_EPOCHS=1", "TRAIN_STEPS=5"]),
        ([str(both_file)], [*DATA, files]),
    ]:
        gin.clear_config()
        with pytest.raises(gin_utils.GinConfigError, match="both TRAIN_") as raised:
            gin_utils.parse_gin(source_files, bindings)
        assert "bind one of them (or set the other to None)" in str(raised.value)
    # ... unless the later binding sets one of them to None.
    gin.clear_config()
    gin_utils.parse_gin([str(steps_file)], [*DATA, files, "TRAIN_STEPS=None", "TRAIN_EPOCHS=1"])
    assert gin.query_parameter("%TRAIN_STEPS") == 7


def test_train_epochs_needs_train_files_and_reports_only_what_is_missing():
    with pytest.raises(gin_utils.MissingMacrosError) as raised:
        gin_utils.parse_gin([DEMO], [*DATA, "TRAIN_EPOCHS=1"])
    assert set(raised.value.missing) == {"TRAIN_FILES"}  # TRAIN_STEPS comes from epochs


def test_train_epochs_on_a_config_without_train_steps_is_an_error(records, tmp_path):
    path = tmp_path / "no_steps.gin"
    path.write_text("tfcp.build_optimizer.momentum = 0.8\n")
    with pytest.raises(gin_utils.GinConfigError, match="does not use TRAIN_STEPS"):
        gin_utils.parse_gin([str(path)], [f"TRAIN_FILES='{records}/train-*'", "TRAIN_EPOCHS=1"])


def test_train_cli_runs_for_train_epochs_and_writes_the_steps_to_config_gin(tmp_path):
    records = str(tmp_path / "train-00000-of-00001.tfrecord")
    _write_records(records, 20)
    toy = write_toy_gin(str(tmp_path), f"TRAIN_FILES = '{records}'\nGLOBAL_BATCH_SIZE = 8\n")
    model_dir = str(tmp_path / "model")
    result = run_train(model_dir, [toy], ["TRAIN_EPOCHS=1"])  # toy.gin's TRAIN_STEPS = 10
    assert result.returncode == 0, result.stderr[-3000:]
    assert "20 records in 1 file(s)" in result.stderr
    assert "GLOBAL_BATCH_SIZE=8 -> TRAIN_STEPS=3" in result.stderr
    assert "step 3/3" in result.stderr
    with open(os.path.join(model_dir, "config.gin")) as f:
        config = f.read()
    assert "#   --gin_bindings=TRAIN_EPOCHS=1" in config
    assert "\nTRAIN_STEPS = 3\n" in config


# -------------------------------------------------------------- export placeholders
def test_placeholders_bind_only_the_unbound_run_macros_and_skip_epochs():
    bindings = ["NUM_CLASSES=3", "TRAIN_EPOCHS=1"]
    placeholders = gin_utils.placeholder_bindings([DEMO], bindings)
    assert placeholders == [
        "TRAIN_FILES=None",
        "EVAL_FILES=None",
        "EVAL_ANNOTATIONS=None",
        "TRAIN_STEPS=None",
        "TRAIN_EPOCHS=None",
    ]  # INIT_CHECKPOINT and DATA_SERVICE_ADDRESS have defaults; NUM_CLASSES is the model's
    assert gin.config_str() == ""  # left clear
    gin_utils.parse_gin([DEMO], bindings + placeholders)  # no record is counted
    assert gin.query_parameter("%NUM_CLASSES") == 3
    gin.clear_config()
    with pytest.raises(gin_utils.MissingMacrosError) as raised:  # the model's macros stay
        gin_utils.parse_gin([DEMO], gin_utils.placeholder_bindings([DEMO]))
    assert set(raised.value.missing) == {"NUM_CLASSES"}

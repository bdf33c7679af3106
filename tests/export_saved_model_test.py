"""End to end: export/export_saved_model.py on the demo gin config and a trainer checkpoint.

The "trained" model dir is what `python -m tfcp.train` leaves: a checkpoint and config.gin
(written by the trainer's own `summaries.write_operative_config` after `Trainer` is built),
with the run length given as TRAIN_EPOCHS over a 5-record TRAIN_FILES (-> 3 steps at batch 2).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import gin
import numpy as np
import tensorflow as tf

from tfcp.serving import export_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "export", "export_saved_model.py")
GIN_FILE = "demo/maskrcnn_tiny.gin"


def _model_bindings(annotations):
    """What the model needs: export takes no training macro (TRAIN_FILES, TRAIN_STEPS...)."""
    return ["NUM_CLASSES=3", f"EVAL_ANNOTATIONS='{annotations}'"]


def _train_bindings(annotations, train_files):
    return [
        *_model_bindings(annotations),
        "TRAIN_EPOCHS=1",
        f"TRAIN_FILES='{train_files}'",
        "EVAL_FILES='unused-eval-*'",
    ]


_MAKE_CHECKPOINT = """
import sys
import tensorflow as tf
from absl import logging
from tfcp import gin_utils, summaries, trainer
logging.set_verbosity(logging.INFO)
model_dir, gin_file, *bindings = sys.argv[1:]
gin_utils.parse_gin([gin_file], bindings)
model = trainer.Trainer(model_dir=model_dir, gin_files=[gin_file], gin_bindings=bindings).model
marker = model.backbone.trainable_variables[0]
marker.assign(tf.fill(marker.shape, 0.0125))
tf.train.CheckpointManager(tf.train.Checkpoint(model=model), model_dir, 1).save()
summaries.write_operative_config(model_dir, [gin_file], bindings)
"""
MARKER_VALUE = 0.0125


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def _run(*args):
    command = [sys.executable, SCRIPT, *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=_env())


class ExportSavedModelTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp()
        cls.annotations = os.path.join(cls.tmp, "val.json")
        with open(cls.annotations, "w") as f:
            categories = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]
            json.dump({"images": [], "annotations": [], "categories": categories}, f)
        train_files = os.path.join(cls.tmp, "train-00000-of-00001.tfrecord")
        with tf.io.TFRecordWriter(train_files) as writer:  # only counted, never decoded
            for i in range(5):
                writer.write(b"record %d" % i)
        cls.bindings = _model_bindings(cls.annotations)
        cls.train_bindings = _train_bindings(cls.annotations, train_files)
        # A "trained" model: the trainer's model with a distinctive first backbone weight,
        # checkpointed as the trainer does (tf.train.Checkpoint(model=...) + manager).
        # In a subprocess: gin's include resolution must not see the tests/ packages.
        cls.model_dir = os.path.join(cls.tmp, "model")
        cls.made = subprocess.run(
            [sys.executable, "-c", _MAKE_CHECKPOINT, cls.model_dir, GIN_FILE, *cls.train_bindings],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=_env(),
        )
        assert cls.made.returncode == 0, cls.made.stderr[-3000:]
        cls.export_dir = os.path.join(cls.tmp, "export")
        cls.first = _run(
            f"--gin_file={GIN_FILE}",
            *[f"--gin_bindings={b}" for b in cls.bindings],
            f"--model_dir={cls.model_dir}",
            f"--export_dir={cls.export_dir}",
        )

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        gin.clear_config()

    def test_export_writes_saved_model_config_and_info(self):
        self.assertEqual(self.first.returncode, 0, msg=self.first.stderr[-3000:])
        with open(os.path.join(self.export_dir, export_lib.INFO_FILE)) as f:
            info = json.load(f)
        self.assertEqual(info["input_type"], "image_tensor")
        self.assertEqual(info["image_size"], [128, 128])
        self.assertEqual(info["num_classes"], 3)
        self.assertEqual(info["label_map"], {"1": "circle", "2": "square"})
        self.assertTrue(info["checkpoint"].startswith(self.model_dir))
        with open(os.path.join(self.export_dir, export_lib.CONFIG_FILE)) as f:
            config = f.read()
        self.assertIn("build_maskrcnn.model_id = 18", config)
        self.assertIn("--gin_file=demo/maskrcnn_tiny.gin", config)
        # The training-only macros were not given: export bound them to None, and says so.
        self.assertIn("#   --gin_bindings=TRAIN_FILES=None", config)
        self.assertIn("#   --gin_bindings=TRAIN_STEPS=None", config)

    def test_run_length_from_train_epochs_is_logged_and_in_config_gin(self):
        # 5 records, GLOBAL_BATCH_SIZE 2 (runs/demo_cpu.gin), 1 epoch -> ceil(5 / 2) = 3.
        self.assertIn("TRAIN_STEPS=3", self.made.stderr)
        with open(os.path.join(self.model_dir, "config.gin")) as f:
            config = f.read()
        self.assertIn("#   --gin_bindings=TRAIN_EPOCHS=1", config)
        self.assertIn("\nTRAIN_STEPS = 3\n", config)
        self.assertIn("tfcp.Trainer.train_steps = %TRAIN_STEPS", config)

    def test_export_from_model_dir_alone_uses_its_config_gin(self):
        export_dir = os.path.join(self.tmp, "export_from_model_dir")
        result = _run(f"--model_dir={self.model_dir}", f"--export_dir={export_dir}")
        self.assertEqual(result.returncode, 0, msg=result.stderr[-3000:])
        with open(os.path.join(export_dir, export_lib.INFO_FILE)) as f:
            info = json.load(f)
        self.assertEqual(info["num_classes"], 3)
        self.assertEqual(info["label_map"], {"1": "circle", "2": "square"})
        with open(os.path.join(export_dir, export_lib.CONFIG_FILE)) as f:
            config = f.read()
        self.assertIn(f"#   --gin_file={os.path.join(self.model_dir, 'config.gin')}", config)
        self.assertNotIn("=None", config.split("\n\n")[0])  # config.gin binds every macro
        loaded = tf.saved_model.load(export_dir)
        markers = [v for v in loaded.model_variables if np.allclose(v.numpy(), MARKER_VALUE)]
        self.assertLen(markers, 1)

    def test_model_dir_without_config_gin_and_no_gin_file_is_a_clear_error(self):
        gin_files = export_lib.export_gin_files
        self.assertEqual(gin_files(["a.gin"], self.model_dir), ["a.gin"])
        self.assertEqual(
            gin_files([], self.model_dir), [os.path.join(self.model_dir, "config.gin")]
        )
        bare = os.path.join(self.tmp, "bare")
        with self.assertRaisesRegex(FileNotFoundError, r"bare/config.gin does not exist.*gin_file"):
            gin_files([], bare)
        with self.assertRaisesRegex(FileNotFoundError, "--model_dir with config.gin"):
            gin_files([], None)

    def test_exported_model_has_the_checkpoint_weights_and_serves(self):
        self.assertEqual(self.first.returncode, 0, msg=self.first.stderr[-3000:])
        loaded = tf.saved_model.load(self.export_dir)
        markers = [v for v in loaded.model_variables if np.allclose(v.numpy(), MARKER_VALUE)]
        self.assertLen(markers, 1)
        image = np.random.RandomState(0).randint(0, 256, [1, 90, 120, 3]).astype(np.uint8)
        out = loaded.signatures["serving_default"](images=tf.constant(image))
        self.assertEqual(out["detection_boxes"].shape, (1, 20, 4))
        self.assertEqual(out["detection_masks"].shape, (1, 20, 90, 120))
        self.assertEqual(out["detection_classes"].dtype, tf.int32)

    def test_non_empty_export_dir_is_refused_without_overwrite(self):
        result = _run(
            f"--gin_file={GIN_FILE}",
            *[f"--gin_bindings={b}" for b in self.bindings],
            f"--model_dir={self.model_dir}",
            f"--export_dir={self.export_dir}",
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn("--overwrite", result.stderr)
        self.assertTrue(os.path.isfile(os.path.join(self.export_dir, "saved_model.pb")))

    def test_missing_checkpoint_is_a_clear_error(self):
        empty = os.path.join(self.tmp, "untrained")
        os.makedirs(empty, exist_ok=True)
        result = _run(
            f"--gin_file={GIN_FILE}",
            *[f"--gin_bindings={b}" for b in self.bindings],
            f"--model_dir={empty}",
            f"--export_dir={os.path.join(self.tmp, 'never')}",
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn("no checkpoint found", result.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "never")))


if __name__ == "__main__":
    tf.test.main()

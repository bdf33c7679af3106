"""End to end: generated VOC data -> exported tiny Mask R-CNN feature extractor ->
VOC Faster R-CNN and segmentation fine-tuning with `python -m tfcp.train`.

Built once per module: a synthetic VOCdevkit (128 px), its detection / segmentation
TFRecords (converter library), and a feature-extractor SavedModel of a freshly built
(random) tiny Mask R-CNN (gin_configs/models/maskrcnn_tiny.gin). Both training runs start
in setUpClass as parallel subprocesses.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import gin
import numpy as np
import tensorflow as tf
import tf_keras

from tfcp import gin_utils
from tfcp.data import synthetic
from tfcp.data.converters import voc as voc_converter
from tfcp.modeling import factory
from tfcp.serving import feature_extractor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"detection": "voc/detection_tiny.gin", "segmentation": "voc/segmentation_tiny.gin"}


def _convert(voc_root, out, year, split, task):
    prefix = os.path.join(out, f"{task}_{year}_{split}")
    voc_converter.convert_voc(voc_root, year, split, task, prefix, num_shards=1, num_workers=0)
    return prefix + "*.tfrecord"


def _export_tiny_maskrcnn(export_dir):
    gin.clear_config()
    gin_utils.parse_gin(
        ["models/maskrcnn_tiny.gin"],
        ["NUM_CLASSES = 5", "IMAGE_SIZE = 128", "EVAL_ANNOTATIONS = None"],
    )
    # Its own seed: tf.test.TestCase.setUp seeds every test alike, and a build right after a
    # test that drew no random numbers would otherwise give the tests' fresh models the
    # export's weights (test_initialize_... needs them to differ; seen with test order).
    tf_keras.utils.set_random_seed(7)
    model = factory.build_maskrcnn()
    feature_extractor.export_feature_extractor(model, export_dir, (128, 128))
    gin.clear_config()


def _bindings(files, init, steps=2):
    train, evals = files
    return [
        f"TRAIN_FILES = '{train}'",
        f"EVAL_FILES = '{evals}'",
        f"TRAIN_STEPS = {steps}",
        f"INIT_CHECKPOINT = '{init}'",
    ]


class VocTransferTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp()
        synthetic.write_voc(
            cls.tmp, num_train=3, num_val=2, num_test=2, image_size=128, seed=0,
            segmented_fraction=1.0, max_instances=4,
        )  # fmt: skip
        voc_root = os.path.join(cls.tmp, "VOCdevkit")
        records = os.path.join(cls.tmp, "records")
        os.makedirs(records)
        cls.files = {
            "detection": (
                _convert(voc_root, records, "2007+2012", "trainval", "detection"),
                _convert(voc_root, records, "2007", "test", "detection"),
            ),
            "segmentation": (
                _convert(voc_root, records, "2012", "train", "segmentation"),
                _convert(voc_root, records, "2012", "val", "segmentation"),
            ),
        }
        cls.export_dir = os.path.join(cls.tmp, "feature_extractor")
        _export_tiny_maskrcnn(cls.export_dir)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        env["PYTHONPATH"] = os.pathsep.join([REPO, env.get("PYTHONPATH", "")])
        cls.runs = {}
        for task, gin_file in TINY.items():
            model_dir = os.path.join(cls.tmp, f"model_{task}")
            cmd = [sys.executable, "-m", "tfcp.train", f"--model_dir={model_dir}"]
            cmd += ["--mode=train_and_eval", f"--gin_file={gin_file}"]
            cmd += [f"--gin_bindings={b}" for b in _bindings(cls.files[task], cls.export_dir)]
            proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            cls.runs[task] = (model_dir, proc)

    @classmethod
    def tearDownClass(cls):
        for _, proc in cls.runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        gin.clear_config()

    def tearDown(self):
        gin.clear_config()
        super().tearDown()

    def _finished_run(self, task):
        model_dir, proc = self.runs[task]
        output, _ = proc.communicate(timeout=600)
        self.assertEqual(proc.returncode, 0, msg=output[-4000:])
        self.assertIn("Initialized backbone + decoder from", output)
        with open(os.path.join(model_dir, "metrics.json")) as f:
            metrics = json.load(f)
        return model_dir, metrics[-1] if isinstance(metrics, list) else metrics

    def _build(self, task, extra=()):
        gin_utils.import_configurables()
        gin_utils.parse_gin(
            [TINY[task]], _bindings(self.files[task], self.export_dir) + list(extra)
        )
        task_obj = gin.get_configurable(
            "VocDetectionTask" if task == "detection" else "SegmentationTask"
        )()
        return task_obj, task_obj.build_model()

    def test_detection_run_reports_voc_map(self):
        _, metrics = self._finished_run("detection")
        self.assertEqual(metrics["step"], 2)
        for key in ("voc_mAP50", "voc_mAP50_07", "voc_mAP50_10"):
            self.assertBetween(metrics[key], 0.0, 1.0)
        self.assertEqual(metrics["voc_mAP50"], metrics["voc_mAP50_07"])
        per_class = [k for k in metrics if k.startswith("AP50/")]
        self.assertNotEmpty(per_class)
        self.assertTrue(set(k[5:] for k in per_class) <= set(voc_converter.VOC_CLASSES))

    def test_segmentation_run_reports_miou(self):
        _, metrics = self._finished_run("segmentation")
        self.assertEqual(metrics["step"], 2)
        self.assertBetween(metrics["mIoU"], 0.0, 1.0)
        self.assertIn("IoU/background", metrics)
        ious = [v for k, v in metrics.items() if k.startswith("IoU/")]
        self.assertAlmostEqual(metrics["mIoU"], float(np.mean(ious)), places=6)

    def test_initialize_copies_exported_backbone_and_fpn(self):
        loaded = tf.saved_model.load(self.export_dir)
        exported = {
            "backbone": [v.numpy() for v in loaded.backbone.variables],
            "decoder": [v.numpy() for v in loaded.decoder.variables],
        }
        for task in TINY:
            gin.clear_config()
            task_obj, model = self._build(task)
            fresh = {name: getattr(model, name).variables for name in exported}
            for name, values in exported.items():  # same architecture, same variable order
                self.assertEqual([v.shape for v in values], [v.shape for v in fresh[name]])
            differs = [
                v for v, e in zip(fresh["backbone"], exported["backbone"], strict=True)
                if not np.array_equal(v.numpy(), e)
            ]  # fmt: skip
            self.assertNotEmpty(differs)  # fresh weights differ from the export
            task_obj.initialize(model, self.export_dir)
            for name, values in exported.items():
                for variable, value in zip(fresh[name], values, strict=True):
                    self.assertAllEqual(variable.numpy(), value, msg=f"{task}: {variable.name}")

    def test_missing_and_incompatible_init_checkpoint(self):
        missing = os.path.join(self.tmp, "no_such_export")
        task_obj, model = self._build(
            "segmentation", ["build_segmentation_model.decoder_num_filters = 32"]
        )
        with self.assertRaisesRegex(FileNotFoundError, "no_such_export"):
            task_obj.initialize(model, missing)
        with self.assertRaisesRegex(ValueError, self.export_dir) as raised:
            task_obj.initialize(model, self.export_dir)
        self.assertRegex(str(raised.exception), r"shape \(64,\).*shape \(32,\) and name \S+")


if __name__ == "__main__":
    tf.test.main()

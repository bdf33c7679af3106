"""End-to-end tests of the `python -m tfcp.train` CLI (subprocesses, toy task)."""

import json
import os
import re
import signal
import subprocess
import tempfile
import time
import unittest

import gin
import tensorflow as tf
from cli_utils import REPO, env, run_train, train_cmd, wait_for_log, write_toy_gin
from events import read_scalars

from tfcp import gin_utils, optimization


class TrainCliTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.model_dir = os.path.join(self.tmp, "model")
        self.gin = write_toy_gin(self.tmp)

    def _start(self, bindings):
        log_path = os.path.join(self.tmp, f"log{time.time()}.txt")
        log = open(log_path, "w")
        self.addCleanup(log.close)
        proc = subprocess.Popen(
            train_cmd(self.model_dir, [self.gin], bindings),
            env=env(),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        return proc, log_path

    def test_binding_overrides_and_config_gin(self):
        result = run_train(self.model_dir, [self.gin], ["TRAIN_STEPS=4"], mode="train_and_eval")
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertEqual(tf.train.latest_checkpoint(self.model_dir), f"{self.model_dir}/ckpt-4")
        self.assertRegex(result.stderr, r"step 4/4 \| loss [0-9.]+ \|.*lr 0\.1 \|.*steps/s \|")
        self.assertRegex(result.stderr, r"images/s \| ETA \d+:\d\d:\d\d")
        with open(os.path.join(self.model_dir, "config.gin")) as f:
            config = f.read()
        self.assertIn("#   --gin_bindings=TRAIN_STEPS=4", config)
        self.assertIn("TRAIN_STEPS = 4", config)
        self.assertIn("ToyTask.global_batch_size = 8", config)  # operative: task was built
        with open(os.path.join(self.model_dir, "metrics.json")) as f:
            metrics = json.load(f)
        self.assertEqual(metrics["step"], 4)
        self.assertEqual(metrics["num_examples"], 10)

    def test_unknown_binding_fails_with_clear_message(self):
        result = run_train(self.model_dir, [self.gin], ["tfcp.Trainer.no_such_param = 3"])
        self.assertEqual(result.returncode, 1)
        self.assertIn("invalid gin configuration", result.stderr)
        self.assertIn("no_such_param", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_parse_gin_errors_name_the_binding(self):
        gin.clear_config()
        gin_utils.import_configurables()
        for binding, name in [
            ("NoSuchConfigurable.x = 1", "NoSuchConfigurable"),
            ("tfcp.build_optimizer.momentun = 0.8", "momentun"),
        ]:
            with self.assertRaisesRegex(gin_utils.GinConfigError, name):
                gin_utils.parse_gin([], [binding])
        with self.assertRaisesRegex(gin_utils.GinConfigError, "no_such_file.gin"):
            gin_utils.parse_gin(["no_such_file.gin"])
        gin.clear_config()

    def test_parse_gin_binding_overrides_macro(self):
        gin.clear_config()
        gin_utils.parse_gin([self.gin], ["TRAIN_STEPS=4"])
        self.assertEqual(gin.query_parameter("%TRAIN_STEPS"), 4)
        gin.clear_config()

    def test_eval_without_checkpoint_fails_clearly(self):
        result = run_train(self.model_dir, [self.gin], mode="eval")
        self.assertEqual(result.returncode, 1)
        self.assertIn("no checkpoint found", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_sigkill_after_checkpoint_then_resume(self):
        proc, log_path = self._start(["TRAIN_STEPS=100000"])
        wait_for_log(proc, log_path, r"Saved checkpoint \S+ckpt-10\b")
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        latest = tf.train.latest_checkpoint(self.model_dir)
        saved = int(latest.rsplit("-", 1)[1])
        self.assertGreaterEqual(saved, 10)
        tf.train.load_checkpoint(latest)  # loadable
        result = run_train(self.model_dir, [self.gin], [f"TRAIN_STEPS={saved + 3}"])
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertIn(f"Restored checkpoint {latest} at step {saved}", result.stderr)
        self.assertIn(f"step {saved + 1}/{saved + 3}", result.stderr)
        first_index = read_scalars(os.path.join(self.model_dir, "train"))["first_index"]
        self.assertEqual(first_index[saved + 1], 8 * saved)  # data position continues

    def test_sigterm_writes_checkpoint_and_exits(self):
        proc, log_path = self._start(
            ["TRAIN_STEPS=100000", "tfcp.Trainer.checkpoint_interval=50000"]
        )
        wait_for_log(proc, log_path, r"step 3/100000")
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(120), 143)
        with open(log_path) as f:
            log = f.read()
        step = int(re.search(r"Stopped at step (\d+) after a checkpoint", log).group(1))
        self.assertGreaterEqual(step, 3)
        self.assertEqual(
            tf.train.latest_checkpoint(self.model_dir), f"{self.model_dir}/ckpt-{step}"
        )


class ShippedRunConfigsTest(unittest.TestCase):
    """Every runs/ and demo/ config parses with only the documented macros bound."""

    def test_run_and_demo_configs_parse(self):
        data = ["TRAIN_FILES='t*'", "EVAL_FILES='e*'", "EVAL_ANNOTATIONS='a.json'", "NUM_CLASSES=3"]
        cases = {
            "runs/paper_schedule.gin": (["TRAIN_STEPS=1000"], 256, 0.32),
            "runs/mmdet_ssj_90k.gin": ([], 64, 0.1),
            "runs/mmdet_ssj_270k.gin": ([], 64, 0.1),
            "runs/demo_cpu.gin": (["TRAIN_STEPS=10"], 2, 0.02),
            "demo/maskrcnn_tiny_copy_paste.gin": (data + ["TRAIN_STEPS=10"], 2, 0.02),
            "demo/maskrcnn_tiny.gin": (data + ["TRAIN_STEPS=10"], 2, 0.02),
        }
        for path, (bindings, batch, lr) in cases.items():
            gin.clear_config()
            gin_utils.parse_gin([path], bindings)
            self.assertEqual(gin.query_parameter("%GLOBAL_BATCH_SIZE"), batch, path)
            schedule = optimization.build_learning_rate()
            self.assertAlmostEqual(schedule.learning_rate, lr, places=7, msg=path)
            self.assertEqual(
                schedule.boundaries[0], int(0.9 * gin.query_parameter("%TRAIN_STEPS")), path
            )
        gin.clear_config()
        gin_utils.parse_gin(["runs/mmdet_ssj_90k.gin"])
        schedule = optimization.build_learning_rate()
        self.assertEqual(schedule.boundaries, [81000, 85500, 87750])
        self.assertEqual(schedule.warmup_steps, 500)
        self.assertAlmostEqual(schedule.warmup_learning_rate, 0.0067, places=7)
        gin.clear_config()


class MaskRCNNDemoTest(unittest.TestCase):
    """The demo config trains and evaluates Mask R-CNN end to end (tiny generated COCO)."""

    def test_demo_train_and_eval_writes_coco_metrics(self):
        """Also: bad training records are skipped, named and counted (on_bad_record='skip'),
        and config.gin holds the eval pipeline's bindings after the evaluation."""
        import bad_records

        from tfcp.data import synthetic
        from tfcp.data.converters import coco as coco_converter

        tmp = tempfile.mkdtemp()
        coco = os.path.join(tmp, "coco")
        synthetic.write_coco(coco, num_train=2, num_val=2, image_size=128, seed=0)
        for split in ("train", "val"):
            coco_converter.convert_coco(
                os.path.join(coco, f"{split}2017"),
                os.path.join(coco, "annotations", f"instances_{split}2017.json"),
                os.path.join(coco, split),
                1,
            )
        annotations = os.path.join(coco, "annotations", "instances_val2017.json")
        with open(annotations) as f:
            num_classes = max(c["id"] for c in json.load(f)["categories"]) + 1
        bad = bad_records.write_records(
            os.path.join(tmp, "bad.tfrecord"), bad_records.KINDS, num_classes=num_classes
        )
        model_dir = os.path.join(tmp, "model")
        bindings = [
            f"TRAIN_FILES='{coco}/train*.tfrecord,{bad.path}'",
            f"EVAL_FILES='{coco}/val*.tfrecord'",
            f"EVAL_ANNOTATIONS='{annotations}'",
            f"NUM_CLASSES={num_classes}",
            "TRAIN_STEPS=3",
        ]
        result = run_train(
            model_dir,
            ["demo/maskrcnn_tiny_copy_paste.gin"],
            bindings + ["train/build_dataset.on_bad_record='skip'"],
            mode="train_and_eval",
            timeout=1200,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertRegex(result.stderr, r"step 3/3 \| loss [0-9.]+ \|")
        with open(os.path.join(model_dir, "metrics.json")) as f:
            metrics = json.load(f)
        self.assertEqual(metrics["step"], 3)
        for key in ("box_AP", "box_AP50", "mask_AP", "mask_AP50"):
            self.assertIn(key, metrics)
        self.assertEqual(tf.train.latest_checkpoint(model_dir), f"{model_dir}/ckpt-3")
        # Every bad kind was named in a warning and counted (an epoch is 3 good records).
        for index in bad.bad_indices:
            self.assertIn(
                f'skipping "bad record {bad.path}:{index} (source_id {bad.source_ids[index]}): '
                f'{bad.reasons[index]}"',
                result.stderr,
            )
        self.assertGreaterEqual(metrics["bad_records_skipped"], len(bad.bad_indices))
        with open(os.path.join(model_dir, "config.gin")) as f:
            config = f.read()
        self.assertIn("eval/build_dataset.file_pattern", config)  # rewritten after eval

        # Fail fast (the default): the run stops naming the first bad record, no traceback.
        result = run_train(
            os.path.join(tmp, "model_raise"),
            ["demo/maskrcnn_tiny_copy_paste.gin"],
            [*bindings[1:], f"TRAIN_FILES='{bad.path}'"],
            timeout=1200,
        )
        self.assertEqual(result.returncode, 1, result.stderr[-3000:])
        self.assertRegex(result.stderr, rf"ERROR: bad record {bad.path}:\d+ \(source_id ")
        self.assertNotIn("Traceback", result.stderr)


class LvisTinyTest(unittest.TestCase):
    """Generated LVIS data -> converter -> RFS + Copy-Paste training -> federated LVIS eval."""

    def test_lvis_tiny_config_writes_frequency_group_metrics(self):
        from tfcp.data.converters import coco as coco_converter
        from tfcp.data.synthetic import write_lvis

        tmp = tempfile.mkdtemp()
        lvis = os.path.join(tmp, "lvis")
        paths = write_lvis(lvis, num_train=24, num_val=4, image_size=64, seed=0)
        for split in ("train", "val"):
            coco_converter.convert_coco(
                paths["image_dir"], paths[f"{split}_annotations"], os.path.join(lvis, split), 1
            )
        with open(paths["val_annotations"]) as f:
            num_classes = max(c["id"] for c in json.load(f)["categories"]) + 1
        model_dir = os.path.join(tmp, "model")
        result = run_train(
            model_dir,
            ["lvis/maskrcnn_tiny_rfs_copy_paste.gin"],
            [
                f"TRAIN_FILES='{lvis}/train-*'",
                f"EVAL_FILES='{lvis}/val-*'",
                f"EVAL_ANNOTATIONS='{paths['val_annotations']}'",
                f"NUM_CLASSES={num_classes}",
                "TRAIN_STEPS=2",
            ],
            mode="train_and_eval",
            timeout=1200,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertRegex(
            result.stderr,
            r"Repeat factor sampling \(t=0\.3\): 24 records, mean factor (?!1\.000)\d+\.\d{3}",
        )
        with open(os.path.join(model_dir, "metrics.json")) as f:
            metrics = json.load(f)
        for kind in ("box", "mask"):
            for key in ("AP", "AP50", "APr", "APc", "APf"):
                self.assertIn(f"{kind}_{key}", metrics)
        self.assertEqual(metrics["num_images"], 4)


if __name__ == "__main__":
    unittest.main()

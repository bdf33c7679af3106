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
from cli_utils import REPO, env, run_train, train_cmd, write_toy_gin
from events import read_scalars

from tfcp import gin_utils


def _wait_for(proc, log_path, pattern, timeout=180):
    """Waits until `pattern` appears in the log file; returns the match."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(log_path) as f:
            match = re.search(pattern, f.read())
        if match:
            return match
        if proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {pattern!r}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"timeout waiting for {pattern!r}")


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
        _wait_for(proc, log_path, r"Saved checkpoint \S+ckpt-10\b")
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
        _wait_for(proc, log_path, r"step 3/100000")
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(120), 143)
        with open(log_path) as f:
            log = f.read()
        step = int(re.search(r"Stopped at step (\d+) after a checkpoint", log).group(1))
        self.assertGreaterEqual(step, 3)
        self.assertEqual(
            tf.train.latest_checkpoint(self.model_dir), f"{self.model_dir}/ckpt-{step}"
        )


if __name__ == "__main__":
    unittest.main()

"""tfcp.console: noise lines are dropped, everything else (errors, tracebacks, progress) kept.

Unit tests of the line filter on lines captured from TF 2.20, a cheap stderr subprocess
(no TensorFlow), then the CLIs: `python -m tfcp.data.synthetic` and a 2-step
`python -m tfcp.train` print no noise by default, and `--verbosity=1` brings it back.
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

from cli_utils import REPO, env, train_cmd

from tfcp import console

ABSL_W = (
    b"W0000 00:00:1796228007.244001    4315 op_level_cost_estimator.cc:699] Error in "
    b'PredictCost() for the op: op: "CropAndResize" attr { key: "T" value { type: DT_UINT8 } }\n'
)
ABSL_I = b"I0000 00:00:1796228007.244001    4315 some_pass.cc:12] note\n"
ABSL_E = b"E0000 00:00:1796228007.244001    4315 some_pass.cc:12] real absl error\n"
BANNER = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
CUINIT = (
    b"2026-12-02 16:12:42.208960: E external/local_xla/xla/stream_executor/cuda/"
    b"cuda_platform.cc:51] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: "
    b"UNKNOWN ERROR (303)\n"
)
ONEDNN = (
    b"2026-12-02 16:13:27.178927: E tensorflow/core/util/util.cc:131] oneDNN supports DT_UINT8 "
    b"only on platforms with AVX-512. Falling back to the default Eigen-based implementation.\n"
)
ONEDNN_BOOL = ONEDNN.replace(b"DT_UINT8", b"DT_BOOL")
TSL_E = (
    b"2026-12-02 16:13:27.178927: E tensorflow/core/util/events_writer.cc:120] "
    b"Failed to flush 3 events to /tmp/m/events.out\n"
)
PROGRESS = (
    b"I1202 16:13:56.304443 140136742136704 trainer.py:326] step 2/2 | loss 7.9725 | "
    b"3.467 steps/s | 6.93 images/s | ETA 0:00:00\n"
)
REAL = [ABSL_E, TSL_E, PROGRESS, b"Traceback (most recent call last):\n", b"ERROR: bad\n"]
NOISE_MARKERS = ("op_level_cost_estimator", "cuInit", "InitializeLog", "fpn.py")


class IsVerboseTest(unittest.TestCase):
    def test_env_and_flag(self):
        self.assertFalse(console.is_verbose([], {}))
        self.assertFalse(console.is_verbose([], {"TFCP_VERBOSE": "0"}))
        self.assertTrue(console.is_verbose([], {"TFCP_VERBOSE": "1"}))
        for argv in (["--verbosity=1"], ["--verbosity", "2"], ["-v=1"], ["-v", "1"]):
            self.assertTrue(console.is_verbose(argv, {}), argv)
        for argv in (["--verbosity=0"], ["--verbosity=-1"], ["--", "--verbosity=1"]):
            self.assertFalse(console.is_verbose(argv, {}), argv)
        self.assertFalse(console.is_verbose(["--verbose_thing=1"], {}))


class IsNoiseTest(unittest.TestCase):
    def test_known_noise_is_dropped(self):
        for line in (ABSL_W, ABSL_I, BANNER, CUINIT, ONEDNN, ONEDNN_BOOL):
            self.assertTrue(console.is_noise(line), line)
            self.assertTrue(console.is_noise(line.rstrip(b"\n")), line)

    def test_real_errors_and_progress_are_kept(self):
        for line in REAL:
            self.assertFalse(console.is_noise(line), line)

    def test_absl_cpp_lines_follow_tf_cpp_min_log_level(self):
        self.assertFalse(console.is_noise(ABSL_W, min_level=0))
        self.assertFalse(console.is_noise(ABSL_W, min_level=1))
        self.assertTrue(console.is_noise(ABSL_I, min_level=1))

    def test_cuinit_kept_when_a_gpu_may_be_there(self):
        self.assertFalse(console.is_noise(CUINIT, drop_cuinit=False))
        self.assertTrue(console._drop_cuinit({"CUDA_VISIBLE_DEVICES": ""}))
        self.assertTrue(console._drop_cuinit({"CUDA_VISIBLE_DEVICES": "-1"}))
        has_gpu = os.path.exists("/dev/nvidiactl")
        self.assertEqual(console._drop_cuinit({"CUDA_VISIBLE_DEVICES": "0"}), not has_gpu)


class LineFilterTest(unittest.TestCase):
    def test_stream_split_anywhere_keeps_exactly_the_real_bytes(self):
        stream = b"".join([ABSL_W, REAL[0], BANNER, CUINIT, REAL[1], ABSL_W, REAL[2], ONEDNN])
        expected = REAL[0] + REAL[1] + REAL[2]
        for size in (1, 7, 64, len(stream)):
            line_filter = console.LineFilter()
            out = b"".join(
                line_filter.feed(stream[i : i + size]) for i in range(0, len(stream), size)
            )
            self.assertEqual(out + line_filter.close(), expected, size)

    def test_progress_redrawn_with_cr_passes_at_once(self):
        line_filter = console.LineFilter()
        self.assertEqual(line_filter.feed(b"[train] 1/4 images"), b"[train] 1/4 images")
        self.assertEqual(line_filter.feed(b" ETA 1s\r[train] 2/4"), b" ETA 1s\r[train] 2/4")
        self.assertEqual(line_filter.feed(b"\n"), b"\n")

    def test_partial_log_line_is_held_until_complete(self):
        line_filter = console.LineFilter()
        self.assertEqual(line_filter.feed(ABSL_E[:20]), b"")
        self.assertEqual(line_filter.feed(ABSL_E[20:]), ABSL_E)
        self.assertEqual(line_filter.feed(ABSL_W[:-1]), b"")
        self.assertEqual(line_filter.close(), b"")  # noise at the end is still noise
        line_filter.feed(TSL_E[:30])
        self.assertEqual(line_filter.close(), TSL_E[:30])


_STDERR_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from absl import app, logging
    from tfcp import console

    console.setup()

    def main(argv):
        for line in {lines!r}:
            os.write(2, line)
        third_party = os.path.join({purelib!r}, "fake_pkg", "fpn.py")
        exec(compile("logging.info('FPN input_specs')", third_party, "exec"))
        logging.info("own info")
        print("partial progress", end="", file=sys.stderr, flush=True)
        os.write(2, b"F0000 00:00:1796228007.2 1 x.cc:1] Check failed: real fatal\\n")
        if argv[1] == "abort":
            os.abort()
        raise RuntimeError("real traceback")

    app.run(main)
    """
)


class StderrFilterTest(unittest.TestCase):
    """A process writing noise and real errors to fd 2, then dying (no TensorFlow)."""

    def _run(self, how, **extra_env):
        import sysconfig

        lines = [ABSL_W, CUINIT, BANNER, ONEDNN, TSL_E, ABSL_E]
        script = _STDERR_SCRIPT.format(lines=lines, purelib=sysconfig.get_paths()["purelib"])
        e = env(**extra_env)
        e.pop("TF_CPP_MIN_LOG_LEVEL")
        if "TFCP_VERBOSE" not in extra_env:
            e.pop("TFCP_VERBOSE", None)
        return subprocess.run(
            [sys.executable, "-c", script, how],
            env=e,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def test_noise_dropped_errors_and_tracebacks_kept(self):
        for how in ("abort", "raise"):
            result = self._run(how)
            self.assertNotEqual(result.returncode, 0)
            err = result.stderr
            for marker in NOISE_MARKERS:
                self.assertNotIn(marker, err, how)
            self.assertIn("Failed to flush 3 events", err)
            self.assertIn("real absl error", err)
            self.assertIn("own info", err)
            self.assertIn("partial progressF0000", err)
            self.assertIn("Check failed: real fatal", err)  # written just before abort()
        self.assertIn("RuntimeError: real traceback", err)

    def test_verbose_env_passes_everything(self):
        err = self._run("raise", TFCP_VERBOSE="1").stderr
        for marker in NOISE_MARKERS:
            self.assertIn(marker, err)
        self.assertIn("RuntimeError: real traceback", err)


def _cli_env():
    """cli_utils.env() without the test suite's TF_CPP_MIN_LOG_LEVEL: tfcp's defaults rule."""
    e = env()
    e.pop("TF_CPP_MIN_LOG_LEVEL")
    e.pop("TFCP_VERBOSE", None)
    return e


class CliConsoleTest(unittest.TestCase):
    """The CLIs' consoles: generated data, a 2-step tiny Mask R-CNN run, a verbose run."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp()
        cls.coco = os.path.join(cls.tmp, "coco")
        cls.synthetic = subprocess.run(
            [sys.executable, "-m", "tfcp.data.synthetic", f"--output_dir={cls.coco}"]
            + ["--num_train=2", "--num_val=2", "--image_size=128"],
            env=_cli_env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def test_synthetic_cli_prints_its_summary_and_no_noise(self):
        self.assertEqual(self.synthetic.returncode, 0, self.synthetic.stderr)
        self.assertEqual(json.loads(self.synthetic.stdout)["stats"]["images"], 4)
        for marker in NOISE_MARKERS:
            self.assertNotIn(marker, self.synthetic.stderr)

    def test_train_prints_progress_and_no_noise(self):
        from tfcp.data.converters import coco as coco_converter

        for split in ("train", "val"):
            coco_converter.convert_coco(
                os.path.join(self.coco, f"{split}2017"),
                os.path.join(self.coco, "annotations", f"instances_{split}2017.json"),
                os.path.join(self.coco, split),
                1,
                num_workers=0,
            )
        annotations = os.path.join(self.coco, "annotations", "instances_val2017.json")
        with open(annotations) as f:
            num_classes = max(c["id"] for c in json.load(f)["categories"]) + 1
        bindings = [
            f"TRAIN_FILES='{self.coco}/train*.tfrecord'",
            f"EVAL_FILES='{self.coco}/val*.tfrecord'",
            f"EVAL_ANNOTATIONS='{annotations}'",
            f"NUM_CLASSES={num_classes}",
            "TRAIN_STEPS=2",
            "tfcp.Trainer.image_summaries=False",
        ]
        cmd = train_cmd(os.path.join(self.tmp, "model"), ["demo/maskrcnn_tiny.gin"], bindings)
        result = subprocess.run(
            cmd, env=_cli_env(), cwd=REPO, capture_output=True, text=True, timeout=1200
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertRegex(result.stderr, r"trainer\.py:\d+\] step 2/2 \| loss [0-9.]+ \|.*ETA")
        for marker in NOISE_MARKERS + ("cpu_feature_guard", "port.cc"):
            self.assertNotIn(marker, result.stderr)

    def test_verbosity_flag_brings_the_noise_back(self):
        """grappler logs op_level_cost_estimator for a uint8 CropAndResize in tf.data."""
        snippet = textwrap.dedent(
            """
            from tfcp import console
            assert not console.setup()
            import tensorflow as tf
            def crop(m):
                n = tf.shape(m)[0]
                boxes = tf.tile([[0.0, 0.0, 1.0, 1.0]], [n, 1])
                return tf.image.crop_and_resize(m, boxes, tf.range(n), [8, 8])
            ds = tf.data.Dataset.range(2).map(lambda i: tf.zeros([i + 1, 16, 16, 1], tf.uint8))
            for _ in ds.map(crop, num_parallel_calls=2):
                pass
            """
        )
        result = subprocess.run(
            [sys.executable, "-c", snippet, "--verbosity=1"],
            env=_cli_env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertIn("op_level_cost_estimator", result.stderr)


if __name__ == "__main__":
    unittest.main()

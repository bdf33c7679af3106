"""Distributed mechanics: Mirrored (2 logical CPUs) == one device; multi-worker runs.

Logical devices must be configured before TensorFlow initializes, and multi-worker
needs several processes, so these runs happen in subprocesses (the one-process reference
evaluation of a multi-worker checkpoint runs in this process).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import tensorflow as tf
import toy_task
from cli_utils import REPO, TESTS, env, train_cmd, write_toy_gin

from tfcp import optimization, trainer


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class MirroredTest(unittest.TestCase):
    def test_two_replicas_match_one_device_on_the_same_global_batch(self):
        result = subprocess.run(
            [
                sys.executable,
                os.path.join(TESTS, "distributed_helper.py"),
                "one_device",
                "mirrored",
            ],
            env=env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        line = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")][-1]
        out = json.loads(line[len("RESULT ") :])
        one, mirrored = out["one_device"], out["mirrored"]
        self.assertEqual((one["num_replicas"], mirrored["num_replicas"]), (1, 2))
        self.assertEqual(sorted(one["losses"]), ["1", "2", "3"])
        for step, loss in one["losses"].items():
            self.assertAlmostEqual(mirrored["losses"][step], loss, places=4)
            # The weight-decay term is the same, i.e. not double counted over replicas.
            self.assertAlmostEqual(mirrored["reg"][step], one["reg"][step], places=6)
        self.assertGreater(one["reg"]["1"], 0.0)
        for w1, w2 in zip(one["weights"], mirrored["weights"], strict=True):
            np.testing.assert_allclose(w2, w1, rtol=1e-5, atol=1e-5)
        # Eval over 11 examples: the partial batch (and the empty replica) included.
        self.assertEqual(mirrored["eval"]["num_unique_examples"], 11)
        self.assertEqual(mirrored["eval"]["num_examples"], 11)
        self.assertAlmostEqual(mirrored["eval"]["mse"], one["eval"]["mse"], places=4)
        # Gathering all replicas' outputs through collectives feeds the same examples.
        for out in (one, mirrored):
            self.assertEqual(out["eval_gathered"]["num_unique_examples"], 11)
            self.assertEqual(out["eval_gathered"]["num_examples"], 11)
            self.assertAlmostEqual(out["eval_gathered"]["mse"], out["eval"]["mse"], places=6)


class MultiWorkerTest(unittest.TestCase):
    def test_two_workers_on_localhost_train_and_evaluate_every_example_once(self):
        tmp = tempfile.mkdtemp()
        model_dir = os.path.join(tmp, "model")
        # 11 eval examples, 5 per replica: worker 0 reads 6 (batches of 5 and 1), worker 1
        # reads 5 (one batch, then an empty one while worker 0 finishes).
        gin_file = write_toy_gin(
            tmp,
            "tfcp.build_strategy.distribution_strategy = 'multi_worker_mirrored'\n"
            "ToyTask.num_eval_examples = 11\n"
            "ToyTask.global_batch_size = 10\n",
        )
        workers = [f"localhost:{p}" for p in _free_ports(2)]
        procs, logs = [], []
        for index in range(2):
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            log = open(os.path.join(tmp, f"worker{index}.log"), "w+")
            self.addCleanup(log.close)
            procs.append(
                subprocess.Popen(
                    train_cmd(model_dir, [gin_file], ["TRAIN_STEPS=6"], "train_and_eval"),
                    env=env(TF_CONFIG=json.dumps(tf_config)),
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            logs.append(log)
        try:
            codes = [p.wait(timeout=300) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        texts = []
        for log in logs:
            log.seek(0)
            texts.append(log.read())
        self.assertEqual(codes, [0, 0], texts[0][-2000:] + texts[1][-2000:])
        self.assertIn("Distribution strategy: multi_worker_mirrored", texts[0])
        self.assertIn("step 6/6", texts[0])
        # The chief keeps the checkpoints; the other worker's temporary copy is removed.
        with open(os.path.join(model_dir, "checkpoint")) as f:
            self.assertIn('model_checkpoint_path: "ckpt-6"', f.read())
        self.assertFalse(os.path.exists(os.path.join(model_dir, ".worker_tmp", "worker_1")))

        # The chief scored every eval example of both workers exactly once, and so does one
        # process evaluating the same final checkpoint.
        with open(os.path.join(model_dir, "metrics.json")) as f:
            metrics = json.load(f)
        self.assertEqual(metrics["step"], 6)
        self.assertEqual((metrics["num_examples"], metrics["num_unique_examples"]), (11, 11))
        one_dir = os.path.join(tmp, "one_process")
        shutil.copytree(model_dir, one_dir)
        expected = trainer.Trainer(
            model_dir=one_dir,
            task=toy_task.ToyTask(global_batch_size=10, num_eval_examples=11),
            train_steps=6,
            strategy=tf.distribute.OneDeviceStrategy("/cpu:0"),
            optimizer_fn=lambda: optimization.build_optimizer(learning_rate=0.1),
            image_summaries=False,
        ).evaluate()
        self.assertEqual(sorted(metrics), sorted(expected))
        self.assertEqual(expected["step"], 6)
        self.assertEqual(metrics["num_examples"], expected["num_examples"])
        self.assertAlmostEqual(metrics["mse"], expected["mse"], places=5)
        # The other worker returns the chief's metrics (broadcast), not its own shard's.
        self.assertIn("'num_examples': 11, 'num_unique_examples': 11", texts[1])


if __name__ == "__main__":
    unittest.main()

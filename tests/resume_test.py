"""Exact resume: batches after a restart from step k equal steps k+1.. of one run.

Runs tests/resume_helper.py in a subprocess (2 logical CPUs for MirroredStrategy): the real
Mask R-CNN pipeline with Copy-Paste, one device and Mirrored x2, through the trainer.
"""

import json
import os
import subprocess
import sys
import unittest

from cli_utils import REPO, TESTS, env


class ExactResumeTest(unittest.TestCase):
    def test_resumed_batches_are_bit_identical_one_device_and_mirrored(self):
        result = subprocess.run(
            [sys.executable, os.path.join(TESTS, "resume_helper.py"), "one_device", "mirrored"],
            env=env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        line = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")][-1]
        out = json.loads(line[len("RESULT ") :])
        self.assertEqual(out["mirrored"]["num_replicas"], 2)
        for name, run in out.items():
            full, resumed = run["full"], run["resumed"]
            for key in ("image_sum", "box_sum"):
                self.assertEqual(sorted(full[key], key=int), ["1", "2", "3", "4", "5", "6"])
                for step in ("4", "5", "6"):
                    self.assertEqual(resumed[key][step], full[key][step], (name, key, step))
                # Steps differ from each other: the fingerprint can tell batches apart.
                self.assertEqual(len({full[key][s] for s in full[key]}), 6, (name, key))
            self.assertTrue(run["per_replica_batches_equal"], name)


if __name__ == "__main__":
    unittest.main()

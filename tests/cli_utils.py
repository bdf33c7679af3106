"""Helpers to run `python -m tfcp.train` on the toy task in a subprocess (test helper)."""

import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")

TOY_GIN = """
import toy_task
TRAIN_STEPS = 10
tfcp.Trainer.task = @ToyTask()
tfcp.Trainer.train_steps = %TRAIN_STEPS
tfcp.Trainer.steps_per_loop = 1
tfcp.Trainer.log_interval = 1
tfcp.Trainer.checkpoint_interval = 5
tfcp.Trainer.image_summaries = False
tfcp.build_optimizer.learning_rate = 0.1
"""


def write_toy_gin(directory, extra=""):
    """Writes the toy run config (+ `extra` lines) and returns its path."""
    path = os.path.join(directory, "toy.gin")
    with open(path, "w") as f:
        f.write(TOY_GIN + extra)
    return path


def env(**extra):
    """Environment for the subprocess: toy task importable, quiet TF, CPU only."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([TESTS, REPO, e.get("PYTHONPATH", "")])
    e["TF_CPP_MIN_LOG_LEVEL"] = "2"
    e["CUDA_VISIBLE_DEVICES"] = ""
    e.update(extra)
    return e


def train_cmd(model_dir, gin_files, bindings=(), mode="train"):
    cmd = [sys.executable, "-m", "tfcp.train", f"--model_dir={model_dir}", f"--mode={mode}"]
    cmd += [f"--gin_file={f}" for f in gin_files]
    cmd += [f"--gin_bindings={b}" for b in bindings]
    return cmd


def run_train(model_dir, gin_files, bindings=(), mode="train", timeout=240, **env_extra):
    """Runs the CLI to completion; returns the CompletedProcess (text stdout/stderr)."""
    return subprocess.run(
        train_cmd(model_dir, gin_files, bindings, mode),
        env=env(**env_extra),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for_log(proc, log_path, pattern, timeout=300):
    """Waits until `pattern` appears in the log file of `proc`; returns the match.

    Raises AssertionError (with the end of the log) if `proc` exits first or on timeout
    (then `proc` is killed).
    """
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(log_path) as f:
            match = re.search(pattern, f.read())
        if match:
            return match
        if proc.poll() is not None:
            with open(log_path) as f:
                tail = f.read()[-3000:]
            raise AssertionError(f"exited ({proc.returncode}) before {pattern!r}:\n{tail}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"timeout waiting for {pattern!r}")

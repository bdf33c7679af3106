"""Training input throughput read locally vs through the tf.data service (1 and 2 workers).

The pipeline is the tiny demo config's (gin_configs/demo/maskrcnn_tiny_copy_paste.gin: LSJ
0.1-2.0 + Copy-Paste on every image, Mask R-CNN targets) at `--image_size` on generated
COCO-format scenes (`tfcp.data.synthetic`). Variants, one after the other, each timed after
`--warmup` batches over `--num_batches` batches:

  local:      `build_dataset` in this process (AUTOTUNE parallelism);
  service_1:  the same pipeline on one worker (`python -m tfcp.data.service worker`),
              distributed_epoch, read by this process;
  service_2:  on two workers.

Each service variant gets a fresh dispatcher and workers (subprocesses, all on this
machine). On a machine with few cores the workers compete with each other and with the
reader for the same cores: the figures show the service's overhead, not its speed-up,
which needs workers on other machines. The last stdout line is one JSON object. Usage:

  python benchmarks/data_service.py [--image_size 256] [--batch_size 4] [--num_batches 40]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # runs from a checkout without `pip install -e .` too


def write_data(directory: str, num_images: int, image_size: int) -> str:
    """Generated COCO scenes converted to one TFRecord shard; returns its path."""
    from tfcp.data import synthetic
    from tfcp.data.converters import coco as coco_converter

    synthetic.write_coco(directory, num_train=num_images, num_val=1, image_size=image_size, seed=0)
    coco_converter.convert_coco(
        os.path.join(directory, "train2017"),
        os.path.join(directory, "annotations", "instances_train2017.json"),
        os.path.join(directory, "train"),
        1,
    )
    return os.path.join(directory, "train-00000-of-00001.tfrecord")


def build(train_file: str, image_size: int, batch_size: int, address: str | None):
    """The demo config's training pipeline, optionally through the service at `address`."""
    import gin

    from tfcp import gin_utils
    from tfcp.data import pipeline

    gin.clear_config()
    gin_utils.parse_gin(
        ["demo/maskrcnn_tiny_copy_paste.gin"],
        [
            f"TRAIN_FILES='{train_file}'",
            "EVAL_FILES='unused'",
            "EVAL_ANNOTATIONS='unused'",
            "NUM_CLASSES=91",
            "TRAIN_STEPS=1",
            f"IMAGE_SIZE={image_size}",
            f"GLOBAL_BATCH_SIZE={batch_size}",
            f"DATA_SERVICE_ADDRESS={address!r}" if address else "DATA_SERVICE_ADDRESS=None",
        ],
    )
    with gin.config_scope("train"):
        return pipeline.build_dataset(is_training=True)


def images_per_sec(dataset, batch_size: int, warmup: int, num_batches: int) -> float:
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(num_batches):
        next(iterator)
    return num_batches * batch_size / (time.perf_counter() - start)


def _start(args, log_path):
    log = open(log_path, "w")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    cmd = [sys.executable, "-m", "tfcp.data.service", *args]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc


def _wait_for(proc, log_path, pattern, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(log_path) as f:
            match = re.search(pattern, f.read())
        if match:
            return match
        if proc.poll() is not None:
            raise RuntimeError(f"{log_path}: exited ({proc.returncode}) before {pattern!r}")
        time.sleep(0.2)
    raise RuntimeError(f"{log_path}: timeout waiting for {pattern!r}")


def run_service(tmp, num_workers, train_file, args) -> float:
    """images/s through a fresh dispatcher and `num_workers` fresh workers."""
    procs = []
    try:
        log = os.path.join(tmp, f"dispatcher{num_workers}.log")
        procs.append(_start(["dispatcher", "--port", "0"], log))
        address = _wait_for(procs[0], log, r"dispatcher at (\S+) \(")[1]
        for k in range(num_workers):
            log = os.path.join(tmp, f"worker{num_workers}_{k}.log")
            procs.append(_start(["worker", "--dispatcher_address", address, "--port", "0"], log))
            _wait_for(procs[-1], log, r"worker at \S+")
        dataset = build(train_file, args.image_size, args.batch_size, address)
        return images_per_sec(dataset, args.batch_size, args.warmup, args.num_batches)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--num_images", type=int, default=32, help="generated training images")
    parser.add_argument("--warmup", type=int, default=10, help="batches before timing")
    parser.add_argument("--num_batches", type=int, default=40, help="timed batches")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        train_file = write_data(os.path.join(tmp, "coco"), args.num_images, args.image_size)
        results = {
            "local": images_per_sec(
                build(train_file, args.image_size, args.batch_size, None),
                args.batch_size,
                args.warmup,
                args.num_batches,
            )
        }
        for num_workers in (1, 2):
            results[f"service_{num_workers}_worker"] = run_service(
                tmp, num_workers, train_file, args
            )
    summary = {
        "pipeline": "demo/maskrcnn_tiny_copy_paste.gin (LSJ + Copy-Paste, Mask R-CNN targets)",
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "timed_images": args.num_batches * args.batch_size,
        "images_per_sec": {k: round(v, 2) for k, v in results.items()},
        "relative_to_local": {k: round(v / results["local"], 3) for k, v in results.items()},
        "cpu_count": os.cpu_count(),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "processing_mode": "distributed_epoch",
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

"""Input pipeline throughput and peak memory: Model Garden's parser vs tfcp (with/without CP).

Each variant runs in its own subprocess (fair peak RSS, read from the child's
`getrusage(RUSAGE_SELF).ru_maxrss`), on the same COCO-like generated records (640x480 JPEGs,
about 7 instances per image, up to 40, PNG instance masks):

  (a) model_garden: `TfExampleDecoder(include_mask=True)` + `maskrcnn_input.Parser` with LSJ
      (aug_scale_min=0.1, aug_scale_max=2.0, random flip) - the baseline;
  (b) tfcp_no_cp: `tfcp.data.pipeline.build_dataset(copy_paste_prob=0)`, LSJ;
  (c) tfcp_cp: the same with Copy-Paste on every image (paper setting).

All use parallel map (AUTOTUNE), batch `--batch_size`, warm up, then time `--num_batches`.
The last stdout line is one JSON object. Usage:

  python benchmarks/input_pipeline.py [--size 1024] [--batch_size 8] [--num_batches 30]
      [--instances 7] [--rounds 3]

With `--rounds R` the variants run interleaved R times (MG, no CP, CP, MG, ...), so load
changes on a shared machine hit all of them; the summary has the median images/s and peak
RSS per variant and the per-round ratios to Model Garden.

`--instances 30` generates crowded (LVIS-like) images instead of COCO-like ones. tfcp's
batches hold uint8 images (the task normalizes them on the accelerator); Model Garden's
parser normalizes to float32 on the host.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

# Runs from a checkout without `pip install -e .` too.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VARIANTS = ("model_garden", "tfcp_no_cp", "tfcp_cp")
NUM_RECORDS = 64


def write_records(path: str, num: int, seed: int = 0, mean_instances: float = 7.0) -> float:
    """Writes `num` COCO-like examples (1 + Poisson(mean_instances - 1) instances, at most
    40; 7 is COCO-like, ~30 crowded); returns the mean number of instances per image."""
    import tensorflow as tf
    from PIL import Image

    from tfcp.data import schema

    rng = np.random.default_rng(seed)
    height, width = 480, 640
    yy, xx = np.mgrid[0:height, 0:width]
    counts = []
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(num):
            base = rng.integers(0, 255, [height // 16, width // 16, 3], dtype=np.uint8)
            image = np.asarray(Image.fromarray(base).resize((width, height)), np.uint8).copy()
            n = int(np.clip(rng.poisson(mean_instances - 1) + 1, 1, 40))
            masks, boxes = [], []
            for _ in range(n):
                cy, cx = rng.uniform(0, height), rng.uniform(0, width)
                ry, rx = rng.uniform(8, height / 4), rng.uniform(8, width / 4)
                mask = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)
                ys, xs = np.nonzero(mask)
                if len(ys) == 0:
                    continue
                image[mask > 0] = rng.integers(0, 255, 3)
                masks.append(mask)
                boxes.append(
                    [ys.min() / height, xs.min() / width, (ys.max() + 1) / height,
                     (xs.max() + 1) / width]
                )  # fmt: skip
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG", quality=90)
            counts.append(len(masks))
            example = schema.make_example(
                encoded_image=buffer.getvalue(),
                image_format="jpeg",
                height=height,
                width=width,
                source_id=str(i + 1),
                boxes=np.asarray(boxes, np.float32),
                classes=[int(c) for c in rng.integers(1, 81, len(masks))],
                is_crowd=[0] * len(masks),
                areas=[float(m.sum()) for m in masks],
                masks=np.stack(masks),
            )
            writer.write(example.SerializeToString())
    return float(np.mean(counts))


def _dataset(variant: str, path: str, size: int, batch_size: int):
    import tensorflow as tf

    if variant == "model_garden":
        from official.vision.dataloaders import maskrcnn_input, tf_example_decoder

        decoder = tf_example_decoder.TfExampleDecoder(include_mask=True)
        parser = maskrcnn_input.Parser(
            output_size=[size, size],
            min_level=2,
            max_level=6,
            num_scales=1,
            aspect_ratios=[0.5, 1.0, 2.0],
            anchor_size=8.0,
            aug_rand_hflip=True,
            aug_scale_min=0.1,
            aug_scale_max=2.0,
            include_mask=True,
            mask_crop_size=112,
        )
        parse = parser.parse_fn(is_training=True)
        dataset = tf.data.TFRecordDataset(path).shuffle(64, seed=0).repeat()
        dataset = dataset.map(
            lambda s: parse(decoder.decode(s)), num_parallel_calls=tf.data.AUTOTUNE
        )
        return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    from tfcp.data import pipeline

    return pipeline.build_dataset(
        file_pattern=path,
        is_training=True,
        global_batch_size=batch_size,
        image_size=size,
        shuffle_buffer=64,
        copy_paste_prob=1.0 if variant == "tfcp_cp" else 0.0,
    )


def run_variant(variant: str, path: str, size: int, batch_size: int, num_batches: int) -> dict:
    """Times one variant in this process; returns images/s and peak RSS."""
    iterator = iter(_dataset(variant, path, size, batch_size))
    for _ in range(5):
        next(iterator)
    start = time.perf_counter()
    for _ in range(num_batches):
        next(iterator)
    elapsed = time.perf_counter() - start
    return {
        "variant": variant,
        "images_per_s": num_batches * batch_size / elapsed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def _run_child(variant: str, path: str, args) -> dict:
    """One variant in a fresh subprocess (its own peak RSS)."""
    command = [sys.executable, __file__, "--_child", variant, "--data", path]
    command += ["--size", str(args.size), "--batch_size", str(args.batch_size)]
    command += ["--num_batches", str(args.num_batches)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"variant {variant} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_batches", type=int, default=30)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--rounds", type=int, default=1, help="variants run interleaved this many times"
    )
    parser.add_argument(
        "--instances", type=float, default=7.0, help="mean instances per generated image"
    )
    parser.add_argument("--data", default="", help="existing TFRecord; generated if empty")
    parser.add_argument("--_child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._child:
        result = run_variant(args._child, args.data, args.size, args.batch_size, args.num_batches)
        print(json.dumps(result))
        return

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = args.data or os.path.join(tmp, "coco_like.tfrecord")
        mean_instances = None
        if not args.data:
            mean_instances = write_records(path, NUM_RECORDS, mean_instances=args.instances)
        rounds = []
        for round_index in range(args.rounds):
            results = {}
            for variant in args.variants.split(","):
                results[variant] = _run_child(variant, path, args)
                print(json.dumps(dict(results[variant], round=round_index)), flush=True)
            rounds.append(results)

    def median(values):
        return float(np.median(values))

    variants = list(rounds[0])
    speed = {v: round(median([r[v]["images_per_s"] for r in rounds]), 2) for v in variants}
    summary = dict(speed)
    for name in ("tfcp_cp", "tfcp_no_cp"):
        if "model_garden" in speed and name in speed:
            ratios = [r[name]["images_per_s"] / r["model_garden"]["images_per_s"] for r in rounds]
            key = "ratio_cp_vs_model_garden" if name == "tfcp_cp" else "ratio_no_cp_vs_model_garden"
            summary[key] = round(median(ratios), 3)
            summary[key + "_per_round"] = [round(x, 3) for x in ratios]
    summary["peak_rss_mb"] = {
        v: round(median([r[v]["peak_rss_mb"] for r in rounds]), 1) for v in variants
    }
    summary.update(
        size=args.size,
        batch_size=args.batch_size,
        num_batches=args.num_batches,
        rounds=args.rounds,
        mean_instances=mean_instances,
        cpu_count=os.cpu_count(),
        load_avg_1m_before=load_before,
        load_avg_1m=os.getloadavg()[0],
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

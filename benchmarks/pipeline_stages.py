"""Where the Copy-Paste input pipeline's host time goes: per-stage cost on ONE core.

Each stage of tfcp's training example (as `tfcp.data.pipeline.build_dataset` chains them)
runs alone under `tf.function` (None dims, one intra/inter-op thread) on inputs produced by
the previous stages beforehand (not timed), over a pool of generated COCO-like records
(`input_pipeline.write_records`: 640x480 JPEGs, PNG masks):

  decode   `tfcp.data.decoder.decode` (JPEG + one PNG per instance mask)
  jitter   `tfcp.ops.scale_jitter.scale_jitter`, LSJ (0.1-2.0) to S x S (once per image)
  paste    `tfcp.ops.copy_paste.copy_paste`, random subset, occlusion threshold 300 px
  targets  `tfcp.data.targets.maskrcnn_train_targets` (anchors, RPN sampling, mask crops)

and, for reference, Model Garden's `TfExampleDecoder.decode` and `maskrcnn_input.Parser`
(LSJ jitter + targets in one call) on the same records. Prints the median ms per image of
each stage and the share of the tfcp total; the last stdout line is one JSON object:

  python benchmarks/pipeline_stages.py [--size 1024] [--instances 7] [--num_images 24]

`--instances 30` writes crowded (LVIS-like) images. One core, so the figures are costs, not
the parallel pipeline's throughput (`benchmarks/input_pipeline.py` measures that).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import tensorflow as tf

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import input_pipeline  # noqa: E402

from tfcp.data import decoder, targets  # noqa: E402
from tfcp.ops import copy_paste, scale_jitter  # noqa: E402

ANCHORS = dict(
    min_level=2, max_level=6, num_scales=1, aspect_ratios=(0.5, 1.0, 2.0), anchor_size=8.0
)


def _time(fn, inputs: list, repeats: int) -> tuple[float, list]:
    """Median ms per call of `fn` over `inputs` (after one untimed pass); and the outputs."""
    outputs = [fn(*x) for x in inputs]  # traces and warms up
    times = []
    for _ in range(repeats):
        for x in inputs:
            start = time.perf_counter()
            result = fn(*x)
            tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)
            times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times), outputs


def profile(path: str, size: int, num_images: int, repeats: int) -> dict:
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(path).take(num_images)]
    seeds = [tf.constant([i, 7], tf.int64) for i in range(num_images)]
    result = {}

    decode = tf.function(lambda s: decoder.decode(s, include_mask=True), reduce_retracing=True)
    result["decode"], decoded = _time(decode, [(tf.constant(s),) for s in serialized], repeats)

    jitter = tf.function(
        lambda e, seed: scale_jitter.scale_jitter(e, seed, output_size=size), reduce_retracing=True
    )
    result["jitter"], views = _time(jitter, list(zip(decoded, seeds, strict=True)), repeats)

    from tfcp.data import paste_stage  # noqa: PLC0415 - the pipeline's source keys

    source_keys = paste_stage.SOURCE_KEYS
    paste = tf.function(
        lambda t, s, seed: copy_paste.copy_paste(t, s, seed, max_num_instances=100),
        reduce_retracing=True,
    )
    pairs = [
        (
            views[i],
            {k: v for k, v in views[(i + 1) % num_images].items() if k in source_keys},
            seeds[i],
        )
        for i in range(num_images)
    ]
    result["paste"], pasted = _time(paste, pairs, repeats)

    make_targets = tf.function(
        lambda e, seed: targets.maskrcnn_train_targets(
            e, seed, image_size=size, anchor_config=ANCHORS
        ),
        reduce_retracing=True,
    )
    result["targets"], _ = _time(make_targets, list(zip(pasted, seeds, strict=True)), repeats)

    from official.vision.dataloaders import maskrcnn_input, tf_example_decoder

    mg_decoder = tf_example_decoder.TfExampleDecoder(include_mask=True)
    parser = maskrcnn_input.Parser(
        output_size=[size, size], min_level=2, max_level=6, num_scales=1,
        aspect_ratios=[0.5, 1.0, 2.0], anchor_size=8.0, aug_rand_hflip=True,
        aug_scale_min=0.1, aug_scale_max=2.0, include_mask=True, mask_crop_size=112,
    )  # fmt: skip
    parse = parser.parse_fn(is_training=True)
    mg_decode = tf.function(mg_decoder.decode, reduce_retracing=True)
    result["mg_decode"], mg_decoded = _time(
        mg_decode, [(tf.constant(s),) for s in serialized], repeats
    )
    mg_parse = tf.function(parse, reduce_retracing=True)
    result["mg_parse"], _ = _time(mg_parse, [(d,) for d in mg_decoded], repeats)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--instances", type=float, default=7.0, help="mean instances per image")
    parser.add_argument("--num_images", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "records.tfrecord")
        mean = input_pipeline.write_records(path, args.num_images, mean_instances=args.instances)
        ms = profile(path, args.size, args.num_images, args.repeats)
    tfcp_total = ms["decode"] + ms["jitter"] + ms["paste"] + ms["targets"]
    mg_total = ms["mg_decode"] + ms["mg_parse"]
    for name in ("decode", "jitter", "paste", "targets"):
        print(f"tfcp {name:8s} {ms[name]:8.1f} ms/image  {100 * ms[name] / tfcp_total:5.1f} %")
    print(f"tfcp total    {tfcp_total:8.1f} ms/image (with Copy-Paste)")
    print(f"MG decode     {ms['mg_decode']:8.1f} ms/image; MG parser {ms['mg_parse']:8.1f}")
    print(f"MG total      {mg_total:8.1f} ms/image (no Copy-Paste)")
    print(
        json.dumps(
            {
                "benchmark": "pipeline_stages",
                "size": args.size,
                "mean_instances": round(mean, 2),
                "num_images": args.num_images,
                "ms_per_image": {k: round(v, 2) for k, v in ms.items()},
                "tfcp_total_ms": round(tfcp_total, 2),
                "model_garden_total_ms": round(mg_total, 2),
                "tfcp_over_model_garden_cost": round(tfcp_total / mg_total, 3),
                "loadavg_before": load_before,
                "loadavg_after": os.getloadavg(),
            }
        )
    )


if __name__ == "__main__":
    main()

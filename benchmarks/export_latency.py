"""Serving latency: tfcp's SavedModel vs Model Garden's `DetectionModule` export.

Both SavedModels serve the SAME model (one set of weights, copied through a checkpoint)
at the same input size with `image_tensor` input (uint8 [1, H, W, 3]):

  ours:         `tfcp.serving.detection.DetectionModule` - tfcp eval preprocessing,
                boxes in input-image pixels AND full-image uint8 masks [1, K, H, W]
                (pasted in-graph);
  model_garden: `official.vision.serving.detection.DetectionModule` - boxes in
                resized-image pixels and box-relative float masks [1, K, 28, 28].

Both are saved with `tf.saved_model.save`, loaded back with `tf.saved_model.load`, warmed
up, then called alternately on the same images (batch of 1) so that machine load affects
both alike. Reports p50/p90 latency (ms per batch of 1) and images/s; the last stdout line
is one JSON object. Target: ours no slower than Model Garden's.

  python benchmarks/export_latency.py [--gin_file models/maskrcnn_tiny.gin] \
      [--gin_bindings IMAGE_SIZE=256] [--height 480 --width 640] [--num_images 20]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT_BINDINGS = ["NUM_CLASSES=91", "IMAGE_SIZE=256", "EVAL_ANNOTATIONS=None"]


def _resolve(value):
    import gin

    while isinstance(value, gin.config.ConfigurableReference):
        value = value.scoped_configurable_fn()
    return value


def build(gin_files, gin_bindings):
    """Builds the tfcp model from gin and the matching Model Garden `MaskRCNN` config."""
    import gin

    from tfcp import gin_utils
    from tfcp.modeling import factory

    gin_utils.import_configurables()
    gin_utils.parse_gin(gin_files, gin_bindings)
    kwargs = {k: _resolve(v) for k, v in gin.get_bindings("build_maskrcnn").items()}
    kwargs.pop("l2_weight_decay", None)
    model = factory.build_maskrcnn()
    return model, factory.maskrcnn_model_config(**kwargs)


def export_model_garden(model, model_config, export_dir, image_size):
    """Exports Model Garden's DetectionModule with `model`'s weights; returns export_dir."""
    import tensorflow as tf
    from official.core import config_definitions as cfg
    from official.vision.configs import maskrcnn as maskrcnn_cfg
    from official.vision.serving import detection as mg_detection

    params = cfg.ExperimentConfig(task=maskrcnn_cfg.MaskRCNNTask(model=model_config))
    module = mg_detection.DetectionModule(
        params, batch_size=1, input_image_size=list(image_size), input_type="image_tensor"
    )
    prefix = tf.train.Checkpoint(model=model).write(os.path.join(export_dir + "-ckpt", "w"))
    status = tf.train.Checkpoint(model=module.model).read(prefix)
    signatures = module.get_inference_signatures({"image_tensor": "serving_default"})
    status.assert_existing_objects_matched()  # same weights in both exports
    tf.saved_model.save(module, export_dir, signatures=signatures)
    return export_dir


def time_alternating(functions, images, warmup):
    """Calls each function on each image, alternating; returns {name: [seconds]}."""
    import tensorflow as tf

    times = {name: [] for name in functions}
    # Each signature names its input ('images' for ours, 'inputs' for Model Garden's).
    keys = {name: next(iter(fn.structured_input_signature[1])) for name, fn in functions.items()}
    for i in range(warmup):
        for name, fn in functions.items():
            fn(**{keys[name]: tf.constant(images[i % len(images)])})
    for image in images:
        tensor = tf.constant(image)
        for name, fn in functions.items():
            start = time.perf_counter()
            outputs = fn(**{keys[name]: tensor})
            _ = {k: v.numpy() for k, v in outputs.items()}  # include the device->host copy
            times[name].append(time.perf_counter() - start)
    return times


def summarize(seconds):
    ms = np.asarray(seconds) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "images_per_s": round(float(len(ms) / (ms.sum() / 1000.0)), 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gin_file", action="append", default=None)
    parser.add_argument("--gin_bindings", action="append", default=None)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--num_images", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    gin_files = args.gin_file or ["models/maskrcnn_tiny.gin"]
    gin_bindings = DEFAULT_BINDINGS + (args.gin_bindings or [])

    import tensorflow as tf

    from tfcp.serving import export_lib

    model, model_config = build(gin_files, gin_bindings)
    image_size = export_lib.model_image_size(model)
    tmp = tempfile.mkdtemp(prefix="export_latency-")
    ours_dir = os.path.join(tmp, "ours")
    mg_dir = os.path.join(tmp, "model_garden")
    start = time.perf_counter()
    export_lib.export_model(model, ours_dir, input_type="image_tensor", batch_size=1)
    ours_export_s = time.perf_counter() - start
    start = time.perf_counter()
    export_model_garden(model, model_config, mg_dir, image_size)
    mg_export_s = time.perf_counter() - start

    functions = {
        "ours": tf.saved_model.load(ours_dir).signatures["serving_default"],
        "model_garden": tf.saved_model.load(mg_dir).signatures["serving_default"],
    }
    rng = np.random.RandomState(args.seed)
    images = [
        rng.randint(0, 256, [1, args.height, args.width, 3]).astype(np.uint8)
        for _ in range(args.num_images)
    ]
    times = time_alternating(functions, images, args.warmup)
    result = {
        "benchmark": "export_latency",
        "gin_files": gin_files,
        "gin_bindings": gin_bindings,
        "model_input_size": list(image_size),
        "image_hw": [args.height, args.width],
        "num_images": args.num_images,
        "ours": {**summarize(times["ours"]), "export_s": round(ours_export_s, 1)},
        "model_garden": {**summarize(times["model_garden"]), "export_s": round(mg_export_s, 1)},
        "ours_outputs": sorted(functions["ours"].structured_outputs),
        "model_garden_outputs": sorted(functions["model_garden"].structured_outputs),
    }
    result["p50_ratio_ours_over_model_garden"] = round(
        result["ours"]["p50_ms"] / result["model_garden"]["p50_ms"], 3
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

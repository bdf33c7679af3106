"""Subprocess for resume_test: exact resume of the real pipeline, one device and Mirrored x2.

Logical devices must be configured before TensorFlow initializes, hence a subprocess.
For each strategy it trains `PipelineFingerprintTask` (tfcp's Mask R-CNN pipeline with
Copy-Paste under a trivial model) 6 steps without interruption, and 3 + 3 steps with a
restart from the step-3 checkpoint in between; it also compares the per-replica batches of
`distribute_datasets_from_function` started at step 3 with steps 3.. of a fresh stream.
Prints one line `RESULT {json}`.
"""

import json
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import toy_task  # noqa: E402
from events import read_scalars  # noqa: E402

from tfcp import distribute_utils, optimization, trainer  # noqa: E402
from tfcp.data import schema  # noqa: E402

PIPELINE = dict(image_size=64, max_num_instances=12, mask_crop_size=16, shuffle_buffer=4)


def write_records(directory, num=7, height=48, width=64):
    rng = np.random.default_rng(0)
    path = os.path.join(directory, "train-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(num):
            image = rng.integers(0, 255, [height, width, 3], dtype=np.uint8)
            masks = np.zeros([2, height, width], np.uint8)
            masks[0, 4:20, 6:30] = 1
            masks[1, 20 + i : 40, 30:60] = 1
            boxes = np.array(
                [[4 / height, 6 / width, 20 / height, 30 / width],
                 [(20 + i) / height, 30 / width, 40 / height, 60 / width]], np.float32)  # fmt: skip
            example = schema.make_example(
                encoded_image=schema.encode_png(image), image_format="png", height=height,
                width=width, source_id=str(i), boxes=boxes, classes=[1, 2], is_crowd=[0, 0],
                masks=masks,
            )  # fmt: skip
            writer.write(example.SerializeToString())
    return path


def make_trainer(model_dir, strategy, pattern, steps):
    return trainer.Trainer(
        model_dir=model_dir,
        task=toy_task.PipelineFingerprintTask(pattern, global_batch_size=2, **PIPELINE),
        train_steps=steps,
        strategy=strategy,
        steps_per_loop=1,
        log_interval=1,
        checkpoint_interval=3,
        optimizer_fn=lambda: optimization.build_optimizer(learning_rate=0.01),
        image_summaries=False,
    )


def fingerprints(model_dir):
    scalars = read_scalars(os.path.join(model_dir, "train"))
    return {k: {str(s): v for s, v in scalars[k].items()} for k in ("image_sum", "box_sum")}


def per_replica_batches(strategy, pattern, start_step, num_steps):
    task = toy_task.PipelineFingerprintTask(pattern, global_batch_size=2, **PIPELINE)
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: task.build_inputs(True, ctx, start_step=start_step)
    )
    out, iterator = [], iter(dataset)
    for _ in range(num_steps):
        images, _ = next(iterator)
        out.append([t.numpy() for t in strategy.experimental_local_results(images)])
    return out


def run(strategy_name, base):
    strategy = distribute_utils.build_strategy(distribution_strategy=strategy_name)
    pattern = write_records(tempfile.mkdtemp(dir=base))
    full_dir, resumed_dir = os.path.join(base, "full"), os.path.join(base, "resumed")
    make_trainer(full_dir, strategy, pattern, 6).train()
    make_trainer(resumed_dir, strategy, pattern, 3).train()
    make_trainer(resumed_dir, strategy, pattern, 6).train()  # a new process would do this
    full = per_replica_batches(strategy, pattern, 0, 6)[3:]
    resumed = per_replica_batches(strategy, pattern, 3, 3)
    batches_equal = all(
        np.array_equal(a, b)
        for step_a, step_b in zip(full, resumed, strict=True)
        for a, b in zip(step_a, step_b, strict=True)
    )
    return {
        "num_replicas": strategy.num_replicas_in_sync,
        "full": fingerprints(full_dir),
        "resumed": fingerprints(resumed_dir),
        "per_replica_batches_equal": batches_equal,
    }


def main():
    out = {name: run(name, tempfile.mkdtemp()) for name in sys.argv[1:]}
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()

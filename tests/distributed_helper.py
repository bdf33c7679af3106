"""Subprocess for distributed_test: one device vs MirroredStrategy on 2 logical CPUs.

Prints one JSON line {strategy: {"losses": {step: loss}, "weights": [...]}}.
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

from tfcp import distribute_utils, eval_loop, optimization, trainer  # noqa: E402


def train(strategy_name, model_dir):
    strategy = distribute_utils.build_strategy(distribution_strategy=strategy_name)
    tr = trainer.Trainer(
        model_dir=model_dir,
        task=toy_task.ToyTask(global_batch_size=8, hidden_units=4, num_eval_examples=11),
        train_steps=3,
        strategy=strategy,
        steps_per_loop=3,
        log_interval=1,
        checkpoint_interval=3,
        weight_decay=0.01,
        optimizer_fn=lambda: optimization.build_optimizer(learning_rate=0.2),
        image_summaries=False,
    )
    rng = np.random.default_rng(0)  # same initial weights for every strategy
    tr.model.set_weights([rng.normal(size=w.shape) * 0.5 for w in tr.model.get_weights()])
    tr.train()
    record = tr.evaluate_model(3)
    # The multi-worker gather (an all-gather of every replica's serialized outputs), here
    # over 2 local replicas with uneven and empty batches: the same metrics.
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: tr.task.build_inputs(False, ctx)
    )
    gathered, _ = eval_loop.evaluate(
        strategy, tr.task, tr.model, dataset, step=3, chief=True, gather=True
    )
    scalars = read_scalars(os.path.join(model_dir, "train"))
    return {
        "num_replicas": strategy.num_replicas_in_sync,
        "losses": scalars["total_loss"],
        "reg": scalars["regularization_loss"],
        "weights": [w.tolist() for w in tr.model.get_weights()],
        "eval": record,
        "eval_gathered": gathered,
    }


def main():
    out = {}
    base = tempfile.mkdtemp()
    for name in sys.argv[1:]:
        out[name] = train(name, os.path.join(base, name))
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()

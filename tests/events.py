"""Reads TensorBoard scalars written by tf.summary (test helper)."""

import glob
import os

import tensorflow as tf


def read_scalars(logdir):
    """Returns {tag: {step: value}} from all event files in `logdir`."""
    scalars = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "scalars":
                    continue
                scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return scalars

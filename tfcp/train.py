r"""Trains and/or evaluates a gin-configured task.

  python -m tfcp.train --gin_file=demo/maskrcnn_tiny_copy_paste.gin \
      --gin_bindings="TRAIN_STEPS=4" --model_dir=/tmp/m --mode=train_and_eval

Exit codes: 0 done; 1 error (bad gin config, missing checkpoint, NaN/Inf loss);
143 stopped by SIGTERM/SIGINT after writing a checkpoint (rerun the same command to resume).
"""

from __future__ import annotations

import sys

from tfcp import console

if __name__ == "__main__":
    console.setup()  # before TensorFlow is imported

import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from tfcp import distribute_utils, gin_utils, trainer  # noqa: E402
from tfcp.data import record_policy  # noqa: E402

PREEMPTED_EXIT_CODE = 143

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", [], "Gin config files (repo-relative or under gin_configs/).")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, e.g. 'TRAIN_STEPS=4'.")
flags.DEFINE_string("model_dir", None, "Checkpoints, summaries, config.gin, metrics.json.")
flags.DEFINE_enum("mode", "train", list(trainer.MODES), "What to run.")
flags.DEFINE_string("tpu", None, "TPU address ('local' on a TPU VM); selects TPUStrategy.")
flags.mark_flag_as_required("model_dir")


def main(argv):
    del argv
    try:
        gin_utils.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
    except gin_utils.GinConfigError as e:
        sys.exit(f"ERROR: {e}")
    strategy = None
    if FLAGS.tpu is not None:
        strategy = distribute_utils.build_strategy(distribution_strategy="tpu", tpu=FLAGS.tpu)
    try:
        result = trainer.run(
            FLAGS.model_dir,
            FLAGS.mode,
            gin_files=FLAGS.gin_file,
            gin_bindings=FLAGS.gin_bindings,
            strategy=strategy,
        )
    except tf.errors.InvalidArgumentError as e:  # e.g. a bad record met by the image summary
        bad = record_policy.as_bad_record_error(e)
        if bad is None:
            raise
        logging.error("%s", bad)
        sys.exit(f"ERROR: {bad}")
    except (FileNotFoundError, trainer.NonFiniteLossError, record_policy.BadRecordError) as e:
        logging.error("%s", e)
        sys.exit(f"ERROR: {e}")
    if result == trainer.PREEMPTED:
        sys.exit(PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
    app.run(main)

r"""Exports a trained tfcp model as a SavedModel for serving or for transfer.

  python export/export_saved_model.py --model_dir=/tmp/m --export_dir=/tmp/m/export \
      [--gin_file=F ...] [--gin_bindings=...] [--input_type=image_bytes] \
      [--checkpoint=PATH] [--mask_output=full|relative|both] [--feature_extractor] \
      [--overwrite]

Without --gin_file the configuration is the training run's own `model_dir/config.gin`
(written by `python -m tfcp.train`). With --gin_file (e.g. the training config), the
macros only training reads (`gin_utils.RUN_ONLY_MACROS`: TRAIN_FILES, EVAL_FILES,
TRAIN_STEPS / TRAIN_EPOCHS, ...) need no value: the unbound ones are bound to None, as
`export_dir/config.gin` records.

Writes `export_dir/` (saved_model.pb, variables/), `export_dir/config.gin` (operative gin
config) and `export_dir/export_info.json`. Exit code 0 on success, 1 on a clear error
(bad gin config, missing or incompatible checkpoint, non-empty export_dir).
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging

# Runnable as a script from any directory: make the repo's tfcp importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tfcp import console  # noqa: E402

if __name__ == "__main__":
    console.setup()  # before TensorFlow is imported: keeps TF's C++/absl noise out


from tfcp.serving import detection, export_lib  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_multi_string(
    "gin_file", [], "Gin config files (as for python -m tfcp.train); default MODEL_DIR/config.gin."
)
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, e.g. 'IMAGE_SIZE=256'.")
flags.DEFINE_string("model_dir", None, "Training directory; its latest checkpoint is exported.")
flags.DEFINE_string("export_dir", None, "Output SavedModel directory.")
flags.DEFINE_enum(
    "input_type", "image_tensor", list(detection.INPUT_TYPES), "serving_default input."
)
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix (or dir) instead of the latest.")
flags.DEFINE_enum(
    "mask_output",
    "full",
    list(detection.MASK_OUTPUTS),
    "full: uint8 [B,K,H,W] image masks; relative: float [B,K,m,m] box masks; both.",
)
flags.DEFINE_bool("feature_extractor", False, "Export backbone + FPN for fine-tuning.")
flags.DEFINE_bool("overwrite", False, "Replace a non-empty --export_dir.")
flags.mark_flags_as_required(["export_dir"])


def main(argv):
    del argv
    from tfcp import gin_utils  # noqa: PLC0415

    try:
        gin_files = export_lib.export_gin_files(FLAGS.gin_file, FLAGS.model_dir)
        placeholders = gin_utils.placeholder_bindings(gin_files, FLAGS.gin_bindings)
        if placeholders:
            logging.info("Not read by export, bound to None: %s", ", ".join(placeholders))
        info = export_lib.export_from_gin(
            gin_files,
            [*FLAGS.gin_bindings, *placeholders],
            model_dir=FLAGS.model_dir,
            export_dir=FLAGS.export_dir,
            checkpoint=FLAGS.checkpoint,
            input_type=FLAGS.input_type,
            mask_output=FLAGS.mask_output,
            feature_extractor=FLAGS.feature_extractor,
            overwrite=FLAGS.overwrite,
        )
    except (gin_utils.GinConfigError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"export_dir": FLAGS.export_dir, **info}))
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))

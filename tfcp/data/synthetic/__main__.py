r"""CLI: `python -m tfcp.data.synthetic` writes a generated COCO, VOC or LVIS dataset.

Usage:
  python -m tfcp.data.synthetic --output_dir=/tmp/coco --format=coco \
      [--num_train=64 --num_val=16 --image_size=256 --seed=0]
  python -m tfcp.data.synthetic --output_dir=/tmp/lvis --format=lvis \
      [--num_train=300 --num_val=50 --image_size=128 --seed=0]

Prints one JSON line: {"format", "paths", "stats", "seconds"}.
"""

from __future__ import annotations

from tfcp import console

if __name__ == "__main__":
    console.setup()  # before anything else is imported

import json  # noqa: E402
import time  # noqa: E402

from absl import app, flags  # noqa: E402

from tfcp.data.synthetic.coco import write_coco  # noqa: E402
from tfcp.data.synthetic.lvis import write_lvis  # noqa: E402
from tfcp.data.synthetic.voc import write_voc  # noqa: E402

FLAGS = flags.FLAGS
# (num_train, num_val, image_size) when the flags are not given. LVIS needs > 100 training
# images for its 'frequent' group to exist.
_SIZE_DEFAULTS = {"coco": (64, 16, 256), "voc": (64, 16, 256), "lvis": (300, 50, 128)}


def define_flags() -> None:
    flags.DEFINE_string("output_dir", None, "Root directory of the generated dataset.")
    flags.DEFINE_enum("format", "coco", ["coco", "voc", "lvis"], "Dataset file format.")
    flags.DEFINE_integer("num_train", None, "Training images (per VOC year). Default 64, LVIS 300.")
    flags.DEFINE_integer(
        "num_val", None, "Validation images (per VOC year; also VOC2007 test). Default 16, LVIS 50."
    )
    flags.DEFINE_integer("image_size", None, "Longer image side in pixels. Default 256, LVIS 128.")
    flags.DEFINE_integer("seed", 0, "Random seed; same flags -> byte-identical files.")
    flags.DEFINE_float("mean_instances", 6.0, "Mean objects drawn per image (not for LVIS).")
    flags.DEFINE_integer("max_instances", 15, "Most objects drawn per image.")
    flags.mark_flag_as_required("output_dir")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    start = time.perf_counter()
    stats: dict[str, int] = {}
    sizes = [
        default if value is None else value
        for value, default in zip(
            (FLAGS.num_train, FLAGS.num_val, FLAGS.image_size),
            _SIZE_DEFAULTS[FLAGS.format],
            strict=True,
        )
    ]
    kwargs = dict(max_instances=FLAGS.max_instances, stats=stats)
    if FLAGS.format == "lvis":
        if FLAGS["mean_instances"].present:
            raise app.UsageError("--mean_instances does not apply to --format=lvis")
        writer = write_lvis
    else:
        writer = write_coco if FLAGS.format == "coco" else write_voc
        kwargs["mean_instances"] = FLAGS.mean_instances
    paths = writer(FLAGS.output_dir, *sizes, FLAGS.seed, **kwargs)
    summary = {
        "format": FLAGS.format,
        "paths": paths,
        "stats": dict(sorted(stats.items())),
        "seconds": round(time.perf_counter() - start, 2),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    define_flags()
    app.run(main)

r"""Converts PASCAL VOC detection or segmentation data to sharded TFRecords.

Usage:
  python -m tfcp.data.create_voc_tfrecord --voc_root=data/VOCdevkit --year=2007+2012 \
    --split=trainval --task=detection --output_prefix=tfrecords/voc_trainval

Writes `{output_prefix}-00000-of-0000N.tfrecord` ..., `{output_prefix}_label_map.json`
and `{output_prefix}_summary.json`. See `tfcp.data.converters.voc` for the conventions
(box coordinates, class ids) and the handling of bad input.
"""

from __future__ import annotations

from absl import app, flags

from tfcp import console

if __name__ == "__main__":
    console.setup()  # before TensorFlow is imported

from tfcp.data.converters import cli  # noqa: E402
from tfcp.data.converters import voc as voc_converter  # noqa: E402

_VOC_ROOT = flags.DEFINE_string(
    "voc_root", None, "VOCdevkit folder (with VOC2007/ and/or VOC2012/)."
)
_YEAR = flags.DEFINE_enum("year", "2007", ["2007", "2012", "2007+2012"], "VOC year(s).")
_SPLIT = flags.DEFINE_enum("split", "trainval", list(voc_converter.SPLITS), "Image set.")
_TASK = flags.DEFINE_enum(
    "task", "detection", list(voc_converter.TASKS), "Boxes (detection) or class PNGs."
)


def main(argv):
    del argv
    return cli.run(
        lambda: voc_converter.convert_voc(
            _VOC_ROOT.value,
            _YEAR.value,
            _SPLIT.value,
            _TASK.value,
            cli.OUTPUT_PREFIX.value,
            cli.NUM_SHARDS.value,
            skip_bad_images=cli.SKIP_BAD_IMAGES.value,
            num_workers=cli.NUM_WORKERS.value,
        )
    )


if __name__ == "__main__":
    # Required here, not at definition, so that importing both CLIs (tests) works.
    flags.mark_flags_as_required(["voc_root", "output_prefix"])
    app.run(main)

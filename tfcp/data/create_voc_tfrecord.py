r"""Converts PASCAL VOC detection or segmentation data to sharded TFRecords.

Usage:
  python -m tfcp.data.create_voc_tfrecord --voc_root=data/VOCdevkit --year=2007+2012 \
    --split=trainval --task=detection --output_prefix=tfrecords/voc_trainval

Writes `{output_prefix}-00000-of-0000N.tfrecord` ..., `{output_prefix}_label_map.json`
and `{output_prefix}_summary.json`. See `tfcp.data.voc_converter` for the conventions
(box coordinates, class ids) and the handling of bad input.
"""

from __future__ import annotations

import sys

from absl import app, flags

from tfcp.data import voc_converter
from tfcp.data.tfrecord_io import ConversionError

_VOC_ROOT = flags.DEFINE_string(
    "voc_root", None, "VOCdevkit folder (with VOC2007/ and/or VOC2012/)."
)
_YEAR = flags.DEFINE_enum("year", "2007", ["2007", "2012", "2007+2012"], "VOC year(s).")
_SPLIT = flags.DEFINE_enum("split", "trainval", list(voc_converter.SPLITS), "Image set.")
_TASK = flags.DEFINE_enum(
    "task", "detection", list(voc_converter.TASKS), "Boxes (detection) or class PNGs."
)
# Flags shared by both converters: identical definitions with allow_override, so that
# both CLIs can be imported in one process (tests) without a DuplicateFlagError.
_OUTPUT_PREFIX = flags.DEFINE_string(
    "output_prefix", None, "Output path prefix of the shards.", allow_override=True
)
_NUM_SHARDS = flags.DEFINE_integer(
    "num_shards", 32, "Number of TFRecord files.", lower_bound=1, allow_override=True
)
_SKIP_BAD_IMAGES = flags.DEFINE_boolean(
    "skip_bad_images",
    False,
    "Skip (and count in the summary) missing, corrupt or wrongly sized image files "
    "instead of stopping.",
    allow_override=True,
)
_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers",
    None,
    "Conversion processes (default: number of CPUs; 0 = convert in the main process).",
    allow_override=True,
)


def main(argv):
    del argv
    try:
        summary = voc_converter.convert_voc(
            _VOC_ROOT.value,
            _YEAR.value,
            _SPLIT.value,
            _TASK.value,
            _OUTPUT_PREFIX.value,
            _NUM_SHARDS.value,
            skip_bad_images=_SKIP_BAD_IMAGES.value,
            num_workers=_NUM_WORKERS.value,
        )
    except ConversionError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    print(summary.format())
    return 0


if __name__ == "__main__":
    # Required here, not at definition, so that importing both CLIs (tests) works.
    flags.mark_flags_as_required(["voc_root", "output_prefix"])
    app.run(main)

r"""Converts a COCO or LVIS instances JSON and its images to sharded TFRecords.

Usage:
  python -m tfcp.data.create_coco_tfrecord --image_dir=coco/train2017 \
    --annotations_json=coco/annotations/instances_train2017.json \
    --output_prefix=tfrecords/train --num_shards=256

Writes `{output_prefix}-00000-of-00256.tfrecord` ..., `{output_prefix}_label_map.json`
and `{output_prefix}_summary.json` (and `{output_prefix}_lvis_info.json` for LVIS).
See `tfcp.data.coco_converter` for the conventions and the handling of bad input.
"""

from __future__ import annotations

import sys

from absl import app, flags

from tfcp.data import coco_converter
from tfcp.data.tfrecord_io import ConversionError

_IMAGE_DIR = flags.DEFINE_string("image_dir", None, "Folder of the images.")
_ANNOTATIONS_JSON = flags.DEFINE_string("annotations_json", None, "COCO or LVIS instances JSON.")
_INCLUDE_MASKS = flags.DEFINE_boolean("include_masks", True, "Write PNG instance masks.")
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
        summary = coco_converter.convert_coco(
            _IMAGE_DIR.value,
            _ANNOTATIONS_JSON.value,
            _OUTPUT_PREFIX.value,
            _NUM_SHARDS.value,
            include_masks=_INCLUDE_MASKS.value,
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
    flags.mark_flags_as_required(["image_dir", "annotations_json", "output_prefix"])
    app.run(main)

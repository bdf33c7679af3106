r"""Converts a COCO or LVIS instances JSON and its images to sharded TFRecords.

Usage:
  python -m tfcp.data.create_coco_tfrecord --image_dir=coco/train2017 \
    --annotations_json=coco/annotations/instances_train2017.json \
    --output_prefix=tfrecords/train --num_shards=256

Writes `{output_prefix}-00000-of-00256.tfrecord` ..., `{output_prefix}_label_map.json`
and `{output_prefix}_summary.json` (and `{output_prefix}_lvis_info.json` for LVIS).
See `tfcp.data.converters.coco` for the conventions and the handling of bad input.
"""

from __future__ import annotations

from absl import app, flags

from tfcp import console

if __name__ == "__main__":
    console.setup()  # before TensorFlow is imported

from tfcp.data.converters import cli  # noqa: E402
from tfcp.data.converters import coco as coco_converter  # noqa: E402

_IMAGE_DIR = flags.DEFINE_string("image_dir", None, "Folder of the images.")
_ANNOTATIONS_JSON = flags.DEFINE_string("annotations_json", None, "COCO or LVIS instances JSON.")
_INCLUDE_MASKS = flags.DEFINE_boolean("include_masks", True, "Write PNG instance masks.")


def main(argv):
    del argv
    return cli.run(
        lambda: coco_converter.convert_coco(
            _IMAGE_DIR.value,
            _ANNOTATIONS_JSON.value,
            cli.OUTPUT_PREFIX.value,
            cli.NUM_SHARDS.value,
            include_masks=_INCLUDE_MASKS.value,
            skip_bad_images=cli.SKIP_BAD_IMAGES.value,
            num_workers=cli.NUM_WORKERS.value,
        )
    )


if __name__ == "__main__":
    # Required here, not at definition, so that importing both CLIs (tests) works.
    flags.mark_flags_as_required(["image_dir", "annotations_json", "output_prefix"])
    app.run(main)

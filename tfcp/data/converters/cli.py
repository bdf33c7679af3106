"""Flags and the run wrapper shared by the TFRecord converter CLIs.

`create_coco_tfrecord` and `create_voc_tfrecord` both import this module, so the shared
flags are defined once per process (both CLIs can be imported together, e.g. in tests).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import flags

from tfcp.data.converters.tfrecord_io import ConversionError, ConversionSummary

OUTPUT_PREFIX = flags.DEFINE_string("output_prefix", None, "Output path prefix of the shards.")
NUM_SHARDS = flags.DEFINE_integer("num_shards", 32, "Number of TFRecord files.", lower_bound=1)
SKIP_BAD_IMAGES = flags.DEFINE_boolean(
    "skip_bad_images",
    False,
    "Skip (and count in the summary) missing, corrupt or wrongly sized image files "
    "instead of stopping.",
)
NUM_WORKERS = flags.DEFINE_integer(
    "num_workers",
    None,
    "Conversion processes (default: number of CPUs; 0 = convert in the main process).",
)


def run(convert: Callable[[], ConversionSummary]) -> int:
    """Runs a conversion: prints its summary (exit code 0) or the error (exit code 1)."""
    try:
        summary = convert()
    except ConversionError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    print(summary.format())
    return 0

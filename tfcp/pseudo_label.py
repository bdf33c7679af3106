r"""Pseudo-labels a folder of unlabeled images with an exported detection SavedModel.

  python -m tfcp.pseudo_label --saved_model=E --image_dir=U --output_json=P.json \
      [--image_glob='*.jpg'] [--score_threshold=0.5] [--max_detections=100] \
      [--batch_size=8] [--overwrite]

Step 2 of self-training Copy-Paste (paper Sec. 4.4): the teacher exported by
`export/export_saved_model.py` (`detection_masks` = full-image masks, i.e.
`--mask_output=full` or `both`; any input type) labels the images, and the output is a
COCO instances JSON that `python -m tfcp.data.create_coco_tfrecord --image_dir=U
--annotations_json=P.json` converts like any COCO file:

- `images`: `id`, `file_name` (relative to image_dir, '/'-separated), `height`, `width`;
  one entry per image that decodes, with or without annotations.
- `categories`: the export's label map (`export_info.json` `label_map`); an export without
  one gets `class_<id>` for ids 1 .. num_classes - 1.
- `annotations`: `id`, `image_id`, `category_id`, `segmentation` (compressed RLE of the
  full-image mask; foreground = nonzero, the export's 0/1 masks are already binarized at
  the evaluator's 0.5), `bbox` [x, y, w, h] in pixels (the export's clipped box), `area`
  (pycocotools mask area), `iscrowd` 0 and the extra field `score`. Kept: score >=
  score_threshold, category in the label map, non-empty mask and box, the
  `max_detections` highest scores per image. Dropped detections are counted per reason in
  `info.detections_dropped`.
- `info`: the settings, `num_images_failed` and `failed_images` [{file_name, error}].

Images are the files matching `image_glob` in image_dir (default: *.jpg, *.jpeg, *.png in
any case), in sorted order. Image ids: the file names' numbers when every name is a
distinct positive integer (COCO unlabeled2017: 000000000008.jpg -> 8), else the 1-based
position in the sorted list. A file that is not a JPEG/PNG that both PIL and TensorFlow
decode (what the converter accepts) is counted, listed, reported on stderr and skipped.

Resume: every batch is appended to `P.json.partial` (JSON lines: a settings header, then
one line per image) and flushed to disk before the next starts. A rerun with the same
settings skips the images found there (a line torn by the kill is dropped and redone);
other settings are refused. The final JSON is written to a temporary file and renamed, then
the partial file is removed. The output is the same for any batch size and any number of
interruptions.

Library: `pseudo_label(...)` (re-exported here) in `tfcp.self_training.pseudo_label`, with
`tfcp.self_training.coco_labels` (detections -> COCO) and `.partial_file` (the sidecar).
Exit code 0 with a JSON summary line on stdout; 1 with `error: ...` on a clear error.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from absl import app, flags

from tfcp import console

if __name__ == "__main__":
    console.setup()  # before TensorFlow is imported

from tfcp.self_training.pseudo_label import Summary, pseudo_label  # noqa: E402

__all__ = ["Summary", "pseudo_label"]


# ------------------------------------------------------------------------------- CLI
FLAGS = flags.FLAGS


def _define_flags():
    flags.DEFINE_string("saved_model", None, "Exported detection SavedModel (full-image masks).")
    flags.DEFINE_string("image_dir", None, "Folder of the unlabeled images.")
    flags.DEFINE_string(
        "image_glob", None, "File pattern inside --image_dir (default: *.jpg, *.jpeg, *.png)."
    )
    flags.DEFINE_string("output_json", None, "COCO instances JSON to write.")
    flags.DEFINE_float("score_threshold", 0.5, "Keep detections with at least this score.")
    flags.DEFINE_integer("max_detections", 100, "Keep at most this many per image.", lower_bound=0)
    flags.DEFINE_integer("batch_size", 8, "Images per model call.", lower_bound=1)
    flags.DEFINE_bool("overwrite", False, "Replace an existing --output_json.")
    flags.mark_flags_as_required(["saved_model", "image_dir", "output_json"])


def main(argv) -> int:
    del argv
    try:
        summary = pseudo_label(
            FLAGS.saved_model,
            FLAGS.image_dir,
            FLAGS.output_json,
            image_glob=FLAGS.image_glob,
            score_threshold=FLAGS.score_threshold,
            max_detections=FLAGS.max_detections,
            batch_size=FLAGS.batch_size,
            overwrite=FLAGS.overwrite,
        )
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if summary.failed_images:
        print(f"{summary.images_failed} images failed to decode and were skipped:", file=sys.stderr)
        for failed in summary.failed_images:
            print(f"  {failed['file_name']}: {failed['error']}", file=sys.stderr)
    result = dataclasses.asdict(summary)
    del result["failed_images"]  # listed above and in the JSON's info
    result["seconds"] = round(result["seconds"], 3)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    _define_flags()
    app.run(lambda argv: sys.exit(main(argv)))

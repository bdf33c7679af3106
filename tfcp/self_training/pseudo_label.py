"""Pseudo-labeling driver: exported detector -> per-batch records -> COCO JSON.

The library behind `python -m tfcp.pseudo_label` (its docstring documents the command, the
output and the resume rules). `pseudo_label(...)` is the entry point; `Detector` wraps the
SavedModel's `serving_default` signature (`tfcp.serving.detection`) for every input type.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import tensorflow as tf

from tfcp.data import decoder, schema
from tfcp.data.converters.tfrecord_io import Progress
from tfcp.self_training import coco_labels
from tfcp.self_training.partial_file import PARTIAL_SUFFIX, PartialFile

INFO_FILE = "export_info.json"


class Detector:
    """A loaded detection SavedModel with full-image masks (tfcp's export)."""

    def __init__(self, saved_model_dir: str):
        """Loads `saved_model_dir` and its `export_info.json`.

        Raises:
          FileNotFoundError: no SavedModel or no export_info.json.
          ValueError: not a detection export, or one without `detection_masks`.
        """
        info_path = os.path.join(saved_model_dir, INFO_FILE)
        if not tf.saved_model.contains_saved_model(saved_model_dir):
            raise FileNotFoundError(f"{saved_model_dir!r} holds no SavedModel")
        if not tf.io.gfile.exists(info_path):
            raise FileNotFoundError(f"{info_path!r} is missing (export with tfcp's exporter)")
        with tf.io.gfile.GFile(info_path) as f:
            info = json.load(f)
        if info.get("kind", "detection") != "detection":
            raise ValueError(f"{saved_model_dir!r} is a {info['kind']} export, not a detector")
        self.input_type = info["input_type"]
        self._signature = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
        if "detection_masks" not in self._signature.structured_outputs:
            raise ValueError(
                f"{saved_model_dir!r} has no full-image detection_masks output: export it "
                "with --mask_output=full (or both)"
            )
        (self._input_name,) = self._signature.structured_input_signature[1].keys()
        label_map = info.get("label_map") or {
            str(i): f"class_{i}" for i in range(1, int(info.get("num_classes", 1)))
        }
        self.categories = [
            {"id": int(k), "name": str(v)}
            for k, v in sorted(label_map.items(), key=lambda x: int(x[0]))
        ]
        if not self.categories:
            raise ValueError(f"{info_path!r} has neither a label_map nor num_classes > 1")

    def _call(self, feed: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._signature(**{self._input_name: feed})

    def detect(self, encoded: Sequence[bytes]) -> list[tuple[dict[str, tf.Tensor], int]]:
        """Runs the model on a batch of encoded images.

        Args:
          encoded: B JPEG/PNG files' bytes (any sizes).

        Returns:
          Per image, (outputs, b): the serving outputs holding it (`detection_boxes`
          float32 [B', K, 4] input pixels, `detection_scores` [B', K], `detection_classes`
          int32 [B', K], `num_detections` [B'], `detection_masks` uint8 [B', K, H', W'],
          image in the top-left corner) and its index b in them. `image_tensor` exports
          get one call per distinct image size.

        Raises:
          tf.errors.InvalidArgumentError: an image TensorFlow cannot decode (or a model
            error).
        """
        if self.input_type == "image_tensor":
            images = [decoder.decode_image(tf.constant(e)) for e in encoded]
            groups = collections.defaultdict(list)
            for i, image in enumerate(images):
                groups[tuple(image.shape[:2])].append(i)
            result = [None] * len(encoded)
            for members in groups.values():
                outputs = self._call(tf.stack([images[i] for i in members]))
                for b, i in enumerate(members):
                    result[i] = (outputs, b)
            return result
        if self.input_type == "image_bytes":
            feed = tf.constant(list(encoded))
        else:
            feed = tf.constant(
                [
                    # Serving reads image/encoded only.
                    schema.make_example(
                        encoded_image=e, image_format="", height=0, width=0, source_id=""
                    ).SerializeToString()
                    for e in encoded
                ]
            )
        outputs = self._call(feed)
        return [(outputs, b) for b in range(len(encoded))]


# ---------------------------------------------------------------------------- driver
@dataclasses.dataclass
class Summary:
    """What a `pseudo_label` run did."""

    output_json: str
    images_total: int = 0  # files matched
    images_labeled: int = 0  # in the output JSON (with or without annotations)
    images_resumed: int = 0  # done by an interrupted earlier run
    images_failed: int = 0  # not decodable, listed in info.failed_images
    failed_images: list[dict[str, str]] = dataclasses.field(default_factory=list)
    annotations: int = 0
    seconds: float = 0.0


def _settings(saved_model_dir, image_dir, image_glob, score_threshold, max_detections):
    return {
        "saved_model": os.path.abspath(saved_model_dir),
        "image_dir": os.path.abspath(image_dir),
        "image_glob": image_glob,
        "score_threshold": float(score_threshold),
        "max_detections": int(max_detections),
    }


def _tf_decode_error(encoded: bytes) -> str:
    """TensorFlow's decoder's error message for the bytes ('' if they decode)."""
    try:
        decoder.decode_image(tf.constant(encoded))
    except tf.errors.InvalidArgumentError as error:
        return error.message
    return ""


def label_batch(
    detector: Detector,
    image_dir: str,
    names: Sequence[str],
    warn: Callable[[str], None],
    **annotate_args,
) -> list[dict[str, Any]]:
    """Labels one batch of files.

    Args:
      detector: the loaded model.
      image_dir: the image folder.
      names: file names relative to `image_dir`.
      warn: called once for each file that cannot be decoded.
      **annotate_args: `coco_labels.annotate`'s keyword arguments.

    Returns:
      One record per name, in order: `{"file_name", "height", "width", "annotations",
      "dropped"}`, or `{"file_name", "error"}` for a file that does not decode.

    Raises:
      tf.errors.OpError: the model fails on images that decode.
    """
    records, good = {}, []
    for name in names:
        with tf.io.gfile.GFile(os.path.join(image_dir, name), "rb") as f:
            encoded = f.read()
        try:
            height, width = coco_labels.check_image(encoded)
        except ValueError as error:
            records[name] = {"file_name": name, "error": str(error)}
        else:
            good.append((name, encoded, height, width))
    try:
        detected = detector.detect([g[1] for g in good]) if good else []
    except tf.errors.InvalidArgumentError:
        # Bytes that PIL reads but TensorFlow's decoder refuses: set them apart, rerun.
        errors = {g[0]: _tf_decode_error(g[1]) for g in good}
        if not any(errors.values()):
            raise  # the model itself failed
        records.update((n, {"file_name": n, "error": e}) for n, e in errors.items() if e)
        good = [g for g in good if not errors[g[0]]]
        detected = detector.detect([g[1] for g in good]) if good else []
    for (name, _, height, width), (outputs, b) in zip(good, detected, strict=True):
        annotations, dropped = coco_labels.annotate(outputs, b, height, width, **annotate_args)
        records[name] = {
            "file_name": name,
            "height": height,
            "width": width,
            "annotations": annotations,
            "dropped": dict(sorted(dropped.items())),
        }
    for name in names:
        if "error" in records[name]:
            path = os.path.join(image_dir, name)
            warn(f"{path}: cannot decode ({records[name]['error']}); skipped")
    return [records[name] for name in names]


def pseudo_label(
    saved_model_dir: str,
    image_dir: str,
    output_json: str,
    *,
    image_glob: str | None = None,
    score_threshold: float = 0.5,
    max_detections: int = 100,
    batch_size: int = 8,
    overwrite: bool = False,
    progress_stream: TextIO | None = None,
    warn: Callable[[str], None] | None = None,
    after_batch: Callable[[int], None] | None = None,
) -> Summary:
    """Labels the images of `image_dir` and writes `output_json` (module docstring).

    Args:
      saved_model_dir: detection SavedModel with full-image masks.
      image_dir: folder of the unlabeled images.
      output_json: the COCO JSON to write; `output_json + '.partial'` while running.
      image_glob: file pattern inside `image_dir` (default: JPEG/PNG extensions).
      score_threshold: minimum detection score kept.
      max_detections: maximum annotations per image.
      batch_size: images per model call (does not change the output).
      overwrite: replace an existing `output_json` (an unfinished run is still resumed).
      progress_stream: where the progress line goes (stderr by default).
      warn: called with each warning (undecodable image, torn line); default stderr.
      after_batch: called with the number of images finished after each flushed batch.

    Returns:
      The `Summary`.

    Raises:
      FileNotFoundError, FileExistsError, ValueError, RuntimeError: bad arguments, an
        existing output, a partial file of other settings or in use.
    """
    start = time.monotonic()
    if batch_size < 1 or max_detections < 0:
        raise ValueError(
            f"need batch_size >= 1 and max_detections >= 0, got {batch_size}, {max_detections}"
        )
    warn = warn or (lambda message: print(f"WARNING: {message}", file=sys.stderr))
    partial_path = output_json + PARTIAL_SUFFIX
    if os.path.exists(output_json) and not overwrite and not os.path.exists(partial_path):
        raise FileExistsError(
            f"--output_json={output_json!r} exists; pass --overwrite to replace it"
        )
    names = coco_labels.list_images(image_dir, image_glob)
    detector = Detector(saved_model_dir)
    settings = _settings(saved_model_dir, image_dir, image_glob, score_threshold, max_detections)
    os.makedirs(os.path.dirname(os.path.abspath(output_json)), exist_ok=True)
    partial = PartialFile(partial_path, settings, warn)
    try:
        todo = [n for n in names if n not in partial.records]
        summary = Summary(
            output_json, images_total=len(names), images_resumed=len(names) - len(todo)
        )
        if summary.images_resumed:
            print(
                f"resuming {partial_path}: {summary.images_resumed} of {len(names)} images done",
                file=progress_stream or sys.stderr,
            )
        progress = Progress(len(todo), name="pseudo_label", stream=progress_stream)
        annotate_args = {
            "score_threshold": float(score_threshold),
            "max_detections": int(max_detections),
            "category_ids": {c["id"] for c in detector.categories},
        }
        for i in range(0, len(todo), batch_size):
            batch = todo[i : i + batch_size]
            partial.add(label_batch(detector, image_dir, batch, warn, **annotate_args))
            progress.update(len(batch))
            if after_batch is not None:
                after_batch(i + len(batch))
        progress.close()
        result = coco_labels.coco_json(names, partial.records, detector.categories, settings)
        tmp_path = f"{output_json}.tmp-{os.getpid()}"
        with open(tmp_path, "w") as f:
            json.dump(result, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, output_json)
        os.remove(partial_path)
    finally:
        partial.close()
    summary.images_labeled = len(result["images"])
    summary.images_failed = result["info"]["num_images_failed"]
    summary.failed_images = result["info"]["failed_images"]
    summary.annotations = len(result["annotations"])
    summary.seconds = time.monotonic() - start
    return summary

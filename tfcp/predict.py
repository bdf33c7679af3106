r"""Runs an exported detection SavedModel on image files and draws the predictions.

  python -m tfcp.predict --saved_model=/tmp/m/export --image=photo.jpg --output=pred.png \
      [--min_score=0.5] [--display_size=384]

Library: `Predictor(saved_model_dir).predict_file(path)` returns the detections of one
image as numpy (only the first `num_detections`, scores >= min_score), `draw_file` draws
them on the image (masks, boxes, class names from `export_info.json`'s label map), and
`predictions_grid` tiles several images for `python -m tfcp.visualize --mode=predictions`.
The SavedModel's input type (`export_info.json`) decides what is fed: the decoded pixels
(`image_tensor`), the file's bytes as they are (`image_bytes`) or a tf.Example holding
them (`tf_example`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
from absl import app, flags
from PIL import Image

from tfcp import console

if __name__ == "__main__":
    console.setup()  # before TensorFlow is imported

import tensorflow as tf  # noqa: E402

from tfcp import draw  # noqa: E402
from tfcp.data import decoder, schema  # noqa: E402

INFO_FILE = "export_info.json"


class Predictor:
    """A loaded detection SavedModel (see the module docstring)."""

    def __init__(self, saved_model_dir: str):
        """Loads `saved_model_dir` (written by export/export_saved_model.py).

        Raises:
          FileNotFoundError: no SavedModel or no export_info.json in the directory.
          ValueError: the SavedModel is a feature extractor, not a detector.
        """
        info_path = os.path.join(saved_model_dir, INFO_FILE)
        if not tf.saved_model.contains_saved_model(saved_model_dir):
            raise FileNotFoundError(f"{saved_model_dir!r} holds no SavedModel")
        if not tf.io.gfile.exists(info_path):
            raise FileNotFoundError(f"{info_path!r} is missing (export with tfcp's exporter)")
        with tf.io.gfile.GFile(info_path) as f:
            self.info = json.load(f)
        if self.info.get("kind", "detection") != "detection":
            raise ValueError(f"{saved_model_dir!r} is a {self.info['kind']} export, not a detector")
        self.input_type = self.info["input_type"]
        label_map = self.info.get("label_map") or {}
        self.class_names = {int(k): v for k, v in label_map.items()} or None
        self._signature = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
        (self._input_name,) = self._signature.structured_input_signature[1].keys()

    def predict_encoded(self, encoded: bytes, min_score: float = 0.0) -> dict[str, np.ndarray]:
        """Detections of one encoded (JPEG/PNG/...) image.

        Args:
          encoded: the image file's bytes.
          min_score: detections below it are dropped.

        Returns:
          numpy dict: `image` uint8 [H, W, 3] (decoded), `boxes` float32 [N, 4] pixels
          (ymin, xmin, ymax, xmax), `scores` [N], `classes` int32 [N] and, if exported,
          `masks` uint8 [N, H, W].
        """
        image = decoder.decode_image(tf.constant(encoded))
        if self.input_type == "image_tensor":
            feed = image[tf.newaxis]
        elif self.input_type == "image_bytes":
            feed = tf.constant([encoded])
        else:
            height, width = image.shape[:2]
            example = schema.make_example(
                encoded_image=encoded, image_format="", height=height, width=width, source_id=""
            )
            feed = tf.constant([example.SerializeToString()])
        outputs = self._signature(**{self._input_name: feed})
        num = int(outputs["num_detections"][0])
        scores = outputs["detection_scores"][0, :num].numpy()
        keep = np.nonzero(scores >= min_score)[0]
        result = {
            "image": image.numpy(),
            "boxes": outputs["detection_boxes"][0].numpy()[keep],
            "scores": scores[keep],
            "classes": outputs["detection_classes"][0].numpy()[keep],
        }
        if "detection_masks" in outputs:
            height, width = result["image"].shape[:2]
            result["masks"] = outputs["detection_masks"][0].numpy()[keep][:, :height, :width]
        return result

    def predict_file(self, path: str, min_score: float = 0.0) -> dict[str, np.ndarray]:
        """`predict_encoded` of the file at `path` (error names the file)."""
        with tf.io.gfile.GFile(path, "rb") as f:
            encoded = f.read()
        try:
            return self.predict_encoded(encoded, min_score)
        except tf.errors.InvalidArgumentError as error:
            raise ValueError(f"{path}: not a decodable image ({error.message})") from error

    def draw(self, result: dict[str, np.ndarray], size: int | None = None) -> np.ndarray:
        """A `predict_*` result drawn on its image.

        Args:
          result: a `predict_*` result.
          size: the longer side of the drawing (None: the image's own size). The image is
            scaled before drawing (`draw.render`), so labels and outlines stay sharp.

        Returns:
          uint8 [H', W', 3], the image's aspect ratio.
        """
        return draw.render(
            result["image"],
            result["boxes"],
            result["classes"],
            result.get("masks"),
            size=size or max(result["image"].shape[:2]),
            scores=result["scores"],
            class_names=self.class_names,
        )

    def draw_file(self, path: str, min_score: float = 0.5, size: int | None = None) -> np.ndarray:
        """uint8 [H', W', 3]: the image at `path` with its predictions drawn (see `draw`)."""
        return self.draw(self.predict_file(path, min_score), size)


def predictions_grid(
    saved_model_dir: str,
    image_paths: Sequence[str],
    *,
    min_score: float = 0.5,
    tile_size: int = draw.DEFAULT_TILE_SIZE,
    columns: int = 4,
) -> np.ndarray:
    """A grid of drawn predictions, one square tile per image.

    Args:
      saved_model_dir: the exported detection SavedModel.
      image_paths: image files.
      min_score: detections below it are not drawn.
      tile_size: tile side in pixels; each image is scaled so its longer side fills the tile,
        then drawn (0: the first image's longer side).
      columns: tiles per grid row.

    Returns:
      uint8 grid of `tile_size` tiles (`draw.make_grid`); white around non-square images.
    """
    if not image_paths:
        raise ValueError("predictions_grid: no images given")
    predictor = Predictor(saved_model_dir)
    results = [predictor.predict_file(p, min_score) for p in image_paths]
    tile_size = tile_size or max(results[0]["image"].shape[:2])
    tiles = [draw.fit_tile(predictor.draw(r, tile_size), tile_size) for r in results]
    return draw.make_grid(tiles, columns=columns)


FLAGS = flags.FLAGS


def _define_flags():
    flags.DEFINE_string("saved_model", None, "Exported detection SavedModel directory.")
    flags.DEFINE_string("image", None, "Input image (JPEG/PNG).")
    flags.DEFINE_string("output", "pred.png", "Output PNG.")
    flags.DEFINE_float("min_score", 0.5, "Draw detections with at least this score.")
    flags.DEFINE_integer(
        "display_size",
        draw.DEFAULT_TILE_SIZE,
        "The drawing's longer side is at least this many pixels (smaller images are scaled "
        "up before drawing; 0: the image's own size).",
    )
    flags.mark_flags_as_required(["saved_model", "image"])


def main(argv) -> None:
    del argv
    predictor = Predictor(FLAGS.saved_model)
    result = predictor.predict_file(FLAGS.image, FLAGS.min_score)
    size = max(*result["image"].shape[:2], FLAGS.display_size)
    Image.fromarray(predictor.draw(result, size)).save(FLAGS.output)
    print(
        json.dumps(
            {"output": FLAGS.output, "detections": len(result["scores"]), "image": FLAGS.image}
        )
    )


if __name__ == "__main__":
    _define_flags()
    app.run(main)

"""tfcp.predict on SavedModels of a stubbed detector (hand-checkable, fast to export)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf
from PIL import Image

from tfcp import draw, predict
from tfcp.data import schema
from tfcp.serving import detection, export_lib

S = 128
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _StubModel:
    """Two fixed detections (model-frame pixels) with all-one masks, scores 0.9 and 0.5."""

    variables = []

    def call(self, images, image_shape, anchor_boxes=None, training=False):
        del image_shape, anchor_boxes, training
        batch = tf.shape(images)[0]
        boxes = tf.constant([[32.0, 64.0, 64.0, 128.0], [0.0, 0.0, 16.0, 16.0]])
        tile = lambda x: tf.tile(x[tf.newaxis], [batch] + [1] * len(x.shape))
        return {
            "detection_boxes": tile(boxes),
            "detection_scores": tile(tf.constant([0.9, 0.5])),
            "detection_classes": tile(tf.constant([1, 2], tf.int32)),
            "num_detections": tf.fill([batch], 2),
            "detection_masks": tf.ones([batch, 2, 28, 28]),
        }


def _export(directory, input_type):
    preprocess = functools.partial(export_lib.eval_preprocess, image_size=(S, S), pad_value=128)
    module = detection.DetectionModule(_StubModel(), preprocess, (S, S))
    tf.saved_model.save(
        module, directory, signatures={"serving_default": module.concrete_function(input_type)}
    )
    info = {"kind": "detection", "input_type": input_type, "label_map": {"1": "cat"}}
    export_lib.write_sidecars(directory, info)


class PredictTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp()
        cls.dirs = {}
        for input_type in detection.INPUT_TYPES:
            cls.dirs[input_type] = os.path.join(cls.tmp, input_type)
            _export(cls.dirs[input_type], input_type)
        cls.image_path = os.path.join(cls.tmp, "gray.png")
        with open(cls.image_path, "wb") as f:
            f.write(schema.encode_png(np.full([100, 200, 3], 100, np.uint8)))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def test_every_input_type_predicts_the_same(self):
        for input_type, directory in self.dirs.items():
            result = predict.Predictor(directory).predict_file(self.image_path)
            # 100 x 200 -> scale 0.64: model box (32, 64, 64, 128) -> (50, 100, 100, 200).
            self.assertAllClose(result["boxes"][0], [50, 100, 100, 200], atol=1e-3, msg=input_type)
            self.assertAllEqual(result["classes"], [1, 2])
            self.assertEqual(result["masks"].shape, (2, 100, 200))
            self.assertEqual(result["image"].shape, (100, 200, 3))

    def test_min_score_filters(self):
        predictor = predict.Predictor(self.dirs["image_bytes"])
        result = predictor.predict_file(self.image_path, min_score=0.7)
        self.assertAllClose(result["scores"], [0.9])
        self.assertEqual(result["masks"].shape, (1, 100, 200))
        self.assertEqual(predictor.class_names, {1: "cat"})

    def test_draw_tints_the_mask_and_leaves_the_rest(self):
        drawn = predict.Predictor(self.dirs["image_tensor"]).draw_file(self.image_path, 0.7)
        self.assertEqual(drawn.shape, (100, 200, 3))
        self.assertAllEqual(drawn[20, 20], [100, 100, 100])  # outside every detection
        self.assertNotAllEqual(drawn[75, 150], [100, 100, 100])  # inside the kept mask

    def test_corrupt_file_names_the_file(self):
        path = os.path.join(self.tmp, "broken.jpg")
        with open(path, "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 not a jpeg")
        with self.assertRaisesRegex(ValueError, "broken.jpg"):
            predict.Predictor(self.dirs["image_bytes"]).predict_file(path)

    def test_not_a_detector(self):
        with self.assertRaisesRegex(FileNotFoundError, "no SavedModel"):
            predict.Predictor(self.tmp)

    def test_predictions_grid_tiles_are_readable(self):
        """Default 384 px tiles: the 100x200 image is drawn 192x384, white below it."""
        grid = predict.predictions_grid(
            self.dirs["image_bytes"], [self.image_path] * 3, min_score=0.7, columns=2
        )
        self.assertEqual(grid.dtype, np.uint8)
        self.assertEqual(grid.shape, (2 * 384 + 4, 2 * 384 + 4, 3))
        tile = grid[:384, :384]
        self.assertTrue((tile[192:] == 255).all())  # padding below the image
        self.assertTrue((grid[388:, 388:] == 255).all())  # the empty fourth cell
        # Kept detection (50, 100, 100, 200) x 1.92 = (96, 192, 192, 384), all-one mask:
        # gray 100 tinted with the first instance color inside, gray outside.
        red = np.asarray(draw.color(0))
        self.assertAllClose(tile[150, 300], np.round(100 * 0.55 + red * 0.45), atol=1)
        self.assertAllEqual(tile[20, 20], [100, 100, 100])
        # Its label "cat 0.90" right above the box: a 16 px font on the instance color.
        label = tile[:96, 193:300]
        label_rows = np.nonzero((label[:, 0] == red).all(-1))[0]
        self.assertGreaterEqual(len(label_rows), 12)
        self.assertGreater((label > 200).all(-1).sum(), 40)  # white text
        small = predict.predictions_grid(self.dirs["image_bytes"], [self.image_path], tile_size=64)
        self.assertEqual(small.shape, (64, 64, 3))

    def test_cli_writes_png(self):
        output = os.path.join(self.tmp, "pred.png")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "tfcp.predict",
                f"--saved_model={self.dirs['image_bytes']}",
                f"--image={self.image_path}",
                f"--output={output}",
                "--min_score=0.7",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        self.assertEqual(result.returncode, 0, msg=result.stderr[-2000:])
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertEqual(summary["detections"], 1)
        self.assertEqual(Image.open(output).format, "PNG")
        self.assertEqual(Image.open(output).size, (384, 192))  # drawn at >= 384 px


if __name__ == "__main__":
    tf.test.main()

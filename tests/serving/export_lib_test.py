"""Exports a tiny Mask R-CNN once, loads it back and checks the serving contract."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import gin
import numpy as np
import tensorflow as tf
import tf_keras

from tests.serving.evaluator_masks import evaluator_masks
from tfcp.data import schema
from tfcp.modeling import factory
from tfcp.serving import export_lib

S = 128
TINY = dict(
    num_classes=4,
    image_size=S,
    model_id=18,
    decoder_num_filters=32,
    rpn_head_num_filters=32,
    detection_head_num_filters=32,
    detection_head_fc_dims=64,
    mask_head_num_filters=32,
    test_rpn_pre_nms_top_k=200,
    test_num_proposals=50,
    max_num_detections=8,
    detection_score_threshold=0.0,
    use_sync_bn=False,
)
EXPECTED_OUTPUTS = [
    "detection_boxes",
    "detection_classes",
    "detection_masks",
    "detection_masks_relative",
    "detection_scores",
    "num_detections",
]


def _image(height, width, seed):
    return np.random.RandomState(seed).randint(0, 256, [height, width, 3]).astype(np.uint8)


def _example(image):
    return schema.make_example(
        encoded_image=schema.encode_png(image),
        image_format="png",
        height=image.shape[0],
        width=image.shape[1],
        source_id="x",
    ).SerializeToString()


class ExportLibTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        gin.clear_config()
        tf_keras.utils.set_random_seed(1)
        cls.tmp = tempfile.mkdtemp()
        cls.model = factory.build_maskrcnn(**TINY)
        cls.export_dir = os.path.join(cls.tmp, "export")
        cls.info = export_lib.export_model(
            cls.model,
            cls.export_dir,
            input_type="image_bytes",
            mask_output="both",
            info={"label_map": {1: "a"}},
        )
        cls.loaded = tf.saved_model.load(cls.export_dir)
        cls.serve = cls.loaded.signatures["serving_default"]
        cls.module = export_lib.detection.DetectionModule(
            cls.model,
            lambda image: export_lib.eval_preprocess(image, image_size=(S, S), pad_value=128),
            (S, S),
            mask_output="both",
        )

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        gin.clear_config()

    def test_sidecar_files(self):
        with open(os.path.join(self.export_dir, export_lib.INFO_FILE)) as f:
            info = json.load(f)
        self.assertEqual(info["input_type"], "image_bytes")
        self.assertEqual(info["image_size"], [S, S])
        self.assertEqual(info["num_classes"], 4)
        self.assertEqual(info["label_map"], {"1": "a"})
        self.assertEqual(info["outputs"], EXPECTED_OUTPUTS)
        self.assertTrue(os.path.isfile(os.path.join(self.export_dir, export_lib.CONFIG_FILE)))
        leftovers = [n for n in os.listdir(self.tmp) if n.startswith(".export-")]
        self.assertEqual(leftovers, [])

    def test_loaded_signature_matches_in_memory_module(self):
        images = [_image(96, 128, 0), _image(70, 50, 1)]
        encoded = tf.constant([schema.encode_png(i) for i in images])
        loaded = self.serve(encoded_images=encoded)
        direct = self.module.serve_image_bytes(encoded)
        self.assertCountEqual(loaded.keys(), EXPECTED_OUTPUTS)
        self.assertGreater(int(direct["num_detections"][0]), 0)
        for key in ("detection_boxes", "detection_scores", "detection_masks_relative"):
            self.assertAllClose(loaded[key], direct[key], atol=1e-3, msg=key)
        for key in ("detection_classes", "num_detections"):
            self.assertAllEqual(loaded[key], direct[key], msg=key)
        self.assertEqual(loaded["detection_masks"].shape, (2, 8, 96, 128))
        differ = np.mean(loaded["detection_masks"].numpy() != direct["detection_masks"].numpy())
        self.assertLess(differ, 1e-3)

    def test_every_input_type_gives_the_same_detections(self):
        image = _image(80, 112, 2)
        by_tensor = self.module.serve_images(tf.constant(image[np.newaxis]))
        by_bytes = self.module.serve_image_bytes(tf.constant([schema.encode_png(image)]))
        by_example = self.module.serve_tf_examples(tf.constant([_example(image)]))
        for key in EXPECTED_OUTPUTS:
            self.assertAllEqual(by_tensor[key], by_bytes[key], msg=key)
            self.assertAllEqual(by_tensor[key], by_example[key], msg=key)

    def test_masks_lie_inside_their_boxes(self):
        nonempty = 0
        for height, width in [(128, 128), (64, 200), (150, 60)]:
            out = self.module.serve_images(tf.constant(_image(height, width, 3)[np.newaxis]))
            masks = out["detection_masks"].numpy()[0]
            self.assertEqual(masks.shape[1:], (height, width))
            for k in range(int(out["num_detections"][0])):
                ymin, xmin, ymax, xmax = out["detection_boxes"][0, k].numpy()
                rows, cols = np.nonzero(masks[k])
                if rows.size == 0:
                    continue
                nonempty += 1
                self.assertGreaterEqual(rows.min(), np.floor(ymin) - 1)
                self.assertLessEqual(rows.max(), np.ceil(ymax) + 1)
                self.assertGreaterEqual(cols.min(), np.floor(xmin) - 1)
                self.assertLessEqual(cols.max(), np.ceil(xmax) + 1)
        self.assertGreater(nonempty, 0)

    def test_exported_full_masks_equal_evaluator_masks_on_non_square_images(self):
        # Same weights, same image: the SavedModel's full-image masks must be the masks
        # COCO evaluation pastes (from the relative masks and the UNCLIPPED boxes), also
        # for detections that run past the bottom / right edge into the padding.
        for height, width in [(200, 330), (330, 200)]:
            image = _image(height, width, 5)
            expected, unclipped = evaluator_masks(self.model, image, S)
            past_edge = (unclipped[:, 2] > height + 1) | (unclipped[:, 3] > width + 1)
            self.assertTrue(past_edge.any(), msg=f"{height}x{width}: no detection at the edge")
            self.assertGreater(int(expected[past_edge].sum()), 0)
            loaded = self.serve(encoded_images=tf.constant([schema.encode_png(image)]))
            num = int(loaded["num_detections"][0])
            self.assertEqual(num, expected.shape[0])
            self.assertAllEqual(
                loaded["detection_masks"][0, :num], expected, msg=f"{height}x{width}"
            )
            self.assertAllClose(
                loaded["detection_boxes"][0, :num],
                np.clip(unclipped, 0, [height, width, height, width]),
                atol=1e-3,
            )

    def test_corrupt_bytes_raise_invalid_argument_error(self):
        with self.assertRaises(tf.errors.InvalidArgumentError):
            self.serve(encoded_images=tf.constant([b"\xff\xd8\xff\xe0 truncated jpeg"]))
        # The loaded model still serves afterwards.
        out = self.serve(encoded_images=tf.constant([schema.encode_png(_image(32, 32, 4))]))
        self.assertEqual(out["detection_masks"].shape[2:], (32, 32))

    def test_saved_model_cli_lists_serving_default(self):
        cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
        result = subprocess.run(
            [cli, "show", "--dir", self.export_dir, "--all"],
            capture_output=True,
            text=True,
            check=True,
        )
        text = result.stdout
        self.assertIn("signature_def['serving_default']", text)
        self.assertIn("encoded_images", text)
        for name in EXPECTED_OUTPUTS:
            self.assertIn(f"outputs['{name}']", text)
        self.assertRegex(text, r"outputs\['detection_masks'\][^\n]*\n\s*dtype: DT_UINT8")

    def test_refuses_non_empty_export_dir_unless_overwrite(self):
        with self.assertRaisesRegex(FileExistsError, "--overwrite"):
            export_lib.export_model(self.model, self.export_dir)
        export_lib.prepare_export_dir(self.export_dir, overwrite=True)  # no error
        empty = os.path.join(self.tmp, "empty")
        os.makedirs(empty)
        export_lib.prepare_export_dir(empty)  # an empty directory is fine

    def test_missing_checkpoint_is_a_clear_error(self):
        empty = os.path.join(self.tmp, "no_ckpt")
        os.makedirs(empty, exist_ok=True)
        with self.assertRaisesRegex(FileNotFoundError, "no checkpoint found in --model_dir"):
            export_lib.resolve_checkpoint(empty)
        with self.assertRaisesRegex(FileNotFoundError, "does not exist"):
            export_lib.resolve_checkpoint(os.path.join(self.tmp, "nowhere"))
        with self.assertRaisesRegex(FileNotFoundError, "ckpt-7"):
            export_lib.resolve_checkpoint(empty, os.path.join(empty, "ckpt-7"))

    def test_checkpoint_round_trip_and_incompatible_checkpoint(self):
        prefix = tf.train.Checkpoint(model=self.model).write(os.path.join(self.tmp, "ckpt", "c"))
        self.assertEqual(export_lib.resolve_checkpoint(None, prefix), prefix)
        export_lib.restore_model(self.model, prefix)  # compatible: no error
        other = tf_keras.Sequential([tf_keras.layers.Dense(3, input_shape=(5,))])
        with self.assertRaisesRegex(ValueError, "does not match the model"):
            export_lib.restore_model(other, prefix)


if __name__ == "__main__":
    tf.test.main()

"""Geometry of tfcp.serving.detection with a stubbed model (hand-checkable, fast)."""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from tfcp.data import schema
from tfcp.serving import detection, export_lib

S = 128  # model input size


class _StubModel:
    """Returns fixed detections in the model's (resized) frame, like MaskRCNNModel.call."""

    def __init__(self, boxes, mask_value=1.0, num=None):
        self.boxes = np.asarray(boxes, np.float32)  # [K, 4] model-frame pixels
        self.mask_value = mask_value
        self.num = len(self.boxes) if num is None else num
        self.variables = []

    def call(self, images, image_shape, anchor_boxes=None, training=False):
        del image_shape, anchor_boxes, training
        batch = tf.shape(images)[0]
        k = self.boxes.shape[0]
        tile = lambda x: tf.tile(tf.constant(x)[tf.newaxis], [batch] + [1] * x.ndim)
        return {
            "detection_boxes": tile(self.boxes),
            "detection_scores": tile(np.linspace(0.9, 0.5, k).astype(np.float32)),
            "detection_classes": tile(np.arange(1, k + 1, dtype=np.int32)),
            "num_detections": tf.fill([batch], self.num),
            "detection_masks": tf.fill([batch, k, 28, 28], self.mask_value),
        }


def _module(model, mask_output="full"):
    preprocess = functools.partial(export_lib.eval_preprocess, image_size=(S, S), pad_value=128)
    return detection.DetectionModule(model, preprocess, (S, S), mask_output=mask_output)


def _png(height, width, seed=0):
    rng = np.random.RandomState(seed)
    return schema.encode_png(rng.randint(0, 256, [height, width, 3]).astype(np.uint8))


class DetectionGeometryTest(tf.test.TestCase):
    def test_boxes_and_masks_in_input_pixels(self):
        # 100 x 200 input -> scale 0.64 into 128 x 128 (content 64 x 128).
        model = _StubModel([[32.0, 64.0, 64.0, 128.0]])
        out = _module(model).serve_images(tf.zeros([1, 100, 200, 3], tf.uint8))
        self.assertAllClose(out["detection_boxes"][0, 0], [50.0, 100.0, 100.0, 200.0], atol=1e-3)
        mask = out["detection_masks"][0, 0].numpy()
        self.assertEqual(mask.shape, (100, 200))
        self.assertEqual(out["detection_masks"].dtype, tf.uint8)
        rows, cols = np.nonzero(mask)
        # A constant-1 mask fills its box, up to one pixel at the borders.
        self.assertLessEqual(abs(rows.min() - 50), 1)
        self.assertLessEqual(abs(rows.max() - 99), 1)
        self.assertLessEqual(abs(cols.min() - 100), 1)
        self.assertEqual(cols.max(), 199)
        self.assertGreaterEqual(mask[51:99, 101:199].min(), 1)

    def test_several_sizes_and_aspect_ratios(self):
        # Box covering the top-left quarter of the model frame's content.
        for height, width in [(64, 64), (90, 160), (160, 90), (37, 211)]:
            scale = min(S / height, S / width)
            content = np.round(np.array([height, width]) * scale)
            model_box = [0.0, 0.0, content[0] / 2, content[1] / 2]
            out = _module(_StubModel([model_box])).serve_images(
                tf.zeros([2, height, width, 3], tf.uint8)
            )
            sy, sx = content / np.array([height, width])
            expected = [0.0, 0.0, content[0] / 2 / sy, content[1] / 2 / sx]
            box = out["detection_boxes"][1, 0].numpy()
            self.assertAllClose(box, expected, atol=1e-3, msg=f"{height}x{width}")
            mask = out["detection_masks"][1, 0].numpy()
            self.assertEqual(mask.shape, (height, width))
            rows, cols = np.nonzero(mask)
            self.assertGreater(rows.size, 0)
            self.assertLessEqual(rows.max(), box[2] + 1, msg=f"{height}x{width}")
            self.assertLessEqual(cols.max(), box[3] + 1, msg=f"{height}x{width}")

    def test_padding_detections_have_empty_masks(self):
        model = _StubModel([[0.0, 0.0, 64.0, 64.0], [10.0, 10.0, 50.0, 50.0]], num=1)
        out = _module(model).serve_images(tf.zeros([1, 128, 128, 3], tf.uint8))
        self.assertGreater(int(out["detection_masks"][0, 0].numpy().sum()), 0)
        self.assertEqual(int(out["detection_masks"][0, 1].numpy().sum()), 0)

    def test_image_bytes_batch_of_different_sizes_uses_max_canvas(self):
        model = _StubModel([[0.0, 0.0, 128.0, 128.0]])
        encoded = tf.constant([_png(40, 80), _png(100, 50)])
        out = _module(model).serve_image_bytes(encoded)
        masks = out["detection_masks"].numpy()
        self.assertEqual(masks.shape, (2, 1, 100, 80))
        # Image 0 (40 x 80): whole-content box -> mask inside its top-left 40 x 80 corner.
        self.assertAllClose(out["detection_boxes"][0, 0], [0.0, 0.0, 40.0, 80.0], atol=1e-3)
        self.assertEqual(masks[0, 0, 40:].sum(), 0)
        self.assertGreater(masks[0, 0, :40, :80].sum(), 0.9 * 40 * 80)
        self.assertAllClose(out["detection_boxes"][1, 0], [0.0, 0.0, 100.0, 50.0], atol=1e-3)
        self.assertEqual(masks[1, 0, :, 50:].sum(), 0)

    def test_relative_and_both_mask_outputs(self):
        model = _StubModel([[0.0, 0.0, 64.0, 64.0]], mask_value=0.25)
        images = tf.zeros([1, 64, 64, 3], tf.uint8)
        relative = _module(model, "relative").serve_images(images)
        self.assertNotIn("detection_masks", relative)
        self.assertEqual(relative["detection_masks_relative"].shape, (1, 1, 28, 28))
        self.assertAllClose(relative["detection_masks_relative"][0, 0, 3, 4], 0.25)
        both = _module(model, "both").serve_images(images)
        self.assertIn("detection_masks_relative", both)
        # Probability 0.25 < threshold 0.5: nothing pasted.
        self.assertEqual(int(both["detection_masks"].numpy().sum()), 0)

    def test_tf_example_matches_image_bytes(self):
        png = _png(30, 70, seed=3)
        example = schema.make_example(
            encoded_image=png, image_format="png", height=30, width=70, source_id="a"
        ).SerializeToString()
        module = _module(_StubModel([[8.0, 8.0, 40.0, 90.0]]))
        from_example = module.serve_tf_examples(tf.constant([example]))
        from_bytes = module.serve_image_bytes(tf.constant([png]))
        for key in from_bytes:
            self.assertAllEqual(from_example[key], from_bytes[key], msg=key)

    def test_corrupt_bytes_raise_invalid_argument(self):
        module = _module(_StubModel([[0.0, 0.0, 8.0, 8.0]]))
        with self.assertRaises(tf.errors.InvalidArgumentError):
            module.serve_image_bytes(tf.constant([b"\x89PNG\r\n\x1a\nnot really a png"]))

    def test_rejects_bad_options(self):
        with self.assertRaisesRegex(ValueError, "mask_output"):
            _module(_StubModel([[0.0, 0.0, 8.0, 8.0]]), mask_output="polygons")
        with self.assertRaisesRegex(ValueError, "input_type"):
            _module(_StubModel([[0.0, 0.0, 8.0, 8.0]])).concrete_function("video")
        with self.assertRaisesRegex(TypeError, "uint8"):
            _module(_StubModel([[0.0, 0.0, 8.0, 8.0]])).serve_images(tf.zeros([1, 8, 8, 3]))


if __name__ == "__main__":
    tf.test.main()

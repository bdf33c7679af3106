"""Geometry of tfcp.serving.detection with a stubbed model (hand-checkable, fast)."""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from tests.serving.evaluator_masks import evaluator_masks
from tfcp.data import schema
from tfcp.modeling import postprocess
from tfcp.serving import detection, export_lib

S = 128  # model input size


class _StubModel:
    """Returns fixed detections in the model's (resized) frame, like MaskRCNNModel.call."""

    def __init__(self, boxes, mask_value=1.0, num=None, masks=None):
        self.boxes = np.asarray(boxes, np.float32)  # [K, 4] model-frame pixels
        self.mask_value = mask_value
        self.masks = None if masks is None else np.asarray(masks, np.float32)  # [K, 28, 28]
        self.num = len(self.boxes) if num is None else num
        self.variables = []

    def __call__(self, images, anchor_boxes=None, image_shape=None, training=False):
        return self.call(images, image_shape, anchor_boxes, training)

    def call(self, images, image_shape, anchor_boxes=None, training=False):
        del image_shape, anchor_boxes, training
        batch = tf.shape(images)[0]
        k = self.boxes.shape[0]
        tile = lambda x: tf.tile(tf.constant(x)[tf.newaxis], [batch] + [1] * x.ndim)
        if self.masks is None:
            masks = tf.fill([batch, k, 28, 28], self.mask_value)
        else:
            masks = tile(self.masks)
        return {
            "detection_boxes": tile(self.boxes),
            "detection_scores": tile(np.linspace(0.9, 0.5, k).astype(np.float32)),
            "detection_classes": tile(np.arange(1, k + 1, dtype=np.int32)),
            "num_detections": tf.fill([batch], self.num),
            "detection_masks": masks,
        }


def _module(model, mask_output="full"):
    preprocess = functools.partial(export_lib.eval_preprocess, image_size=(S, S), pad_value=128)
    return detection.DetectionModule(model, preprocess, (S, S), mask_output=mask_output)


def _model_frame(boxes, height, width):
    """Original-image pixel boxes [K, 4] -> the model frame of a height x width input."""
    _, image_info = export_lib.eval_preprocess(
        tf.zeros([height, width, 3], tf.uint8), image_size=(S, S), pad_value=128
    )
    return postprocess.boxes_to_input_pixels(
        tf.constant(boxes, tf.float32)[tf.newaxis], image_info[tf.newaxis]
    )[0].numpy()


def _smooth_masks(num, seed):
    """Random smooth float32 [num, 28, 28] mask probabilities (off-centre blobs)."""
    rng = np.random.RandomState(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, 28), np.linspace(-1, 1, 28), indexing="ij")
    centers = rng.uniform(-0.6, 0.6, size=(num, 2, 1, 1))
    radius = rng.uniform(0.4, 1.0, size=(num, 1, 1))
    blobs = np.exp(-((yy - centers[:, 0]) ** 2 + (xx - centers[:, 1]) ** 2) / radius**2)
    return np.clip(blobs + rng.normal(0, 0.05, blobs.shape), 0, 1).astype(np.float32)


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

    def test_mask_pasted_with_unclipped_box_then_box_clipped(self):
        # 200 x 330 image, box [150, 250, 230, 360] runs past the bottom and the right.
        # Mask m = 28, all ones. Pasted with the UNCLIPPED box (as the evaluator does):
        # expanded by 30/28 about the centre (190, 305) -> rows [147, 232] (86 px), cols
        # [246, 363] (118 px). Row p samples the padded mask at (p - 146.5) * 30/86 - .5:
        # > .5 from row 150 (.72) on; col 250 gives .64; so rows 150..199 x cols 250..329
        # after the image cut, except the corner (150, 250): .72 * .64 = .46 < .5.
        # The old paste with the clipped box [150, 250, 200, 330] set that corner
        # (.89 * .72 = .64).
        model = _StubModel(_model_frame([[150.0, 250.0, 230.0, 360.0]], 200, 330))
        out = _module(model).serve_images(tf.zeros([1, 200, 330, 3], tf.uint8))
        self.assertAllClose(out["detection_boxes"][0, 0], [150.0, 250.0, 200.0, 330.0], atol=1e-3)
        expected = np.zeros([200, 330], np.uint8)
        expected[150:, 250:] = 1
        expected[150, 250] = 0
        self.assertAllEqual(out["detection_masks"][0, 0], expected)

    def test_quadrant_mask_is_not_squashed_into_the_clipped_box(self):
        # Same box, mask = its top-left 14 x 14 quadrant. Padded cells 1..14 are 1, so
        # row p is > .5 while (p - 146.5) * 30/86 - .5 < 14.5, i.e. p <= 189, and col p
        # while (p - 245.5) * 30/118 - .5 < 14.5, i.e. p <= 304: rows 150..189 x cols
        # 250..304, minus the four corners (products .46, .45, .43, .42 < .5). Pasting
        # into the clipped box [150, 250, 200, 330] squashed it to rows 150..174.
        quadrant = np.zeros([1, 28, 28], np.float32)
        quadrant[0, :14, :14] = 1.0
        box = _model_frame([[150.0, 250.0, 230.0, 360.0]], 200, 330)
        out = _module(_StubModel(box, masks=quadrant)).serve_images(
            tf.zeros([1, 200, 330, 3], tf.uint8)
        )
        expected = np.zeros([200, 330], np.uint8)
        expected[150:190, 250:305] = 1
        expected[[150, 150, 189, 189], [250, 304, 250, 304]] = 0
        self.assertAllEqual(out["detection_masks"][0, 0], expected)

    def test_full_masks_equal_evaluator_masks_at_the_edges(self):
        # Non-square 200 x 330 image; detections past the bottom, the right, both, the
        # top-left, and one inside. Serving must paste exactly what evaluation pastes.
        wide = [
            [150.0, 250.0, 230.0, 360.0],
            [120.0, 10.0, 215.0, 90.0],
            [5.0, 280.0, 60.0, 345.0],
            [-12.0, -7.0, 40.0, 44.0],
            [60.0, 100.0, 140.0, 220.0],
            [185.0, 300.0, 260.0, 400.0],
        ]
        tall = [[x1, y1, x2, y2] for y1, x1, y2, x2 in wide]  # transposed, for 330 x 200
        for height, width, boxes in [(200, 330, wide), (330, 200, tall)]:
            model = _StubModel(
                _model_frame(boxes, height, width), masks=_smooth_masks(len(boxes), seed=7)
            )
            image = np.random.RandomState(0).randint(0, 256, [height, width, 3]).astype(np.uint8)
            served = _module(model, "both").serve_images(tf.constant(image[np.newaxis]))
            expected, _ = evaluator_masks(model, image, S)
            self.assertGreater(int(expected.sum()), 0)
            self.assertAllEqual(served["detection_masks"][0], expected, msg=f"{height}x{width}")
            self.assertAllClose(
                served["detection_boxes"][0],
                np.clip(boxes, 0, [height, width, height, width]),
                atol=1e-3,
            )

    def test_rejects_bad_options(self):
        with self.assertRaisesRegex(ValueError, "mask_output"):
            _module(_StubModel([[0.0, 0.0, 8.0, 8.0]]), mask_output="polygons")
        with self.assertRaisesRegex(ValueError, "input_type"):
            _module(_StubModel([[0.0, 0.0, 8.0, 8.0]])).concrete_function("video")
        with self.assertRaisesRegex(TypeError, "uint8"):
            _module(_StubModel([[0.0, 0.0, 8.0, 8.0]])).serve_images(tf.zeros([1, 8, 8, 3]))


if __name__ == "__main__":
    tf.test.main()

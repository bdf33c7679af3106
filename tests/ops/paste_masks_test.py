"""Tests for tfcp.ops.paste_masks."""

import numpy as np
import tensorflow as tf
from official.vision.ops import mask_ops

from tfcp.ops.paste_masks import paste_masks, paste_masks_batched


def _reference(masks, boxes_yxyx, height, width):
    """Model Garden's numpy/OpenCV paste; it takes boxes as [x, y, w, h]."""
    y1, x1, y2, x2 = np.split(np.asarray(boxes_yxyx, np.float32), 4, axis=1)
    xywh = np.concatenate([x1, y1, x2 - x1, y2 - y1], axis=1)
    return mask_ops.paste_instance_masks(np.asarray(masks, np.float32), xywh, height, width)


def _random_case(rng, height, width, num, mask_h, mask_w):
    # Smooth blobs (a thresholded Gaussian bump plus noise), like real mask-head outputs.
    yy, xx = np.meshgrid(np.linspace(-1, 1, mask_h), np.linspace(-1, 1, mask_w), indexing="ij")
    radius = rng.uniform(0.3, 1.2, size=(num, 1, 1))
    masks = np.exp(-(yy**2 + xx**2) / radius**2) + rng.normal(0, 0.1, (num, mask_h, mask_w))
    masks = np.clip(masks, 0, 1).astype(np.float32)
    y1 = rng.uniform(-10, height, num)
    x1 = rng.uniform(-10, width, num)
    boxes = np.stack(
        [y1, x1, y1 + rng.uniform(0, height, num), x1 + rng.uniform(0, width, num)], axis=1
    ).astype(np.float32)
    return masks, boxes


class PasteMasksTest(tf.test.TestCase):
    def test_hand_computed_square(self):
        # m = 2, all ones; box [2, 2, 6, 6] in a 10x10 image. Scale (2+2)/2 = 2 -> expanded
        # box [0, 8] inclusive (9 pixels). Pixel j samples padded [0, 1, 1, 0] at
        # (j + .5) * 4 / 9 - .5 = -.28, .17, .61, 1.06, 1.5, 1.94, 2.39, 2.83, 3.28 giving
        # 0, .17, .61, 1, 1, 1, .61, .17, 0 per axis; bilinear is the product, so rows and
        # columns 2..6 are foreground (> .5) except the four corners (.61 * .61 = .37).
        out = paste_masks(np.ones([1, 2, 2], np.float32), [[2.0, 2.0, 6.0, 6.0]], 10, 10)
        expected = np.zeros([1, 10, 10], np.uint8)
        expected[0, 2:7, 2:7] = 1
        expected[0, [2, 2, 6, 6], [2, 6, 2, 6]] = 0
        self.assertEqual(out.dtype, tf.uint8)
        self.assertAllEqual(out, expected)

    def test_threshold_argument(self):
        # Same geometry: samples are .17 / .61 / 1 -> threshold .65 keeps pixels 3..5.
        out = paste_masks(
            np.ones([1, 2, 2], np.float32), [[2.0, 2.0, 6.0, 6.0]], 10, 10, threshold=0.65
        )
        expected = np.zeros([1, 10, 10], np.uint8)
        expected[0, 3:6, 3:6] = 1
        self.assertAllEqual(out, expected)

    def test_box_outside_image_is_clipped(self):
        out = paste_masks(np.ones([1, 2, 2], np.float32), [[-2.0, 6.0, 2.0, 10.0]], 8, 8)
        # Rows: expanded [-4, 4], per-row factors (as above) .61 at rows -2 and 2, 1 at
        # rows -1..1. Cols: expanded [4, 12], .61 at col 6, 1 at col 7 (col 8+ is cut).
        # Clipped to the image: rows 0..2 x cols 6..7, minus the corner (2, 6) = .37.
        expected = np.zeros([1, 8, 8], np.uint8)
        expected[0, 0:3, 6:8] = 1
        expected[0, 2, 6] = 0
        self.assertAllEqual(out, expected)

    def test_inverted_box_pastes_nothing(self):
        out = paste_masks(np.ones([1, 4, 4], np.float32), [[6.0, 6.0, 2.0, 2.0]], 10, 10)
        self.assertEqual(int(tf.reduce_sum(tf.cast(out, tf.int32))), 0)

    def test_matches_model_garden_reference(self):
        rng = np.random.default_rng(0)
        total = agree = 0
        for height, width, num, mask_h, mask_w in [
            (64, 96, 5, 28, 28),
            (120, 80, 7, 14, 14),
            (33, 47, 4, 28, 14),
            (200, 150, 3, 7, 7),
        ]:
            masks, boxes = _random_case(rng, height, width, num, mask_h, mask_w)
            ref = _reference(masks, boxes, height, width)
            out = paste_masks(masks, boxes, height, width).numpy()
            self.assertEqual(out.shape, ref.shape)
            total += ref.size
            agree += int((out == ref).sum())
            self.assertGreater(ref.sum(), 0)
        self.assertGreaterEqual(agree / total, 0.99)

    def test_no_detections(self):
        out = paste_masks(np.zeros([0, 28, 28], np.float32), np.zeros([0, 4], np.float32), 5, 7)
        self.assertAllEqual(tf.shape(out), [0, 5, 7])

    def test_box_count_mismatch_raises(self):
        with self.assertRaises(tf.errors.InvalidArgumentError):
            paste_masks(np.ones([2, 4, 4], np.float32), np.zeros([3, 4], np.float32), 8, 8)

    def test_tf_function_unknown_shapes(self):
        fn = tf.function(
            paste_masks,
            input_signature=[
                tf.TensorSpec([None, None, None], tf.float32),
                tf.TensorSpec([None, 4], tf.float32),
                tf.TensorSpec([], tf.int32),
                tf.TensorSpec([], tf.int32),
            ],
        )
        rng = np.random.default_rng(1)
        for height, width, num in [(40, 56, 3), (17, 9, 0), (64, 64, 6)]:
            masks, boxes = _random_case(rng, height, width, num, 14, 14)
            self.assertAllEqual(
                fn(masks, boxes, height, width), paste_masks(masks, boxes, height, width)
            )

    def test_in_dataset_map(self):
        rng = np.random.default_rng(2)
        masks, boxes = _random_case(rng, 48, 40, 4, 28, 28)
        ds = tf.data.Dataset.from_tensors((masks, boxes)).map(
            lambda m, b: paste_masks(m, b, 48, 40)
        )
        out = next(iter(ds))
        self.assertAllEqual(out, _reference(masks, boxes, 48, 40))

    def test_batched_equals_per_image(self):
        rng = np.random.default_rng(3)
        cases = [_random_case(rng, 50, 60, 5, 28, 28) for _ in range(3)]
        masks = np.stack([c[0] for c in cases])
        boxes = np.stack([c[1] for c in cases])
        fn = tf.function(
            paste_masks_batched,
            input_signature=[
                tf.TensorSpec([None, None, None, None], tf.float32),
                tf.TensorSpec([None, None, 4], tf.float32),
                tf.TensorSpec([], tf.int32),
                tf.TensorSpec([], tf.int32),
            ],
        )
        out = fn(masks, boxes, 50, 60)
        self.assertAllEqual(tf.shape(out), [3, 5, 50, 60])
        for i in range(3):
            self.assertAllEqual(out[i], paste_masks(masks[i], boxes[i], 50, 60))


if __name__ == "__main__":
    tf.test.main()

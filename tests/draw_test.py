"""Tests for tfcp.draw (pure numpy/PIL drawing helpers)."""

import numpy as np
import tensorflow as tf
from official.vision.ops import preprocess_ops

from tfcp import draw


class DrawTest(tf.test.TestCase):
    def test_unnormalize_inverts_model_garden_normalization(self):
        image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape([4, 5, 3]) * 3
        normalized = preprocess_ops.normalize_image(tf.constant(image)).numpy()
        self.assertAllEqual(draw.unnormalize_image(normalized), image)

    def test_paste_crop_masks_fills_the_box(self):
        masks = draw.paste_crop_masks(np.ones([1, 8, 8]), np.array([[2, 3, 6, 8]]), 10, 12)
        expected = np.zeros([10, 12], np.uint8)
        expected[2:6, 3:8] = 1
        self.assertAllEqual(masks[0], expected)

    def test_paste_crop_masks_clips_to_the_image_and_skips_empty_boxes(self):
        boxes = np.array([[-2, -2, 4, 4], [5, 5, 5, 9]], np.float32)
        masks = draw.paste_crop_masks(np.ones([2, 4, 4]), boxes, 6, 6)
        self.assertEqual(masks[0].sum(), 16)
        self.assertEqual(masks[1].sum(), 0)

    def test_draw_instances_tints_masks_and_outlines_boxes(self):
        image = np.zeros([40, 40, 3], np.uint8)
        mask = np.zeros([1, 40, 40], np.uint8)
        mask[0, 20:30, 20:30] = 1
        out = draw.draw_instances(image, np.array([[18.0, 18.0, 32.0, 32.0]]), [5], mask, alpha=0.5)
        expected_tint = np.round(np.asarray(draw.color(0)) * 0.5)
        self.assertAllClose(out[25, 25], expected_tint, atol=1)
        self.assertAllEqual(out[36, 5], [0, 0, 0])  # far from the object: untouched
        self.assertAllEqual(out[31, 25], draw.color(0))  # bottom edge of the box
        self.assertEqual(image.sum(), 0)  # input not modified

    def test_pasted_objects_get_a_white_dashed_outline(self):
        image = np.zeros([40, 40, 3], np.uint8)
        box = np.array([[10.0, 10.0, 35.0, 35.0]])
        plain = draw.draw_instances(image, box, [1], is_pasted=[False])
        pasted = draw.draw_instances(image, box, [1], is_pasted=[True])
        bottom_plain, bottom_pasted = plain[34, 10:36], pasted[34, 10:36]
        self.assertFalse((bottom_plain == 255).all(axis=-1).any())
        self.assertTrue((bottom_pasted == 255).all(axis=-1).any())
        self.assertTrue((bottom_pasted == draw.color(0)).all(axis=-1).any())

    def test_make_grid(self):
        tiles = [np.full([4, 6, 3], i, np.uint8) for i in range(5)]
        grid = draw.make_grid(tiles, columns=3, gap=2)
        self.assertEqual(grid.shape, (4 * 2 + 2, 6 * 3 + 2 * 2, 3))
        self.assertAllEqual(grid[0, 8], [1, 1, 1])
        self.assertAllEqual(grid[6, 0], [3, 3, 3])
        self.assertAllEqual(grid[6, 17], [255, 255, 255])  # the empty sixth cell
        with self.assertRaisesRegex(ValueError, "shape"):
            draw.make_grid([tiles[0], np.zeros([5, 6, 3], np.uint8)])


if __name__ == "__main__":
    tf.test.main()

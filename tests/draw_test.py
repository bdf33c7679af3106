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

    def test_pseudo_image_gets_a_violet_frame_and_a_badge_labels_keep_off(self):
        image = np.zeros([96, 96, 3], np.uint8)
        box = np.array([[2.0, 2.0, 60.0, 60.0]])  # its label cannot go above: the badge's spot
        plain = draw.draw_instances(image, box, [1])
        pseudo = draw.draw_instances(image, box, [1], is_pseudo=True)
        violet = np.asarray(draw.PSEUDO_COLOR)
        self.assertFalse((plain == violet).all(-1).any())
        # Frame: 2 line widths (2 px at 96 px) on every side.
        for edge in (pseudo[:4, 70], pseudo[-4:, 70], pseudo[85, :4], pseudo[85, -4:]):
            self.assertTrue((edge == violet).all(), edge)
        self.assertFalse((pseudo[4:-4, 70] == violet).all(-1).any())
        # Badge at the frame's inner corner: violet fill with white text, black border.
        self.assertAllEqual(pseudo[4, 4], [0, 0, 0])
        badge = pseudo[5:16, 5:40]
        self.assertGreater((badge == violet).all(-1).sum(), 100)
        self.assertGreater((badge > 200).all(-1).sum(), 10)  # white text on violet
        # The object's label keeps off the badge: plain drawing puts it at the top (above the
        # box, clamped into the image); here it moves below the badge.
        rows = np.nonzero((pseudo[:, 5] == draw.color(0)).all(-1))[0]
        plain_rows = np.nonzero((plain[:, 5] == draw.color(0)).all(-1))[0]
        self.assertLess(plain_rows.min(), 10)
        self.assertGreater(rows.min(), 10)

    def test_objects_pasted_from_pseudo_images_are_dashed_violet_and_tagged_p_star(self):
        image = np.zeros([60, 60, 3], np.uint8)
        box = np.array([[30.0, 10.0, 55.0, 55.0]])

        def drawn(**flags):
            return draw.draw_instances(image, box, [1], **flags)

        from_labeled = drawn(is_pasted=[True], from_pseudo=[False])
        from_pseudo = drawn(is_pasted=[True], from_pseudo=[True])
        self.assertAllEqual(from_labeled, drawn(is_pasted=[True]))  # the default: labeled
        violet, white = np.asarray(draw.PSEUDO_COLOR), np.asarray(draw.PASTED_OUTLINE)
        bottom_labeled, bottom_pseudo = from_labeled[54, 10:56], from_pseudo[54, 10:56]
        self.assertTrue((bottom_labeled == white).all(-1).any())
        self.assertFalse((bottom_labeled == violet).all(-1).any())
        self.assertTrue((bottom_pseudo == violet).all(-1).any())
        self.assertFalse((bottom_pseudo == white).all(-1).any())
        self.assertTrue((bottom_pseudo == draw.color(0)).all(-1).any())  # alternating

        # Tags: "P* 1" is wider than "P 1" (the label's fill above the box, widest row).
        def tag_width(out):
            return int((out[:29] == draw.color(0)).all(-1).sum(-1).max())

        self.assertGreater(tag_width(from_pseudo), tag_width(from_labeled) + 2)
        # An object that is not pasted looks the same whatever its origin (the tile's
        # "pseudo" badge says its labels are pseudo labels).
        self.assertAllEqual(drawn(from_pseudo=[True]), drawn(from_pseudo=[False]))
        self.assertFalse((drawn(from_pseudo=[True]) == violet).all(-1).any())

    def test_render_keeps_the_pseudo_marks_sharp_at_tile_size(self):
        """A 128 px pseudo-labeled sample on a 384 px tile: 4 px frame, badge >= 14 px tall."""
        image = np.full([128, 128, 3], 100, np.uint8)
        out = draw.render(image, np.zeros([0, 4]), [], size=384, is_pseudo=True)
        violet = np.asarray(draw.PSEUDO_COLOR)
        self.assertEqual(out.shape, (384, 384, 3))
        self.assertTrue((out[:4, 200] == violet).all())
        self.assertAllEqual(out[4, 200], [100, 100, 100])
        badge_rows = np.nonzero((out[:, 6] == violet).all(-1))[0]
        badge_rows = badge_rows[badge_rows >= 4]
        self.assertGreaterEqual(len(badge_rows), 14)

    def test_mixed_batch_legend_explains_the_marks_and_fits_one_tile(self):
        legend = draw.mixed_batch_legend(384, font_size=16)
        self.assertEqual(legend.shape[1], 384)
        self.assertEqual(legend.dtype, np.uint8)
        self.assertLess(legend.shape[0], 100)
        background = np.asarray(draw.LEGEND_BACKGROUND)
        self.assertTrue((legend[:, -8:] == background).all())  # the text fits in 384 px
        third = legend.shape[0] // 3
        lines = [legend[k * third : (k + 1) * third] for k in range(3)]
        violet, white = np.asarray(draw.PSEUDO_COLOR), np.asarray(draw.PASTED_OUTLINE)
        swatches = [line[:, :45] for line in lines]  # the sample box of each line
        self.assertGreater((lines[0] == violet).all(-1).sum(), 200)  # the badge
        self.assertTrue((swatches[1] == white).all(-1).any())  # white dashes: from labeled
        self.assertFalse((swatches[1] == violet).all(-1).any())
        self.assertTrue((swatches[2] == violet).all(-1).any())  # violet dashes: from pseudo
        for line in lines:
            self.assertGreater((line > 200).all(-1).sum(), 50)  # white text on every line

    def test_mask_outline_is_the_border_band(self):
        mask = np.zeros([8, 8], np.uint8)
        mask[1:7, 2:8] = 1
        outline = draw.mask_outline(mask, 1)
        self.assertTrue(outline[1, 2:8].all() and outline[1:7, 2].all())
        self.assertFalse(outline[2:6, 3:7].any())  # the inside
        self.assertFalse(outline[0].any())  # outside the mask
        self.assertEqual(draw.mask_outline(mask, 3).sum(), mask.sum())  # 6 wide: all border

    def test_text_color_contrasts_with_the_label_fill(self):
        self.assertEqual(draw.text_color((255, 255, 0)), (0, 0, 0))
        self.assertEqual(draw.text_color((30, 30, 200)), (255, 255, 255))

    def test_render_draws_at_display_size_with_visible_mask_and_label(self):
        """A 32x64 image drawn 384 wide: scale 6, so the mask is 6x larger, lines stay sharp."""
        image = np.full([32, 64, 3], 100, np.uint8)
        mask = np.zeros([1, 32, 64], np.uint8)
        mask[0, 10:30, 20:60] = 1
        box = np.array([[10.0, 20.0, 30.0, 60.0]])
        out = draw.render(image, box, [7], mask, size=384, class_names={7: "cat"}, scores=[0.9])
        self.assertEqual(out.shape, (192, 384, 3))
        red = np.asarray(draw.color(0))
        # Mask: translucent fill inside (gray 100 -> 0.55 * 100 + 0.45 * color), outline on it.
        self.assertAllClose(out[120, 240], np.round(100 * 0.55 + red * 0.45), atol=1)
        self.assertAllEqual(out[179, 240], red)  # bottom band of the mask outline (y 174..179)
        self.assertAllEqual(out[185, 240], [100, 100, 100])  # below the object: untouched
        # Label: right above the box (top y = 60), inside a black border; its fill (seen in
        # the left padding column x = 121) as tall as the text (font 384 / 24 = 16 px).
        self.assertAllEqual(out[59, 121], [0, 0, 0])
        label_rows = np.nonzero((out[:60, 121] == red).all(-1))[0]
        self.assertGreaterEqual(len(label_rows), 12)
        self.assertEqual(label_rows.max(), 58)
        label = out[label_rows.min() : 59, 121:200]
        self.assertGreater((label > 200).all(-1).sum(), 40)  # white (anti-aliased) text
        self.assertAllEqual(out[30, 300], [100, 100, 100])  # beside the label: untouched

    def test_label_size_follows_the_image(self):
        def label_height(size):
            image = np.zeros([size, size, 3], np.uint8)
            box = np.array([[size / 2, size / 4, size * 0.9, size * 0.9]])
            out = draw.draw_instances(image, box, [1])
            column = out[: int(size / 2), int(size / 4) + 2]
            return int((column == draw.color(0)).all(-1).sum())

        small, large = label_height(96), label_height(768)
        self.assertGreaterEqual(small, 10)
        self.assertGreaterEqual(large, 2.5 * small)

    def test_labels_do_not_cover_each_other(self):
        image = np.zeros([200, 200, 3], np.uint8)
        boxes = np.array([[100.0, 50.0, 150.0, 150.0], [100.0, 50.0, 180.0, 120.0]])
        out = draw.draw_instances(image, boxes, [1, 2])
        column = out[:, 51]  # the labels' left padding
        rows = [np.nonzero((column == draw.color(i)).all(-1))[0] for i in range(2)]
        self.assertGreaterEqual(len(rows[0]), 10)  # the first label, above its box, whole
        self.assertGreaterEqual(len(rows[1]), 10)  # the second moved inside its box
        self.assertLess(rows[0].max(), 100)
        self.assertGreater(rows[1].min(), 100)

    def test_fit_tile_pads_to_a_square(self):
        tile = draw.fit_tile(np.zeros([3, 5, 3], np.uint8), 6)
        self.assertEqual(tile.shape, (6, 6, 3))
        self.assertEqual(tile[:3, :5].max(), 0)
        self.assertTrue((tile[3:] == 255).all() and (tile[:, 5:] == 255).all())
        with self.assertRaisesRegex(ValueError, "does not fit"):
            draw.fit_tile(np.zeros([7, 5, 3], np.uint8), 6)

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

"""Tests of tfcp.ops.moco_augment: torchvision's crop/erase rectangles, the MoCo v2 view ops."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcp.ops import color_jitter as cj
from tfcp.ops import moco_augment as ma

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
MODES = ("eager", "dataset", "function")
SEED = tf.constant([3, 4], tf.int64)


def rgb(h=24, w=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, [h, w, 3], dtype=np.uint8)


def rounded_area_ok(h, w, area, scale, along, across, ratio):
    """True if some a/b with |a - along| <= .5, |b - across| <= .5 (the unrounded sqrt
    values) has a * b / area within `scale` and a / b within `ratio` (bounds of rounding)."""
    lo_ab, hi_ab = (along - 0.5) * (across - 0.5), (along + 0.5) * (across + 0.5)
    lo_r, hi_r = (along - 0.5) / (across + 0.5), (along + 0.5) / max(across - 0.5, 1e-9)
    area_ok = lo_ab <= scale[1] * area + 1e-6 and hi_ab >= scale[0] * area - 1e-6
    ratio_ok = lo_r <= ratio[1] + 1e-9 and hi_r >= ratio[0] - 1e-9
    return area_ok and ratio_ok


def torchvision_fallback(height, width, ratio):
    """torchvision RandomResizedCrop's central-crop fallback, in NumPy."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return [(height - h) // 2, (width - w) // 2, h, w]


class CropBoxTest(tf.test.TestCase):
    @SETTINGS
    @given(
        height=st.integers(1, 300),
        width=st.integers(1, 300),
        seed=st.integers(0, 2**30),
        lo=st.sampled_from([0.08, 0.2, 0.5]),
    )
    def test_box_inside_with_scale_and_ratio_or_fallback(self, height, width, seed, lo):
        scale, ratio = (lo, 1.0), (3 / 4, 4 / 3)
        top, left, h, w = ma.random_resized_crop_box(
            tf.constant([seed, 1]), height, width, scale=scale, ratio=ratio
        ).numpy()
        self.assertTrue(0 <= top and top + h <= height and 0 <= left and left + w <= width)
        self.assertTrue(h > 0 and w > 0)
        in_range = rounded_area_ok(h, w, height * width, scale, w, h, ratio)
        self.assertTrue(
            in_range or [top, left, h, w] == torchvision_fallback(height, width, ratio),
            (top, left, h, w),
        )

    def test_fallback_is_torchvision_central_crop(self):
        # A 10 x 1000 strip cannot hold 90 % of its area at aspect <= 4/3.
        box = ma.random_resized_crop_box(SEED, 10, 1000, scale=(0.9, 1.0)).numpy()
        self.assertEqual(list(box), [0, 493, 10, 13])
        box = ma.random_resized_crop_box(SEED, 1000, 10, scale=(0.9, 1.0)).numpy()
        self.assertEqual(list(box), [493, 0, 13, 10])  # h = round(10 / (3/4))

    def test_area_fraction_is_uniform_over_the_scale(self):
        fractions = [
            np.prod(ma.random_resized_crop_box(tf.constant([s, 9]), 224, 224, scale=(0.2, 1.0))[2:])
            / 224**2
            for s in range(200)
        ]
        self.assertAllInRange(fractions, 0.19, 1.0)
        self.assertNear(np.mean(fractions), 0.6, 0.06)  # sqrt-rounding and rejections aside

    def test_output_size_and_content(self):
        image = rgb(30, 40)
        out = ma.random_resized_crop(image, SEED, size=17, scale=(0.2, 1.0))
        self.assertEqual((out.shape, out.dtype), ((17, 17, 3), tf.uint8))
        top, left, h, w = ma.random_resized_crop_box(SEED, 30, 40, scale=(0.2, 1.0)).numpy()
        crop = image[top : top + h, left : left + w].astype(np.float32)
        expected = np.clip(np.round(tf.image.resize(crop, [17, 17], antialias=True)), 0, 255)
        self.assertAllEqual(out, expected.astype(np.uint8))

    def test_whole_image_at_its_own_size_is_identity(self):
        image = rgb(16, 16)
        out = ma.random_resized_crop(image, SEED, size=16, scale=(1.0, 1.0), ratio=(1.0, 1.0))
        self.assertAllEqual(out, image)


class ErasingBoxTest(tf.test.TestCase):
    @SETTINGS
    @given(
        height=st.integers(4, 256),
        width=st.integers(4, 256),
        seed=st.integers(0, 2**30),
    )
    def test_box_inside_with_area_and_aspect_in_range(self, height, width, seed):
        scale, ratio = (0.5, 0.8), (0.8, 1.25)
        top, left, h, w = ma.random_erasing_box(
            tf.constant([seed, 2]), height, width, scale=scale, ratio=ratio
        ).numpy()
        if h == 0 or w == 0:  # torchvision's "no attempt fits": nothing erased
            self.assertEqual([top, left, h, w], [0, 0, 0, 0])
            return
        self.assertTrue(h < height and w < width)
        self.assertTrue(0 <= top and top + h <= height and 0 <= left and left + w <= width)
        self.assertTrue(rounded_area_ok(h, w, height * width, scale, h, w, ratio), (h, w))

    def test_large_square_stays_within_ranges_and_covers_them(self):
        boxes = np.array(
            [
                ma.random_erasing_box(
                    tf.constant([s, 5]), 224, 224, scale=(0.5, 0.8), ratio=(0.8, 1.25)
                ).numpy()
                for s in range(150)
            ]
        )
        area = boxes[:, 2] * boxes[:, 3] / 224**2
        aspect = boxes[:, 2] / boxes[:, 3]
        self.assertAllInRange(area, 0.49, 0.81)
        self.assertAllInRange(aspect, 0.79, 1.26)
        self.assertLess(area.min(), 0.53)
        self.assertGreater(area.max(), 0.77)
        self.assertLess(aspect.min(), 0.85)
        self.assertGreater(aspect.max(), 1.18)
        self.assertGreater(len({tuple(b[:2]) for b in boxes}), 100)  # positions vary

    def test_nothing_fits_gives_an_empty_box(self):
        box = ma.random_erasing_box(SEED, 10, 10, scale=(0.99, 1.0), ratio=(1.0, 1.0))
        self.assertAllEqual(box, [0, 0, 0, 0])

    def test_same_seed_same_box(self):
        a = ma.random_erasing_box(SEED, 64, 64, scale=(0.5, 0.8), ratio=(0.8, 1.25))
        b = ma.random_erasing_box(SEED, 64, 64, scale=(0.5, 0.8), ratio=(0.8, 1.25))
        c = ma.random_erasing_box(SEED + 1, 64, 64, scale=(0.5, 0.8), ratio=(0.8, 1.25))
        self.assertAllEqual(a, b)
        self.assertNotAllEqual(a, c)


class PixelOpsTest(tf.test.TestCase):
    def test_grayscale_channels_equal_luma(self):
        image = rgb()
        out = ma.grayscale(image).numpy()
        self.assertAllEqual(out[..., 0], out[..., 1])
        self.assertAllEqual(out[..., 0], out[..., 2])
        luma = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        self.assertAllClose(out[..., 0], np.round(luma), atol=1)
        self.assertAllEqual(ma.random_grayscale(image, SEED, prob=1.0), out)
        self.assertAllEqual(ma.random_grayscale(image, SEED, prob=0.0), image)

    def test_blur_keeps_a_constant_image(self):
        image = np.full([9, 11, 3], 137, np.uint8)
        self.assertAllEqual(ma.gaussian_blur(image, 2.0), image)

    def test_blur_smooths_an_edge_like_a_gaussian(self):
        image = np.zeros([12, 24, 3], np.uint8)
        image[:, 12:] = 240
        sigma = 1.5
        out = ma.gaussian_blur(image, sigma, max_sigma=2.0).numpy().astype(np.float64)
        row = out[5, :, 0]
        self.assertTrue(np.all(np.diff(row) >= 0), row)  # monotone
        self.assertTrue(0 < row[11] < 120 < row[12] < 240, row)  # the edge is softened
        self.assertEqual(row[0], 0)
        self.assertEqual(row[-1], 240)
        self.assertNear(out.mean(), image.mean(), 0.5)  # symmetric step: the mean stays
        # An exact Gaussian (radius 6 = ceil(3 * 2)) away from the left/right borders.
        taps = np.arange(-6, 7)
        kernel = np.exp(-0.5 * (taps / sigma) ** 2)
        expected = np.convolve(
            np.pad(image[5, :, 0], 6, mode="edge"), kernel / kernel.sum(), "valid"
        )
        self.assertAllClose(row, np.round(expected), atol=1)
        self.assertAllEqual(out[0], out[-1])  # constant along columns: rows stay equal

    def test_random_blur_probability(self):
        image = np.zeros([8, 8, 3], np.uint8)
        image[:, 4:] = 255
        blurred = [
            not np.array_equal(ma.random_gaussian_blur(image, tf.constant([s, 0])), image)
            for s in range(40)
        ]
        self.assertTrue(10 < sum(blurred) < 30, sum(blurred))  # p = 0.5
        self.assertAllEqual(ma.random_gaussian_blur(image, SEED, prob=0.0), image)

    def test_flip_mirrors(self):
        image = rgb(5, 7)
        self.assertAllEqual(ma.random_flip(image, SEED, prob=1.0), image[:, ::-1])
        self.assertAllEqual(ma.random_flip(image, SEED, prob=0.0), image)
        flipped = [
            np.array_equal(ma.random_flip(image, tf.constant([s, 1])), image[:, ::-1])
            for s in range(40)
        ]
        self.assertTrue(10 < sum(flipped) < 30, sum(flipped))

    def test_color_jitter_probability_and_op(self):
        image = rgb(6, 6)
        opts = ma.ViewOptions(color_jitter_prob=1.0)
        out = ma.random_color_jitter(image, SEED, opts)
        _, jitter_seed = tf.unstack(tf.random.experimental.stateless_split(SEED, 2))
        expected = cj.color_jitter(
            image, jitter_seed, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1
        )
        self.assertAllEqual(out, expected)
        self.assertAllEqual(
            ma.random_color_jitter(image, SEED, opts._replace(color_jitter_prob=0.0)), image
        )
        applied = [
            not np.array_equal(ma.random_color_jitter(image, tf.constant([s, 2])), image)
            for s in range(40)
        ]
        self.assertTrue(26 <= sum(applied) <= 38, sum(applied))  # p = 0.8


def run_view(mode, image, seed, options):
    if mode == "eager":
        return ma.moco_view(image, seed, options).numpy()
    if mode == "dataset":
        ds = tf.data.Dataset.from_tensors((image, seed))
        return next(iter(ds.map(lambda x, s: ma.moco_view(x, s, options)))).numpy()
    fn = tf.function(
        lambda x, s: ma.moco_view(x, s, options),
        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([2], tf.int64)],
    )
    return fn(image, seed).numpy()


class MocoViewTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(*MODES)
    def test_same_view_in_every_mode(self, mode):
        image, options = tf.constant(rgb(40, 30)), ma.ViewOptions(size=24)
        out = run_view(mode, image, SEED, options)
        self.assertEqual((out.shape, out.dtype), ((24, 24, 3), np.uint8))
        self.assertAllEqual(out, ma.moco_view(image, SEED, options))
        self.assertNotAllEqual(out, run_view(mode, image, SEED + 7, options))

    def test_everything_off_is_a_resize(self):
        image = rgb(20, 20)
        options = ma.ViewOptions(
            size=20, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), color_jitter_prob=0.0,
            grayscale_prob=0.0, blur_prob=0.0, flip_prob=0.0,
        )  # fmt: skip
        self.assertAllEqual(ma.moco_view(image, SEED, options), image)
        flipped = ma.moco_view(image, SEED, options._replace(flip_prob=1.0))
        self.assertAllEqual(flipped, image[:, ::-1])

    def test_validate_names_the_bad_option(self):
        for bad, name in (
            ({"crop_scale": (0.5, 0.2)}, "crop_scale"),
            ({"blur_sigma": (0.0, 2.0)}, "blur_sigma"),
            ({"grayscale_prob": 1.5}, "grayscale_prob"),
            ({"hue": 0.7}, "hue"),
        ):
            with self.assertRaisesRegex(ValueError, name):
                ma.validate(ma.ViewOptions(**bad))
        ma.validate(ma.ViewOptions())
        self.assertEqual(ma.blur_radius(2.0), 6)
        self.assertEqual(math.ceil(3 * 0.1), ma.blur_radius(0.1))


if __name__ == "__main__":
    tf.test.main()

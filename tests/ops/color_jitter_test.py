"""Tests of tfcp.ops.color_jitter on constant and gray images, in three execution modes."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfcp.ops import color_jitter as cj

MODES = ("eager", "dataset", "function")
ALL = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}


def run(mode, image, seeds, **kwargs):
    """color_jitter for each seed eagerly, in Dataset.map, or in one tf.function with None
    dims. Returns a list of uint8 numpy images."""
    image = tf.constant(image)
    seeds = [tf.constant(s, tf.int64) for s in seeds]
    if mode == "eager":
        outs = [cj.color_jitter(image, s, **kwargs) for s in seeds]
    elif mode == "dataset":
        ds = tf.data.Dataset.from_tensor_slices(tf.stack(seeds))
        outs = list(ds.map(lambda s: cj.color_jitter(image, s, **kwargs)))
    else:
        fn = tf.function(
            lambda x, s: cj.color_jitter(x, s, **kwargs),
            input_signature=[
                tf.TensorSpec([None, None, 3], tf.uint8),
                tf.TensorSpec([2], tf.int64),
            ],
        )
        outs = [fn(image, s) for s in seeds]
    return [o.numpy() for o in outs]


def rgb_image(h=6, w=5):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, [h, w, 3], dtype=np.uint8)


class ColorJitterTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(*MODES)
    def test_zero_factors_are_identity(self, mode):
        image = rgb_image()
        (out,) = run(mode, image, [(1, 2)])
        np.testing.assert_array_equal(out, image)

    @parameterized.parameters(*MODES)
    def test_brightness_scales_every_pixel_by_one_factor(self, mode):
        image = np.full([4, 4, 3], 100, np.uint8)
        image[0, 0] = [10, 50, 200]
        outs = run(mode, image, [(s, 0) for s in range(8)], brightness=0.5)
        factors = []
        for out in outs:
            self.assertEqual(out.dtype, np.uint8)
            f = out[1, 1, 0] / 100.0
            self.assertTrue(0.5 - 0.01 <= f <= 1.5 + 0.01, f)
            np.testing.assert_allclose(
                out[0, 0], np.minimum([10 * f, 50 * f, 200 * f], 255), atol=1
            )
            factors.append(f)
        self.assertGreater(len(set(factors)), 4)  # the seeds draw different factors

    @parameterized.parameters(*MODES)
    def test_gray_image_keeps_its_value_under_contrast_saturation_hue(self, mode):
        # A constant gray image has no saturation or hue, and its mean is its value.
        image = np.full([3, 4, 3], 90, np.uint8)
        for out in run(mode, image, [(0, 1), (5, 6)], contrast=0.5, saturation=0.5, hue=0.5):
            np.testing.assert_allclose(out, image, atol=1)

    @parameterized.parameters(*MODES)
    def test_all_factors_change_colors_deterministically(self, mode):
        image = rgb_image()
        a, b, c = run(mode, image, [(3, 4), (3, 4), (4, 4)], **ALL)
        np.testing.assert_array_equal(a, b)
        self.assertFalse(np.array_equal(a, image))
        self.assertFalse(np.array_equal(a, c))
        self.assertEqual(a.shape, image.shape)

    def test_modes_agree(self):
        image = rgb_image()
        eager = run("eager", image, [(7, 8)], **ALL)[0]
        for mode in ("dataset", "function"):
            np.testing.assert_array_equal(run(mode, image, [(7, 8)], **ALL)[0], eager)

    def test_fixed_order_is_brightness_then_contrast(self):
        # A numpy reference with the op's draws (seed split, one per factor name).
        image = np.zeros([1, 2, 3], np.uint8)
        image[0, 0], image[0, 1] = 200, 40
        out = cj.color_jitter(
            image, tf.constant([0, 0]), brightness=0.5, contrast=0.5, random_order=False
        ).numpy()
        self.assertEqual(out.dtype, np.uint8)
        seeds = tf.random.experimental.stateless_split(tf.constant([0, 0], tf.int64), 5)
        f_b = tf.random.stateless_uniform([], seeds[0], 0.5, 1.5).numpy()
        f_c = tf.random.stateless_uniform([], seeds[1], 0.5, 1.5).numpy()
        x = np.clip(image / 255.0 * f_b, 0, 1)
        x = np.clip((x - x.mean((0, 1))) * f_c + x.mean((0, 1)), 0, 1)
        np.testing.assert_allclose(out, np.round(x * 255), atol=1)

    def test_validation(self):
        image = rgb_image()
        with self.assertRaisesRegex(ValueError, "hue"):
            cj.color_jitter(image, [1, 2], hue=0.6)
        with self.assertRaisesRegex(ValueError, "brightness"):
            cj.color_jitter(image, [1, 2], brightness=-0.1)
        with self.assertRaisesRegex(ValueError, "uint8"):
            cj.color_jitter(image.astype(np.float32), [1, 2], brightness=0.1)


if __name__ == "__main__":
    tf.test.main()

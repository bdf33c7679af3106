"""Tests of tfcp.ops.blend: Gaussian smoothing of alpha maps and pasting of image pixels."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfcp.ops import blend


def numpy_blur(image, sigma):
    """Reference: separable normalized convolution with zero padding, per axis."""
    r = int(np.ceil(3 * sigma))
    x = np.arange(-r, r + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()

    def same(v):  # zero-padded "same" convolution, also for kernels longer than v
        return np.convolve(np.pad(v, r), k, mode="valid")

    def conv(a, axis):
        norm = same(np.ones(a.shape[axis]))
        out = np.apply_along_axis(same, axis, a)
        shape = [1] * a.ndim
        shape[axis] = -1
        return out / norm.reshape(shape)

    return conv(conv(image.astype(np.float64), 0), 1)


class BlendTest(tf.test.TestCase, parameterized.TestCase):
    def test_kernel_size_sum_and_symmetry(self):
        for sigma, size in ((0.5, 5), (1.0, 7), (2.0, 13), (1.2, 9)):
            k = blend.gaussian_kernel_1d(sigma).numpy()
            self.assertLen(k, size)
            self.assertAllClose(k.sum(), 1.0, atol=1e-6)
            self.assertAllClose(k, k[::-1])
            self.assertEqual(int(np.argmax(k)), size // 2)

    @parameterized.parameters(0.7, 1.0, 2.5)
    def test_matches_numpy_reference(self, sigma):
        img = (np.random.default_rng(1).random([12, 15]) > 0.6).astype(np.float32)
        out = blend.gaussian_blur(tf.constant(img), sigma).numpy()
        np.testing.assert_allclose(out, numpy_blur(img, sigma), atol=1e-5)

    def test_constant_map_stays_constant_at_borders(self):
        out = blend.gaussian_blur(tf.ones([9, 11]), 2.0).numpy()
        np.testing.assert_allclose(out, 1.0, atol=1e-6)

    def test_kernel_larger_than_image(self):
        img = np.zeros([3, 4], np.float32)
        img[1, 1] = 1.0
        out = blend.gaussian_blur(tf.constant(img), 3.0).numpy()
        np.testing.assert_allclose(out, numpy_blur(img, 3.0), atol=1e-5)

    def test_channels_blurred_independently(self):
        img = np.zeros([8, 8, 2], np.float32)
        img[4, 4, 0] = 1.0
        out = blend.gaussian_blur(tf.constant(img), 1.0).numpy()
        np.testing.assert_array_equal(out[..., 1], 0.0)
        self.assertGreater(out[4, 5, 0], 0.0)
        self.assertAllClose(out[..., 0], out[..., 0].T)

    def test_sigma_zero_is_identity_and_uint8_input(self):
        img = np.arange(12, dtype=np.uint8).reshape(3, 4)
        out = blend.gaussian_blur(tf.constant(img), 0.0)
        self.assertEqual(out.dtype, tf.float32)
        np.testing.assert_array_equal(out, img.astype(np.float32))

    def test_in_tf_function_with_unknown_shape(self):
        fn = tf.function(
            lambda x: blend.gaussian_blur(x, 1.5),
            input_signature=[tf.TensorSpec([None, None], tf.float32)],
        )
        img = (np.random.default_rng(2).random([10, 6]) > 0.5).astype(np.float32)
        np.testing.assert_allclose(fn(tf.constant(img)), numpy_blur(img, 1.5), atol=1e-5)

    def test_invalid_sigma(self):
        with self.assertRaisesRegex(ValueError, "sigma"):
            blend.gaussian_blur(tf.zeros([4, 4]), -1.0)
        with self.assertRaisesRegex(ValueError, "sigma"):
            blend.gaussian_kernel_1d(0.0)
        with self.assertRaisesRegex(ValueError, r"\[H, W\]"):
            blend.gaussian_blur(tf.zeros([4]), 1.0)


class PasteImageTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.product(
        hw=((16, 16), (5, 7), (3, 8)), dtype=(np.uint8, np.float32), dynamic=(False, True)
    )
    def test_hard_paste_is_an_exact_select(self, hw, dtype, dynamic):
        rng = np.random.default_rng(hw[0] * hw[1])
        tgt = rng.integers(0, 256, hw + (3,)).astype(dtype)
        src = rng.integers(0, 256, hw + (3,)).astype(dtype)
        union = (rng.random(hw) < 0.4).astype(np.uint8)
        fn = lambda t, s, u: blend.paste_image(t, s, u, 0.0)
        if dynamic:
            fn = tf.function(
                fn,
                input_signature=[
                    tf.TensorSpec([None, None, None], dtype),
                    tf.TensorSpec([None, None, None], dtype),
                    tf.TensorSpec([None, None], tf.uint8),
                ],
            )
        out = fn(tf.constant(tgt), tf.constant(src), tf.constant(union)).numpy()
        self.assertEqual(out.dtype, dtype)
        np.testing.assert_array_equal(out, np.where(union[..., None] > 0, src, tgt))

    def test_soft_paste_uint8_rounds_blend_of_blurred_mask(self):
        tgt = np.full([8, 8, 3], 10, np.uint8)
        src = np.full([8, 8, 3], 250, np.uint8)
        union = np.zeros([8, 8], np.uint8)
        union[2:6, 2:6] = 1
        out = blend.paste_image(tf.constant(tgt), tf.constant(src), tf.constant(union), 1.0)
        alpha = numpy_blur(union.astype(np.float32), 1.0)[..., None]
        expected = np.round(tgt * (1 - alpha) + src * alpha).astype(np.uint8)
        self.assertEqual(out.dtype, tf.uint8)
        np.testing.assert_allclose(out.numpy().astype(int), expected.astype(int), atol=1)


if __name__ == "__main__":
    tf.test.main()

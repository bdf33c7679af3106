"""Compositing of pasted pixels: hard paste and Gaussian-blended paste, in core TensorFlow.

`paste_image(target, source, mask, sigma)` computes I = source * a + target * (1 - a) with
a = mask (hard paste) or a = Gaussian-smoothed mask (sigma > 0), in the target's dtype.

The Gaussian blur replaces `tfa.image.gaussian_filter2d` (tensorflow-addons does not import
with TF 2.20): a separable depthwise convolution with a normalized 1-D Gaussian kernel of size
`2 * ceil(3 * sigma) + 1`. Borders use normalized convolution (zero padding, divided by the
blurred all-ones image), so a constant map stays exactly constant up to float rounding and an
alpha map touching the image border is not darkened there.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import tensorflow as tf


def kernel_radius(sigma: float) -> int:
    """Radius r of the Gaussian kernel for `sigma` (kernel size 2r+1, r = ceil(3 sigma))."""
    if sigma < 0 or not math.isfinite(sigma):
        raise ValueError(f"blend sigma must be a finite number >= 0, got {sigma!r}")
    return int(math.ceil(3.0 * sigma))


def gaussian_kernel_1d(sigma: float) -> tf.Tensor:
    """Normalized 1-D Gaussian kernel.

    Args:
      sigma: Python float > 0, standard deviation in pixels.

    Returns:
      float32 [2r+1] with r = ceil(3 sigma), symmetric, summing to 1.
    """
    if sigma <= 0:
        raise ValueError(f"gaussian_kernel_1d needs sigma > 0, got {sigma!r}")
    radius = kernel_radius(sigma)
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(x / sigma))
    return kernel / tf.reduce_sum(kernel)


def _blur_axis(x: tf.Tensor, kernel: tf.Tensor, axis: int) -> tf.Tensor:
    """Normalized 1-D convolution of x [1, H, W, C] along axis 1 (H) or 2 (W)."""
    size = tf.shape(kernel)[0]
    shape = [size, 1] if axis == 1 else [1, size]
    channels = tf.shape(x)[3]
    filt = tf.tile(tf.reshape(kernel, shape + [1, 1]), [1, 1, channels, 1])
    blurred = tf.nn.depthwise_conv2d(x, filt, strides=[1, 1, 1, 1], padding="SAME")
    # Sum of the kernel weights that fall inside the image, per position along `axis`.
    length = tf.shape(x)[axis]
    ones_shape = [1, length, 1, 1] if axis == 1 else [1, 1, length, 1]
    norm = tf.nn.depthwise_conv2d(
        tf.ones(ones_shape, tf.float32),
        tf.reshape(kernel, shape + [1, 1]),
        strides=[1, 1, 1, 1],
        padding="SAME",
    )
    return blurred / norm


def gaussian_blur(image: tf.Tensor, sigma: float) -> tf.Tensor:
    """Blurs a map or an image with a separable Gaussian.

    Args:
      image: [H, W] or [H, W, C] tensor, any real or integer dtype (computed in float32).
      sigma: Python float >= 0, standard deviation in pixels. 0 returns the input as float32.

    Returns:
      float32 tensor with the shape of `image`. Borders are handled by normalized
      convolution, so constant regions keep their value up to float rounding.
    """
    sigma = float(sigma)
    kernel_radius(sigma)  # validates sigma
    image = tf.convert_to_tensor(image)
    x = tf.cast(image, tf.float32)
    if sigma == 0.0:
        return x
    rank = image.shape.rank
    if rank not in (2, 3):
        raise ValueError(f"gaussian_blur expects [H, W] or [H, W, C], got shape {image.shape}")
    x4 = x[None, :, :, None] if rank == 2 else x[None]
    kernel = gaussian_kernel_1d(sigma)
    x4 = _blur_axis(x4, kernel, axis=1)
    x4 = _blur_axis(x4, kernel, axis=2)
    out = x4[0, :, :, 0] if rank == 2 else x4[0]
    return tf.ensure_shape(out, image.shape)


def cast_like(x: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """Casts x to dtype, rounding and saturating float -> integer."""
    if x.dtype == dtype:
        return x
    if dtype.is_integer and x.dtype.is_floating:
        return tf.saturate_cast(tf.round(x), dtype)
    return tf.cast(x, dtype)


def _spread_table() -> np.ndarray:
    """uint8 [256, 24]: row b, byte k (8 pixels x 3 channels) is 0xFF iff bit k // 3 of b is set."""
    bits = (np.arange(256)[:, None] >> (np.arange(24)[None, :] // 3)) & 1
    return (bits * 255).astype(np.uint8)


_SPREAD = _spread_table()
# Multiplying 8 bytes of 0/1 (one uint64, little-endian) by this gathers them into the top byte.
_GATHER_BITS = 0x0102040810204080


def _select_pixels(union: tf.Tensor, source: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """out[y, x] = source[y, x] where union[y, x] else target[y, x]; any dtype, any channels."""
    channels = tf.shape(target)[2]
    picked = tf.raw_ops.Select(
        condition=tf.reshape(union > 0, [-1]),
        x=tf.reshape(source, [-1, channels]),
        y=tf.reshape(target, [-1, channels]),
    )
    return tf.reshape(picked, tf.shape(target))


def _select_pixels_rgb8(union: tf.Tensor, source: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """`_select_pixels` for uint8 [H, W, 3] images with H * W % 8 == 0, on uint64 words.

    The union is spread to a per-byte 0x00/0xFF mask of the image by looking up each group of
    8 pixels in a 256-entry table; the select is then `t ^ ((t ^ s) & mask)`.
    """
    words = tf.bitcast(tf.reshape(union, [-1, 8]), tf.uint64)
    bits = tf.bitwise.right_shift(
        words * tf.constant(_GATHER_BITS, tf.uint64), tf.constant(56, tf.uint64)
    )  # 0..255: a bitcast to int64 indices is exact and copies nothing
    spread = tf.gather(tf.constant(_SPREAD), tf.bitcast(bits, tf.int64))  # [H * W / 8, 24]
    mask = tf.bitcast(tf.reshape(spread, [-1, 8]), tf.uint64)
    t = tf.bitcast(tf.reshape(target, [-1, 8]), tf.uint64)
    s = tf.bitcast(tf.reshape(source, [-1, 8]), tf.uint64)
    out = tf.bitwise.bitwise_xor(t, tf.bitwise.bitwise_and(tf.bitwise.bitwise_xor(t, s), mask))
    return tf.reshape(tf.bitcast(out, tf.uint8), tf.shape(target))


def paste_image(
    target: tf.Tensor, source: tf.Tensor, union: tf.Tensor, blend_sigma: float
) -> tf.Tensor:
    """Pastes source pixels onto target: I = source * a + target * (1 - a).

    Args:
      target: [H, W, C] image, uint8 or float.
      source: [H, W, C] image, cast to the target's dtype (float -> integer rounds).
      union: uint8 [H, W] 0/1 mask of the pasted pixels.
      blend_sigma: Python float; 0 for a hard paste (a = union, an exact select), > 0 to
        smooth a with a Gaussian of this sigma in pixels.

    Returns:
      [H, W, C] tensor of the target's dtype.
    """
    source = cast_like(source, target.dtype)
    if blend_sigma == 0.0:
        if target.dtype != tf.uint8 or target.shape[2] not in (3, None):
            return _select_pixels(union, source, target)
        if sys.byteorder != "little":
            return _select_pixels(union, source, target)
        if target.shape.is_fully_defined():
            h, w, _ = target.shape
            if (h * w) % 8 == 0:
                return _select_pixels_rgb8(union, source, target)
            return _select_pixels(union, source, target)
        shape = tf.shape(target)
        return tf.cond(
            tf.equal((shape[0] * shape[1]) % 8, 0) & tf.equal(shape[2], 3),
            lambda: _select_pixels_rgb8(union, source, target),
            lambda: _select_pixels(union, source, target),
        )
    alpha = gaussian_blur(union, blend_sigma)[:, :, None]
    mixed = tf.cast(target, tf.float32) * (1.0 - alpha) + tf.cast(source, tf.float32) * alpha
    return cast_like(mixed, target.dtype)

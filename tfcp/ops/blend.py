"""Gaussian smoothing of alpha maps for blended Copy-Paste, in core TensorFlow.

Replaces `tfa.image.gaussian_filter2d` (tensorflow-addons does not import with TF 2.20): a
separable depthwise convolution with a normalized 1-D Gaussian kernel of size
`2 * ceil(3 * sigma) + 1`. Borders use normalized convolution (zero padding, divided by the
blurred all-ones image), so a constant map stays exactly constant up to float rounding and an
alpha map touching the image border is not darkened there.
"""

from __future__ import annotations

import math

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

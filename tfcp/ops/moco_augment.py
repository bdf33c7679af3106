"""MoCo v2 image augmentations as pure graph-mode TF ops with stateless seeds.

The per-view augmentation of MoCo v2 (Chen et al. 2020), as CP2 (Wang et al., ECCV 2022)
uses it for its foreground and background images, in torchvision's order:

1. `random_resized_crop`: torchvision `RandomResizedCrop(size, scale, ratio=(3/4, 4/3))`.
   Ten attempts are drawn at once: area fraction ~ U(scale), log aspect (w / h) ~
   U(log ratio), w = round(sqrt(area * aspect)), h = round(sqrt(area / aspect)) (round half
   to even, as Python's `round`); the first attempt with 0 < w <= W and 0 < h <= H wins, its
   top-left corner uniform over the integers that keep it inside; with none, torchvision's
   fallback: the largest centred crop whose aspect is clamped to `ratio`. The crop is
   resized to S x S bilinearly with antialiasing (`tf.image.resize(antialias=True)`, the
   counterpart of PIL's bilinear reduce) and rounded to uint8 as PIL does.
2. with probability `color_jitter_prob`: `tfcp.ops.color_jitter.color_jitter` (brightness,
   contrast, saturation 0.4, hue 0.1 by default). Its order (a random permutation of the
   four) and ranges (factors ~ U(max(0, 1 - x), 1 + x), hue shift ~ U(-h, h) of the hue
   circle) are torchvision `ColorJitter`'s, brightness and hue are the same operations.
   Deviations, kept to reuse the shared op: contrast moves each channel about its own mean
   (`tf.image.adjust_contrast`) where torchvision blends with the mean of the grayscale
   image, and saturation scales HSV saturation (`tf.image.adjust_saturation`) where
   torchvision blends with the grayscale image; intermediate values are clipped float
   rather than rounded to uint8 after each step (rounded once at the end).
3. `random_grayscale` with probability `grayscale_prob`: ITU-R 601-2 luma (PIL's `L`
   weights 0.299, 0.587, 0.114), rounded, copied to the three channels.
4. `random_gaussian_blur` with probability `blur_prob`: sigma ~ U(blur_sigma). MoCo v2 uses
   PIL's `GaussianBlur(radius=sigma)`, which approximates a Gaussian of standard deviation
   sigma by three box blurs. Here: an exact Gaussian of that sigma, separable, truncated at
   a fixed radius ceil(3 * max sigma) taps (13 taps for sigma <= 2; static shape, the tail
   beyond 3 sigma is < 0.3 % of the mass), edge pixels replicated as PIL does.
5. `random_flip`: horizontal flip with probability `flip_prob` (0.5).

`random_erasing_box` draws torchvision `RandomErasing`'s rectangle (CP2's paste region): ten
attempts at area fraction ~ U(scale), log aspect (h / w) ~ U(log ratio), h = round(sqrt(area
* aspect)), w = round(sqrt(area / aspect)); the first with h < H and w < W wins (strictly, as
torchvision), top-left uniform; with none, torchvision erases nothing: the box is empty
(h = w = 0).

Every op takes `seed`, an int32/int64 [2] stateless seed: the same input and seed give the
same output, in eager mode, in `tf.data` and under `tf.function` (H, W may be unknown).
Images are uint8 [H, W, 3] in and out, as the PIL images of the reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import tensorflow as tf

from tfcp.ops import color_jitter as cj

NUM_ATTEMPTS = 10  # torchvision's attempts for RandomResizedCrop and RandomErasing
_LUMA = (0.299, 0.587, 0.114)


class ViewOptions(NamedTuple):
    """One MoCo v2 view's augmentation (defaults: MoCo v2 / CP2 at 224 px)."""

    size: int = 224
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    color_jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    flip_prob: float = 0.5


def check_range(name: str, values: Sequence[float], low: float = 0.0, high=math.inf) -> None:
    """Raises ValueError (naming `name`) unless low <= values[0] <= values[1] <= high."""
    lo, hi = (float(v) for v in values)
    if not low <= lo <= hi <= high:
        raise ValueError(f"{name} must be a range ({low} <=) min <= max (<= {high}), got {values}")


def validate(options: ViewOptions) -> None:
    """Raises ValueError for an invalid option (names it)."""
    if int(options.size) < 1:
        raise ValueError(f"size must be >= 1, got {options.size}")
    check_range("crop_scale", options.crop_scale, 0.0, 1.0)
    if float(options.crop_scale[1]) <= 0.0:
        raise ValueError(f"crop_scale must allow a non-empty crop, got {options.crop_scale}")
    check_range("crop_ratio", options.crop_ratio, 1e-6)
    check_range("blur_sigma", options.blur_sigma, 1e-6)
    for name in ("color_jitter_prob", "grayscale_prob", "blur_prob", "flip_prob"):
        check_range(name, (getattr(options, name),) * 2, 0.0, 1.0)
    cj.validate(options.brightness, options.contrast, options.saturation, options.hue)


def _split(seed: tf.Tensor, n: int) -> list[tf.Tensor]:
    return tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), n))


def _offset(seed: tf.Tensor, extent: tf.Tensor) -> tf.Tensor:
    """An integer uniform in [0, extent] (int32 scalar)."""
    return tf.random.stateless_uniform([], seed, 0, extent + 1, dtype=tf.int32)


def _attempts(seed, area, scale, ratio):
    """(sqrt(area * aspect), sqrt(area / aspect)) rounded, for NUM_ATTEMPTS draws: int32 [10]."""
    s_area, s_ratio = _split(seed, 2)
    target = area * tf.random.stateless_uniform(
        [NUM_ATTEMPTS], s_area, float(scale[0]), float(scale[1]), tf.float64
    )
    log_lo, log_hi = math.log(float(ratio[0])), math.log(float(ratio[1]))
    aspect = tf.exp(
        tf.random.stateless_uniform([NUM_ATTEMPTS], s_ratio, log_lo, log_hi, tf.float64)
    )
    along = tf.cast(tf.round(tf.sqrt(target * aspect)), tf.int32)
    across = tf.cast(tf.round(tf.sqrt(target / aspect)), tf.int32)
    return along, across


def _first(valid: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
    return tf.gather(values, tf.argmax(tf.cast(valid, tf.int32), output_type=tf.int32))


def random_resized_crop_box(
    seed: tf.Tensor,
    height: tf.Tensor,
    width: tf.Tensor,
    *,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
) -> tf.Tensor:
    """torchvision `RandomResizedCrop.get_params` (see the module docstring).

    Args:
      seed: int [2] stateless seed.
      height, width: int scalars, the image size (>= 1).
      scale: (min, max) area fraction of the crop.
      ratio: (min, max) aspect ratio width / height of the crop.

    Returns:
      int32 [4]: (top, left, crop height, crop width), inside the image.
    """
    height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    s_try, s_top, s_left = _split(seed, 3)
    area = tf.cast(height * width, tf.float64)
    w, h = _attempts(s_try, area, scale, ratio)
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    # torchvision's fallback: a centred crop, its aspect clamped to `ratio`.
    in_ratio = tf.cast(width, tf.float64) / tf.cast(height, tf.float64)
    lo, hi = float(min(ratio)), float(max(ratio))
    w_lo = width
    h_lo = tf.cast(tf.round(tf.cast(width, tf.float64) / lo), tf.int32)
    h_hi = height
    w_hi = tf.cast(tf.round(tf.cast(height, tf.float64) * hi), tf.int32)
    fb_h = tf.where(in_ratio < lo, h_lo, tf.where(in_ratio > hi, h_hi, height))
    fb_w = tf.where(in_ratio < lo, w_lo, tf.where(in_ratio > hi, w_hi, width))
    found = tf.reduce_any(valid)
    crop_h = tf.where(found, _first(valid, h), fb_h)
    crop_w = tf.where(found, _first(valid, w), fb_w)
    top = tf.where(found, _offset(s_top, height - crop_h), (height - crop_h) // 2)
    left = tf.where(found, _offset(s_left, width - crop_w), (width - crop_w) // 2)
    return tf.stack([top, left, crop_h, crop_w])


def random_erasing_box(
    seed: tf.Tensor,
    height: tf.Tensor,
    width: tf.Tensor,
    *,
    scale: Sequence[float] = (0.02, 0.33),
    ratio: Sequence[float] = (0.3, 3.3),
) -> tf.Tensor:
    """torchvision `RandomErasing.get_params`'s rectangle (see the module docstring).

    Args:
      seed: int [2] stateless seed.
      height, width: int scalars, the image size.
      scale: (min, max) area fraction of the rectangle (CP2: (0.5, 0.8)).
      ratio: (min, max) aspect ratio height / width (CP2: (0.8, 1.25)).

    Returns:
      int32 [4]: (top, left, box height, box width); (0, 0, 0, 0) when no attempt fits.
    """
    height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    s_try, s_top, s_left = _split(seed, 3)
    h, w = _attempts(s_try, tf.cast(height * width, tf.float64), scale, ratio)
    valid = (h < height) & (w < width)
    found = tf.reduce_any(valid)
    box_h = tf.where(found, _first(valid, h), 0)
    box_w = tf.where(found, _first(valid, w), 0)
    top = tf.where(found, _offset(s_top, height - box_h), 0)
    left = tf.where(found, _offset(s_left, width - box_w), 0)
    return tf.stack([top, left, box_h, box_w])


def _to_uint8(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def random_resized_crop(
    image: tf.Tensor,
    seed: tf.Tensor,
    *,
    size: int,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
) -> tf.Tensor:
    """Crops a `random_resized_crop_box` and resizes it to size x size.

    Args:
      image: uint8 [H, W, 3].
      seed: int [2] stateless seed.
      size: S, the output side.
      scale, ratio: see `random_resized_crop_box`.

    Returns:
      uint8 [S, S, 3].
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    top, left, h, w = tf.unstack(
        random_resized_crop_box(seed, shape[0], shape[1], scale=scale, ratio=ratio)
    )
    crop = tf.slice(image, tf.stack([top, left, 0]), tf.stack([h, w, -1]))
    resized = tf.image.resize(tf.cast(crop, tf.float32), [size, size], antialias=True)
    out = _to_uint8(resized)
    out.set_shape([size, size, 3])
    return out


def _with_prob(prob: float, seed: tf.Tensor, apply, image: tf.Tensor) -> tf.Tensor:
    """`apply(image)` with probability `prob` (a coin from `seed`), else `image`."""
    if float(prob) <= 0.0:
        return image
    if float(prob) >= 1.0:
        return apply(image)
    coin = tf.random.stateless_uniform([], seed) < float(prob)
    out = tf.cond(coin, lambda: apply(image), lambda: tf.identity(image))
    out.set_shape(image.shape)
    return out


def grayscale(image: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, 3] -> uint8 [H, W, 3] with three equal channels (rounded luma)."""
    image = tf.convert_to_tensor(image)
    luma = tf.tensordot(tf.cast(image, tf.float32), tf.constant(_LUMA), axes=[[2], [0]])
    out = tf.repeat(_to_uint8(luma)[..., None], 3, axis=-1)
    out.set_shape(image.shape)
    return out


def random_grayscale(image: tf.Tensor, seed: tf.Tensor, *, prob: float = 0.2) -> tf.Tensor:
    """`grayscale` with probability `prob`. uint8 [H, W, 3] -> uint8 [H, W, 3]."""
    return _with_prob(prob, seed, grayscale, tf.convert_to_tensor(image))


def blur_radius(max_sigma: float) -> int:
    """Taps on each side of the blur kernel: ceil(3 * max_sigma), at least 1."""
    return max(int(math.ceil(3.0 * float(max_sigma))), 1)


def gaussian_blur(image: tf.Tensor, sigma: tf.Tensor, *, max_sigma: float = 2.0) -> tf.Tensor:
    """Separable Gaussian blur with replicated edges (see the module docstring).

    Args:
      image: uint8 [H, W, 3].
      sigma: float scalar standard deviation in pixels (> 0, <= max_sigma).
      max_sigma: fixes the kernel radius, `blur_radius(max_sigma)` (static shape).

    Returns:
      uint8 [H, W, 3]; a constant image is returned unchanged.
    """
    image = tf.convert_to_tensor(image)
    radius = blur_radius(max_sigma)
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    sigma = tf.cast(sigma, tf.float32)
    kernel = tf.exp(-0.5 * tf.square(taps / sigma))
    kernel /= tf.reduce_sum(kernel)
    x = tf.cast(image, tf.float32)[None]
    for axis in (1, 2):  # rows, then columns; edges replicated by clipped gathers
        n = tf.shape(x)[axis]
        index = tf.clip_by_value(tf.range(-radius, n + radius), 0, n - 1)
        padded = tf.gather(x, index, axis=axis)
        shape = [2 * radius + 1, 1] if axis == 1 else [1, 2 * radius + 1]
        filt = tf.tile(tf.reshape(kernel, shape + [1, 1]), [1, 1, 3, 1])
        x = tf.nn.depthwise_conv2d(padded, filt, [1, 1, 1, 1], "VALID")
    out = _to_uint8(x[0])
    out.set_shape(image.shape)
    return out


def random_gaussian_blur(
    image: tf.Tensor,
    seed: tf.Tensor,
    *,
    prob: float = 0.5,
    sigma_range: Sequence[float] = (0.1, 2.0),
) -> tf.Tensor:
    """`gaussian_blur` with probability `prob`, sigma ~ U(sigma_range). uint8 in and out."""
    s_coin, s_sigma = _split(seed, 2)
    lo, hi = float(sigma_range[0]), float(sigma_range[1])
    sigma = tf.random.stateless_uniform([], s_sigma, lo, hi) if hi > lo else tf.constant(lo)
    blur = lambda x: gaussian_blur(x, sigma, max_sigma=hi)
    return _with_prob(prob, s_coin, blur, tf.convert_to_tensor(image))


def random_flip(image: tf.Tensor, seed: tf.Tensor, *, prob: float = 0.5) -> tf.Tensor:
    """Horizontal flip (columns reversed) with probability `prob`. [H, W, C] in and out."""
    return _with_prob(prob, seed, lambda x: x[:, ::-1], tf.convert_to_tensor(image))


def random_color_jitter(
    image: tf.Tensor, seed: tf.Tensor, options: ViewOptions = ViewOptions()
) -> tf.Tensor:
    """`tfcp.ops.color_jitter.color_jitter` with probability `options.color_jitter_prob`."""
    s_coin, s_jitter = _split(seed, 2)
    jitter = lambda x: cj.color_jitter(
        x,
        s_jitter,
        brightness=options.brightness,
        contrast=options.contrast,
        saturation=options.saturation,
        hue=options.hue,
    )
    return _with_prob(options.color_jitter_prob, s_coin, jitter, tf.convert_to_tensor(image))


def moco_view(image: tf.Tensor, seed: tf.Tensor, options: ViewOptions = ViewOptions()) -> tf.Tensor:
    """One MoCo v2 view: crop, color jitter, grayscale, blur, flip (module docstring).

    Args:
      image: uint8 [H, W, 3] (H, W may be unknown).
      seed: int [2] stateless seed.
      options: the augmentation (`validate` it once on the host).

    Returns:
      uint8 [S, S, 3] with S = `options.size` (not normalized).
    """
    s_crop, s_jitter, s_gray, s_blur, s_flip = _split(seed, 5)
    x = random_resized_crop(
        image, s_crop, size=options.size, scale=options.crop_scale, ratio=options.crop_ratio
    )
    x = random_color_jitter(x, s_jitter, options)
    x = random_grayscale(x, s_gray, prob=options.grayscale_prob)
    x = random_gaussian_blur(x, s_blur, prob=options.blur_prob, sigma_range=options.blur_sigma)
    return random_flip(x, s_flip, prob=options.flip_prob)

"""Color jitter (brightness, contrast, saturation, hue) of a uint8 image, stateless.

The post-transform of Balanced Mosaic (`tfcp.ops.mosaic`), torchvision `ColorJitter`'s
semantics with core TF ops and stateless draws from one seed:

* brightness b: the image is multiplied by f ~ U(max(0, 1 - b), 1 + b);
* contrast c: `tf.image.adjust_contrast` (each channel moves away from its mean) by
  f ~ U(max(0, 1 - c), 1 + c);
* saturation s: `tf.image.adjust_saturation` (HSV saturation times f) by
  f ~ U(max(0, 1 - s), 1 + s);
* hue h (0 <= h <= 0.5): `tf.image.adjust_hue` by delta ~ U(-h, h) (a fraction of the hue
  circle).

The enabled adjustments run in a random order (a permutation drawn from the seed), on
float32 values in [0, 1], clipped after each one; the result is rounded back to uint8. A
factor of 0 turns its adjustment off (no draw is used for it); with all factors 0 the image
is returned as is.
"""

from __future__ import annotations

import tensorflow as tf

NAMES = ("brightness", "contrast", "saturation", "hue")


def validate(brightness: float, contrast: float, saturation: float, hue: float) -> None:
    """Raises ValueError for a negative factor or a hue outside [0, 0.5]."""
    for name, value in zip(NAMES, (brightness, contrast, saturation, hue), strict=True):
        if not float(value) >= 0.0:
            raise ValueError(f"color_jitter: {name} must be >= 0, got {value!r}")
    if float(hue) > 0.5:
        raise ValueError(f"color_jitter: hue must be in [0, 0.5], got {hue!r}")


def color_jitter(
    image: tf.Tensor,
    seed: tf.Tensor,
    *,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
    hue: float = 0.0,
    random_order: bool = True,
) -> tf.Tensor:
    """Randomly jitters brightness, contrast, saturation and hue.

    Args:
      image: uint8 [H, W, 3] (H, W may be unknown).
      seed: int32/int64 [2] stateless seed: same image and seed give the same output.
      brightness, contrast, saturation: factors >= 0 (0 = off), see the module docstring.
      hue: maximal hue shift in [0, 0.5] (0 = off).
      random_order: apply the enabled adjustments in a seeded random order; False applies
        them in the order brightness, contrast, saturation, hue.

    Returns:
      uint8 [H, W, 3], the same static shape.
    """
    validate(brightness, contrast, saturation, hue)
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise ValueError(f"color_jitter: the image must be uint8, got {image.dtype.name}")
    factors = dict(zip(NAMES, (brightness, contrast, saturation, hue), strict=True))
    enabled = [name for name in NAMES if float(factors[name]) > 0.0]
    if not enabled:
        return image
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), len(NAMES) + 1)

    def draw(name):
        value = float(factors[name])
        s = seeds[NAMES.index(name)]
        if name == "hue":
            return tf.random.stateless_uniform([], s, -value, value)
        return tf.random.stateless_uniform([], s, max(0.0, 1.0 - value), 1.0 + value)

    amounts = {name: draw(name) for name in enabled}
    ops = {
        "brightness": lambda x: x * amounts["brightness"],
        "contrast": lambda x: tf.image.adjust_contrast(x, amounts["contrast"]),
        "saturation": lambda x: tf.image.adjust_saturation(x, amounts["saturation"]),
        "hue": lambda x: tf.image.adjust_hue(x, amounts["hue"]),
    }
    branches = [lambda x, op=ops[name]: tf.clip_by_value(op(x), 0.0, 1.0) for name in enabled]

    x = tf.cast(image, tf.float32) / 255.0
    if random_order and len(enabled) > 1:
        order = tf.argsort(tf.random.stateless_uniform([len(enabled)], seeds[-1]), stable=True)
        for k in range(len(enabled)):
            x = tf.switch_case(order[k], [lambda f=f, x=x: f(x) for f in branches])
    else:
        for f in branches:
            x = f(x)
    out = tf.cast(tf.round(x * 255.0), tf.uint8)
    out.set_shape(image.shape)
    return out

"""Balanced Mosaic's 4-image mosaic (LVIS 2020 challenge report, Chen, Zhou, Li et al.,
"Balanced Mosaic and Double Classifier", Algorithm 1) as a pure TF op, YOLOX-style.

`mosaic([x_0, x_1, x_2, x_3], seed, output_size=S)` returns one S x S example (S_h x S_w for
a pair) and the number of input objects it dropped. The partners x_1..x_3 are chosen by the
caller (by repeat factor for the balanced form, `tfcp.data.mosaic_stage`). Contract:

1. Pre-transform: one scale s = min(S_h / H_0, S_w / W_0) from x_0's shape (S / max(H_0, W_0)
   for a square output). Every image i is resized by s to h_i x w_i = max(round(s H_i), 1) x
   max(round(s W_i), 1): the image bilinearly (`tf.image.resize`, half-pixel centres), masks
   by nearest neighbour.
2. Composition on a virtual 2S_h x 2S_w canvas of `pad_value` around a centre (cy, cx) =
   (round(u_y S_h), round(u_x S_w)), u ~ U(center_range). Canvas rows/columns [a, b):
   image 0 at [cy - h_0, cy) x [cx - w_0, cx) (bottom-right corner at the centre), image 1 at
   [cy - h_1, cy) x [cx, cx + w_1), image 2 at [cy, cy + h_2) x [cx - w_2, cx), image 3 at
   [cy, cy + h_3) x [cx, cx + w_3). Parts outside the canvas are cut; the images never overlap.
3. Post-transforms: the S_h x S_w window with top-left (y0, x0), each coordinate uniform over
   the integers that keep the window inside the canvas and the centre in the window
   (y0 in [max(0, cy - S_h), min(cy, S_h)]); then a horizontal flip of the window with
   probability `flip_prob`; then `tfcp.ops.color_jitter` on the image (0 = off).

Neither the canvas nor full-size resized images or masks are built: the centre, window and
flip are drawn first (`mosaic_params`), then each image contributes only the rectangle that
lands in the window, sampled straight from its input (bilinear from gathered rows and
columns for the image; uint8 nearest-neighbour gathers for the masks, as in
`tfcp.ops.scale_jitter`), bit-identical to resizing whole images with `tf.image.resize` and
cropping the canvas. Output pixel (r, c) of the unflipped window shows canvas pixel
(y0 + r, x0 + c); flipped, output column c shows window column S_w - 1 - c.

Annotations: an object keeps the visible part of its resized mask. Objects with fewer than
`max(min_visible_area, 1)` visible pixels (also those entirely outside the window, and those
whose input mask is empty) are dropped and counted, crowd objects alike. Every kept object's
box is the tight box of its visible mask, [row_min, col_min, row_max + 1, col_max + 1] / S
(MMDetection's convention); input boxes are not read. Its area is its visible pixel count.
Output objects are the kept objects of image 0, then 1, 2, 3, each in input order.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfcp.ops import blend
from tfcp.ops import color_jitter as cj
from tfcp.ops import copy_paste as cp
from tfcp.ops import packed_masks as pm
from tfcp.ops import scale_jitter as sj

# The decoded-example keys are Copy-Paste's (one definition of the example structure).
IMAGE, BOXES, CLASSES, MASKS, IS_CROWD, AREA = (
    cp.IMAGE, cp.BOXES, cp.CLASSES, cp.MASKS, cp.IS_CROWD, cp.AREA
)  # fmt: skip
_REQUIRED = (IMAGE, CLASSES, MASKS, IS_CROWD)
_PER_OBJECT_PREFIX = cp.PER_OBJECT_PREFIX
_RECOMPUTED = (BOXES, MASKS, AREA)
_SIZE_KEYS = ("height", "width")
NUM_IMAGES = 4
# Corner of image i at the centre: rows above (-1) or below (+1) it, columns left or right.
_SIDES = ((-1, -1), (-1, 1), (1, -1), (1, 1))


def _static_size(output_size) -> tuple[int, int]:
    if isinstance(output_size, int):
        size = (output_size, output_size)
    else:
        size = tuple(int(s) for s in output_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"mosaic: output_size must be S or (S_h, S_w) >= 1, got {output_size!r}")
    return size


def mosaic_params(
    seed,
    *,
    output_size: int | Sequence[int],
    center_range: Sequence[float] = (0.5, 1.5),
    flip_prob: float = 0.5,
) -> dict[str, tf.Tensor]:
    """Draws the mosaic's random parameters (module docstring, steps 2 and 3).

    Args:
      seed: int32/int64 [2] stateless seed.
      output_size: S or (S_h, S_w).
      center_range: (lo, hi) with 0 <= lo <= hi <= 2, the centre's range in units of S.
      flip_prob: probability of a horizontal flip.

    Returns:
      dict with `center` int32 [2] (cy, cx) and `offset` int32 [2] (y0, x0) in canvas
      pixels, `flip` bool [], `jitter_seed` int64 [2] (the color jitter's seed).
    """
    lo, hi = (float(c) for c in center_range)
    if not 0.0 <= lo <= hi <= 2.0:
        raise ValueError(
            f"mosaic: center_range must satisfy 0 <= lo <= hi <= 2, got {center_range}"
        )
    if not 0.0 <= float(flip_prob) <= 1.0:
        raise ValueError(f"mosaic: flip_prob must be in [0, 1], got {flip_prob!r}")
    size = tf.constant(_static_size(output_size), tf.int32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    u = tf.random.stateless_uniform([2], seeds[0], lo, hi)
    center = tf.cast(tf.round(u * tf.cast(size, tf.float32)), tf.int32)
    first = tf.maximum(center - size, 0)
    last = tf.minimum(center, size)
    v = tf.random.stateless_uniform([2], seeds[1])
    span = tf.cast(last - first + 1, tf.float32)
    offset = tf.minimum(first + tf.cast(tf.floor(v * span), tf.int32), last)
    flip = tf.random.stateless_uniform([], seeds[2]) < flip_prob
    return {"center": center, "offset": offset, "flip": flip, "jitter_seed": seeds[3]}


def _span(corner, length, side, window_start, window_len):
    """The part of one image axis inside the window.

    The image spans canvas [corner - length, corner) for side -1, [corner, corner + length)
    for side +1. Returns int32 scalars (start in the resized image, count, start in the
    window); count is 0 when nothing lands in the window.
    """
    begin = corner - length if side < 0 else corner
    first = tf.maximum(begin, window_start)
    last = tf.minimum(begin + length, window_start + window_len)
    count = tf.maximum(last - first, 0)
    start = tf.clip_by_value(first - begin, 0, length)
    out = tf.clip_by_value(first - window_start, 0, window_len - count)
    return start, count, out


def _bilinear_coords(start, count, in_size, out_size):
    """Lower/upper source indices and weights of resized pixels start..start+count-1.

    `tf.image.resize(..., 'bilinear')` arithmetic (half-pixel centres): resized pixel i reads
    source position (i + 0.5) * in / out - 0.5 between floor and ceil, clamped to the image.
    """
    scale = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    pos = (tf.cast(tf.range(start, start + count), tf.float32) + 0.5) * scale - 0.5
    low = tf.floor(pos)
    limit = in_size - 1
    lo = tf.clip_by_value(tf.cast(low, tf.int32), 0, limit)
    hi = tf.clip_by_value(tf.cast(tf.math.ceil(pos), tf.int32), 0, limit)
    return lo, hi, pos - low


def _image_region(image, rows, cols):
    """Bilinear region [R, C, 3] float32 of a resized image from `_bilinear_coords` rows and
    columns (TF's kernel order: interpolate along columns, then rows)."""
    (r_lo, r_hi, r_w), (c_lo, c_hi, c_w) = rows, cols
    top, bottom = tf.gather(image, r_lo), tf.gather(image, r_hi)

    def lerp_cols(x):
        left = tf.cast(tf.gather(x, c_lo, axis=1), tf.float32)
        right = tf.cast(tf.gather(x, c_hi, axis=1), tf.float32)
        return left + (right - left) * c_w[None, :, None]

    top, bottom = lerp_cols(top), lerp_cols(bottom)
    return top + (bottom - top) * r_w[:, None, None]


def _validate(examples, min_visible_area, pad_value):
    if len(examples) != NUM_IMAGES:
        raise ValueError(f"mosaic: needs exactly {NUM_IMAGES} examples, got {len(examples)}")
    if not float(min_visible_area) >= 0:
        raise ValueError(f"mosaic: min_visible_area must be >= 0, got {min_visible_area!r}")
    if not 0 <= float(pad_value) <= 255:
        raise ValueError(f"mosaic: pad_value must be in [0, 255], got {pad_value!r}")
    per_object = [
        k for k in examples[0] if k.startswith(_PER_OBJECT_PREFIX) and k not in _RECOMPUTED
    ]
    for i, ex in enumerate(examples):
        missing = [k for k in _REQUIRED + tuple(per_object) if k not in ex]
        if missing:
            raise ValueError(f"mosaic: example {i} lacks keys {sorted(set(missing))}")
    return per_object


def apply_mosaic(
    examples: Sequence[dict],
    params: dict[str, tf.Tensor],
    *,
    output_size: int | Sequence[int],
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
    hue: float = 0.0,
    min_visible_area: float = 1.0,
    pad_value: int = sj.DEFAULT_PAD_VALUE,
) -> tuple[dict, tf.Tensor]:
    """The mosaic for given draws (`mosaic_params`); arguments and result as `mosaic`."""
    per_object = _validate(examples, min_visible_area, pad_value)
    cj.validate(brightness, contrast, saturation, hue)
    size_h, size_w = _static_size(output_size)
    images = [tf.convert_to_tensor(ex[IMAGE]) for ex in examples]
    dtype = images[0].dtype
    if dtype != tf.uint8 and max(brightness, contrast, saturation, hue) > 0:
        raise ValueError(f"mosaic: color jitter needs uint8 images, got {dtype.name}")
    hw = [tf.shape(image)[:2] for image in images]
    size_f = tf.constant([size_h, size_w], tf.float32)
    scale = tf.reduce_min(size_f / tf.cast(hw[0], tf.float32))
    cy, cx = tf.unstack(tf.cast(params["center"], tf.int32))
    y0, x0 = tf.unstack(tf.cast(params["offset"], tf.int32))
    flip = tf.cast(params["flip"], tf.bool)
    threshold = tf.maximum(tf.cast(min_visible_area, tf.float32), 1.0)

    def flipped(x):
        return tf.where(flip, tf.reverse(x, [0]), x)

    def to_dtype(x):
        if dtype.is_integer:
            return tf.cast(tf.clip_by_value(tf.round(x), 0.0, dtype.max), dtype)
        return tf.cast(x, dtype)

    canvas = tf.zeros([size_h, size_w, 3], dtype)
    covered = tf.zeros([size_h, size_w, 1], tf.bool)
    kept = {key: [] for key in per_object + [MASKS, BOXES, AREA]}
    num_in = tf.constant(0, tf.int32)
    for i, ((side_y, side_x), ex, image) in enumerate(zip(_SIDES, examples, images, strict=True)):
        in_hw = hw[i]
        new_hw = tf.maximum(tf.cast(tf.round(scale * tf.cast(in_hw, tf.float32)), tf.int32), 1)
        r0, rh, oy = _span(cy, new_hw[0], side_y, y0, size_h)
        c0, cw, ox = _span(cx, new_hw[1], side_x, x0, size_w)
        # Flipped, window column c goes to output column S_w - 1 - c.
        ox = tf.where(flip, size_w - ox - cw, ox)
        pads = tf.stack([[oy, size_h - oy - rh], [ox, size_w - ox - cw]])
        pads3 = tf.concat([pads, [[0, 0]]], 0)

        # Image: bilinear samples of the rows/columns inside the window only. The regions
        # are disjoint, so zero-padded regions add up to the mosaic.
        rows = _bilinear_coords(r0, rh, in_hw[0], new_hw[0])
        cols = tuple(flipped(t) for t in _bilinear_coords(c0, cw, in_hw[1], new_hw[1]))
        region = to_dtype(_image_region(image, rows, cols))
        canvas += tf.pad(region, pads3)
        covered |= tf.pad(tf.ones([rh, cw, 1], tf.bool), pads3)

        # Masks: nearest-neighbour uint8 gathers of the rows/columns inside the window only.
        image_scale = tf.cast(new_hw, tf.float32) / tf.cast(in_hw, tf.float32)
        m_rows = sj._nearest_indices(r0, rh, image_scale[0], in_hw[0])
        m_cols = flipped(sj._nearest_indices(c0, cw, image_scale[1], in_hw[1]))
        masks = tf.convert_to_tensor(ex[MASKS])
        num_in += tf.shape(masks)[0]
        visible = pm.binarize_masks(sj._gather_rows_cols(masks, m_rows, m_cols))  # [n, rh, cw]
        row_counts = pm.row_counts(visible)
        counts = tf.reduce_sum(row_counts, axis=1)
        keep = tf.cast(tf.where(tf.cast(counts, tf.float32) >= threshold)[:, 0], tf.int32)
        visible = tf.gather(visible, keep)
        bounds = pm.tight_bounds(tf.gather(row_counts, keep) > 0, pm.column_any(visible))
        kept[BOXES].append(bounds + tf.stack([oy, ox, oy, ox])[None])
        kept[MASKS].append(tf.pad(visible, tf.concat([[[0, 0]], pads], 0)))
        kept[AREA].append(tf.cast(tf.gather(counts, keep), tf.float32))
        for key in per_object:
            value = tf.gather(tf.convert_to_tensor(ex[key]), keep)
            kept[key].append(blend.cast_like(value, tf.as_dtype(examples[0][key].dtype)))

    image = tf.where(covered, canvas, tf.cast(pad_value, dtype))
    if dtype == tf.uint8:
        image = cj.color_jitter(
            image,
            params["jitter_seed"],
            brightness=brightness,
            contrast=contrast,
            saturation=saturation,
            hue=hue,
        )
    image.set_shape([size_h, size_w, 3])

    output = dict(examples[0])
    output[IMAGE] = image
    for key in _SIZE_KEYS:
        if key in output:
            value = tf.convert_to_tensor(output[key])
            output[key] = tf.constant(size_h if key == "height" else size_w, value.dtype)
    masks = tf.concat(kept.pop(MASKS), 0)
    masks = blend.cast_like(masks, tf.as_dtype(examples[0][MASKS].dtype))
    masks.set_shape([None, size_h, size_w])
    output[MASKS] = masks
    output[BOXES] = pm.normalize_bounds(tf.concat(kept.pop(BOXES), 0), size_h, size_w)
    for key, parts in kept.items():
        value = tf.concat(parts, 0)
        static = tf.TensorShape(examples[0][key].shape) if key in examples[0] else [None]
        value.set_shape(tf.TensorShape([None]).concatenate(static[1:]))
        output[key] = value
    output[BOXES].set_shape([None, 4])
    num_dropped = num_in - tf.shape(output[CLASSES])[0]
    return output, num_dropped


def mosaic(
    examples: Sequence[dict],
    seed,
    *,
    output_size: int | Sequence[int],
    center_range: Sequence[float] = (0.5, 1.5),
    flip_prob: float = 0.5,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
    hue: float = 0.0,
    min_visible_area: float = 1.0,
    pad_value: int = sj.DEFAULT_PAD_VALUE,
) -> tuple[dict, tf.Tensor]:
    """The 4-image mosaic of the module docstring.

    Args:
      examples: exactly 4 decoded examples (`tfcp.data.decoder.decode`), x_0 first, of any
        sizes H_i x W_i (may be unknown): `image` uint8 [H_i, W_i, 3]; `groundtruth_classes`
        int [N_i]; `groundtruth_is_crowd` bool [N_i]; `groundtruth_instance_masks` [N_i, H_i,
        W_i] 0/1 (uint8; bool, float and uint8 0/255 are binarized); optional
        `groundtruth_boxes` float32 [N_i, 4] and `groundtruth_area` [N_i] (both recomputed).
        Every other `groundtruth_*` key of x_0 is per-object [N_i, ...] (e.g.
        `groundtruth_difficult`) and must be in all four. Other keys (`source_id`, ...) come
        from x_0; `height` and `width` become S_h and S_w.
      seed: int32/int64 [2] stateless seed: same inputs and seed give a bit-identical output.
      output_size: S or (S_h, S_w), static.
      center_range: (lo, hi), 0 <= lo <= hi <= 2: the centre is uniform in [lo S, hi S].
      flip_prob: probability of a horizontal flip of the mosaic.
      brightness, contrast, saturation, hue: `tfcp.ops.color_jitter` factors (0 = off).
      min_visible_area: objects with fewer visible mask pixels are dropped (at least 1
        pixel is always required).
      pad_value: gray value of the canvas where no image lands.

    Returns:
      (example, num_dropped): the example with x_0's keys and dtypes, `image` [S_h, S_w, 3],
      masks [M, S_h, S_w] 0/1 in x_0's mask dtype, `groundtruth_boxes` float32 [M, 4] tight
      boxes normalized by (S_h, S_w), `groundtruth_area` float32 [M] visible pixels, other
      per-object keys [M, ...]; num_dropped int32 [] = sum N_i - M.
    """
    params = mosaic_params(
        seed, output_size=output_size, center_range=center_range, flip_prob=flip_prob
    )
    return apply_mosaic(
        examples,
        params,
        output_size=output_size,
        brightness=brightness,
        contrast=contrast,
        saturation=saturation,
        hue=hue,
        min_visible_area=min_visible_area,
        pad_value=pad_value,
    )

"""Scale jittering (large: 0.1-2.0, standard: 0.8-1.25), random flip and eval resizing.

Paper (Ghiasi et al. 2021, Fig. 3): resize keeping the aspect ratio, random-crop when the
resized image is larger than the output, pad with gray when it is smaller, random horizontal
flip. The resize follows Model Garden's `preprocess_ops.resize_and_crop_image`: the target
size is `round(scale * output_size)` with `scale ~ U(scale_min, scale_max)`, the image is
scaled by the largest factor that fits it into that target, and the crop offset is uniform
over the valid range. Randomness is stateless (`seed` int [2]).

Everything is applied consistently to the image, the normalized boxes (clipped to the crop,
degenerate objects removed together with all their per-object fields), and the instance
masks. Masks stay uint8: only the objects whose box lands inside the crop are resized, by
nearest-neighbour gathers of only the rows and columns that land inside the crop, never
through a full-resolution float32 copy. Areas are recomputed from the jittered masks (uint8
masks must hold 0/1, as `tfcp.data.decoder` emits them).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfcp.ops import packed_masks

DEFAULT_PAD_VALUE = 128
LSJ_SCALE_RANGE = (0.1, 2.0)
SSJ_SCALE_RANGE = (0.8, 1.25)

_BOXES = "groundtruth_boxes"
_MASKS = "groundtruth_instance_masks"
_AREA = "groundtruth_area"


def _static_size(output_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(output_size, int):
        return output_size, output_size
    height, width = output_size
    return int(height), int(width)


def _nearest_indices(start: tf.Tensor, count: tf.Tensor, scale: tf.Tensor, limit: tf.Tensor):
    """Source indices of output pixels `start..start+count-1` of a nearest resize.

    Matches `tf.image.resize(..., 'nearest')` (half-pixel centers): output pixel `i` of an
    image scaled by `scale` reads source pixel `floor((i + 0.5) / scale)`.
    """
    positions = tf.cast(tf.range(start, start + count), tf.float32) + 0.5
    indices = tf.cast(tf.floor(positions / scale), tf.int32)
    return tf.clip_by_value(indices, 0, limit - 1)


def _gather_columns(masks: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """`tf.gather(masks, cols, axis=2)` as a row gather between transposes (~2.5x faster:
    a gather on the last axis copies one byte at a time, a row gather whole rows)."""
    transposed = tf.gather(tf.transpose(masks, [0, 2, 1]), cols, axis=1)
    return tf.transpose(transposed, [0, 2, 1])


def _gather_rows_cols(masks: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """masks[:, rows][:, :, cols] for uint8 [N, H, W], columns gathered on min(H, |rows|) rows."""
    return tf.cond(
        tf.size(rows) <= tf.shape(masks)[1],
        lambda: _gather_columns(tf.gather(masks, rows, axis=1), cols),
        lambda: tf.gather(_gather_columns(masks, cols), rows, axis=1),
    )


def _mask_areas(masks: tf.Tensor) -> tf.Tensor:
    """float32 [N] pixel counts of 0/1 masks [N, H, W] (uint8: packed, no float copy)."""
    if masks.dtype == tf.uint8:
        counts = packed_masks.row_counts(masks)
        return tf.cast(tf.reduce_sum(counts, axis=1), tf.float32)
    return tf.reduce_sum(tf.cast(masks, tf.float32), axis=[1, 2])


def _gather_objects(example: dict[str, tf.Tensor], keep: tf.Tensor) -> dict[str, tf.Tensor]:
    """`example` with only the objects of bool [N] `keep` (every `groundtruth_*` field);
    unchanged (no copy) when all are kept."""
    per_object = {k: v for k, v in example.items() if k.startswith("groundtruth_")}
    indices = tf.where(keep)[:, 0]
    kept = tf.cond(
        tf.reduce_all(keep),
        lambda: per_object,
        lambda: {k: tf.gather(v, indices) for k, v in per_object.items()},
    )
    return {**example, **kept}


def _transform(
    example: dict[str, tf.Tensor],
    *,
    output_size: tuple[int, int],
    random_scale: tf.Tensor,
    offset_fraction: tf.Tensor,
    flip: tf.Tensor,
    pad_value: float,
    drop_empty: bool,
) -> dict[str, tf.Tensor]:
    """Resize by `random_scale` of the output size, crop, flip, pad (see `scale_jitter`)."""
    image = example["image"]
    image_hw = tf.shape(image)[:2]
    image_size = tf.cast(image_hw, tf.float32)
    desired = tf.constant(output_size, tf.float32)

    # Model Garden's resize_and_crop_image arithmetic (keep_aspect_ratio=True).
    target_size = tf.round(random_scale * desired)
    scale = tf.minimum(target_size[0] / image_size[0], target_size[1] / image_size[1])
    scaled_size = tf.maximum(tf.round(image_size * scale), 1.0)
    image_scale = scaled_size / image_size
    max_offset = tf.maximum(scaled_size - desired, 0.0)
    offset = tf.cast(max_offset * offset_fraction, tf.int32)
    scaled_hw = tf.cast(scaled_size, tf.int32)
    content_hw = tf.minimum(scaled_hw - offset, tf.constant(output_size, tf.int32))

    # Image: bilinear resize, crop the content window, flip it, pad bottom/right.
    resized = tf.image.resize(image, scaled_hw, method=tf.image.ResizeMethod.BILINEAR)
    content = resized[
        offset[0] : offset[0] + content_hw[0], offset[1] : offset[1] + content_hw[1], :
    ]
    content = tf.cond(flip, lambda: tf.reverse(content, axis=[1]), lambda: content)
    if image.dtype.is_integer:
        content = tf.cast(tf.clip_by_value(tf.round(content), 0.0, image.dtype.max), image.dtype)
    else:
        content = tf.cast(content, image.dtype)
    paddings = [
        [0, output_size[0] - content_hw[0]],
        [0, output_size[1] - content_hw[1]],
        [0, 0],
    ]
    out_image = tf.pad(content, paddings, constant_values=tf.cast(pad_value, image.dtype))
    out_image.set_shape([output_size[0], output_size[1], 3])

    # Boxes: normalized -> scaled pixels -> crop window -> clip -> flip -> normalized.
    boxes = example[_BOXES]
    scale4 = tf.tile(image_size * image_scale, [2])
    offset4 = tf.tile(tf.cast(offset, tf.float32), [2])
    limit4 = tf.tile(tf.cast(content_hw, tf.float32), [2])
    boxes = tf.clip_by_value(boxes * scale4 - offset4, 0.0, limit4)
    content_w = tf.cast(content_hw[1], tf.float32)
    flipped = tf.stack(
        [boxes[:, 0], content_w - boxes[:, 3], boxes[:, 2], content_w - boxes[:, 1]], axis=1
    )
    boxes = tf.cond(flip, lambda: flipped, lambda: boxes)
    keep = tf.logical_and(boxes[:, 2] > boxes[:, 0], boxes[:, 3] > boxes[:, 1])

    output = dict(example)
    output["image"] = out_image
    out_hw = tf.constant(output_size * 2, tf.float32)
    output[_BOXES] = boxes / out_hw
    if _MASKS not in example:
        output[_AREA] = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    # Objects outside the crop window go before their masks are resized.
    output = _gather_objects(output, keep)

    if _MASKS in example:
        rows = _nearest_indices(offset[0], content_hw[0], image_scale[0], image_hw[0])
        cols = _nearest_indices(offset[1], content_hw[1], image_scale[1], image_hw[1])
        cols = tf.cond(flip, lambda: tf.reverse(cols, axis=[0]), lambda: cols)
        masks = _gather_rows_cols(output[_MASKS], rows, cols)
        masks = tf.pad(masks, [[0, 0]] + paddings[:2])
        masks.set_shape([None, output_size[0], output_size[1]])
        output[_MASKS] = masks
        area = _mask_areas(masks)
        output[_AREA] = area
        if drop_empty:
            output = _gather_objects(output, area > 0)
    output["image_info"] = tf.stack([image_size, desired, image_scale, tf.cast(offset, tf.float32)])
    return output


def scale_jitter(
    example: dict[str, tf.Tensor],
    seed: tf.Tensor,
    *,
    output_size: int | Sequence[int],
    scale_range: Sequence[float] = LSJ_SCALE_RANGE,
    flip_prob: float = 0.5,
    pad_value: float = DEFAULT_PAD_VALUE,
    drop_empty: bool = True,
) -> dict[str, tf.Tensor]:
    """Random scale jitter + crop/pad + horizontal flip to a fixed output size.

    Args:
      example: a decoded example (`tfcp.data.decoder.decode`): `image` uint8 or float
        [H, W, 3]; `groundtruth_boxes` float32 [N, 4] normalized [ymin, xmin, ymax, xmax];
        optional `groundtruth_instance_masks` uint8 (or bool/float) 0/1 [N, H, W]; any other
        `groundtruth_*` key is treated as per-object [N, ...] and filtered with the boxes;
        remaining keys (`source_id`, `height`, `width`, ...) pass through.
      seed: int32/int64 tensor [2], the stateless seed.
      output_size: S or (S_h, S_w), the static output size.
      scale_range: (min, max) of the uniform random scale applied to the output size:
        LSJ (0.1, 2.0), SSJ (0.8, 1.25); (1, 1) disables jittering.
      flip_prob: probability of a horizontal flip.
      pad_value: the image value of the padding (gray 128 by default, in the image's
        value range and dtype).
      drop_empty: also remove objects whose jittered mask has no pixel left.

    Returns:
      The same keys at size [S_h, S_w]: `image` of the input dtype [S_h, S_w, 3];
      `groundtruth_boxes` float32 [M, 4] normalized by the output size; masks uint8 (input
      dtype) [M, S_h, S_w]; `groundtruth_area` float32 [M] pixel count of the jittered mask
      (box area in output pixels without masks); other per-object fields filtered to M;
      plus `image_info` float32 [4, 2] as Model Garden's: [[orig_h, orig_w],
      [S_h, S_w], [y_scale, x_scale], [y_offset, x_offset]].
    """
    output_size = _static_size(output_size)
    scale_min, scale_max = (float(s) for s in scale_range)
    if not 0 < scale_min <= scale_max:
        raise ValueError(f"scale_range must satisfy 0 < min <= max, got {scale_range}")
    seed = tf.cast(seed, tf.int64)
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    random_scale = tf.random.stateless_uniform([], seeds[0], scale_min, scale_max)
    offset_fraction = tf.random.stateless_uniform([2], seeds[1])
    flip = tf.random.stateless_uniform([], seeds[2]) < flip_prob
    return _transform(
        example,
        output_size=output_size,
        random_scale=random_scale,
        offset_fraction=offset_fraction,
        flip=flip,
        pad_value=pad_value,
        drop_empty=drop_empty,
    )


def resize_for_eval(
    example: dict[str, tf.Tensor],
    *,
    output_size: int | Sequence[int],
    pad_value: float = DEFAULT_PAD_VALUE,
    drop_empty: bool = False,
) -> dict[str, tf.Tensor]:
    """Deterministic resize: scale to fit the output size, pad bottom/right, no flip.

    Args:
      example: as for `scale_jitter`.
      output_size: S or (S_h, S_w).
      pad_value: the padding value.
      drop_empty: remove objects whose resized mask is empty (off by default for eval).

    Returns:
      As `scale_jitter` with scale 1 and no flip (`image_info` offset is zero).
    """
    return _transform(
        example,
        output_size=_static_size(output_size),
        random_scale=tf.constant(1.0),
        offset_fraction=tf.zeros([2]),
        flip=tf.constant(False),
        pad_value=pad_value,
        drop_empty=drop_empty,
    )

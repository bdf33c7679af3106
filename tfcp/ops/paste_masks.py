"""Pastes box-relative instance masks onto the full image canvas (pure TF).

The Mask R-CNN mask head predicts, for every detection, an `m x m` grid of mask
probabilities relative to the detection box. COCO evaluation and serving need full-image
0/1 masks. This module does that paste in TensorFlow with exactly the geometry of
Model Garden's numpy/OpenCV reference, `official.vision.ops.mask_ops.paste_instance_masks`
(itself Detectron's `segm_results`), so that exported models and evaluation agree with
the published COCO numbers:

1. The `mh x mw` mask is zero-padded by one cell on every side, to `(mh+2) x (mw+2)`.
2. The box is expanded about its centre by `s = max((mw+2)/mw, (mh+2)/mh)` and its
   corners are truncated toward zero to integers: `rx1, ry1, rx2, ry2`. The expanded box
   covers the inclusive pixel range `[rx1, rx2] x [ry1, ry2]`, i.e. `w = rx2 - rx1 + 1`
   columns and `h = ry2 - ry1 + 1` rows (at least 1).
3. The padded mask is resized bilinearly to `h x w` with OpenCV's half-pixel convention:
   output column `j` samples padded-mask column `(j + 0.5) * (mw + 2) / w - 0.5`, values
   outside the padded mask are 0 (the padding is 0, so OpenCV's border clamp gives 0 too).
4. The resized mask is thresholded (`> threshold`) and written at `(ry1, rx1)`, clipped
   to the image. Boxes whose expanded extent is empty (`rx2 < rx1` or `ry2 < ry1`) paste
   nothing.

Steps 2-3 are one affine map from image pixels to padded-mask coordinates per box, so the
whole paste is a single `tf.image.crop_and_resize` of the padded masks with "inverse"
boxes (the image frame expressed in the mask frame) and `crop_size=[H, W]`. It runs
eagerly, in `tf.data` and under `tf.function` with unknown K, H, W and mask size.
Cost and peak memory are O(K * H * W) (one float32 [K, H, W] intermediate), the size of
the output itself.
"""

from __future__ import annotations

import tensorflow as tf


def _inverse_boxes(
    boxes: tf.Tensor,
    mask_height: tf.Tensor,
    mask_width: tf.Tensor,
    image_height: tf.Tensor,
    image_width: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Boxes that map the image frame into each padded mask, for `crop_and_resize`.

    Args:
      boxes: float64 [N, 4] detection boxes (ymin, xmin, ymax, xmax) in image pixels.
      mask_height: int32 scalar, `mh` (unpadded).
      mask_width: int32 scalar, `mw` (unpadded).
      image_height: int32 scalar, H.
      image_width: int32 scalar, W.

    Returns:
      `(crop_boxes, valid)`: float32 [N, 4] normalized boxes in the padded-mask frame and
      float32 [N] with 1 where the expanded integer box is non-empty, else 0.
    """
    mh = tf.cast(mask_height, tf.float64)
    mw = tf.cast(mask_width, tf.float64)
    scale = tf.maximum((mw + 2.0) / mw, (mh + 2.0) / mh)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, num=4, axis=-1)
    half_h = (ymax - ymin) * 0.5
    half_w = (xmax - xmin) * 0.5
    center_y = ymin + half_h
    center_x = xmin + half_w
    # Truncation toward zero, as numpy's `astype(np.int32)` in the reference.
    ry1 = tf.cast(tf.cast(center_y - half_h * scale, tf.int32), tf.float64)
    ry2 = tf.cast(tf.cast(center_y + half_h * scale, tf.int32), tf.float64)
    rx1 = tf.cast(tf.cast(center_x - half_w * scale, tf.int32), tf.float64)
    rx2 = tf.cast(tf.cast(center_x + half_w * scale, tf.int32), tf.float64)
    valid = tf.logical_and(ry2 >= ry1, rx2 >= rx1)
    rows = tf.maximum(ry2 - ry1 + 1.0, 1.0)
    cols = tf.maximum(rx2 - rx1 + 1.0, 1.0)

    def axis_box(start, extent, padded, out_size):
        # Image pixel p samples padded-mask coordinate a * p + b (OpenCV half-pixel).
        a = padded / extent
        b = (0.5 - start) * a - 0.5
        out_last = tf.cast(out_size - 1, tf.float64)
        lo = b / (padded - 1.0)
        hi = (b + a * out_last) / (padded - 1.0)
        return lo, hi

    y_lo, y_hi = axis_box(ry1, rows, mh + 2.0, image_height)
    x_lo, x_hi = axis_box(rx1, cols, mw + 2.0, image_width)
    crop_boxes = tf.cast(tf.stack([y_lo, x_lo, y_hi, x_hi], axis=-1), tf.float32)
    return crop_boxes, tf.cast(valid, tf.float32)


def _paste_flat(
    masks: tf.Tensor,
    boxes: tf.Tensor,
    image_height: tf.Tensor,
    image_width: tf.Tensor,
    threshold: float,
) -> tf.Tensor:
    """`paste_masks` on a flat [N, mh, mw] stack; see `paste_masks`."""
    masks = tf.cast(tf.convert_to_tensor(masks), tf.float32)
    boxes = tf.cast(tf.convert_to_tensor(boxes), tf.float64)
    image_height = tf.cast(image_height, tf.int32)
    image_width = tf.cast(image_width, tf.int32)
    mask_shape = tf.shape(masks)
    num = mask_shape[0]
    tf.debugging.assert_equal(
        tf.shape(boxes),
        tf.stack([num, 4]),
        message="paste_masks: boxes must be [K, 4] with K equal to the number of masks",
    )
    padded = tf.pad(masks, [[0, 0], [1, 1], [1, 1]])[..., tf.newaxis]
    crop_boxes, valid = _inverse_boxes(
        boxes, mask_shape[1], mask_shape[2], image_height, image_width
    )
    pasted = tf.image.crop_and_resize(
        padded,
        crop_boxes,
        tf.range(num, dtype=tf.int32),
        crop_size=tf.stack([image_height, image_width]),
        method="bilinear",
        extrapolation_value=0.0,
    )[..., 0]
    binary = tf.logical_and(pasted > threshold, valid[:, tf.newaxis, tf.newaxis] > 0.0)
    return tf.cast(binary, tf.uint8)


def paste_masks(
    masks: tf.Tensor,
    boxes: tf.Tensor,
    image_height: int | tf.Tensor,
    image_width: int | tf.Tensor,
    threshold: float = 0.5,
) -> tf.Tensor:
    """Pastes box-relative mask probabilities into full-image binary masks.

    Matches `official.vision.ops.mask_ops.paste_instance_masks` (>= 99% pixel agreement,
    differences come only from float32 vs float64 sampling at the threshold).

    Args:
      masks: float [K, mh, mw] mask probabilities relative to each box (the sigmoid output
        of the mask head). K, mh, mw may be unknown.
      boxes: float [K, 4] boxes (ymin, xmin, ymax, xmax) in pixels of the output image.
      image_height: int or int scalar tensor, H of the output canvas.
      image_width: int or int scalar tensor, W of the output canvas.
      threshold: a resampled probability strictly above it is foreground.

    Returns:
      uint8 [K, H, W] 0/1 masks. K = 0 gives an empty [0, H, W] tensor.
    """
    with tf.name_scope("paste_masks"):
        return _paste_flat(masks, boxes, image_height, image_width, threshold)


def paste_masks_batched(
    masks: tf.Tensor,
    boxes: tf.Tensor,
    image_height: int | tf.Tensor,
    image_width: int | tf.Tensor,
    threshold: float = 0.5,
) -> tf.Tensor:
    """`paste_masks` over a batch that shares one canvas size (vectorized, no map_fn).

    Args:
      masks: float [B, K, mh, mw] box-relative mask probabilities.
      boxes: float [B, K, 4] boxes (ymin, xmin, ymax, xmax) in canvas pixels.
      image_height: int or int scalar tensor, H of the canvas.
      image_width: int or int scalar tensor, W of the canvas.
      threshold: a resampled probability strictly above it is foreground.

    Returns:
      uint8 [B, K, H, W] 0/1 masks. Padded detections (e.g. all-zero boxes) give masks
      that are empty or one pixel; callers should use `num_detections`.
    """
    with tf.name_scope("paste_masks_batched"):
        masks = tf.convert_to_tensor(masks)
        boxes = tf.convert_to_tensor(boxes)
        shape = tf.shape(masks)
        batch, num = shape[0], shape[1]
        flat = _paste_flat(
            tf.reshape(masks, tf.concat([[batch * num], shape[2:]], axis=0)),
            tf.reshape(boxes, [-1, 4]),
            image_height,
            image_width,
            threshold,
        )
        out_shape = tf.concat([[batch, num], tf.shape(flat)[1:]], axis=0)
        return tf.reshape(flat, out_shape)

"""Maps detections between the model's input image and the original image."""

from __future__ import annotations

import tensorflow as tf


def boxes_to_original_pixels(boxes: tf.Tensor, image_info: tf.Tensor) -> tf.Tensor:
    """Maps boxes from model-input pixels back to original-image pixels.

    Model Garden's preprocessing (`preprocess_ops.resize_and_crop_image` and
    `resize_and_crop_boxes`) maps an original pixel `p` to `p * scale - offset`; this is
    the inverse, `(b + offset) / scale`.

    Args:
      boxes: float [B, K, 4] boxes (ymin, xmin, ymax, xmax) in input-image pixels.
      image_info: float [B, 4, 2] rows [original (h, w), scaled (h, w),
        scale (y, x), offset (y, x)].

    Returns:
      float32 [B, K, 4] boxes in original-image pixels.
    """
    boxes = tf.cast(boxes, tf.float32)
    image_info = tf.cast(image_info, tf.float32)
    scale = tf.tile(image_info[:, 2:3, :], [1, 1, 2])  # [B, 1, 4] = (sy, sx, sy, sx)
    offset = tf.tile(image_info[:, 3:4, :], [1, 1, 2])
    return (boxes + offset) / scale


def boxes_to_input_pixels(boxes: tf.Tensor, image_info: tf.Tensor) -> tf.Tensor:
    """Inverse of `boxes_to_original_pixels`: `b * scale - offset`, float32 [B, K, 4]."""
    boxes = tf.cast(boxes, tf.float32)
    image_info = tf.cast(image_info, tf.float32)
    scale = tf.tile(image_info[:, 2:3, :], [1, 1, 2])
    offset = tf.tile(image_info[:, 3:4, :], [1, 1, 2])
    return boxes * scale - offset

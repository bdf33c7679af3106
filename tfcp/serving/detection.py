"""The detection serving module: a `tf.Module` whose `tf.function`s a SavedModel exports.

`DetectionModule` wraps a built Mask R-CNN (Model Garden's `MaskRCNNModel`, also Cascade)
and serves it from three input types:

- `image_tensor`: uint8 [B, H, W, 3]; any H, W; B may be unknown.
- `image_bytes`: string [B] of JPEG/PNG/BMP/GIF bytes; images may differ in size.
- `tf_example`: string [B] of serialized `tf.train.Example`s in the tfcp schema
  (`tfcp/data/schema.py`); only `image/encoded` is read.

Every image goes through the training pipeline's eval preprocessing (given to the module
as `preprocess_fn`, so serving and evaluation cannot drift apart), the model runs in
inference mode, and the outputs are mapped back to the INPUT image's pixels:

- `detection_boxes`: float32 [B, K, 4], (ymin, xmin, ymax, xmax) in input-image pixels,
  clipped to the image.
- `detection_scores`: float32 [B, K].
- `detection_classes`: int32 [B, K].
- `num_detections`: int32 [B]; entries k >= num_detections[b] are padding.
- `detection_masks` (mask_output `full` or `both`): uint8 [B, K, H, W] 0/1 full-image
  masks, pasted with `tfcp.ops.paste_masks` (Detectron geometry) into the model's UNCLIPPED
  boxes, exactly as COCO evaluation pastes them, then cut to the image. With `image_tensor`
  H, W are the input's. With `image_bytes`/`tf_example`, H, W are the maximum height and
  width over the batch: the masks of a smaller image occupy the top-left
  [height_b, width_b] corner and the rest is 0. Padding detections have all-zero masks.
- `detection_masks_relative` (mask_output `relative` or `both`): float32 [B, K, m, m]
  box-relative mask probabilities, as the mask head predicts them.

Corrupt image bytes make the serving call raise `tf.errors.InvalidArgumentError`.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf
import tf_keras

from tfcp.data import decoder, schema
from tfcp.modeling import postprocess
from tfcp.ops import paste_masks as paste_masks_lib

INPUT_TYPES = ("image_tensor", "image_bytes", "tf_example")
MASK_OUTPUTS = ("full", "relative", "both")

# (image uint8 [h, w, 3]) -> (image float32 [S, S, 3], image_info float32 [4, 2]).
PreprocessFn = Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


def clip_boxes_to_image(boxes: tf.Tensor, image_info: tf.Tensor) -> tf.Tensor:
    """Clips input-image pixel boxes to each image's extent.

    Args:
      boxes: float32 [B, K, 4] (ymin, xmin, ymax, xmax) in input-image pixels.
      image_info: float32 [B, 4, 2] as Model Garden (row 0 = [orig_h, orig_w]).

    Returns:
      float32 [B, K, 4] boxes inside [0, orig_h] x [0, orig_w].
    """
    original = tf.tile(tf.cast(image_info[:, 0:1, :], tf.float32), [1, 1, 2])
    return tf.clip_by_value(tf.cast(boxes, tf.float32), 0.0, original)


def boxes_to_input_pixels(boxes: tf.Tensor, image_info: tf.Tensor) -> tf.Tensor:
    """Maps boxes from the model's (resized, padded) frame back to input-image pixels.

    The evaluation's mapping (`tfcp.modeling.postprocess.boxes_to_original_pixels`,
    the inverse of Model Garden's `box * scale - offset`), then clipped to the image.
    Masks must be pasted with the UNCLIPPED boxes (as evaluation does), not these.

    Args:
      boxes: float32 [B, K, 4] (ymin, xmin, ymax, xmax) in the preprocessed image's pixels.
      image_info: float32 [B, 4, 2] as Model Garden: [[orig_h, orig_w], [desired_h,
        desired_w], [y_scale, x_scale], [y_offset, x_offset]].

    Returns:
      float32 [B, K, 4] boxes in input-image pixels, inside [0, orig_h] x [0, orig_w].
    """
    return clip_boxes_to_image(postprocess.boxes_to_original_pixels(boxes, image_info), image_info)


class _Untracked:
    """Holds an object out of sight of `tf.Module`'s automatic dependency tracking."""

    def __init__(self, value):
        self.value = value


class DetectionModule(tf.Module):
    """Serving functions of a Mask R-CNN model (see the module docstring for outputs)."""

    def __init__(
        self,
        model: tf_keras.Model,
        preprocess_fn: PreprocessFn,
        image_size: tuple[int, int],
        *,
        mask_output: str = "full",
        mask_threshold: float = 0.5,
        name: str | None = None,
    ):
        """Initializes the module.

        Args:
          model: a built Model Garden `MaskRCNNModel` (weights restored).
          preprocess_fn: the pipeline's eval preprocessing of one uint8 [h, w, 3] image:
            returns float32 [S_h, S_w, 3] and image_info float32 [4, 2].
          image_size: (S_h, S_w), the model's padded input size.
          mask_output: 'full' (uint8 full-image masks), 'relative' (float box-relative
            probabilities) or 'both'.
          mask_threshold: probability above which a pasted pixel is foreground.
          name: module name.
        """
        super().__init__(name=name)
        if mask_output not in MASK_OUTPUTS:
            raise ValueError(f"mask_output must be one of {MASK_OUTPUTS}, got {mask_output!r}")
        # The Keras model is deliberately NOT tracked as a child: `tf.saved_model.save`
        # would then serialize it as a Keras object and trace its `call` in training
        # mode, which a Mask R-CNN built on symbolic inputs cannot do without
        # ground truth. Only its variables are tracked (all that the signatures need).
        self._model_ref = _Untracked(model)
        self.model_variables = list(model.variables)
        self._preprocess_fn = preprocess_fn
        self._image_size = (int(image_size[0]), int(image_size[1]))
        self._mask_output = mask_output
        self._mask_threshold = float(mask_threshold)

    @property
    def model(self) -> tf_keras.Model:
        """The served Keras model."""
        return self._model_ref.value

    # -- preprocessing ---------------------------------------------------------------

    def _preprocess_batch(self, fn, elems) -> tuple[tf.Tensor, tf.Tensor]:
        """Runs `fn` (one element -> (image, image_info)) over a batch with map_fn."""
        height, width = self._image_size
        return tf.map_fn(
            fn,
            elems,
            fn_output_signature=(
                tf.TensorSpec([height, width, 3], tf.float32),
                tf.TensorSpec([4, 2], tf.float32),
            ),
            parallel_iterations=32,
        )

    def _decode_bytes(self, encoded: tf.Tensor) -> tf.Tensor:
        return decoder.decode_image(encoded)

    def _decode_example(self, serialized: tf.Tensor) -> tf.Tensor:
        parsed = tf.io.parse_single_example(
            serialized, {schema.IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string)}
        )
        return decoder.decode_image(parsed[schema.IMAGE_ENCODED])

    # -- inference -------------------------------------------------------------------

    def run(
        self,
        images: tf.Tensor,
        image_info: tf.Tensor,
        canvas_height: tf.Tensor,
        canvas_width: tf.Tensor,
    ) -> dict[str, tf.Tensor]:
        """Runs the model on preprocessed images and post-processes the detections.

        Args:
          images: float32 [B, S_h, S_w, 3] preprocessed images.
          image_info: float32 [B, 4, 2].
          canvas_height: int32 scalar, H of the full-image masks.
          canvas_width: int32 scalar, W of the full-image masks.

        Returns:
          The serving outputs (see the module docstring).
        """
        outputs = self.model.call(
            images=images,
            image_shape=image_info[:, 1, :],
            anchor_boxes=None,
            training=False,
        )
        # Masks are pasted with the model's boxes in input-image pixels, exactly as COCO
        # evaluation pastes them (`tfcp.evaluation.coco`); only the returned boxes are
        # clipped. Pasting into the clipped box would squash a mask whose box runs past
        # the bottom/right edge (into the padding) into the visible part of the box.
        unclipped = postprocess.boxes_to_original_pixels(outputs["detection_boxes"], image_info)
        boxes = clip_boxes_to_image(unclipped, image_info)
        num = tf.cast(outputs["num_detections"], tf.int32)
        result = {
            "detection_boxes": boxes,
            "detection_scores": tf.cast(outputs["detection_scores"], tf.float32),
            "detection_classes": tf.cast(outputs["detection_classes"], tf.int32),
            "num_detections": num,
        }
        masks = tf.cast(outputs["detection_masks"], tf.float32)
        if self._mask_output in ("relative", "both"):
            result["detection_masks_relative"] = masks
        if self._mask_output in ("full", "both"):
            pasted = paste_masks_lib.paste_masks_batched(
                masks, unclipped, canvas_height, canvas_width, threshold=self._mask_threshold
            )
            valid = tf.sequence_mask(num, tf.shape(boxes)[1], dtype=tf.uint8)
            # Each image's own extent inside the (batch-max) canvas: nothing outside it.
            sizes = tf.cast(image_info[:, 0, :], tf.int32)
            rows = tf.sequence_mask(sizes[:, 0], canvas_height, dtype=tf.uint8)
            cols = tf.sequence_mask(sizes[:, 1], canvas_width, dtype=tf.uint8)
            result["detection_masks"] = (
                pasted
                * valid[:, :, tf.newaxis, tf.newaxis]
                * rows[:, tf.newaxis, :, tf.newaxis]
                * cols[:, tf.newaxis, tf.newaxis, :]
            )
        return result

    def serve_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Serves uint8 [B, H, W, 3] images (any H, W; B may be unknown)."""
        images = tf.convert_to_tensor(images)
        if images.dtype != tf.uint8:
            raise TypeError(f"image_tensor input must be uint8, got {images.dtype.name}")
        processed, image_info = self._preprocess_batch(self._preprocess_fn, images)
        shape = tf.shape(images)
        return self.run(processed, image_info, shape[1], shape[2])

    def _serve_decoded(self, decode_fn, strings: tf.Tensor) -> dict[str, tf.Tensor]:
        processed, image_info = self._preprocess_batch(
            lambda s: self._preprocess_fn(decode_fn(s)), strings
        )
        # Canvas = the largest image of the batch (0 x 0 for an empty batch).
        sizes = tf.concat([image_info[:, 0, :], tf.zeros([1, 2], tf.float32)], axis=0)
        canvas = tf.cast(tf.reduce_max(sizes, axis=0), tf.int32)
        return self.run(processed, image_info, canvas[0], canvas[1])

    def serve_image_bytes(self, encoded: tf.Tensor) -> dict[str, tf.Tensor]:
        """Serves string [B] JPEG/PNG bytes; masks are [B, K, max H, max W] (top-left)."""
        return self._serve_decoded(self._decode_bytes, encoded)

    def serve_tf_examples(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        """Serves string [B] serialized tf.Examples; masks as with `serve_image_bytes`."""
        return self._serve_decoded(self._decode_example, serialized)

    # -- tf.functions for export -----------------------------------------------------

    @tf.function
    def inference_from_image_tensors(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.serve_images(images)

    @tf.function
    def inference_from_image_bytes(self, encoded: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.serve_image_bytes(encoded)

    @tf.function
    def inference_from_tf_example(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.serve_tf_examples(serialized)

    def concrete_function(self, input_type: str, batch_size: int | None = None):
        """The concrete serving function of `input_type` (a SavedModel signature).

        Args:
          input_type: one of `INPUT_TYPES`.
          batch_size: static batch size, or None for any.

        Returns:
          A `tf.types.experimental.ConcreteFunction`.
        """
        if input_type == "image_tensor":
            spec = tf.TensorSpec([batch_size, None, None, 3], tf.uint8, name="images")
            return self.inference_from_image_tensors.get_concrete_function(spec)
        if input_type == "image_bytes":
            spec = tf.TensorSpec([batch_size], tf.string, name="encoded_images")
            return self.inference_from_image_bytes.get_concrete_function(spec)
        if input_type == "tf_example":
            spec = tf.TensorSpec([batch_size], tf.string, name="serialized_examples")
            return self.inference_from_tf_example.get_concrete_function(spec)
        raise ValueError(f"input_type must be one of {INPUT_TYPES}, got {input_type!r}")

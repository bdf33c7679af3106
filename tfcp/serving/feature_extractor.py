"""Feature-extractor SavedModel (backbone + FPN) for transfer learning, and its restore.

Export (`export_feature_extractor`) saves a `FeatureExtractorModule`: a `tf.Module` whose
attributes `backbone` and `decoder` are the trained Keras models, plus a
`serving_default` signature

    images: float32 [B, S_h, S_w, 3], normalized as in training
            (Model Garden `preprocess_ops.normalize_image`, MEAN_NORM / STDDEV_NORM)
    -> {"2": float32 [B, S_h/4, S_w/4, C], ..., "6": float32 [B, S_h/64, S_w/64, C]}

(one output per FPN level, keyed by the level as a string). After
`loaded = tf.saved_model.load(export_dir)`, `loaded.backbone.trainable_variables`,
`loaded.backbone.variables` and the same on `loaded.decoder` are available.

Fine-tuning (e.g. VOC Faster R-CNN / segmentation with `INIT_CHECKPOINT` = an exported
feature-extractor directory) builds its own model with the same backbone (and FPN)
architecture and copies the weights in with

    tfcp.modeling.init_checkpoint.restore_backbone_and_decoder(
        init_checkpoint, model.backbone, model.decoder)   # or decoder=None

(the same function restores from a training checkpoint), which matches variables by their
object path in the SavedModel's variables checkpoint (`backbone/...`, `decoder/...`; the
path of every layer and weight inside the Keras model, independent of the global Keras name
counters) and by shape, and raises a `ValueError` naming the directory and the mismatch when
the architectures differ. Heads and anything else of the fresh model are left untouched.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras


class FeatureExtractorModule(tf.Module):
    """Holds a backbone and an optional decoder; `extract` maps images to features."""

    def __init__(
        self,
        backbone: tf_keras.Model,
        decoder: tf_keras.Model | None,
        image_size: tuple[int, int],
        name: str | None = None,
    ):
        """Initializes the module.

        Args:
          backbone: the backbone Keras model (images -> {level: features}).
          decoder: the decoder Keras model (e.g. FPN) or None.
          image_size: (S_h, S_w), the static input size of the signature.
          name: module name.
        """
        super().__init__(name=name)
        self.backbone = backbone
        if decoder is not None:
            self.decoder = decoder
        self._has_decoder = decoder is not None
        self._image_size = (int(image_size[0]), int(image_size[1]))

    @tf.function
    def extract(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """float32 [B, S_h, S_w, 3] normalized images -> {level (str): float32 features}."""
        features = self.backbone(images, training=False)
        if self._has_decoder:
            features = self.decoder(features, training=False)
        return {str(level): tf.cast(value, tf.float32) for level, value in features.items()}

    def concrete_function(self, batch_size: int | None = None):
        """The `serving_default` concrete function."""
        spec = tf.TensorSpec([batch_size, *self._image_size, 3], tf.float32, name="images")
        return self.extract.get_concrete_function(spec)


def export_feature_extractor(
    model: tf_keras.Model,
    export_dir: str,
    image_size: tuple[int, int],
    include_decoder: bool = True,
) -> FeatureExtractorModule:
    """Writes the backbone (+ decoder) of a built detection model as a SavedModel.

    Args:
      model: a Model Garden model with `backbone` and `decoder` attributes.
      export_dir: output directory (written by `tf.saved_model.save`).
      image_size: (S_h, S_w) of the signature's images.
      include_decoder: export the decoder (FPN) too.

    Returns:
      The saved `FeatureExtractorModule`.
    """
    decoder = getattr(model, "decoder", None) if include_decoder else None
    module = FeatureExtractorModule(model.backbone, decoder, image_size)
    tf.saved_model.save(
        module, export_dir, signatures={"serving_default": module.concrete_function()}
    )
    return module

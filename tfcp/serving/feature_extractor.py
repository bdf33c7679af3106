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

    restore_into(init_checkpoint, model.backbone, model.decoder)   # or decoder=None

which matches variables by their object path in the SavedModel's variables checkpoint
(`backbone/...`, `decoder/...`; the path of every layer and weight inside the Keras
model, independent of the global Keras name counters) and by shape, and raises a
`ValueError` naming the directory and the mismatch when the architectures differ.
Heads, optimizer slots and anything else of the fresh model are left untouched.
"""

from __future__ import annotations

import os

import tensorflow as tf
import tf_keras

SAVED_MODEL_FILE = "saved_model.pb"
_VARIABLES_PREFIX = os.path.join("variables", "variables")
_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


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


def is_saved_model_dir(path: str) -> bool:
    """True if `path` is a directory containing a SavedModel."""
    return bool(path) and tf.io.gfile.exists(os.path.join(path, SAVED_MODEL_FILE))


def _unique_variables(models) -> list[tf.Variable]:
    seen, result = set(), []
    for model in models:
        for variable in model.variables:
            if id(variable) not in seen:
                seen.add(id(variable))
                result.append(variable)
    return result


def restore_into(
    saved_model_dir: str,
    backbone: tf_keras.Model,
    decoder: tf_keras.Model | None = None,
) -> int:
    """Copies exported feature-extractor weights into a freshly built backbone (+ decoder).

    Variables are matched by object path (`backbone/<layer path>/<weight>`) and shape, so
    the fresh models must have the exported architecture (same backbone type and depth,
    same FPN levels and filters); the input size may differ.

    Args:
      saved_model_dir: a directory written by `export_feature_extractor`.
      backbone: a built backbone Keras model (variables created).
      decoder: a built decoder Keras model, or None to restore the backbone only.

    Returns:
      The number of variables restored (all variables of `backbone` and `decoder`).

    Raises:
      FileNotFoundError: `saved_model_dir` is not a SavedModel directory.
      ValueError: the SavedModel has no matching backbone/decoder, a variable is missing,
        or a shape differs; the message names the directory and the mismatch.
    """
    if not is_saved_model_dir(saved_model_dir):
        raise FileNotFoundError(
            f"restore_into: {saved_model_dir!r} is not a SavedModel directory "
            f"(no {SAVED_MODEL_FILE}); export one with `export_saved_model.py "
            "--feature_extractor`"
        )
    prefix = os.path.join(saved_model_dir, _VARIABLES_PREFIX)
    models = {"backbone": backbone}
    if decoder is not None:
        models["decoder"] = decoder
    variables = _unique_variables(models.values())
    if not variables:
        raise ValueError("restore_into: the given models have no variables; build them first")

    stored = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    for name, model in models.items():
        num_stored = sum(
            key.startswith(name + "/") and key.endswith(_VALUE_SUFFIX) for key in stored
        )
        if not num_stored:
            raise ValueError(
                f"restore_into: {saved_model_dir!r} has no '{name}' (it is not a "
                "feature-extractor export, or it was exported without a decoder)"
            )
        num_given = len(_unique_variables([model]))
        if num_stored != num_given:
            raise ValueError(
                f"restore_into: {saved_model_dir!r} holds {num_stored} {name} variables, "
                f"the given {name} has {num_given} (different architecture)"
            )
    try:
        status = tf.train.Checkpoint(**models).read(prefix)
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        raise ValueError(
            f"restore_into: the weights in {saved_model_dir!r} do not fit the given "
            f"{' and '.join(models)} (different architecture?): {error}"
        ) from error
    return len(variables)

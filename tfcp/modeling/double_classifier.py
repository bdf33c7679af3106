"""The double classifier of the LVIS 2020 challenge report (Chen, Zhou, Li et al.).

"Balanced Mosaic and Double Classifier for Large Vocabulary Instance Segmentation": two
classification heads on the same box features; head a is trained on the repeat-factor-sampled
stream, head b on the class-aware stream; at inference the class scores are their average
S = (S_a + S_b) / 2.

`DoubleDetectionHead` is Model Garden's `instance_heads.DetectionHead` (its convs, fcs, box
regressor and its `detection-scores` layer, head a, are built and run by Model Garden's own
`build` / `call`) plus one `Dense` layer `detection-scores-b` (head b) on the same features:
  * training (`training=True`, propagated by Keras from `MaskRCNNModel(..., training=True)`):
    `class_outputs` = concat([logits_a, logits_b], -1), float [B, R, 2C] (`split_logits`
    undoes it; `tfcp.modeling.losses` trains each half on its own stream);
  * inference: `class_outputs` = log((softmax(logits_a) + softmax(logits_b)) / 2), float
    [B, R, C], so the detection generator's softmax gives exactly the averaged scores
    (softmax(log p) = p when sum(p) = 1). Evaluation, export and serving need nothing special.
With Cascade R-CNN every stage gets a double head (with `cascade_class_ensemble` Model Garden
then averages the stages' log-averaged scores, as it averages their logits otherwise).

Variables (names as `tfcp.modeling.freeze` matches them): head a is
`.../detection_head/detection-scores/{kernel,bias}` exactly as in a single-head model, head b
`.../detection_head/detection-scores-b/{kernel,bias}` (cascade stages `detection_head_1/`, ...).
`DOUBLE_CLASSIFIER` selects both heads of every stage: the retraining phase trains only these.

Initialization from a single-head (stage-1) checkpoint (`restore_model`): every variable of the
single-head model is restored (strictly, by `tfcp.modeling.init_checkpoint.restore_model`) and
head b starts as a copy of head a, i.e. of the stage-1 classifier. Our choice: the double model
then starts exactly at the stage-1 model's scores (S_a = S_b = S_1), and each head is fine-tuned
from the trained classifier on its own stream (as LVIS stage 2 fine-tunes its classifier); a
random head b would start the averaged scores half-way to uniform.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras
from absl import logging
from official.modeling import tf_utils
from official.vision.modeling import maskrcnn_model
from official.vision.modeling.heads import instance_heads

from tfcp.modeling import init_checkpoint as init_checkpoint_lib

# Regex (tfcp.modeling.freeze) of both classifiers of every detection head.
DOUBLE_CLASSIFIER = "(^|/)detection_head(_[0-9]+)?/detection-scores(-b)?/"
# labels[STREAM_KEY]: int32 [B]; 0 = repeat-factor stream (trains head a), 1 = class-aware
# stream (trains head b).
STREAM_KEY = "classifier_stream"
HEAD_B_NAME = "detection-scores-b"
_HEAD_B_ATTRIBUTE = "_classifier_b"  # the checkpoint object path of head b


class _ScoresAndFeatures(tf_keras.layers.Dense):
    """Model Garden's `detection-scores` Dense layer that also returns its input features.

    Same variables (name, object path, initializers) as the Dense it replaces, so a
    `DoubleDetectionHead` holds head a exactly where a `DetectionHead` holds its classifier.
    """

    def call(self, inputs):
        return super().call(inputs), inputs


def _clone_dense(layer: tf_keras.layers.Dense, cls: type, name: str) -> tf_keras.layers.Dense:
    """A new, unbuilt `cls` Dense layer configured as `layer` (fresh initializer instances)."""
    return cls(
        units=layer.units,
        activation=layer.activation,
        use_bias=layer.use_bias,
        kernel_initializer=tf_utils.clone_initializer(layer.kernel_initializer),
        bias_initializer=tf_utils.clone_initializer(layer.bias_initializer),
        kernel_regularizer=layer.kernel_regularizer,
        bias_regularizer=layer.bias_regularizer,
        name=name,
    )


@tf_keras.utils.register_keras_serializable(package="tfcp")
class DoubleDetectionHead(instance_heads.DetectionHead):
    """`instance_heads.DetectionHead` with a second classifier (head b) on the same features.

    Same constructor and config as `DetectionHead` (`num_classes` C counts background).

    Call returns:
      class_outputs: training: float [B, R, 2C] = [logits_a, logits_b]; inference: float
        [B, R, C] = log of the mean of the two heads' softmax probabilities.
      box_outputs: float [B, R, 4C] (or [B, R, 4] class-agnostic), Model Garden's.
    """

    def build(self, input_shape):
        super().build(input_shape)
        # Head a: Model Garden's classifier, re-created with its settings (same name, so the
        # same variable names and object path) so that it also hands back its input features.
        classifier = self._classifier
        self._classifier = _clone_dense(classifier, _ScoresAndFeatures, classifier.name)
        # Head b; its attribute name is its checkpoint object path (_HEAD_B_ATTRIBUTE).
        self._classifier_b = _clone_dense(classifier, tf_keras.layers.Dense, HEAD_B_NAME)
        self.roi_features_shape = tf.TensorShape(input_shape)

    @property
    def classifier_a(self) -> tf_keras.layers.Dense:
        """Head a: the `detection-scores` Dense layer (trained on the repeat-factor stream)."""
        return self._classifier

    @property
    def classifier_b(self) -> tf_keras.layers.Dense:
        """Head b: the `detection-scores-b` Dense layer (trained on the class-aware stream)."""
        return self._classifier_b

    def call(self, inputs: tf.Tensor, training: bool | None = None):
        (logits_a, features), box_outputs = super().call(inputs, training=training)
        logits_b = self.classifier_b(features)
        if training:
            return tf.concat([logits_a, logits_b], axis=-1), box_outputs
        return averaged_log_probs(logits_a, logits_b), box_outputs


def averaged_log_probs(logits_a: tf.Tensor, logits_b: tf.Tensor) -> tf.Tensor:
    """log((softmax(a) + softmax(b)) / 2) over the last axis, computed stably in float32.

    Args:
      logits_a, logits_b: float [..., C].

    Returns:
      float [..., C] in the dtype of `logits_a`; its softmax is the mean of the two softmaxes.
    """
    log_probs = tf.stack(
        [
            tf.nn.log_softmax(tf.cast(logits_a, tf.float32), axis=-1),
            tf.nn.log_softmax(tf.cast(logits_b, tf.float32), axis=-1),
        ]
    )
    mean = tf.reduce_logsumexp(log_probs, axis=0) - math.log(2.0)
    return tf.cast(mean, logits_a.dtype)


def split_logits(class_outputs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(logits_a, logits_b), each [..., C], from training-mode class_outputs [..., 2C]."""
    width = class_outputs.shape[-1]
    if width is None or width % 2:
        raise ValueError(
            f"double-classifier class_outputs must have an even static last dimension 2C, got "
            f"shape {class_outputs.shape}"
        )
    return class_outputs[..., : width // 2], class_outputs[..., width // 2 :]


def _heads(model: tf_keras.Model) -> list[tf_keras.layers.Layer]:
    heads = model.get_config()["detection_head"]
    return list(heads) if isinstance(heads, (list, tuple)) else [heads]


def is_double(model: tf_keras.Model) -> bool:
    """Whether the Mask R-CNN `model` has double-classifier detection heads."""
    return all(isinstance(h, DoubleDetectionHead) for h in _heads(model))


def _with_heads(model: tf_keras.Model, heads: list[tf_keras.layers.Layer]) -> tf_keras.Model:
    """A `MaskRCNNModel` sharing every layer of `model` except its detection heads."""
    config = dict(model.get_config())
    config["detection_head"] = heads if len(heads) > 1 else heads[0]
    return maskrcnn_model.MaskRCNNModel(**config, name=model.name)


def with_double_heads(model: tf_keras.Model) -> tf_keras.Model:
    """The (not yet built) Model Garden `MaskRCNNModel` with its heads made double.

    Args:
      model: an unbuilt `MaskRCNNModel` (e.g. from `official.vision.modeling.factory`).

    Returns:
      A `MaskRCNNModel` with the same layers, each `DetectionHead` replaced by a
      `DoubleDetectionHead` of the same config and name.
    """
    heads = [DoubleDetectionHead(**h.get_config(), name=h.name) for h in _heads(model)]
    return _with_heads(model, heads)


def single_head_twin(model: tf_keras.Model) -> tf_keras.Model:
    """A single-classifier `MaskRCNNModel` sharing all layers of the double `model` but its heads.

    The twin's heads are new, built Model Garden `DetectionHead`s of the same config: a
    single-head checkpoint restores into the twin exactly (and thereby into every shared
    layer of `model`); `copy_twin_heads` then copies its heads into `model`'s.
    """
    twins = []
    for head in _heads(model):
        if not head.built:
            raise ValueError(f"{model.name} is not built: call it once (as tfcp's factory does)")
        twin = instance_heads.DetectionHead(**head.get_config(), name=head.name)
        twin(tf.zeros([1] + head.roi_features_shape.as_list()[1:]))  # creates the variables
        twins.append(twin)
    return _with_heads(model, twins)


def _relative_names(head: tf_keras.layers.Layer) -> dict[str, tf.Variable]:
    prefix = head.name + "/"
    return {v.name[v.name.index(prefix) + len(prefix) :]: v for v in head.weights}


def copy_twin_heads(twin: tf_keras.Model, model: tf_keras.Model) -> None:
    """Copies the twin's single heads into `model`'s double heads; head b <- their classifier."""
    for source, target in zip(_heads(twin), _heads(model), strict=True):
        source_vars = _relative_names(source)
        target_vars = _relative_names(target)
        head_b = {k for k in target_vars if k.startswith(HEAD_B_NAME + "/")}
        if set(source_vars) != set(target_vars) - head_b:
            raise ValueError(
                f"{target.name}: single-head variables {sorted(source_vars)} do not match the "
                f"double head's {sorted(target_vars)}"
            )
        for name, variable in source_vars.items():
            target_vars[name].assign(variable)
        target.classifier_b.kernel.assign(target.classifier_a.kernel)
        target.classifier_b.bias.assign(target.classifier_a.bias)


def restore_model(path: str, model: tf_keras.Model) -> str:
    """Restores a double-classifier `model` from a double or a single-head training checkpoint.

    Args:
      path: checkpoint prefix or directory of a tfcp training run (`model/` owns the model).
      model: a built double-classifier Mask R-CNN.

    Returns:
      'double' when the checkpoint holds both heads (restored as they are), 'single' when it
      holds a single-classifier model of the same architecture: every variable is restored
      and head b (not in the checkpoint; logged) starts as a copy of head a.

    Raises:
      FileNotFoundError, ValueError: as `tfcp.modeling.init_checkpoint.restore_model`.
    """
    prefix = init_checkpoint_lib.resolve_checkpoint_path(path)
    keys = [name for name, _ in tf.train.list_variables(prefix)]
    if any(f"/{_HEAD_B_ATTRIBUTE}/" in key for key in keys):
        init_checkpoint_lib.restore_model(path, model)
        return "double"
    twin = single_head_twin(model)
    init_checkpoint_lib.restore_model(path, twin)
    copy_twin_heads(twin, model)
    logging.warning(
        "Init checkpoint %s has a single classifier: the %s variables of %s are not in it and "
        "start as copies of %s (head a, restored)",
        path,
        HEAD_B_NAME,
        [h.name for h in _heads(model)],
        "detection-scores",
    )
    return "single"

"""Train a chosen subset of a model's variables; freeze the rest (gin-level).

Used through `Task.trainable_variables` (see `tfcp.tasks.base`): e.g. LVIS two-stage training
(paper Table 9) fine-tunes only the final classifier of a stage-1 Mask R-CNN:

    MaskRCNNTask.trainable_variable_patterns = ('detection_head/detection-scores/',)

Variables are chosen by `re.search` of patterns against `tf.Variable.name`. Names of Model
Garden's Mask R-CNN (`official.vision` MaskRCNNModel), with the model's own scope first
(`mask_rcnn_model/`, `mask_rcnn_model_1/`, ... depending on how many were built):
  - final classifier (the `detection-scores` dense layer of the DetectionHead):
    `.../detection_head/detection-scores/kernel:0` [fc_dims, num_classes] and `.../bias:0`;
    Cascade R-CNN stages: `detection_head_1/`, `detection_head_2/` (the last stage of a
    2-extra-stage cascade is `detection_head_2/detection-scores/`). `MASKRCNN_CLASSIFIER` and
    `CASCADE_LAST_CLASSIFIER` hold these patterns.
  - box regressor `detection_head/detection-boxes/`, head fcs `detection-fc_0/`, mask head
    `mask_head/`, RPN `rpn_head/`; backbone/FPN variables carry their layers' names only
    (`residual_block_3/...`, `norm_2/...`).

Batch norm: selecting variables only decides what the optimizer updates. A Keras
BatchNormalization layer called with training=True still normalizes with the batch statistics
and updates its moving mean/variance, whatever the optimizer does. `freeze_unselected_layers`
therefore sets `trainable = False` on every layer none of whose trainable weights is selected;
a tf_keras BatchNormalization layer with `trainable = False` runs in inference mode (moving
statistics used and left unchanged; Keras 2 semantics), so frozen parts are bit-identical after
training and the trained layers see exactly the features they get at inference. Layers that
hold no trainable variable (dropout, stochastic depth) are not affected: they keep their
training-mode behaviour in the forward pass, without changing any variable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import gin
import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging

MASKRCNN_CLASSIFIER = r"(^|/)detection_head/detection-scores/"
CASCADE_LAST_CLASSIFIER = r"(^|/)detection_head_2/detection-scores/"


def _num_params(variables: Sequence[tf.Variable]) -> int:
    return int(sum(np.prod(v.shape.as_list()) for v in variables))


def _check_patterns(patterns: Sequence[str], what: str) -> list[re.Pattern]:
    if isinstance(patterns, str):
        raise TypeError(f"select_variables.{what} must be a sequence of regexes, not a string")
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as e:
            raise ValueError(f"select_variables.{what}: invalid regex {pattern!r}: {e}") from e
    return compiled


@gin.configurable
def select_variables(
    model: tf_keras.Model,
    include: Sequence[str] = (".*",),
    exclude: Sequence[str] = (),
) -> list[tf.Variable]:
    """The trainable variables of `model` whose name matches an `include` and no `exclude` regex.

    Args:
      model: a built Keras model.
      include: regexes (`re.search` on `tf.Variable.name`); a variable is selected when one
        matches.
      exclude: regexes removing variables from the selection.

    Returns:
      The selected variables, in `model.trainable_variables` order.

    Raises:
      ValueError: a pattern matches no trainable variable of the model (typo, or a layer name
        that differs in this architecture: the message lists some names), or nothing is left.
    """
    candidates = list(model.trainable_variables)
    names = [v.name for v in candidates]
    includes = _check_patterns(include, "include")
    excludes = _check_patterns(exclude, "exclude")
    for what, compiled in (("include", includes), ("exclude", excludes)):
        for pattern in compiled:
            if not any(pattern.search(n) for n in names):
                sample = [n for n in names if "detection" in n][:8] or names[:8]
                raise ValueError(
                    f"select_variables.{what} pattern {pattern.pattern!r} matches none of the "
                    f"{len(names)} trainable variables of {model.name}; e.g. {sample}"
                )
    selected = [
        v
        for v, n in zip(candidates, names, strict=True)
        if any(p.search(n) for p in includes) and not any(p.search(n) for p in excludes)
    ]
    if not selected:
        raise ValueError(
            f"select_variables(include={tuple(include)!r}, exclude={tuple(exclude)!r}) leaves "
            f"no variable of {model.name} to train"
        )
    logging.info(
        "Training %d of %d trainable variables (%d of %d parameters): %s%s",
        len(selected),
        len(candidates),
        _num_params(selected),
        _num_params(candidates),
        [v.name for v in selected[:10]],
        " ..." if len(selected) > 10 else "",
    )
    return selected


def freeze_unselected_layers(model: tf_keras.Model, variables: Sequence[tf.Variable]) -> list[str]:
    """Sets `trainable = False` on every layer of `model` that holds none of `variables`.

    Only layers with trainable weights are considered; a layer holding at least one of
    `variables` (directly or in a sub-layer) stays trainable. Frozen BatchNormalization layers
    then run in inference mode and never update their moving statistics (module docstring).

    Args:
      model: the model (mutated).
      variables: the variables that will be trained, e.g. from `select_variables`.

    Returns:
      The names of the outermost layers that were frozen.
    """
    keep = {id(v) for v in variables}
    frozen = []
    for layer in model._flatten_layers(include_self=False, recursive=False):
        frozen.extend(_freeze(layer, keep))
    if frozen:
        logging.info("Froze %d layers (trainable=False): %s", len(frozen), frozen[:20])
    return frozen


def _freeze(layer: tf_keras.layers.Layer, keep: set[int]) -> list[str]:
    weights = layer.trainable_weights
    if not weights:
        return []
    if not any(id(w) in keep for w in weights):
        layer.trainable = False
        return [layer.name]
    frozen = []
    for sublayer in layer._flatten_layers(include_self=False, recursive=False):
        frozen.extend(_freeze(sublayer, keep))
    return frozen

"""Mask R-CNN / Cascade Mask R-CNN / Faster R-CNN training losses.

Computes exactly what `official.vision.tasks.maskrcnn.MaskRCNNTask.build_losses` computes,
by calling the loss classes of `official.vision.losses.maskrcnn_losses`:
RPN objectness + RPN box (Huber), Fast R-CNN class + box averaged over the detection
heads (1 + number of cascade stages), and the mask loss.

Class-balanced Fast R-CNN class loss (Cui et al., CVPR 2019, "Class-Balanced Loss Based on
Effective Number of Samples"), used by LVIS stage-2 training (paper Table 9): the softmax
cross-entropy of an RoI whose target is class c is weighted by
`w_c = (1 - beta) / (1 - beta ** n_c)`, n_c = training instances of c, the weights of the
K foreground classes normalized to sum to K (as Cui et al.: sum_c w_c = C). Background
(class 0) is not a class of Cui et al.'s formulation: it keeps weight
`class_balanced_background_weight` (1.0), so with equal counts every weight is 1 and the loss
is the standard one (our choice; Model Garden multiplies each RoI's cross-entropy by the weight
of its target class and averages over all RoIs, background included).

Double classifier (`tfcp.modeling.double_classifier`, LVIS 2020 challenge report): the model's
training `class_outputs` hold both heads' logits [B, R, 2C]; `labels['classifier_stream']`
(int32 [B]) says which head each image trains: head a's class loss is Model Garden's
`FastrcnnClassLoss` over the RoIs of the stream-0 images only (normalized over those RoIs),
head b's over the RoIs of the stream-1 images; a head without images in the batch has loss 0.
`frcnn_cls_loss` = `frcnn_cls_loss_a` + `frcnn_cls_loss_b` (each head trained by its own loss at
full weight; with a shared trainable trunk, `frcnn_class_weight` 0.5 gives it the single-head
scale). Box, mask and RPN losses are unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import gin
import tensorflow as tf
from absl import logging
from official.vision.losses import maskrcnn_losses as mg_losses

from tfcp.modeling import double_classifier


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MaskRCNNLossConfig:
    """Loss hyper-parameters; defaults are Model Garden's `configs.maskrcnn.Losses`.

    Attributes:
      loss_weight: multiplies the total loss.
      rpn_huber_loss_delta: Huber delta of the RPN box loss.
      frcnn_huber_loss_delta: Huber delta of the Fast R-CNN box loss.
      frcnn_class_use_binary_cross_entropy: sigmoid instead of softmax class loss.
      frcnn_class_loss_top_k_percent: hard example mining fraction (1.0 = off).
      rpn_score_weight, rpn_box_weight, frcnn_class_weight, frcnn_box_weight,
        mask_weight: weights of the individual terms.
      class_weights: optional per-class weights of the Fast R-CNN class loss, one per
        class index (background 0 included).
      class_balanced_counts: turns on the class-balanced class loss (module docstring): the
        training instances per class, as a COCO/LVIS JSON path (categories' `instance_count`,
        else its non-crowd annotations counted; class index = category id, as the converter),
        a mapping {class index: count} or a list of counts of classes 1, 2, ...
        Exclusive with `class_weights`. Read when the loss is first built.
      class_balanced_beta: beta of the class-balanced weights (Cui et al.; paper: 0.999).
      class_balanced_background_weight: weight of background RoIs (class 0).
    """

    loss_weight: float = 1.0
    rpn_huber_loss_delta: float = 1.0 / 9.0
    frcnn_huber_loss_delta: float = 1.0
    frcnn_class_use_binary_cross_entropy: bool = False
    frcnn_class_loss_top_k_percent: float = 1.0
    rpn_score_weight: float = 1.0
    rpn_box_weight: float = 1.0
    frcnn_class_weight: float = 1.0
    frcnn_box_weight: float = 1.0
    mask_weight: float = 1.0
    class_weights: Sequence[float] | None = None
    class_balanced_counts: str | Mapping[int, int] | Sequence[int] | None = None
    class_balanced_beta: float = 0.999
    class_balanced_background_weight: float = 1.0

    def __post_init__(self):
        if self.class_weights is not None and self.class_balanced_counts is not None:
            raise ValueError(
                "MaskRCNNLossConfig: set class_weights or class_balanced_counts, not both"
            )
        if not 0.0 < self.class_balanced_beta < 1.0:
            raise ValueError(
                f"MaskRCNNLossConfig.class_balanced_beta must be in (0, 1), got "
                f"{self.class_balanced_beta}"
            )

    def resolved_class_weights(self, num_classes: int) -> list[float] | None:
        """The per-class weights of the class loss for `num_classes` classes (or None)."""
        if self.class_balanced_counts is None:
            return list(self.class_weights) if self.class_weights else None
        counts = self.class_balanced_counts
        if isinstance(counts, str):
            counts = instance_counts_from_json(counts)
        return class_balanced_weights(
            counts,
            num_classes,
            beta=self.class_balanced_beta,
            background_weight=self.class_balanced_background_weight,
        )


@functools.lru_cache(maxsize=8)
def _read_instance_counts(path: str, mtime_nsec: int) -> tuple[tuple[int, int], ...]:
    del mtime_nsec  # part of the cache key only: a rewritten file is read again
    with tf.io.gfile.GFile(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"class-balanced loss: {path} is not valid JSON: {e}") from e
    categories = data.get("categories") if isinstance(data, dict) else None
    if not categories:
        raise ValueError(f"class-balanced loss: {path} has no 'categories'")
    try:
        ids = [int(c["id"]) for c in categories]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"class-balanced loss: a category of {path} has no integer 'id'") from e
    if all("instance_count" in c for c in categories):  # LVIS v1
        counts = {int(c["id"]): int(c["instance_count"]) for c in categories}
    else:  # COCO format: count the non-crowd annotations (crowds are not class targets)
        counts = dict.fromkeys(ids, 0)
        for index, annotation in enumerate(data.get("annotations") or []):
            category = annotation.get("category_id")
            if category not in counts:
                raise ValueError(
                    f"class-balanced loss: annotation {index} of {path} has category_id "
                    f"{category!r}, not in 'categories'"
                )
            if not annotation.get("iscrowd", 0):
                counts[category] += 1
    return tuple(sorted(counts.items()))


def instance_counts_from_json(path: str) -> dict[int, int]:
    """Training instances per class index from a COCO/LVIS annotation JSON.

    Args:
      path: LVIS v1 JSON (uses each category's `instance_count`) or COCO JSON (counts the
        non-crowd `annotations` per category when a category lacks `instance_count`).

    Returns:
      {class index: count}; the class index is the category id (`tfcp.data.converters.coco`).

    Raises:
      FileNotFoundError, ValueError: missing or malformed file (named in the message).
    """
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"class-balanced loss: annotation file {path} not found")
    return dict(_read_instance_counts(path, tf.io.gfile.stat(path).mtime_nsec))


def class_balanced_weights(
    instance_counts: Mapping[int, int] | Sequence[int],
    num_classes: int,
    beta: float = 0.999,
    background_weight: float = 1.0,
) -> list[float]:
    """Class-balanced weights (Cui et al. 2019) of the `num_classes` class indices.

    Args:
      instance_counts: {class index: n_c} for the dataset's categories (indices 1 ..
        num_classes - 1), or a list of n_c for classes 1, 2, ..., num_classes - 1.
      num_classes: the model's classes, background (index 0) included.
      beta: the effective-number hyper-parameter in (0, 1).
      background_weight: the weight of class 0.

    Returns:
      `num_classes` floats: background_weight for class 0; for the given categories
      `(1 - beta) / (1 - beta ** n_c)` scaled so that they sum to their number K; 1.0 for
      class indices that are no category (ids missing from the dataset, e.g. COCO's 91 ids:
      never a target, so they do not matter for the softmax loss).

    Raises:
      ValueError: a class index outside 1 .. num_classes - 1, a count < 1 (the weight is
        undefined for a class without training instances), or a list of the wrong length.
    """
    if not 0.0 < beta < 1.0:
        raise ValueError(f"class-balanced weights: beta must be in (0, 1), got {beta}")
    if isinstance(instance_counts, Mapping):
        counts = {int(k): v for k, v in instance_counts.items()}
    else:
        if len(instance_counts) != num_classes - 1:
            raise ValueError(
                f"class-balanced weights: a list of counts must give classes 1 .. "
                f"{num_classes - 1} ({num_classes - 1} values), got {len(instance_counts)}"
            )
        counts = {i + 1: n for i, n in enumerate(instance_counts)}
    bad_ids = sorted(k for k in counts if not 1 <= k < num_classes)
    if bad_ids:
        raise ValueError(
            f"class-balanced weights: class indices {bad_ids[:10]} are outside 1 .. "
            f"{num_classes - 1} (num_classes={num_classes}; 0 is background)"
        )
    empty = sorted(k for k, n in counts.items() if int(n) < 1)
    if empty:
        raise ValueError(
            f"class-balanced weights: classes {empty[:10]} have no training instance "
            "((1 - beta) / (1 - beta^0) is undefined); are these the training annotations?"
        )
    raw = {k: (1.0 - beta) / (1.0 - math.pow(beta, int(n))) for k, n in counts.items()}
    scale = len(raw) / sum(raw.values())
    weights = [1.0] * num_classes
    weights[0] = float(background_weight)
    for k, w in raw.items():
        weights[k] = w * scale
    logging.info(
        "Class-balanced loss (beta=%g): %d classes, weights %.3g .. %.3g, background %g",
        beta,
        len(raw),
        min(raw.values()) * scale,
        max(raw.values()) * scale,
        background_weight,
    )
    return weights


def _head_key(name: str, head: int) -> str:
    return f"{name}_{head}" if head else name


def _subset_class_loss(loss_fn, logits, class_targets, images, class_weights) -> tf.Tensor:
    """`loss_fn` over the RoIs of the images where `images` (bool [B]) holds; 0 if none does."""

    def loss():
        return loss_fn(
            tf.boolean_mask(logits, images),
            tf.boolean_mask(class_targets, images),
            class_weights,
        )

    return tf.cond(tf.reduce_any(images), loss, lambda: tf.zeros([], logits.dtype))


def classifier_streams(labels: Mapping[str, Any]) -> tf.Tensor:
    """The double classifier's per-image stream flags, int32 [B] of 0 (head a) / 1 (head b).

    Raises:
      ValueError: `labels` has no `classifier_stream` or it is not a vector.
      tf.errors.InvalidArgumentError: a flag other than 0 or 1.
    """
    if double_classifier.STREAM_KEY not in labels:
        raise ValueError(
            f"a double-classifier model needs labels['{double_classifier.STREAM_KEY}'] (int32 "
            "[B]: 0 = repeat-factor stream, trains head a; 1 = class-aware stream, trains head "
            "b); the training input pipeline does not provide it (labels: "
            f"{sorted(labels)})"
        )
    streams = tf.cast(labels[double_classifier.STREAM_KEY], tf.int32)
    if streams.shape.rank != 1:
        raise ValueError(
            f"labels['{double_classifier.STREAM_KEY}'] must be [B], got shape {streams.shape}"
        )
    tf.debugging.assert_equal(
        tf.reduce_all((streams == 0) | (streams == 1)),
        True,
        message=f"labels['{double_classifier.STREAM_KEY}'] must hold 0 or 1 per image",
    )
    return streams


def maskrcnn_losses(
    outputs: Mapping[str, Any],
    labels: Mapping[str, Any],
    *,
    num_detection_heads: int = 1,
    class_agnostic_bbox_pred: bool = False,
    include_mask: bool = True,
    double_classifier_heads: bool = False,
    config: MaskRCNNLossConfig | None = None,
) -> dict[str, tf.Tensor]:
    """Computes the Mask R-CNN losses from training-mode model outputs.

    Args:
      outputs: float32 outputs of `MaskRCNNModel(..., training=True)`: `rpn_scores`,
        `rpn_boxes` (dicts level -> [B, H_l, W_l, A] / [B, H_l, W_l, 4A]),
        `class_outputs[_i]` [B, R, C], `box_outputs[_i]` [B, R, 4C] (or [B, R, 4]
        class-agnostic), `class_targets[_i]` [B, R], `box_targets[_i]` [B, R, 4] for
        head i = 0 .. num_detection_heads - 1, and with masks `mask_outputs`
        [B, M, m, m], `mask_targets` [B, M, m, m], `mask_class_targets` [B, M].
      labels: the parser labels; uses `rpn_score_targets`, `rpn_box_targets` (dicts
        level -> targets) and, with `double_classifier_heads`, `classifier_stream` int32 [B].
      num_detection_heads: 1 + number of Cascade R-CNN stages.
      class_agnostic_bbox_pred: whether the box head regresses one box per RoI.
      include_mask: adds the mask loss (else `mask_loss` is 0).
      double_classifier_heads: the heads are double classifiers: `class_outputs[_i]` are
        [B, R, 2C] (module docstring).
      config: loss hyper-parameters; None = defaults.

    Returns:
      dict of float32 scalars: `total_loss`, `model_loss`, `rpn_score_loss`,
      `rpn_box_loss`, `frcnn_cls_loss`, `frcnn_box_loss`, `mask_loss`, and with
      `double_classifier_heads` also `frcnn_cls_loss_a`, `frcnn_cls_loss_b` (their sum is
      `frcnn_cls_loss`). `total_loss` excludes weight decay.

    Raises:
      ValueError: as `classifier_streams` for a double classifier; class weights of another
        length than the model's classes.
    """
    config = config or MaskRCNNLossConfig()

    rpn_score_loss_fn = mg_losses.RpnScoreLoss(tf.shape(outputs["box_outputs"])[1])
    rpn_box_loss_fn = mg_losses.RpnBoxLoss(config.rpn_huber_loss_delta)
    rpn_score_loss = tf.reduce_mean(
        rpn_score_loss_fn(outputs["rpn_scores"], labels["rpn_score_targets"])
    )
    rpn_box_loss = tf.reduce_mean(rpn_box_loss_fn(outputs["rpn_boxes"], labels["rpn_box_targets"]))

    frcnn_cls_loss_fn = mg_losses.FastrcnnClassLoss(
        use_binary_cross_entropy=config.frcnn_class_use_binary_cross_entropy,
        top_k_percent=config.frcnn_class_loss_top_k_percent,
    )
    frcnn_box_loss_fn = mg_losses.FastrcnnBoxLoss(
        config.frcnn_huber_loss_delta, class_agnostic_bbox_pred
    )
    num_classes = outputs["class_outputs"].shape[-1]
    if double_classifier_heads:
        streams = classifier_streams(labels)
        num_classes //= 2
    class_weights = config.resolved_class_weights(num_classes)
    if class_weights is not None and len(class_weights) != num_classes:
        raise ValueError(
            f"MaskRCNNLossConfig class weights: {len(class_weights)} values for a model with "
            f"{num_classes} classes (background included)"
        )
    frcnn_cls_loss = 0.0
    cls_loss_a = cls_loss_b = 0.0
    frcnn_box_loss = 0.0
    for head in range(num_detection_heads):
        class_targets = outputs[_head_key("class_targets", head)]
        class_outputs = outputs[_head_key("class_outputs", head)]
        if double_classifier_heads:
            logits_a, logits_b = double_classifier.split_logits(class_outputs)
            cls_loss_a += _subset_class_loss(
                frcnn_cls_loss_fn, logits_a, class_targets, streams == 0, class_weights
            )
            cls_loss_b += _subset_class_loss(
                frcnn_cls_loss_fn, logits_b, class_targets, streams == 1, class_weights
            )
        else:
            frcnn_cls_loss += tf.reduce_mean(
                frcnn_cls_loss_fn(class_outputs, class_targets, class_weights)
            )
        frcnn_box_loss += tf.reduce_mean(
            frcnn_box_loss_fn(
                outputs[_head_key("box_outputs", head)],
                class_targets,
                outputs[_head_key("box_targets", head)],
            )
        )
    if double_classifier_heads:
        cls_loss_a /= num_detection_heads
        cls_loss_b /= num_detection_heads
        frcnn_cls_loss = cls_loss_a + cls_loss_b
    else:
        frcnn_cls_loss /= num_detection_heads
    frcnn_box_loss /= num_detection_heads

    if include_mask:
        mask_loss = tf.reduce_mean(
            mg_losses.MaskrcnnLoss()(
                outputs["mask_outputs"], outputs["mask_targets"], outputs["mask_class_targets"]
            )
        )
    else:
        mask_loss = tf.constant(0.0, dtype=tf.float32)

    model_loss = (
        config.rpn_score_weight * rpn_score_loss
        + config.rpn_box_weight * rpn_box_loss
        + config.frcnn_class_weight * frcnn_cls_loss
        + config.frcnn_box_weight * frcnn_box_loss
        + config.mask_weight * mask_loss
    )
    result = {
        "total_loss": config.loss_weight * model_loss,
        "model_loss": model_loss,
        "rpn_score_loss": rpn_score_loss,
        "rpn_box_loss": rpn_box_loss,
        "frcnn_cls_loss": frcnn_cls_loss,
        "frcnn_box_loss": frcnn_box_loss,
        "mask_loss": mask_loss,
    }
    if double_classifier_heads:
        result.update(frcnn_cls_loss_a=cls_loss_a, frcnn_cls_loss_b=cls_loss_b)
    return result

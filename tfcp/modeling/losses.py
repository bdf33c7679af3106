"""Mask R-CNN / Cascade Mask R-CNN / Faster R-CNN training losses.

Computes exactly what `official.vision.tasks.maskrcnn.MaskRCNNTask.build_losses` computes,
by calling the loss classes of `official.vision.losses.maskrcnn_losses`:
RPN objectness + RPN box (Huber), Fast R-CNN class + box averaged over the detection
heads (1 + number of cascade stages), and the mask loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import gin
import tensorflow as tf
from official.vision.losses import maskrcnn_losses as mg_losses


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
      class_weights: optional per-class weights of the Fast R-CNN class loss.
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


def _head_key(name: str, head: int) -> str:
    return f"{name}_{head}" if head else name


def maskrcnn_losses(
    outputs: Mapping[str, Any],
    labels: Mapping[str, Any],
    *,
    num_detection_heads: int = 1,
    class_agnostic_bbox_pred: bool = False,
    include_mask: bool = True,
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
        level -> targets).
      num_detection_heads: 1 + number of Cascade R-CNN stages.
      class_agnostic_bbox_pred: whether the box head regresses one box per RoI.
      include_mask: adds the mask loss (else `mask_loss` is 0).
      config: loss hyper-parameters; None = defaults.

    Returns:
      dict of float32 scalars: `total_loss`, `model_loss`, `rpn_score_loss`,
      `rpn_box_loss`, `frcnn_cls_loss`, `frcnn_box_loss`, `mask_loss`. `total_loss`
      excludes weight decay.
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
    class_weights = list(config.class_weights) if config.class_weights else None
    frcnn_cls_loss = 0.0
    frcnn_box_loss = 0.0
    for head in range(num_detection_heads):
        class_targets = outputs[_head_key("class_targets", head)]
        frcnn_cls_loss += tf.reduce_mean(
            frcnn_cls_loss_fn(
                outputs[_head_key("class_outputs", head)], class_targets, class_weights
            )
        )
        frcnn_box_loss += tf.reduce_mean(
            frcnn_box_loss_fn(
                outputs[_head_key("box_outputs", head)],
                class_targets,
                outputs[_head_key("box_targets", head)],
            )
        )
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
    return {
        "total_loss": config.loss_weight * model_loss,
        "model_loss": model_loss,
        "rpn_score_loss": rpn_score_loss,
        "rpn_box_loss": rpn_box_loss,
        "frcnn_cls_loss": frcnn_cls_loss,
        "frcnn_box_loss": frcnn_box_loss,
        "mask_loss": mask_loss,
    }

"""Tests of tfcp.modeling.losses on hand-made model outputs."""

import math

import numpy as np
import tensorflow as tf

from tfcp.modeling import losses

B, R, C = 1, 4, 3  # batch, RoIs, classes (incl. background)


def _outputs(num_heads, confident_heads=(), include_mask=True):
    """Outputs of a model with `num_heads` detection heads; uniform class logits except in
    `confident_heads`, where the logits strongly favour the target class."""
    class_targets = tf.constant([[1, 2, 0, 1]], tf.float32)
    box_targets = tf.constant(np.full([B, R, 4], 0.3, np.float32))
    outputs = {
        "rpn_scores": {"2": tf.zeros([B, 2, 2, 1])},
        "rpn_boxes": {"2": tf.zeros([B, 2, 2, 4])},
    }
    for head in range(num_heads):
        suffix = f"_{head}" if head else ""
        logits = tf.zeros([B, R, C])
        if head in confident_heads:
            logits = 50.0 * tf.one_hot(tf.cast(class_targets, tf.int32), C)
        outputs["class_outputs" + suffix] = logits
        outputs["class_targets" + suffix] = class_targets
        outputs["box_outputs" + suffix] = box_targets  # class-agnostic: [B, R, 4], exact
        outputs["box_targets" + suffix] = box_targets
    if include_mask:
        outputs["mask_outputs"] = tf.zeros([B, 2, 28, 28])  # logit 0 -> BCE log 2
        outputs["mask_targets"] = tf.ones([B, 2, 28, 28])
        outputs["mask_class_targets"] = tf.constant([[1, 2]], tf.int32)
    return outputs


LABELS = {
    "rpn_score_targets": {"2": tf.constant([[[[1], [0]], [[-1], [-1]]]], tf.int32)},
    "rpn_box_targets": {"2": tf.zeros([B, 2, 2, 4])},
}


class MaskRCNNLossesTest(tf.test.TestCase):
    def test_single_head_hand_checked_values(self):
        result = losses.maskrcnn_losses(
            _outputs(1), LABELS, num_detection_heads=1, class_agnostic_bbox_pred=True
        )
        self.assertAllClose(result["frcnn_cls_loss"], math.log(C), rtol=1e-5)
        self.assertAllClose(result["frcnn_box_loss"], 0.0)
        self.assertAllClose(result["mask_loss"], math.log(2.0), rtol=1e-5)
        self.assertAllClose(result["rpn_box_loss"], 0.0)
        self.assertGreater(float(result["rpn_score_loss"]), 0.0)
        parts = sum(
            float(result[k])
            for k in ("rpn_score_loss", "rpn_box_loss", "frcnn_cls_loss", "frcnn_box_loss")
        )
        self.assertAllClose(result["model_loss"], parts + float(result["mask_loss"]))
        self.assertAllClose(result["total_loss"], result["model_loss"])

    def test_cascade_losses_average_all_heads(self):
        # Heads 0 and 2 uniform (loss log C), head 1 confident (loss ~0): mean 2/3 log C.
        result = losses.maskrcnn_losses(
            _outputs(3, confident_heads=(1,)),
            LABELS,
            num_detection_heads=3,
            class_agnostic_bbox_pred=True,
        )
        self.assertAllClose(result["frcnn_cls_loss"], 2.0 / 3.0 * math.log(C), rtol=1e-4)
        with self.assertRaises(KeyError):  # a 3-head model must provide every head
            outputs = _outputs(3)
            del outputs["class_outputs_2"]
            losses.maskrcnn_losses(outputs, LABELS, num_detection_heads=3)

    def test_weights_and_no_mask(self):
        config = losses.MaskRCNNLossConfig(frcnn_class_weight=2.0, loss_weight=0.5)
        result = losses.maskrcnn_losses(
            _outputs(1, include_mask=False),
            LABELS,
            class_agnostic_bbox_pred=True,
            include_mask=False,
            config=config,
        )
        self.assertEqual(float(result["mask_loss"]), 0.0)
        expected = float(result["rpn_score_loss"]) + 2.0 * math.log(C)
        self.assertAllClose(result["model_loss"], expected, rtol=1e-5)
        self.assertAllClose(result["total_loss"], 0.5 * expected, rtol=1e-5)

"""Tests of tfcp.modeling.losses on hand-made model outputs."""

import json
import math
import os

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


def _weighted_softmax_ce(logits, targets, weights):
    """Reference: mean over RoIs of w[y] * -log softmax(logits)[y], in float64 numpy."""
    logits = np.asarray(logits, np.float64).reshape(-1, logits.shape[-1])
    targets = np.asarray(targets, np.int64).reshape(-1)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    ce = -log_probs[np.arange(len(targets)), targets]
    return float(np.mean(np.asarray(weights)[targets] * ce))


class ClassBalancedWeightsTest(tf.test.TestCase):
    def test_weights_follow_cui_et_al(self):
        # n = 1, 10, 100 at beta 0.999: raw (1 - b) / (1 - b^n) = 1, 0.10045..., 0.010503...
        weights = losses.class_balanced_weights({1: 1, 2: 10, 3: 100}, num_classes=4)
        raw = np.array([1.0, 0.001 / (1 - 0.999**10), 0.001 / (1 - 0.999**100)])
        self.assertAllClose(raw, [1.0, 0.1004509, 0.0105030], rtol=1e-5)  # by hand
        self.assertAllClose(weights, [1.0, *(3.0 * raw / raw.sum())], rtol=1e-12)
        self.assertAllClose(sum(weights[1:]), 3.0)  # normalized: sum over the K classes = K
        # A list gives classes 1, 2, 3; background weight configurable.
        self.assertAllClose(
            losses.class_balanced_weights([1, 10, 100], 4, background_weight=0.5),
            [0.5, *weights[1:]],
        )
        # Equal counts: every weight 1 (the standard loss).
        self.assertAllClose(losses.class_balanced_weights([7, 7, 7], 4), [1.0] * 4)
        # Class indices that are no category (id gaps) get 1 and do not enter the norm.
        gaps = losses.class_balanced_weights({1: 1, 4: 100}, num_classes=6, beta=0.9)
        w1, w4 = 2.0 * np.array([1.0, 0.1 / (1 - 0.9**100)]) / (1.0 + 0.1 / (1 - 0.9**100))
        self.assertAllClose(gaps, [1.0, w1, 1.0, 1.0, w4, 1.0])

    def test_bad_counts_fail_clearly(self):
        with self.assertRaisesRegex(ValueError, r"classes \[2\] have no training instance"):
            losses.class_balanced_weights({1: 3, 2: 0}, 3)
        with self.assertRaisesRegex(ValueError, r"outside 1 .. 3"):
            losses.class_balanced_weights({4: 3}, 4)
        with self.assertRaisesRegex(ValueError, "3 values"):
            losses.class_balanced_weights([1, 2], 4)
        with self.assertRaisesRegex(ValueError, "beta"):
            losses.class_balanced_weights([1, 2, 3], 4, beta=1.0)
        with self.assertRaisesRegex(ValueError, "not both"):
            losses.MaskRCNNLossConfig(class_weights=[1.0] * 3, class_balanced_counts=[1, 2])

    def test_counts_from_lvis_and_coco_json(self):
        tmp = self.get_temp_dir()
        lvis = {
            "categories": [{"id": 1, "instance_count": 5}, {"id": 3, "instance_count": 2}],
            "annotations": [{"category_id": 1, "iscrowd": 0}],  # instance_count wins
        }
        coco = {
            "categories": [{"id": 1}, {"id": 2}],
            "annotations": [
                {"category_id": 1, "iscrowd": 0},
                {"category_id": 1},
                {"category_id": 2, "iscrowd": 0},
                {"category_id": 2, "iscrowd": 1},  # a crowd region is no class target
            ],
        }
        paths = {}
        for name, data in (("lvis", lvis), ("coco", coco)):
            paths[name] = os.path.join(tmp, f"{name}.json")
            with open(paths[name], "w") as f:
                json.dump(data, f)
        self.assertEqual(losses.instance_counts_from_json(paths["lvis"]), {1: 5, 3: 2})
        self.assertEqual(losses.instance_counts_from_json(paths["coco"]), {1: 2, 2: 1})
        config = losses.MaskRCNNLossConfig(class_balanced_counts=paths["lvis"])
        self.assertAllClose(
            config.resolved_class_weights(4),
            losses.class_balanced_weights({1: 5, 3: 2}, 4),
        )
        with self.assertRaisesRegex(FileNotFoundError, "missing.json"):
            losses.instance_counts_from_json(os.path.join(tmp, "missing.json"))
        bad = os.path.join(tmp, "bad.json")
        with open(bad, "w") as f:
            json.dump({"categories": [{"id": 1}], "annotations": [{"category_id": 9}]}, f)
        with self.assertRaisesRegex(ValueError, "bad.json.*category_id 9|category_id 9.*bad"):
            losses.instance_counts_from_json(bad)

    def test_class_balanced_loss_equals_weighted_softmax_cross_entropy(self):
        rng = np.random.default_rng(0)
        num_classes, counts = 4, [2, 40, 900]  # classes 1..3; 0 = background
        logits = rng.normal(size=(2, 5, num_classes)).astype(np.float32)
        targets = np.array([[0, 1, 2, 3, 1], [3, 3, 0, 0, 2]])
        outputs = _outputs(1)
        outputs.update(
            class_outputs=tf.constant(logits),
            class_targets=tf.constant(targets, tf.float32),
            box_outputs=tf.zeros([2, 5, 4]),
            box_targets=tf.zeros([2, 5, 4]),
        )
        config = losses.MaskRCNNLossConfig(class_balanced_counts=counts)
        result = losses.maskrcnn_losses(
            outputs, LABELS, class_agnostic_bbox_pred=True, config=config
        )
        weights = losses.class_balanced_weights(counts, num_classes)
        self.assertGreater(weights[1], 2.0)  # the rare class is up-weighted ...
        self.assertLess(weights[3], 0.1)  # ... the frequent one down-weighted
        expected = _weighted_softmax_ce(logits, targets, weights)
        self.assertAllClose(result["frcnn_cls_loss"], expected, rtol=1e-5)
        plain = losses.maskrcnn_losses(outputs, LABELS, class_agnostic_bbox_pred=True)
        self.assertAllClose(
            plain["frcnn_cls_loss"], _weighted_softmax_ce(logits, targets, [1.0] * 4), rtol=1e-5
        )
        self.assertNotAllClose(result["frcnn_cls_loss"], plain["frcnn_cls_loss"])
        with self.assertRaisesRegex(ValueError, "3 values for a model with 4 classes"):
            losses.maskrcnn_losses(
                outputs,
                LABELS,
                class_agnostic_bbox_pred=True,
                config=losses.MaskRCNNLossConfig(class_weights=[1.0] * 3),
            )


def _double_outputs(logits, targets, num_heads=1):
    """Training outputs of a double-classifier model: class_outputs [B, R, 2C]."""
    outputs = _outputs(1)
    batch, rois = targets.shape
    for head in range(num_heads):
        suffix = f"_{head}" if head else ""
        outputs.update(
            {
                "class_outputs" + suffix: tf.constant(logits),
                "class_targets" + suffix: tf.constant(targets, tf.float32),
                "box_outputs" + suffix: tf.zeros([batch, rois, 4]),
                "box_targets" + suffix: tf.zeros([batch, rois, 4]),
            }
        )
    return outputs


class DoubleClassifierLossTest(tf.test.TestCase):
    C = 4

    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(1)
        self.logits = rng.normal(size=(3, 5, 2 * self.C)).astype(np.float32)
        self.targets = np.array([[0, 1, 2, 3, 1], [3, 3, 0, 0, 2], [1, 0, 0, 2, 2]])

    def _losses(self, streams, outputs=None, **kwargs):
        labels = dict(LABELS, classifier_stream=tf.constant(streams, tf.int32))
        return losses.maskrcnn_losses(
            outputs or _double_outputs(self.logits, self.targets),
            labels,
            class_agnostic_bbox_pred=True,
            double_classifier_heads=True,
            **kwargs,
        )

    def test_each_head_is_normalized_over_the_rois_of_its_stream(self):
        result = self._losses([0, 1, 0])
        logits_a, logits_b = self.logits[..., : self.C], self.logits[..., self.C :]
        ones = [1.0] * self.C
        loss_a = _weighted_softmax_ce(logits_a[[0, 2]], self.targets[[0, 2]], ones)
        loss_b = _weighted_softmax_ce(logits_b[[1]], self.targets[[1]], ones)
        self.assertAllClose(result["frcnn_cls_loss_a"], loss_a, rtol=1e-5)
        self.assertAllClose(result["frcnn_cls_loss_b"], loss_b, rtol=1e-5)
        self.assertAllClose(result["frcnn_cls_loss"], loss_a + loss_b, rtol=1e-5)
        expected = float(result["rpn_score_loss"]) + loss_a + loss_b + math.log(2.0)  # + mask
        self.assertAllClose(result["model_loss"], expected, rtol=1e-5)
        # Class-balanced weights have C entries and weight both heads.
        counts = [2, 40, 900]
        weighted = self._losses(
            [0, 1, 0], config=losses.MaskRCNNLossConfig(class_balanced_counts=counts)
        )
        weights = losses.class_balanced_weights(counts, self.C)
        self.assertAllClose(
            weighted["frcnn_cls_loss_b"],
            _weighted_softmax_ce(logits_b[[1]], self.targets[[1]], weights),
            rtol=1e-5,
        )

    def test_each_head_depends_only_on_its_stream(self):
        class_outputs = tf.constant(self.logits)
        outputs = _double_outputs(self.logits, self.targets)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(class_outputs)
            outputs["class_outputs"] = class_outputs
            result = self._losses([0, 1, 0], outputs=outputs)
        grad_a = tape.gradient(result["frcnn_cls_loss_a"], class_outputs).numpy()
        grad_b = tape.gradient(result["frcnn_cls_loss_b"], class_outputs).numpy()
        nonzero_a = np.abs(grad_a).sum(axis=1) > 0  # [image, logit]
        nonzero_b = np.abs(grad_b).sum(axis=1) > 0
        head_a = np.arange(2 * self.C) < self.C
        self.assertAllEqual(nonzero_a, np.array([1, 0, 1], bool)[:, None] & head_a[None])
        self.assertAllEqual(nonzero_b, np.array([0, 1, 0], bool)[:, None] & ~head_a[None])

    def test_a_stream_without_images_gives_zero_loss(self):
        for streams, empty in (([0, 0, 0], "frcnn_cls_loss_b"), ([1, 1, 1], "frcnn_cls_loss_a")):
            result = self._losses(streams)
            self.assertEqual(float(result[empty]), 0.0)
            self.assertTrue(all(np.isfinite(v.numpy()) for v in result.values()))
        # Under tf.function too (the trainer's case).
        self.assertEqual(float(tf.function(self._losses)([0, 0, 0])["frcnn_cls_loss_b"]), 0.0)

    def test_cascade_heads_are_averaged_per_head(self):
        single = self._losses([0, 1, 0])
        outputs = _double_outputs(self.logits, self.targets, num_heads=2)
        cascade = self._losses([0, 1, 0], outputs=outputs, num_detection_heads=2)
        for key in ("frcnn_cls_loss_a", "frcnn_cls_loss_b", "frcnn_cls_loss"):
            self.assertAllClose(cascade[key], single[key], rtol=1e-6)

    def test_missing_or_bad_streams_fail_clearly(self):
        outputs = _double_outputs(self.logits, self.targets)
        with self.assertRaisesRegex(ValueError, r"needs labels\['classifier_stream'\]"):
            losses.maskrcnn_losses(outputs, LABELS, double_classifier_heads=True)
        with self.assertRaisesRegex(ValueError, r"must be \[B\]"):
            self._losses([[0, 1, 0]])
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "0 or 1"):
            self._losses([0, 2, 0])
        odd = _double_outputs(self.logits[..., :-1], self.targets)
        with self.assertRaisesRegex(ValueError, "even static last dimension"):
            self._losses([0, 1, 0], outputs=odd)

"""Tests of tfcp.modeling.freeze on a small Keras model and the tiny Mask R-CNN."""

import re

import numpy as np
import tensorflow as tf
import tf_keras

from tests.tasks.maskrcnn_test import NUM_CLASSES, tiny_model
from tfcp.modeling import freeze


def _small_model():
    """Dense -> BatchNorm -> Dense('head'), built for inputs [None, 3]."""
    inputs = tf_keras.Input([3])
    x = tf_keras.layers.Dense(4, name="body")(inputs)
    x = tf_keras.layers.BatchNormalization(name="bn", momentum=0.5)(x)
    outputs = tf_keras.layers.Dense(2, name="head")(x)
    return tf_keras.Model(inputs, outputs)


def _snapshot(model):
    return {v.name: v.numpy().copy() for v in model.variables}


class SelectVariablesTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = tiny_model()

    def test_selects_the_final_classifier_of_mask_rcnn(self):
        selected = freeze.select_variables(self.model, include=(freeze.MASKRCNN_CLASSIFIER,))
        names = [re.sub(r"^mask_rcnn_model(_\d+)?/", "", v.name) for v in selected]
        self.assertEqual(
            names,
            ["detection_head/detection-scores/kernel:0", "detection_head/detection-scores/bias:0"],
        )
        self.assertEqual(selected[0].shape[-1], NUM_CLASSES)
        self.assertEqual(selected[1].shape, (NUM_CLASSES,))

    def test_cascade_last_stage_classifier(self):
        model = tiny_model(
            cascade_iou_thresholds=(0.6, 0.7),
            class_agnostic_bbox_pred=True,
            cascade_class_ensemble=True,
        )
        last = freeze.select_variables(model, include=(freeze.CASCADE_LAST_CLASSIFIER,))
        self.assertLen(last, 2)
        self.assertTrue(all("/detection_head_2/detection-scores/" in v.name for v in last))
        first = freeze.select_variables(model, include=(freeze.MASKRCNN_CLASSIFIER,))
        self.assertTrue(all("/detection_head/detection-scores/" in v.name for v in first))

    def test_include_and_exclude(self):
        everything = freeze.select_variables(self.model)
        self.assertEqual(len(everything), len(self.model.trainable_variables))
        no_rpn = freeze.select_variables(self.model, exclude=("rpn_head/",))
        self.assertFalse(any("rpn_head/" in v.name for v in no_rpn))
        self.assertLess(len(no_rpn), len(everything))

    def test_bad_patterns_fail_clearly(self):
        with self.assertRaisesRegex(ValueError, "'detection-scorez' matches none"):
            freeze.select_variables(self.model, include=("detection-scorez",))
        with self.assertRaisesRegex(ValueError, "exclude pattern 'nothing_here' matches none"):
            freeze.select_variables(self.model, exclude=("nothing_here",))
        with self.assertRaisesRegex(ValueError, "leaves no variable"):
            freeze.select_variables(self.model, include=("rpn_head/",), exclude=("rpn",))
        with self.assertRaisesRegex(TypeError, "not a string"):
            freeze.select_variables(self.model, include="rpn_head/")
        with self.assertRaisesRegex(ValueError, "invalid regex"):
            freeze.select_variables(self.model, include=("(",))


class FreezeUnselectedLayersTest(tf.test.TestCase):
    def test_keras_batch_norm_updates_statistics_unless_frozen(self):
        x = tf.constant(np.random.default_rng(0).normal(3.0, 2.0, size=(8, 3)), tf.float32)
        # Without freezing, a training-mode call updates the moving statistics even though
        # the BN layer's variables are not in the trained set: what stage 2 must avoid.
        model = _small_model()
        freeze.select_variables(model, include=("head/",))
        before = _snapshot(model)
        model(x, training=True)
        self.assertNotAllClose(model.get_layer("bn").moving_mean, before["bn/moving_mean:0"])

        model = _small_model()
        selected = freeze.select_variables(model, include=("head/",))
        frozen = freeze.freeze_unselected_layers(model, selected)
        self.assertEqual(frozen, ["body", "bn"])
        self.assertEqual([v.name for v in model.trainable_variables], [v.name for v in selected])
        before = _snapshot(model)
        train_out = model(x, training=True)
        for name, value in _snapshot(model).items():
            self.assertAllEqual(value, before[name], msg=name)
        # The frozen BN normalizes with its moving statistics: as in inference.
        self.assertAllEqual(train_out, model(x, training=False))

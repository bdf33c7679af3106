"""Tests of tfcp.modeling.double_classifier on its head and tiny ResNet-18 models at 128 px."""

import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow as tf
import tf_keras
from official.vision.modeling.heads import instance_heads

from tests.tasks.maskrcnn_test import NUM_CLASSES, batch, tiny_model
from tfcp import checkpointing, train_loop
from tfcp.modeling import double_classifier, factory, freeze
from tfcp.tasks.maskrcnn import MaskRCNNTask

C = NUM_CLASSES


def _softmax(logits):
    return tf.nn.softmax(tf.cast(logits, tf.float64), axis=-1).numpy()


def _train_batch(streams=(0, 1)):
    images, labels = batch(True)
    return images, dict(labels, classifier_stream=tf.constant(streams, tf.int32))


def _training_outputs(model, images, labels):
    return model(
        images,
        image_shape=labels["image_info"][:, 1, :],
        anchor_boxes=labels["anchor_boxes"],
        gt_boxes=labels["gt_boxes"],
        gt_classes=labels["gt_classes"],
        gt_masks=labels["gt_masks"],
        training=True,
    )


def _spread_classifiers(model, seed):
    """Large random weights in both heads: far-from-uniform, different scores."""
    rng = np.random.default_rng(seed)
    head = model.detection_head[0]
    for layer in (head.classifier_a, head.classifier_b):
        layer.kernel.assign(rng.normal(0.0, 0.3, layer.kernel.shape).astype(np.float32))
        layer.bias.assign(rng.normal(0.0, 1.0, layer.bias.shape).astype(np.float32))


class DoubleDetectionHeadTest(tf.test.TestCase):
    def test_averaged_scores_are_the_mean_of_both_heads(self):
        # No batch norm in the head (num_fcs=0), so training- and inference-mode features
        # agree and the training outputs give both heads' inference logits.
        head = double_classifier.DoubleDetectionHead(num_classes=5, num_convs=0, num_fcs=0)
        self.assertIsInstance(head, instance_heads.DetectionHead)
        roi_features = tf.random.stateless_normal([2, 3, 2, 2, 8], seed=[1, 2])
        train_logits, train_boxes = head(roi_features, training=True)
        self.assertEqual(train_logits.shape, (2, 3, 10))
        self.assertEqual(train_boxes.shape, (2, 3, 20))
        self.assertEqual(
            [re.sub(r"^.*detection_head[^/]*/", "", v.name) for v in head.trainable_weights][-4:],
            [
                "detection-scores/kernel:0",
                "detection-scores/bias:0",
                "detection-scores-b/kernel:0",
                "detection-scores-b/bias:0",
            ],
        )
        # Fresh heads are different (own initializer instances) ...
        self.assertNotAllClose(head.classifier_a.kernel, head.classifier_b.kernel)
        rng = np.random.default_rng(0)  # ... and now far from uniform.
        for layer in (head.classifier_a, head.classifier_b):
            layer.kernel.assign(rng.normal(0.0, 0.5, layer.kernel.shape).astype(np.float32))
        train_logits, _ = head(roi_features, training=True)
        logits_a, logits_b = double_classifier.split_logits(train_logits)
        mean = (_softmax(logits_a) + _softmax(logits_b)) / 2.0
        self.assertGreater(np.abs(_softmax(logits_a) - _softmax(logits_b)).max(), 0.05)
        infer_logits, infer_boxes = head(roi_features, training=False)
        self.assertEqual(infer_logits.shape, (2, 3, 5))
        self.assertAllEqual(infer_boxes, train_boxes)
        self.assertAllClose(_softmax(infer_logits), mean, atol=1e-6)
        # The log of the mean itself, and stable for extreme logits.
        self.assertAllClose(infer_logits, np.log(mean), atol=1e-5)
        extreme = double_classifier.averaged_log_probs(
            tf.constant([[200.0, -200.0, 0.0]]), tf.constant([[-300.0, 0.0, 300.0]])
        )
        self.assertAllClose(_softmax(extreme), [[0.5, 0.0, 0.5]], atol=1e-6)


def _head_variables(head):
    """{name relative to the head: variable}."""
    return {re.sub(r"^.*?" + head.name + "/", "", v.name): v for v in head.weights}


def _load_single_head(twin, model, classifier):
    """The twin's head <- the double head's trunk and box regressor, and head `classifier`."""
    source = _head_variables(model.detection_head[0])
    for name, variable in _head_variables(twin.detection_head[0]).items():
        if classifier == "b" and name.startswith("detection-scores/"):
            name = name.replace("detection-scores/", "detection-scores-b/")
        variable.assign(source[name])


class DoubleClassifierModelTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        tf.random.set_seed(4)
        cls.model = tiny_model(double_classifier=True)

    def test_structure_and_freeze_pattern(self):
        props = factory.model_properties(self.model)
        self.assertTrue(props["double_classifier"])
        self.assertEqual(self.model.detection_head[0].get_config()["num_classes"], C)
        selected = freeze.select_variables(
            self.model, include=(double_classifier.DOUBLE_CLASSIFIER,)
        )
        names = [re.sub(r"^mask_rcnn_model(_\d+)?/", "", v.name) for v in selected]
        self.assertCountEqual(
            names,
            [
                "detection_head/detection-scores/kernel:0",
                "detection_head/detection-scores/bias:0",
                "detection_head/detection-scores-b/kernel:0",
                "detection_head/detection-scores-b/bias:0",
            ],
        )
        # LVIS stage 2's pattern still selects head a only.
        only_a = freeze.select_variables(self.model, include=(freeze.MASKRCNN_CLASSIFIER,))
        self.assertLen(only_a, 2)

    def test_training_outputs_carry_both_heads(self):
        images, labels = _train_batch()
        outputs = _training_outputs(self.model, images, labels)
        # `training` reaches the head through MaskRCNNModel's call (the head is called
        # without it): [B, R, 2C] logits; boxes as a single head's.
        self.assertEqual(outputs["class_outputs"].shape, (2, 32, 2 * C))
        self.assertEqual(outputs["box_outputs"].shape, (2, 32, 4 * C))
        task = MaskRCNNTask(model_builder=lambda: self.model)
        result = task.build_losses(self.model, images, labels, training=True)
        self.assertIn("frcnn_cls_loss_a", result)
        self.assertIn("frcnn_cls_loss_b", result)
        self.assertTrue(all(np.isfinite(v.numpy()) for v in result.values()))
        del labels["classifier_stream"]
        with self.assertRaisesRegex(ValueError, r"labels\['classifier_stream'\]"):
            task.build_losses(self.model, images, labels, training=True)

    def test_each_head_gets_gradients_from_its_stream_only(self):
        task = MaskRCNNTask(model_builder=lambda: self.model)
        head = self.model.detection_head[0]
        for streams, trained, untouched in (
            ((0, 0), head.classifier_a, head.classifier_b),
            ((1, 1), head.classifier_b, head.classifier_a),
        ):
            images, labels = _train_batch(streams)
            with tf.GradientTape() as tape:
                loss = task.build_losses(self.model, images, labels, training=True)["total_loss"]
            grads = tape.gradient(loss, [trained.kernel, untouched.kernel])
            self.assertGreater(float(tf.reduce_max(tf.abs(grads[0]))), 0.0, msg=streams)
            self.assertTrue(grads[1] is None or not np.any(grads[1].numpy()), msg=streams)

    def test_inference_scores_are_the_mean_of_both_heads(self):
        model = self.model  # the other tests do not depend on its classifier weights
        _spread_classifiers(model, seed=5)
        images, labels = batch(False)
        kwargs = dict(
            anchor_boxes=labels["anchor_boxes"],
            image_shape=labels["image_info"][:, 1, :],
            training=False,
        )
        outputs = model(images, **kwargs)
        # The same RoIs through single-head twins holding head a, then head b.
        twin = double_classifier.single_head_twin(model)
        probs = []
        for classifier in ("a", "b"):
            _load_single_head(twin, model, classifier)
            twin_outputs = twin(images, **kwargs)
            self.assertAllEqual(twin_outputs["box_outputs"], outputs["box_outputs"])
            probs.append(_softmax(twin_outputs["cls_outputs"]))
        self.assertGreater(np.abs(probs[0] - probs[1]).max(), 0.1)
        mean = (probs[0] + probs[1]) / 2.0
        self.assertAllClose(_softmax(outputs["cls_outputs"]), mean, atol=1e-6)
        # The top detection (never suppressed by NMS) scores the best foreground mean.
        for image in range(2):
            best = mean[image, :, 1:].max()
            self.assertAllClose(outputs["detection_scores"][image, 0], best, atol=1e-6)
            self.assertEqual(
                int(outputs["detection_classes"][image, 0]),
                1 + np.unravel_index(mean[image, :, 1:].argmax(), mean[image, :, 1:].shape)[1],
            )


class RetrainingTest(tf.test.TestCase):
    """Stage 1 (single classifier) -> double-classifier retraining of the classifiers only."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        tf.random.set_seed(6)
        cls.tmp = tempfile.mkdtemp()
        cls.stage1_dir = os.path.join(cls.tmp, "stage1")
        cls.stage1 = tiny_model()
        rng = np.random.default_rng(0)
        for v in cls.stage1.variables:  # nothing equals a fresh model by accident
            if "moving_" in v.name:
                v.assign(rng.uniform(0.5, 1.5, size=v.shape).astype(np.float32))
            else:
                v.assign(v + rng.normal(0.0, 1e-3, size=v.shape).astype(np.float32))
        optimizer = tf_keras.optimizers.SGD(0.01, momentum=0.9)
        optimizer.build(cls.stage1.trainable_variables)
        step = tf.Variable(7, dtype=tf.int64)
        checkpointing.TrainCheckpoint(cls.stage1_dir, cls.stage1, optimizer, step).save()
        cls.stage1_values = {_relative(v): v.numpy() for v in cls.stage1.variables}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def _task(self):
        return MaskRCNNTask(
            model_builder=lambda: tiny_model(double_classifier=True),
            init_checkpoint_modules=("all",),
            trainable_variable_patterns=(double_classifier.DOUBLE_CLASSIFIER,),
        )

    def test_stage1_checkpoint_initializes_both_heads(self):
        task = self._task()
        model = task.build_model()
        with self.assertLogs(level="WARNING") as logs:
            task.initialize(model, self.stage1_dir)
        self.assertIn("detection-scores-b", "\n".join(logs.output))
        values = {_relative(v): v.numpy() for v in model.variables}
        head_b = {k for k in values if "/detection-scores-b/" in k}
        self.assertLen(head_b, 2)
        self.assertEqual(set(values) - head_b, set(self.stage1_values))
        for name, want in self.stage1_values.items():
            self.assertAllEqual(values[name], want, msg=name)
        for name in head_b:
            self.assertAllEqual(
                values[name], self.stage1_values[name.replace("-scores-b/", "-scores/")]
            )
        # A double-classifier checkpoint restores as it is (head b included).
        head = model.detection_head[0]
        head.classifier_b.bias.assign(head.classifier_b.bias + 1.0)
        saved = [v.numpy() for v in model.variables]
        double_dir = os.path.join(self.get_temp_dir(), "double")
        tf.train.Checkpoint(model=model).save(os.path.join(double_dir, "ckpt"))
        for v in model.trainable_variables[-6:]:
            v.assign(v + 1.0)
        self.assertEqual(double_classifier.restore_model(double_dir, model), "double")
        for got, want in zip(model.variables, saved, strict=True):
            self.assertAllEqual(got, want, msg=got.name)
        # A checkpoint of another architecture fails clearly (here: a backbone-only model).
        partial = tf.train.Checkpoint(model=tf.train.Checkpoint(backbone=model.backbone)).write(
            os.path.join(self.get_temp_dir(), "partial")
        )
        with self.assertRaisesRegex(ValueError, "incompatible"):
            double_classifier.restore_model(partial, model)

    def test_frozen_retraining_step_changes_only_the_two_classifiers(self):
        task = self._task()
        model = task.build_model()
        task.initialize(model, self.stage1_dir)
        optimizer = tf_keras.optimizers.SGD(0.05, momentum=0.9)
        optimizer.build(model.trainable_variables)  # as the trainer: before the task's hook
        global_step = tf.Variable(0, dtype=tf.int64)
        loop = train_loop.make_train_loop(
            tf.distribute.get_strategy(),
            task,
            model,
            optimizer,
            weight_decay=4e-5,
            loss_scaling=False,
            global_step=global_step,
            bad_step=tf.Variable(-1, dtype=tf.int64),
            bad_loss=tf.Variable(0.0),
            on_loss_names=lambda names: None,
        )
        self.assertLen(model.trainable_variables, 4)
        before = [v.numpy().copy() for v in model.variables]
        iterator = iter(tf.data.Dataset.from_tensors(_train_batch((0, 1))).repeat())
        loss_sums, _ = loop(iterator, tf.constant(2, tf.int32))
        self.assertEqual(int(global_step.numpy()), 2)
        self.assertTrue(np.all(np.isfinite(loss_sums.numpy())))
        changed = set()
        for old, variable in zip(before, model.variables, strict=True):
            if re.search(double_classifier.DOUBLE_CLASSIFIER, variable.name):
                self.assertNotAllClose(old, variable.numpy(), msg=variable.name)
                changed.add(_relative(variable))
            else:  # everything else, batch-norm moving statistics included, bit-identical
                self.assertAllEqual(old, variable.numpy(), msg=variable.name)
        self.assertLen(changed, 4)
        # The heads started equal and were trained on different images.
        head = model.detection_head[0]
        self.assertNotAllClose(head.classifier_a.kernel, head.classifier_b.kernel)


def _relative(variable):
    return re.sub(r"^mask_rcnn_model(_\d+)?/", "", variable.name)


class CascadeDoubleClassifierTest(tf.test.TestCase):
    def test_every_stage_is_double(self):
        tf.random.set_seed(7)
        model = tiny_model(
            double_classifier=True,
            cascade_iou_thresholds=(0.6, 0.7),
            class_agnostic_bbox_pred=True,
            cascade_class_ensemble=True,
        )
        props = factory.model_properties(model)
        self.assertEqual(props["num_detection_heads"], 3)
        self.assertTrue(props["double_classifier"])
        selected = freeze.select_variables(model, include=(double_classifier.DOUBLE_CLASSIFIER,))
        self.assertLen(selected, 12)  # 3 stages x 2 heads x (kernel, bias)
        images, labels = _train_batch()
        outputs = _training_outputs(model, images, labels)
        for key in ("class_outputs", "class_outputs_1", "class_outputs_2"):
            self.assertEqual(outputs[key].shape[-1], 2 * C, msg=key)
        result = MaskRCNNTask(model_builder=lambda: model).build_losses(
            model, images, labels, training=True
        )
        self.assertTrue(all(np.isfinite(v.numpy()) for v in result.values()))
        images, labels = batch(False)
        outputs = model(
            images,
            anchor_boxes=labels["anchor_boxes"],
            image_shape=labels["image_info"][:, 1, :],
            training=False,
        )
        self.assertEqual(outputs["cls_outputs"].shape[-1], C)
        self.assertAllClose(tf.reduce_sum(_softmax(outputs["cls_outputs"]), -1), tf.ones([2, 32]))
        # A single-classifier cascade checkpoint (here: of the model's own twin) initializes
        # every stage, head b = head a.
        twin = double_classifier.single_head_twin(model)
        prefix = tf.train.Checkpoint(model=twin).write(os.path.join(self.get_temp_dir(), "c"))
        self.assertEqual(double_classifier.restore_model(prefix, model), "single")
        for single, double in zip(twin.detection_head, model.detection_head, strict=True):
            self.assertAllEqual(double.classifier_a.kernel, single._classifier.kernel)
            self.assertAllEqual(double.classifier_b.kernel, single._classifier.kernel)
            self.assertAllEqual(double.classifier_b.bias, single._classifier.bias)
            self.assertAllEqual(double._box_regressor.kernel, single._box_regressor.kernel)

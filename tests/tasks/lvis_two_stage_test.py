"""LVIS two-stage training, stage 2 (paper Table 9) with gin_configs/lvis/maskrcnn_tiny_stage2.gin:
the whole stage-1 model is restored, and training steps change the final classifier only."""

import json
import os
import re
import sys

import gin
import numpy as np
import tensorflow as tf
import tf_keras

from tests.tasks.maskrcnn_test import NUM_CLASSES, batch
from tfcp import checkpointing, gin_utils, train_loop
from tfcp.modeling import freeze, losses

INSTANCE_COUNTS = {1: 50, 2: 3, 3: 400}


def _is_classifier(variable):
    return re.search(freeze.MASKRCNN_CLASSIFIER, variable.name) is not None


def _snapshot(model):
    return [v.numpy().copy() for v in model.variables]


class LvisStageTwoTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        # As tests/gin_configs_test.py: tests/ sub-directories on sys.path break gin includes.
        tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self._sys_path = list(sys.path)
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != tests_dir]
        gin.clear_config()
        tmp = self.get_temp_dir()
        self.stage1_dir = os.path.join(tmp, "stage1")
        self.train_json = os.path.join(tmp, "lvis_train.json")
        with open(self.train_json, "w") as f:
            categories = [{"id": k, "instance_count": n} for k, n in INSTANCE_COUNTS.items()]
            json.dump({"categories": categories, "images": [], "annotations": []}, f)

    def tearDown(self):
        gin.clear_config()
        sys.path[:] = self._sys_path
        super().tearDown()

    def _stage2_task(self):
        gin_utils.parse_gin(
            ["lvis/maskrcnn_tiny_stage2.gin"],
            [
                "TRAIN_FILES = '/nonexistent/train*'",
                "EVAL_FILES = '/nonexistent/val*'",
                "EVAL_ANNOTATIONS = '/nonexistent/val.json'",
                f"NUM_CLASSES = {NUM_CLASSES}",
                "TRAIN_STEPS = 3",
                f"INIT_CHECKPOINT = '{self.stage1_dir}'",
                f"TRAIN_ANNOTATIONS = '{self.train_json}'",
            ],
        )
        return gin.query_parameter("tfcp.Trainer.task").scoped_configurable_fn()

    def _write_stage1_checkpoint(self, model):
        """A trainer checkpoint (model + optimizer + step) of `model` with non-default BN stats."""
        rng = np.random.default_rng(0)
        for v in model.non_trainable_variables:
            if "moving_" in v.name:
                v.assign(rng.uniform(0.5, 1.5, size=v.shape).astype(np.float32))
        optimizer = tf_keras.optimizers.SGD(0.01, momentum=0.9)
        optimizer.build(model.trainable_variables)
        step = tf.Variable(7, dtype=tf.int64)
        checkpointing.TrainCheckpoint(self.stage1_dir, model, optimizer, step).save()

    def test_stage2_restores_stage1_and_trains_only_the_classifier(self):
        task = self._stage2_task()
        self.assertEqual(task._loss_config.class_balanced_counts, self.train_json)
        self.assertAllClose(
            task._loss_config.resolved_class_weights(NUM_CLASSES),
            losses.class_balanced_weights(INSTANCE_COUNTS, NUM_CLASSES, beta=0.999),
        )
        stage1 = task.build_model()
        self._write_stage1_checkpoint(stage1)

        model = task.build_model()
        with self.assertRaisesRegex(ValueError, "INIT_CHECKPOINT"):
            task.initialize(model, None)
        task.initialize(model, self.stage1_dir)
        for got, want in zip(model.variables, stage1.variables, strict=True):
            self.assertAllEqual(got, want, msg=want.name)

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
        trained = [v for v in model.variables if _is_classifier(v)]
        self.assertLen(trained, 2)
        self.assertEqual({id(v) for v in model.trainable_variables}, {id(v) for v in trained})
        batch_norms = [
            layer
            for layer in model._flatten_layers()
            if isinstance(layer, tf_keras.layers.BatchNormalization)
        ]
        self.assertNotEmpty(batch_norms)
        self.assertFalse(any(layer.trainable for layer in batch_norms))  # inference mode

        before = _snapshot(model)
        iterator = iter(tf.data.Dataset.from_tensors(batch(True)).repeat())
        loss_sums, _ = loop(iterator, tf.constant(3, tf.int32))
        self.assertEqual(int(global_step.numpy()), 3)
        self.assertTrue(np.isfinite(loss_sums.numpy()[0]))
        for old, variable in zip(before, model.variables, strict=True):
            if _is_classifier(variable):
                self.assertNotAllClose(old, variable.numpy(), msg=variable.name)
            else:  # everything else, batch-norm moving statistics included, bit-identical
                self.assertAllEqual(old, variable.numpy(), msg=variable.name)

    def test_whole_model_restore_fails_clearly(self):
        task = self._stage2_task()
        model = task.build_model()
        missing = os.path.join(self.get_temp_dir(), "no_such_run")
        with self.assertRaisesRegex(FileNotFoundError, "no_such_run"):
            task.initialize(model, missing)
        # A feature-extractor-like checkpoint (backbone at the root) holds no whole model.
        prefix = tf.train.Checkpoint(backbone=model.backbone).write(
            os.path.join(self.get_temp_dir(), "backbone_only")
        )
        with self.assertRaisesRegex(ValueError, "holds no whole model"):
            task.initialize(model, prefix)
        # A 'model' with a backbone only is another architecture.
        prefix = tf.train.Checkpoint(model=tf.train.Checkpoint(backbone=model.backbone)).write(
            os.path.join(self.get_temp_dir(), "partial")
        )
        with self.assertRaisesRegex(ValueError, "incompatible"):
            task.initialize(model, prefix)

"""Tests for tfcp.tasks.cp2 (issue 14): CP2 pretraining through the task and the trainer, and
the transfer of its backbone to VOC segmentation fine-tuning.

One tiny CP2 run (`python -m tfcp.train --gin_file=cp2/cp2_tiny.gin`, 64 px, 6 steps) on a
folder of generated VOC JPEGs is shared by the transfer tests; the learning test trains
in-process on one fixed batch of generated composites.
"""

import json
import math
import os
import tempfile

import gin
import numpy as np
import tensorflow as tf
import tf_keras

from tests import cli_utils, events
from tfcp import gin_utils
from tfcp.data import cp2_pipeline, synthetic
from tfcp.modeling import cp2 as cp2_model
from tfcp.serving import export_lib
from tfcp.tasks import cp2

SIZE = 64
TINY_BINDINGS = [f"IMAGE_SIZE = {SIZE}", "GLOBAL_BATCH_SIZE = 4", "build_cp2_model.queue_size = 16"]


def _tiny_model(**kwargs):
    args = dict(
        image_size=SIZE, backbone="resnet", model_id=18, aspp_level=5,
        aspp_dilation_rates=(1, 2, 3), decoder_num_filters=32, projection_dim=16,
        queue_size=16, momentum=0.99, use_sync_bn=False,
    )  # fmt: skip
    args.update(kwargs)
    return cp2_model.build_cp2_model(**args)


class CP2TaskTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp()
        synthetic.write_voc(
            cls.tmp, num_train=12, num_val=4, num_test=1, image_size=96, seed=0,
            years=(2012,), max_instances=4,
        )  # fmt: skip
        cls.images = os.path.join(cls.tmp, "VOCdevkit", "VOC2012", "JPEGImages")
        cls.model_dir = os.path.join(cls.tmp, "cp2")
        cls.result = cli_utils.run_train(
            cls.model_dir,
            ["cp2/cp2_tiny.gin"],
            [
                *TINY_BINDINGS,
                f"TRAIN_FILES = '{cls.images}'",
                f"EVAL_FILES = '{cls.images}'",
                "TRAIN_STEPS = 6",
                "tfcp.Trainer.steps_per_loop = 3",
                "tfcp.Trainer.log_interval = 3",
            ],
            mode="train_and_eval",
            timeout=600,
        )

    def setUp(self):
        super().setUp()
        gin.clear_config()

    def tearDown(self):
        gin.clear_config()
        super().tearDown()

    def test_cli_run_logs_losses_accuracies_and_evaluates(self):
        log = self.result.stderr
        self.assertEqual(self.result.returncode, 0, log[-3000:])
        self.assertRegex(log, r"dense_accuracy [0-9.]+ \| dense_loss [0-9.]+ \| instance_accuracy")
        scalars = events.read_scalars(os.path.join(self.model_dir, "train"))
        for name in cp2.METRICS:
            self.assertIn(name, scalars)
        with open(os.path.join(self.model_dir, "metrics.json")) as f:
            metrics = [json.loads(line) for line in f if line.strip()]
        self.assertEqual(metrics[-1]["step"], 6)
        self.assertEqual(metrics[-1]["num_images"], 16.0)  # 16 JPEGs, 4 eval batches of 4
        self.assertBetween(metrics[-1]["instance_accuracy"], 0.0, 100.0)
        self.assertTrue(os.path.exists(os.path.join(self.model_dir, "ckpt-6.index")))

    def test_a_short_pretraining_lowers_the_loss(self):
        """40 steps on one fixed batch of generated composites: once the queue holds real keys
        (step 2 on, K = 2 batches), the loss falls well below chance, log(K + 1)."""
        tf_keras.utils.set_random_seed(1)
        dataset = cp2_pipeline.build_cp2_dataset(self.images, image_size=SIZE, global_batch_size=8)
        features, labels = next(iter(dataset))
        task = cp2.CP2Task(model_builder=_tiny_model)
        model = task.build_model()
        variables = task.trainable_variables(model)
        self.assertEqual(len(variables), len(model.query_variables))
        optimizer = tf_keras.optimizers.SGD(0.002, momentum=0.9)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                losses = task.build_losses(model, features, labels, training=True)
            grads = tape.gradient(losses["total_loss"], variables)
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            return losses["total_loss"]

        losses = [float(step()) for _ in range(40)]
        self.assertTrue(np.all(np.isfinite(losses)))
        early, late = np.mean(losses[2:5]), np.mean(losses[-3:])
        self.assertLess(late, early - 0.25, losses)
        chance = math.log(16 + 1) + 0.2 * math.log(4)  # uniform over K + 1 keys, 2x2 pixels
        self.assertLess(late, chance - 0.5, losses)

    def test_evaluator_weights_batches_by_images(self):
        task = cp2.CP2Task(model_builder=_tiny_model)
        task.evaluator_begin()
        step = {k: np.array([1.0, 3.0]) for k in cp2.METRICS}
        task.evaluator_update({**step, "num_images": np.array([1.0, 3.0])})
        result = task.evaluator_result()
        self.assertAllClose(result["instance_loss"], (1 * 1 + 3 * 3) / 4)
        self.assertEqual(result["num_images"], 4.0)
        task.evaluator_begin()
        with self.assertRaisesRegex(ValueError, "no image"):
            task.evaluator_result()

    def test_sample_images_draw_query_key_pairs(self):
        features = {
            "query_images": np.zeros([2, 16, 16, 3], np.float32),
            "key_images": np.zeros([2, 16, 16, 3], np.float32),
        }
        masks = np.zeros([2, 16, 16], np.float32)
        masks[:, 4:12, 4:12] = 1.0
        labels = {"query_masks": masks, "key_masks": masks}
        pictures = cp2.CP2Task(model_builder=_tiny_model).sample_images(features, labels)
        self.assertEqual(pictures.shape, (2, 16, 36, 3))
        yellow = np.all(pictures[0, :, :16] == (255, 221, 0), axis=-1)
        self.assertTrue(yellow[4, 4:12].all() and not yellow[8, 8])  # outline, not inside
        self.assertTrue(yellow[4, 24:32].all())  # the key half, after the 4 px gap

    def _trained_query_backbone(self):
        """The CLI run's query backbone variables, by object path, as numpy."""
        gin_utils.parse_gin(
            ["cp2/cp2_tiny.gin"], [*TINY_BINDINGS, "TRAIN_FILES = 'x'", "TRAIN_STEPS = 6"]
        )
        model = cp2_model.build_cp2_model()
        tf.train.Checkpoint(model=model).read(
            os.path.join(self.model_dir, "ckpt-6")
        ).assert_existing_objects_matched()
        gin.clear_config()
        return model

    def test_export_initializes_voc_segmentation_and_quick_tuning(self):
        self.assertEqual(self.result.returncode, 0, self.result.stderr[-2000:])
        trained = self._trained_query_backbone()
        export_dir = os.path.join(self.get_temp_dir(), "feature_extractor")
        bindings = [*TINY_BINDINGS, "TRAIN_FILES = 'x'", "TRAIN_STEPS = 6"]
        with self.assertRaisesRegex(ValueError, "no detection head"):
            export_lib.export_from_gin(
                ["cp2/cp2_tiny.gin"], bindings, model_dir=self.model_dir,
                export_dir=export_dir + "_detection",
            )  # fmt: skip
        gin.clear_config()
        info = export_lib.export_from_gin(
            ["cp2/cp2_tiny.gin"], bindings, model_dir=self.model_dir, export_dir=export_dir,
            feature_extractor=True,
        )  # fmt: skip
        self.assertEqual(info["kind"], "feature_extractor")
        self.assertIsNone(info["num_classes"])
        gin.clear_config()

        # VOC segmentation fine-tuning (voc/segmentation_tiny.gin's model): the backbone is
        # CP2's, the FPN and head stay fresh.
        gin_utils.parse_gin(
            ["voc/segmentation_tiny.gin"],
            [f"IMAGE_SIZE = {SIZE}", "TRAIN_FILES = 'x'", "EVAL_FILES = 'y'", "TRAIN_STEPS = 1",
             "INIT_CHECKPOINT = None", "SegmentationTask.init_checkpoint_modules = ('backbone',)"],
        )  # fmt: skip
        task = gin.query_parameter("tfcp.Trainer.task").scoped_configurable_fn()
        voc = task.build_model()
        fresh_fpn = [v.numpy() for v in voc.decoder.variables]
        task.initialize(voc, export_dir)
        for a, b in zip(trained.backbone.variables, voc.backbone.variables, strict=True):
            self.assertAllEqual(a, b)
        for a, b in zip(fresh_fpn, voc.decoder.variables, strict=True):
            self.assertAllEqual(a, b)
        # The training checkpoint works directly too: its shortest `backbone/` is the query's.
        voc_from_checkpoint = task.build_model()
        task.initialize(voc_from_checkpoint, self.model_dir)
        for a, b in zip(
            trained.backbone.variables, voc_from_checkpoint.backbone.variables, strict=True
        ):
            self.assertAllEqual(a, b)
        gin.clear_config()

        # Quick tuning: a CP2 run initialized from that export starts with query = key = it.
        quick = cp2.CP2Task(model_builder=_tiny_model, init_checkpoint_modules=("backbone",))
        model = quick.build_model()
        quick.initialize(model, export_dir)
        for a, b, c in zip(
            trained.backbone.variables,
            model.backbone.variables,
            model.key_encoder.backbone.variables,
            strict=True,
        ):
            self.assertAllEqual(a, b)
            self.assertAllEqual(a, c)


if __name__ == "__main__":
    tf.test.main()

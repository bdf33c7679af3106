"""Tests of tfcp.tasks.maskrcnn on a tiny ResNet-18 Mask R-CNN at 128 px."""

import os
import tempfile

import gin
import numpy as np
import tensorflow as tf
import tf_keras
from official.vision.dataloaders import maskrcnn_input
from official.vision.modeling.heads import instance_heads
from official.vision.ops import preprocess_ops

from tfcp.modeling import factory
from tfcp.tasks import base
from tfcp.tasks.maskrcnn import MaskRCNNTask

IMAGE_SIZE = 128
NUM_CLASSES = 4
TINY = dict(
    model_id=18,
    decoder_num_filters=32,
    rpn_head_num_filters=32,
    detection_head_num_convs=0,
    detection_head_fc_dims=64,
    mask_head_num_convs=1,
    mask_head_num_filters=16,
    rpn_pre_nms_top_k=256,
    num_proposals=64,
    test_rpn_pre_nms_top_k=128,
    test_num_proposals=32,
    num_sampled_rois=32,
    num_sampled_masks=16,
    max_num_detections=20,
    use_sync_bn=False,
)


def tiny_model(**overrides):
    kwargs = dict(TINY, **overrides)
    return factory.build_maskrcnn(num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, **kwargs)


def _parser():
    return maskrcnn_input.Parser(
        output_size=[IMAGE_SIZE, IMAGE_SIZE],
        min_level=2,
        max_level=6,
        num_scales=1,
        aspect_ratios=[0.5, 1.0, 2.0],
        anchor_size=8.0,
        max_num_instances=8,
        include_mask=True,
        mask_crop_size=112,
    )


def _decoded(index, size):
    """A decoded example (tfcp.data.decoder layout) with two rectangles of known classes."""
    rng = np.random.default_rng(index)
    image = rng.integers(0, 60, size=(size, size, 3)).astype(np.uint8)
    masks = np.zeros((2, size, size), np.float32)
    boxes = []
    for i, (y0, x0, y1, x1) in enumerate([(0.1, 0.1, 0.5, 0.6), (0.55, 0.4, 0.95, 0.9)]):
        r0, c0, r1, c1 = (int(v * size) for v in (y0, x0, y1, x1))
        masks[i, r0:r1, c0:c1] = 1.0
        image[r0:r1, c0:c1] = (200, 40 + 100 * i, 30)
        boxes.append([r0 / size, c0 / size, r1 / size, c1 / size])
    return {
        "image": tf.constant(image),
        "source_id": tf.constant(str(index)),
        "height": tf.constant(size, tf.int64),
        "width": tf.constant(size, tf.int64),
        "groundtruth_boxes": tf.constant(boxes, tf.float32),
        "groundtruth_classes": tf.constant([1, 3], tf.int64),
        "groundtruth_is_crowd": tf.constant([False, False]),
        "groundtruth_area": tf.constant(masks.sum(axis=(1, 2)), tf.float32),
        "groundtruth_instance_masks": tf.constant(masks),
    }


def batch(is_training, size=IMAGE_SIZE, batch_size=2):
    """One batch in Model Garden's maskrcnn_input.Parser train/eval structure."""
    parse = _parser().parse_fn(is_training)
    examples = [parse(_decoded(i, size)) for i in range(batch_size)]
    return tf.nest.map_structure(lambda *xs: tf.stack(xs), *examples)


class MaskRCNNTaskTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        tf.random.set_seed(1)
        cls.task = MaskRCNNTask(model_builder=tiny_model)
        cls.model = cls.task.build_model()
        cls.train_batch = batch(True)

    def setUp(self):
        super().setUp()
        gin.clear_config()

    def test_is_a_task(self):
        self.assertIsInstance(self.task, base.Task)
        # The default model keeps Model Garden's single-classifier detection head.
        self.assertFalse(factory.model_properties(self.model)["double_classifier"])
        self.assertIs(type(self.model.detection_head[0]), instance_heads.DetectionHead)

    def test_training_losses_are_finite_with_expected_keys(self):
        images, labels = self.train_batch
        losses = self.task.build_losses(self.model, images, labels, training=True)
        self.assertEqual(
            set(losses),
            {
                "total_loss",
                "model_loss",
                "rpn_score_loss",
                "rpn_box_loss",
                "frcnn_cls_loss",
                "frcnn_box_loss",
                "mask_loss",
            },
        )
        for name, value in losses.items():
            self.assertEqual(value.shape, (), name)
            self.assertTrue(np.isfinite(value.numpy()), name)
        parts = sum(
            losses[k].numpy()
            for k in ("rpn_score_loss", "rpn_box_loss", "frcnn_cls_loss", "frcnn_box_loss")
        )
        self.assertAllClose(losses["total_loss"], parts + losses["mask_loss"].numpy(), rtol=1e-5)

    def test_truncated_instances_are_reported(self):
        images, labels = self.train_batch
        labels = dict(labels, num_truncated_instances=tf.constant([3, 17], tf.int32))
        losses = self.task.build_losses(self.model, images, labels, training=True)
        self.assertAllClose(losses["truncated_instances"], 20.0)
        self.assertGreater(losses["mask_loss"].numpy(), 0.0)
        with self.assertRaisesRegex(ValueError, "training=True"):
            self.task.build_losses(self.model, images, labels, training=False)

    def test_sgd_steps_lower_the_loss_on_a_fixed_batch(self):
        model = self.model  # other tests do not depend on its exact weights
        images, labels = self.train_batch
        optimizer = tf_keras.optimizers.SGD(learning_rate=0.02, momentum=0.9)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = self.task.build_losses(model, images, labels, training=True)["total_loss"]
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        tf.random.set_seed(3)
        history = [float(step()) for _ in range(12)]
        self.assertTrue(np.all(np.isfinite(history)), history)
        self.assertLess(np.mean(history[-3:]), 0.8 * np.mean(history[:3]), history)

    def test_uint8_images_without_anchor_boxes_give_the_same_detections(self):
        # tfcp's pipeline: uint8 images, no anchor_boxes (the model makes both itself).
        images, labels = batch(False)
        raw = tf.random.stateless_uniform(images.shape, [5, 6], 0, 256, tf.int32)
        raw = tf.cast(raw, tf.uint8)
        normalized = preprocess_ops.normalize_image(raw)
        reference = self.task.validation_step(self.model, normalized, labels)
        lean = {k: v for k, v in labels.items() if k != "anchor_boxes"}
        outputs = self.task.validation_step(self.model, raw, lean)
        tf.nest.map_structure(self.assertAllEqual, outputs, reference)
        # The model's own anchors are the pipeline's: identical RPN outputs (never empty).
        shape = labels["image_info"][:, 1, :]
        given = self.model(normalized, image_shape=shape, anchor_boxes=labels["anchor_boxes"])
        generated = self.model(normalized, image_shape=shape, anchor_boxes=None)
        for key in ("rpn_boxes", "rpn_scores"):
            tf.nest.map_structure(self.assertAllEqual, generated[key], given[key])

    def test_validation_step_maps_boxes_to_original_pixels(self):
        # A 256 x 256 original resized to 128: image_info scale is 0.5.
        images, labels = batch(False, size=256)
        self.assertAllClose(labels["image_info"][0], [[256, 256], [128, 128], [0.5, 0.5], [0, 0]])
        outputs = self.task.validation_step(self.model, images, labels)
        raw = self.model(
            images,
            anchor_boxes=labels["anchor_boxes"],
            image_shape=labels["image_info"][:, 1, :],
            training=False,
        )
        self.assertAllClose(outputs["detection_boxes"], 2.0 * raw["detection_boxes"])
        self.assertAllLessEqual(outputs["detection_boxes"], 256.0 + 1e-3)
        self.assertAllEqual(outputs["source_id"], labels["groundtruths"]["source_id"])
        self.assertEqual(outputs["detection_classes"].dtype, tf.int32)
        self.assertEqual(outputs["num_detections"].dtype, tf.int32)
        k = TINY["max_num_detections"]
        self.assertEqual(outputs["detection_masks_relative"].shape, (2, k, 28, 28))
        self.assertEqual(outputs["detection_scores"].shape, (2, k))

    def test_sample_images_draws_uint8_pictures(self):
        images, labels = self.train_batch
        pictures = self.task.sample_images(images, labels)
        self.assertEqual(pictures.shape, (2, IMAGE_SIZE, IMAGE_SIZE, 3))
        self.assertEqual(pictures.dtype, np.uint8)
        # Un-normalized: inside the first object the painted colour comes back.
        self.assertAllClose(pictures[0, 40, 40], [200, 40, 30], atol=2)
        # The first gt box (rows 12..64, cols 12..76) gets a green outline near col 12.
        row = pictures[0, 40, 9:15].tolist()
        self.assertIn([0, 255, 0], row)

    def test_initialize_restores_backbone_and_decoder(self):
        other = tiny_model()
        ckpt_dir = tempfile.mkdtemp(dir=self.get_temp_dir())
        tf.train.Checkpoint(model=self.model).save(os.path.join(ckpt_dir, "ckpt"))
        for v in other.backbone.variables + other.decoder.variables:
            v.assign(v + 1.0)  # make sure nothing equals the checkpoint by accident
        self.task.initialize(other, ckpt_dir)
        for got, want in zip(other.backbone.variables, self.model.backbone.variables, strict=True):
            self.assertAllEqual(got, want)
        for got, want in zip(other.decoder.variables, self.model.decoder.variables, strict=True):
            self.assertAllEqual(got, want)
        self.task.initialize(other, None)  # no-op

    def test_initialize_fails_clearly(self):
        missing = os.path.join(self.get_temp_dir(), "does_not_exist")
        with self.assertRaisesRegex(FileNotFoundError, "does_not_exist"):
            self.task.initialize(self.model, missing)
        # A checkpoint whose "backbone" is some other network does not fit.
        wrong = tf_keras.Sequential([tf_keras.layers.Dense(3)])
        wrong.build((None, 5))
        root = tf.train.Checkpoint(model=tf.train.Checkpoint(backbone=wrong))
        prefix = root.write(os.path.join(self.get_temp_dir(), "wrong"))
        with self.assertRaisesRegex(ValueError, "incompatible"):
            self.task.initialize(self.model, prefix)
        # A checkpoint without any backbone.
        prefix = tf.train.Checkpoint(step=tf.Variable(1)).write(
            os.path.join(self.get_temp_dir(), "nobackbone")
        )
        with self.assertRaisesRegex(ValueError, "no 'backbone'"):
            self.task.initialize(self.model, prefix)

    def test_evaluator_needs_annotations(self):
        with self.assertRaisesRegex(ValueError, "EVAL_ANNOTATIONS"):
            MaskRCNNTask(model_builder=tiny_model).evaluator_begin()


class CascadeAndFasterRCNNTaskTest(tf.test.TestCase):
    def test_cascade_training_losses_cover_all_stages(self):
        tf.random.set_seed(2)
        model = tiny_model(
            cascade_iou_thresholds=(0.6, 0.7),
            class_agnostic_bbox_pred=True,
            cascade_class_ensemble=True,
        )
        self.assertEqual(factory.model_properties(model)["num_detection_heads"], 3)
        images, labels = batch(True)
        outputs = model(
            images,
            image_shape=labels["image_info"][:, 1, :],
            anchor_boxes=labels["anchor_boxes"],
            gt_boxes=labels["gt_boxes"],
            gt_classes=labels["gt_classes"],
            gt_masks=labels["gt_masks"],
            training=True,
        )
        for key in ("class_outputs", "class_outputs_1", "class_outputs_2", "box_targets_2"):
            self.assertIn(key, outputs)
        losses = MaskRCNNTask(model_builder=lambda: model).build_losses(
            model, images, labels, training=True
        )
        self.assertTrue(all(np.isfinite(v.numpy()) for v in losses.values()))

    def test_faster_rcnn_trains_without_masks(self):
        model = factory.build_faster_rcnn(num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, **TINY)
        self.assertIsNone(model.mask_head)
        images, labels = batch(True)
        losses = MaskRCNNTask(model_builder=lambda: model).build_losses(
            model, images, labels, training=True
        )
        self.assertEqual(float(losses["mask_loss"]), 0.0)
        self.assertTrue(np.isfinite(float(losses["total_loss"])))

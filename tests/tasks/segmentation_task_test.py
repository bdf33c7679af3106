"""Tests of tfcp.tasks.segmentation with hand-made logits (no backbone is built)."""

import os
import tempfile

import gin
import numpy as np
import tensorflow as tf
import tf_keras

from tfcp.tasks import segmentation


class _FixedLogits(tf_keras.Model):
    """Returns the same logits [B, h, w, C] for any input batch."""

    def __init__(self, logits):
        super().__init__()
        self._logits = tf.constant(logits, tf.float32)

    def call(self, images, training=None):
        del training
        return {"logits": tf.tile(self._logits, [tf.shape(images)[0], 1, 1, 1])}


def _info(orig_hw, input_hw, scale):
    return tf.constant([[orig_hw, input_hw, [scale, scale], [0, 0]]], tf.float32)


class LogitsToOriginalTest(tf.test.TestCase):
    def test_same_resolution_is_argmax(self):
        label = np.array([[0, 1, 2, 0], [1, 1, 2, 2], [0, 0, 0, 1], [2, 1, 0, 2]])
        logits = tf.one_hot(label, 3)[None]
        out = segmentation.logits_to_original_labels(logits, _info([4, 4], [4, 4], 1.0), 4)
        self.assertAllEqual(out[0], label)

    def test_downscaled_input_maps_back_to_original_pixels(self):
        # An 8 x 8 image was resized to 4 x 4 (scale 0.5); logits at 4 x 4: each logit
        # pixel covers a 2 x 2 block of original pixels; beyond 8 x 8 is padding (P = 10).
        label = np.array([[0, 1, 1, 0], [2, 2, 0, 0], [0, 0, 1, 1], [1, 1, 2, 2]])
        logits = 10.0 * tf.one_hot(label, 3)[None]
        out = segmentation.logits_to_original_labels(logits, _info([8, 8], [4, 4], 0.5), 10)
        self.assertEqual(out.shape, (1, 10, 10))
        expected = np.kron(label, np.ones([2, 2], int))
        # Block interiors are exact; block borders interpolate between neighbours.
        self.assertAllEqual(out[0, 0:8:2, 0:8:2], expected[0::2, 0::2])
        self.assertAllEqual(out[0, 0, :8], [0, 0, 1, 1, 1, 1, 0, 0])

    def test_logits_at_lower_resolution_than_input(self):
        # Input 8 x 8 = original (scale 1), logits at stride 2 (4 x 4), constant per class.
        logits = tf.one_hot(tf.fill([1, 4, 4], 2), 3)
        out = segmentation.logits_to_original_labels(logits, _info([8, 8], [8, 8], 1.0), 8)
        self.assertAllEqual(out, np.full([1, 8, 8], 2))


class SegmentationTaskTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        gin.clear_config()

    def test_loss_ignores_255_and_matches_softmax_ce(self):
        logits = np.random.default_rng(0).normal(size=[1, 4, 4, 3]).astype(np.float32)
        labels = np.array([[0, 1, 2, 255]] * 4)[None, ..., None]
        task = segmentation.SegmentationTask(num_classes=3)
        losses = task.build_losses(
            _FixedLogits(logits), tf.zeros([1, 4, 4, 3]), {"masks": labels}, training=True
        )
        valid = labels[..., 0] != 255
        log_probs = tf.nn.log_softmax(logits).numpy()
        picked = np.take_along_axis(log_probs, np.where(valid, labels[..., 0], 0)[..., None], -1)
        expected = -picked[..., 0][valid].mean()
        self.assertAllClose(losses["total_loss"], expected, rtol=1e-5)
        self.assertAllClose(losses["segmentation_loss"], losses["total_loss"])

    def test_validation_and_miou(self):
        label = np.array([[0, 1], [1, 1]])
        model = _FixedLogits(tf.one_hot(label, 3)[None])
        task = segmentation.SegmentationTask(num_classes=3, class_names=["bg", "a", "b"])
        groundtruth = np.array([[[0, 1, 255], [0, 1, 255], [255, 255, 255]]])
        outputs = task.validation_step(
            model,
            tf.zeros([1, 2, 2, 3]),
            {
                "image_info": _info([2, 2], [2, 2], 1.0),
                "groundtruth": tf.constant(groundtruth),
                "source_id": tf.constant(["x"]),
            },
        )
        self.assertAllEqual(outputs["predictions"][0, :2, :2], label)
        task.evaluator_begin()
        task.evaluator_update({k: v.numpy() for k, v in outputs.items()})
        metrics = task.evaluator_result()
        # bg: TP 1, FN 1 (pixel (1,0) predicted 1) -> 1/2; a: TP 2, FP 1 -> 2/3.
        self.assertAllClose(metrics["IoU/bg"], 0.5)
        self.assertAllClose(metrics["IoU/a"], 2 / 3)
        self.assertNotIn("IoU/b", metrics)
        self.assertAllClose(metrics["mIoU"], (0.5 + 2 / 3) / 2)

    def test_init_errors(self):
        with self.assertRaisesRegex(ValueError, "init_checkpoint_modules"):
            segmentation.SegmentationTask(init_checkpoint_modules=("decoder",))
        task = segmentation.SegmentationTask()
        missing = os.path.join(tempfile.mkdtemp(), "missing_ckpt")
        model = tf_keras.Model()
        model.backbone, model.decoder = tf_keras.Sequential(), None
        with self.assertRaisesRegex(FileNotFoundError, "missing_ckpt"):
            task.initialize(model, missing)
        task.initialize(model, None)  # no-op

    def test_build_model_checks_num_classes(self):
        gin.parse_config(
            [
                "build_segmentation_model.model_id = 18",
                "build_segmentation_model.use_sync_bn = False",
            ]
        )
        task = segmentation.SegmentationTask(
            model_builder=lambda: segmentation.segmentation_model.build_segmentation_model(
                num_classes=5, image_size=64, decoder_num_filters=16, head_num_filters=16
            ),
            num_classes=21,
        )
        with self.assertRaisesRegex(ValueError, "outputs 5 classes"):
            task.build_model()


if __name__ == "__main__":
    tf.test.main()

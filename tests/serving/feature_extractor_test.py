"""Feature-extractor SavedModel: export, load, and restore into a fresh model."""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
import tf_keras

from tfcp.modeling import factory, init_checkpoint
from tfcp.serving import feature_extractor

S = 64
TINY = dict(
    num_classes=3,
    image_size=S,
    model_id=18,
    decoder_num_filters=16,
    rpn_head_num_filters=16,
    detection_head_num_filters=16,
    detection_head_fc_dims=32,
    mask_head_num_filters=16,
    test_num_proposals=20,
    max_num_detections=4,
    use_sync_bn=False,
)


def _fresh(**overrides):
    return factory.build_maskrcnn(**{**TINY, **overrides})


class FeatureExtractorTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        tf_keras.utils.set_random_seed(3)
        cls.tmp = tempfile.mkdtemp()
        cls.model = _fresh()
        # Non-default BN statistics, so that a restore of non-trainable variables shows.
        for variable in cls.model.backbone.non_trainable_variables:
            variable.assign(tf.random.uniform(variable.shape, 0.5, 1.5))
        cls.export_dir = os.path.join(cls.tmp, "fe")
        feature_extractor.export_feature_extractor(cls.model, cls.export_dir, (S, S))
        cls.fresh = _fresh()  # other random initialization, same architecture

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def test_loaded_module_exposes_variables_and_features(self):
        loaded = tf.saved_model.load(self.export_dir)
        self.assertLen(
            loaded.backbone.trainable_variables, len(self.model.backbone.trainable_variables)
        )
        self.assertLen(loaded.decoder.variables, len(self.model.decoder.variables))
        self.assertTrue(all(v.trainable for v in loaded.backbone.trainable_variables))
        images = tf.random.normal([2, S, S, 3], seed=1)
        outputs = loaded.signatures["serving_default"](images=images)
        self.assertCountEqual(outputs.keys(), ["2", "3", "4", "5", "6"])
        self.assertEqual(outputs["2"].shape, (2, S // 4, S // 4, 16))
        self.assertEqual(outputs["6"].shape, (2, 1, 1, 16))
        expected = self.model.decoder(self.model.backbone(images, training=False), training=False)
        for level, value in outputs.items():
            self.assertAllClose(value, expected[level], atol=1e-4, msg=level)

    def test_restore_copies_backbone_and_decoder(self):
        self.assertNotAllClose(
            self.fresh.backbone.trainable_variables[0], self.model.backbone.trainable_variables[0]
        )
        head_before = [v.numpy() for v in self.fresh.rpn_head.variables]
        restored = init_checkpoint.restore_backbone_and_decoder(
            self.export_dir, self.fresh.backbone, self.fresh.decoder
        )
        self.assertEqual(restored, ["backbone", "decoder"])
        for module in ("backbone", "decoder"):
            exported = getattr(self.model, module).variables
            restored = getattr(self.fresh, module).variables
            self.assertEqual(len(exported), len(restored))
            for a, b in zip(exported, restored, strict=True):
                self.assertAllEqual(a, b, msg=f"{module}: {a.name}")
        # Heads are not touched.
        for before, after in zip(head_before, self.fresh.rpn_head.variables, strict=True):
            self.assertAllEqual(before, after)

    def test_restore_backbone_only(self):
        other = _fresh()
        decoder_before = [v.numpy() for v in other.decoder.variables]
        restored = init_checkpoint.restore_backbone_and_decoder(self.export_dir, other.backbone)
        self.assertEqual(restored, ["backbone"])
        self.assertAllEqual(other.backbone.variables[5], self.model.backbone.variables[5])
        self.assertAllEqual(other.decoder.variables[0], decoder_before[0])

    def test_incompatible_architecture_is_a_clear_error(self):
        wider = _fresh(decoder_num_filters=24)
        with self.assertRaisesRegex(ValueError, r"incompatible with the model's backbone \+"):
            init_checkpoint.restore_backbone_and_decoder(
                self.export_dir, wider.backbone, wider.decoder
            )
        deeper = _fresh(model_id=34)
        with self.assertRaisesRegex(ValueError, f"{self.export_dir} is incompatible.* holds "):
            init_checkpoint.restore_backbone_and_decoder(self.export_dir, deeper.backbone)

    def test_not_a_saved_model(self):
        with self.assertRaisesRegex(FileNotFoundError, "neither a checkpoint nor a SavedModel"):
            init_checkpoint.restore_backbone_and_decoder(self.tmp, self.fresh.backbone)

    def test_detection_export_has_no_backbone_to_restore(self):
        # A SavedModel whose root holds no `backbone`: a clear error, not a partial restore.
        module = tf.Module()
        module.v = tf.Variable(np.ones([3], np.float32))
        path = os.path.join(self.tmp, "other")
        tf.saved_model.save(module, path)
        with self.assertRaisesRegex(ValueError, "contains no 'backbone' variables"):
            init_checkpoint.restore_backbone_and_decoder(path, self.fresh.backbone)


if __name__ == "__main__":
    tf.test.main()

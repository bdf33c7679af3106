"""Tests of tfcp.modeling.factory (config translation; building is covered by the task
and gin tests, which share built models)."""

import gin
import tensorflow as tf

from tfcp.modeling import factory


class MaskRCNNModelConfigTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        gin.clear_config()

    def test_defaults_are_model_garden_mask_rcnn(self):
        config = factory.maskrcnn_model_config(91, 1024)
        self.assertEqual(config.input_size, [1024, 1024, 3])
        self.assertEqual((config.min_level, config.max_level), (2, 6))
        self.assertEqual(config.backbone.type, "resnet")
        self.assertEqual(config.backbone.resnet.model_id, 50)
        self.assertEqual(config.decoder.type, "fpn")
        self.assertTrue(config.include_mask)
        self.assertEqual(config.mask_roi_aligner.crop_size * config.mask_head.upsample_factor, 28)
        self.assertIsNone(config.roi_sampler.cascade_iou_thresholds)
        self.assertTrue(config.norm_activation.use_sync_bn)

    def test_cascade_efficientnet_nasfpn(self):
        config = factory.maskrcnn_model_config(
            91,
            (1280, 1280),
            backbone="efficientnet",
            model_id="b7",
            decoder="nasfpn",
            min_level=3,
            max_level=7,
            cascade_iou_thresholds=(0.6, 0.7),
            class_agnostic_bbox_pred=True,
            cascade_class_ensemble=True,
        )
        self.assertEqual(config.backbone.efficientnet.model_id, "b7")
        self.assertEqual(config.backbone.efficientnet.se_ratio, 0.25)
        self.assertEqual(config.decoder.type, "nasfpn")
        self.assertEqual(config.roi_sampler.cascade_iou_thresholds, [0.6, 0.7])
        self.assertTrue(config.detection_head.class_agnostic_bbox_pred)
        self.assertTrue(config.detection_head.cascade_class_ensemble)

    def test_faster_rcnn_has_no_mask_parts(self):
        config = factory.maskrcnn_model_config(21, 512, include_mask=False)
        self.assertFalse(config.include_mask)
        self.assertIsNone(config.mask_head)
        self.assertIsNone(config.mask_sampler)
        self.assertIsNone(config.mask_roi_aligner)

    def test_bad_arguments_are_rejected(self):
        with self.assertRaisesRegex(ValueError, "multiple of 2\\*\\*max_level = 64"):
            factory.maskrcnn_model_config(91, 100)
        with self.assertRaisesRegex(ValueError, "class_agnostic_bbox_pred"):
            factory.maskrcnn_model_config(91, 128, cascade_iou_thresholds=(0.6,))
        with self.assertRaisesRegex(ValueError, "backbone"):
            factory.maskrcnn_model_config(91, 128, backbone="vgg")
        with self.assertRaisesRegex(ValueError, "decoder"):
            factory.maskrcnn_model_config(91, 128, decoder="bifpn")
        with self.assertRaisesRegex(ValueError, "background"):
            factory.maskrcnn_model_config(1, 128)
        with self.assertRaises(TypeError):
            factory.maskrcnn_model_config(91, 128, no_such_argument=1)

    def test_gin_bindings_reach_the_config(self):
        gin.parse_config(
            [
                "build_maskrcnn.num_classes = 7",
                "build_maskrcnn.image_size = 256",
                "build_maskrcnn.model_id = 101",
                "build_maskrcnn.anchor_size = 3.0",
            ]
        )
        seen = []
        original = factory.build_from_config
        factory.build_from_config = lambda config, **kwargs: seen.append(config)
        try:
            factory.build_maskrcnn()
            factory.build_faster_rcnn()
        finally:
            factory.build_from_config = original
        self.assertEqual(seen[0].num_classes, 7)
        self.assertEqual(seen[0].input_size, [256, 256, 3])
        self.assertEqual(seen[0].backbone.resnet.model_id, 101)
        self.assertEqual(seen[0].anchor.anchor_size, 3.0)
        self.assertTrue(seen[0].include_mask)
        self.assertFalse(seen[1].include_mask)  # build_faster_rcnn overrides the binding
        self.assertEqual(seen[1].num_classes, 7)

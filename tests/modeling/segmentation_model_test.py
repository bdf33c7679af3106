"""Tests of tfcp.modeling.segmentation (tiny ResNet-18 models at 64 px)."""

import gin
import tensorflow as tf

from tfcp.modeling import segmentation

TINY = dict(model_id=18, decoder_num_filters=16, head_num_filters=16, use_sync_bn=False)


class SegmentationModelTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        gin.clear_config()

    def test_fpn_and_aspp_logits(self):
        fpn = segmentation.build_segmentation_model(num_classes=21, image_size=64, **TINY)
        self.assertEqual(fpn(tf.zeros([2, 64, 64, 3]))["logits"].shape, (2, 16, 16, 21))
        self.assertEqual(type(fpn.decoder).__name__, "FPN")
        aspp = segmentation.build_segmentation_model(
            num_classes=3, image_size=64, decoder="aspp", aspp_level=5, head_level=5,
            feature_fusion="deeplabv3plus", **TINY,
        )  # fmt: skip
        self.assertEqual(aspp(tf.zeros([1, 64, 64, 3]))["logits"].shape, (1, 16, 16, 3))
        self.assertEqual(type(aspp.decoder).__name__, "ASPP")

    def test_gin_builder(self):
        gin.parse_config(
            [
                "build_segmentation_model.num_classes = 4",
                "build_segmentation_model.image_size = 64",
                "build_segmentation_model.model_id = 18",
                "build_segmentation_model.decoder_num_filters = 16",
                "build_segmentation_model.head_level = 3",
                "build_segmentation_model.use_sync_bn = False",
            ]
        )
        model = segmentation.build_segmentation_model()
        self.assertEqual(model(tf.zeros([1, 64, 64, 3]))["logits"].shape, (1, 8, 8, 4))

    def test_invalid_arguments(self):
        cases = [
            (dict(backbone="vit"), "backbone"),
            (dict(decoder="nasfpn"), "decoder"),
            (dict(image_size=96), "multiple of 64"),
            (dict(head_level=7), "head_level"),
            (dict(feature_fusion="deeplabv3plus"), "needs decoder='aspp'"),
            (dict(decoder="aspp", aspp_level=5, head_level=4), "must equal aspp_level"),
            (dict(num_classes=1), "background"),
            (dict(backbone="dilated_resnet", model_id=50), "decoder='fpn' needs"),
            (
                dict(
                    backbone="dilated_resnet",
                    model_id=50,
                    decoder="aspp",
                    aspp_level=3,
                    head_level=3,
                    image_size=64,
                ),
                "finer than the dilated",
            ),
        ]
        for overrides, message in cases:
            kwargs = {"num_classes": 21, "image_size": 64, **overrides}
            with self.assertRaisesRegex(ValueError, message):
                segmentation.segmentation_model_config(**kwargs)

    def test_dilated_resnet_restores_into_resnet(self):
        """DeepLabv3's dilated ResNet-50 (output stride 16) has ResNet-50's variables.

        So a backbone pretrained dilated (e.g. CP2) initializes the FPN models' plain ResNet.
        """
        common = dict(num_classes=21, image_size=64, model_id=50, use_sync_bn=False)
        dilated = segmentation.build_segmentation_model(
            backbone="dilated_resnet", output_stride=16, decoder="aspp", aspp_level=4,
            head_level=4, decoder_num_filters=16, head_num_filters=16, **common,
        )  # fmt: skip
        features = dilated.backbone(tf.zeros([1, 64, 64, 3]))
        self.assertEqual(sorted(features), ["2", "3", "4"])
        self.assertEqual(features["4"].shape, (1, 4, 4, 2048))  # stride 16, last stage
        plain = segmentation.build_segmentation_model(backbone="resnet", **common)
        for v in dilated.backbone.variables:
            v.assign(tf.random.stateless_normal(v.shape, [1, len(v.name)]))
        prefix = tf.train.Checkpoint(backbone=dilated.backbone).write(
            self.get_temp_dir() + "/dilated"
        )
        status = tf.train.Checkpoint(backbone=plain.backbone).read(prefix)
        status.assert_existing_objects_matched()
        self.assertEqual(len(plain.backbone.variables), len(dilated.backbone.variables))
        for a, b in zip(dilated.backbone.variables, plain.backbone.variables, strict=True):
            self.assertAllEqual(a, b)


if __name__ == "__main__":
    tf.test.main()

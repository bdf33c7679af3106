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
        ]
        for overrides, message in cases:
            kwargs = {"num_classes": 21, "image_size": 64, **overrides}
            with self.assertRaisesRegex(ValueError, message):
                segmentation.segmentation_model_config(**kwargs)


if __name__ == "__main__":
    tf.test.main()

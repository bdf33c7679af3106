"""Tests of tfcp.modeling.postprocess."""

import tensorflow as tf

from tfcp.modeling import postprocess


class BoxMappingTest(tf.test.TestCase):
    def test_scale_and_offset_are_inverted(self):
        # Original 200 x 400 scaled by 0.5 (y) / 0.25 (x), then cropped at offset (10, 20).
        image_info = tf.constant([[[200, 400], [100, 100], [0.5, 0.25], [10, 20]]], tf.float32)
        input_boxes = tf.constant([[[0.0, 0.0, 40.0, 80.0], [10.0, 5.0, 20.0, 15.0]]])
        original = postprocess.boxes_to_original_pixels(input_boxes, image_info)
        self.assertAllClose(original, [[[20.0, 80.0, 100.0, 400.0], [40.0, 100.0, 60.0, 140.0]]])
        self.assertAllClose(postprocess.boxes_to_input_pixels(original, image_info), input_boxes)

    def test_unknown_shapes_in_tf_function(self):
        fn = tf.function(
            postprocess.boxes_to_original_pixels,
            input_signature=[
                tf.TensorSpec([None, None, 4], tf.float32),
                tf.TensorSpec([None, 4, 2], tf.float32),
            ],
        )
        image_info = tf.constant([[[256, 256], [128, 128], [0.5, 0.5], [0, 0]]] * 2, tf.float32)
        boxes = tf.ones([2, 3, 4])
        self.assertAllClose(fn(boxes, image_info), 2.0 * tf.ones([2, 3, 4]))

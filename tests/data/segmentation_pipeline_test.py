"""Tests of tfcp.data.segmentation_pipeline on hand-checkable label maps."""

import os
import tempfile

import gin
import numpy as np
import tensorflow as tf

from tfcp.data import schema
from tfcp.data import segmentation_pipeline as sp

SEED = tf.constant([1, 2], tf.int64)


def _image_from_label(label):
    """An RGB image whose red channel is 10 * label (255 -> 250): geometry is checkable."""
    red = np.minimum(label.astype(np.int32) * 10, 250).astype(np.uint8)
    return np.stack([red, red, red], axis=-1)


def _write_records(path, labels):
    with tf.io.TFRecordWriter(path) as writer:
        for i, label in enumerate(labels):
            height, width = label.shape
            example = schema.make_example(
                encoded_image=schema.encode_png(_image_from_label(label)),
                image_format="png",
                height=height,
                width=width,
                source_id=f"img{i}",
                segmentation_png=schema.encode_png(label),
            )
            writer.write(example.SerializeToString())


class JitterTest(tf.test.TestCase):
    def test_identity_scale_keeps_label_and_image_aligned(self):
        label = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 255], [1, 1, 2, 2]], np.uint8)
        image, out, info = sp.jitter_image_and_label(
            _image_from_label(label), label[..., None], SEED,
            output_size=4, scale_range=(1.0, 1.0), flip_prob=0.0,
        )  # fmt: skip
        self.assertEqual(out.dtype, tf.int32)
        self.assertAllEqual(out[..., 0], label)
        self.assertAllEqual(image[..., 0], _image_from_label(label)[..., 0])
        self.assertAllClose(info, [[4, 4], [4, 4], [1, 1], [0, 0]])

    def test_flip_mirrors_label_and_image_together(self):
        label = np.array([[1, 2, 3, 4]] * 4, np.uint8)
        image, out, _ = sp.jitter_image_and_label(
            _image_from_label(label), label[..., None], SEED,
            output_size=4, scale_range=(1.0, 1.0), flip_prob=1.0,
        )  # fmt: skip
        self.assertAllEqual(out[0, :, 0], [4, 3, 2, 1])
        self.assertAllEqual(image[0, :, 0], [40, 30, 20, 10])

    def test_padding_is_ignore_label_and_gray(self):
        # A 2 x 4 image fits a 4 x 4 output at scale 1: rows 2-3 are padding.
        label = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)
        image, out, _ = sp.jitter_image_and_label(
            _image_from_label(label), label[..., None], SEED,
            output_size=4, scale_range=(1.0, 1.0), flip_prob=0.0, ignore_label=255,
        )  # fmt: skip
        self.assertAllEqual(out[:2, :, 0], label)
        self.assertAllEqual(out[2:, :, 0], np.full([2, 4], 255))
        self.assertAllEqual(image[2:], np.full([2, 4, 3], 128))

    def test_upscale_is_nearest_neighbour(self):
        label = np.array([[1, 2], [3, 255]], np.uint8)
        _, out, _ = sp.resize_image_and_label_for_eval(
            _image_from_label(label), label[..., None], output_size=4
        )
        expected = np.kron(label, np.ones([2, 2], np.uint8))
        self.assertAllEqual(out[..., 0], expected)

    def test_random_crop_labels_are_subset_and_deterministic(self):
        rng = np.random.default_rng(0)
        label = rng.integers(0, 21, size=(32, 48)).astype(np.uint8)
        args = (_image_from_label(label), label[..., None], SEED)
        kwargs = dict(output_size=16, scale_range=(0.5, 2.0), flip_prob=0.5)
        _, a, _ = sp.jitter_image_and_label(*args, **kwargs)
        _, b, _ = sp.jitter_image_and_label(*args, **kwargs)
        self.assertAllEqual(a, b)
        self.assertTrue(set(np.unique(a.numpy())) <= set(np.unique(label)) | {255})

    def test_graph_mode_with_unknown_shapes(self):
        fn = tf.function(
            lambda i, lab: sp.jitter_image_and_label(i, lab, SEED, output_size=8)[1],
            input_signature=[
                tf.TensorSpec([None, None, 3], tf.uint8),
                tf.TensorSpec([None, None, 1], tf.uint8),
            ],
        )
        label = np.full([5, 7, 1], 3, np.uint8)
        out = fn(np.zeros([5, 7, 3], np.uint8), label).numpy()
        self.assertEqual(out.shape, (8, 8, 1))
        self.assertTrue(set(np.unique(out)) <= {3, 255})

    def test_pad_label(self):
        out = sp.pad_label(tf.constant([[[1], [2]]], tf.uint8), 3)
        self.assertAllEqual(out, [[1, 2, 255], [255, 255, 255], [255, 255, 255]])
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "imgX"):
            sp.pad_label(tf.zeros([4, 2, 1], tf.uint8), 3, source_id=tf.constant("imgX"))


class DatasetTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        gin.clear_config()
        self.tmp = tempfile.mkdtemp()
        self.labels = [
            np.pad(np.full([8, 12], k, np.uint8), 2, constant_values=255) for k in (1, 2, 3)
        ]
        self.path = os.path.join(self.tmp, "seg.tfrecord")
        _write_records(self.path, self.labels)

    def test_train_batches(self):
        ds = sp.build_segmentation_dataset(
            self.path, is_training=True, global_batch_size=2, image_size=16
        )
        images, labels = next(iter(ds))
        self.assertEqual(images.shape, (2, 16, 16, 3))
        self.assertEqual(images.dtype, tf.float32)
        self.assertEqual(labels["masks"].shape, (2, 16, 16, 1))
        self.assertAllEqual(labels["valid_masks"], labels["masks"] != 255)
        self.assertTrue(set(np.unique(labels["masks"].numpy())) <= {1, 2, 3, 255})

    def test_eval_keeps_original_labels_and_every_image(self):
        ds = sp.build_segmentation_dataset(
            [self.path], is_training=False, global_batch_size=2, image_size=32,
            eval_groundtruth_size=20,
        )  # fmt: skip
        batches = list(ds)
        self.assertEqual([b[0].shape[0] for b in batches], [2, 1])
        gt = np.concatenate([b[1]["groundtruth"].numpy() for b in batches])
        self.assertEqual(gt.shape, (3, 20, 20))
        for k, label in enumerate(self.labels):
            self.assertAllEqual(gt[k, :12, :16], label)
            self.assertTrue(np.all(gt[k, 12:] == 255) and np.all(gt[k, :, 16:] == 255))
        ids = np.concatenate([b[1]["source_id"].numpy() for b in batches])
        self.assertEqual(list(ids), [b"img0", b"img1", b"img2"])
        # 12 x 16 image scaled by 2 into the 32 x 32 input.
        self.assertAllClose(batches[0][1]["image_info"][0], [[12, 16], [32, 32], [2, 2], [0, 0]])

    def test_missing_pattern_is_named(self):
        with self.assertRaisesRegex(ValueError, "nothing_here"):
            sp.build_segmentation_dataset(os.path.join(self.tmp, "nothing_here*"))


if __name__ == "__main__":
    tf.test.main()

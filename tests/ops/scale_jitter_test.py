"""Tests for tfcp.ops.scale_jitter with hand-checkable images, boxes and masks."""

import numpy as np
import tensorflow as tf

from tfcp.ops import scale_jitter

SEED = tf.constant([1, 2], tf.int64)


def _example(height=64, width=64, boxes_px=((16, 16, 48, 32),), crowd=None):
    """An image with a gradient, and rectangle masks exactly filling the given pixel boxes."""
    yy, xx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    image = np.stack([yy * 3 % 256, xx * 3 % 256, (yy + xx) % 256], -1).astype(np.uint8)
    masks = np.zeros([len(boxes_px), height, width], np.uint8)
    for i, (y0, x0, y1, x1) in enumerate(boxes_px):
        masks[i, y0:y1, x0:x1] = 1
    boxes = np.asarray(boxes_px, np.float32).reshape([-1, 4]) / [height, width, height, width]
    n = len(boxes_px)
    return {
        "source_id": tf.constant("7"),
        "image": tf.constant(image),
        "groundtruth_boxes": tf.constant(boxes, tf.float32),
        "groundtruth_classes": tf.range(1, n + 1, dtype=tf.int64),
        "groundtruth_is_crowd": tf.constant(crowd or [False] * n, tf.bool),
        "groundtruth_area": tf.constant(masks.sum((1, 2)), tf.float32),
        "groundtruth_difficult": tf.zeros([n], tf.bool),
        "groundtruth_instance_masks": tf.constant(masks),
    }


class ScaleJitterTest(tf.test.TestCase):
    def test_scale_one_no_flip_is_identity(self):
        ex = _example()
        out = scale_jitter.scale_jitter(
            ex, SEED, output_size=64, scale_range=(1.0, 1.0), flip_prob=0.0
        )
        self.assertAllEqual(out["image"], ex["image"])
        self.assertAllClose(out["groundtruth_boxes"], ex["groundtruth_boxes"])
        self.assertAllEqual(out["groundtruth_instance_masks"], ex["groundtruth_instance_masks"])
        self.assertAllEqual(out["groundtruth_area"], [32 * 16])
        self.assertAllClose(out["image_info"], [[64, 64], [64, 64], [1, 1], [0, 0]])
        self.assertEqual(out["source_id"], b"7")

    def test_half_scale_halves_boxes_and_pads_gray(self):
        out = scale_jitter.scale_jitter(
            _example(), SEED, output_size=64, scale_range=(0.5, 0.5), flip_prob=0.0
        )
        # Pixel box (16, 16, 48, 32) -> (8, 8, 24, 16), normalized by the 64 px output.
        self.assertAllClose(out["groundtruth_boxes"], [[8 / 64, 8 / 64, 24 / 64, 16 / 64]])
        mask = out["groundtruth_instance_masks"][0].numpy()
        expected = np.zeros([64, 64], np.uint8)
        expected[8:24, 8:16] = 1
        self.assertAllEqual(mask, expected)
        self.assertEqual(mask.dtype, np.uint8)
        self.assertAllEqual(out["groundtruth_area"], [16 * 8])
        image = out["image"].numpy()
        self.assertTrue((image[32:] == 128).all() and (image[:, 32:] == 128).all())
        self.assertFalse((image[:32, :32] == 128).all())
        self.assertAllClose(out["image_info"], [[64, 64], [64, 64], [0.5, 0.5], [0, 0]])

    def test_pad_value_is_configurable(self):
        out = scale_jitter.scale_jitter(
            _example(), SEED, output_size=64, scale_range=(0.5, 0.5), pad_value=0
        )
        self.assertTrue((out["image"].numpy()[40:] == 0).all())

    def test_flip_mirrors_boxes_image_and_masks(self):
        ex = _example(boxes_px=((6, 12, 30, 40),))
        out = scale_jitter.scale_jitter(
            ex, SEED, output_size=64, scale_range=(1.0, 1.0), flip_prob=1.0
        )
        self.assertAllClose(out["groundtruth_boxes"], [[6 / 64, 24 / 64, 30 / 64, 52 / 64]])
        self.assertAllEqual(out["image"], ex["image"][:, ::-1])
        self.assertAllEqual(
            out["groundtruth_instance_masks"], ex["groundtruth_instance_masks"][:, :, ::-1]
        )

    def test_flip_with_padding_keeps_padding_bottom_right(self):
        out = scale_jitter.scale_jitter(
            _example(), SEED, output_size=64, scale_range=(0.5, 0.5), flip_prob=1.0
        )
        # Box x range [8, 16) of a 32 px wide content mirrors to [16, 24).
        self.assertAllClose(out["groundtruth_boxes"], [[8 / 64, 16 / 64, 24 / 64, 24 / 64]])
        self.assertTrue((out["image"].numpy()[:, 32:] == 128).all())

    def test_crop_removes_outside_objects_and_keeps_fields_consistent(self):
        boxes_px = ((0, 0, 20, 20), (44, 44, 64, 64), (10, 10, 40, 40))
        ex = _example(boxes_px=boxes_px, crowd=[False, True, False])
        seen_counts = set()
        for s in range(12):
            out = scale_jitter.scale_jitter(
                ex, tf.constant([s, 3]), output_size=32, scale_range=(2.0, 2.0), flip_prob=0.0
            )
            oy, ox = out["image_info"][3].numpy().astype(int)
            self.assertAllClose(out["image_info"][2], [1.0, 1.0])  # 64 px fits a 64 target
            expected = []
            for i, (y0, x0, y1, x1) in enumerate(boxes_px):
                box = np.clip([y0 - oy, x0 - ox, y1 - oy, x1 - ox], 0, 32)
                if box[2] > box[0] and box[3] > box[1]:
                    expected.append((i, box))
            n = len(expected)
            seen_counts.add(n)
            self.assertAllClose(out["groundtruth_boxes"], [b / 32 for _, b in expected] or [])
            self.assertAllEqual(out["groundtruth_classes"], [i + 1 for i, _ in expected])
            self.assertAllEqual(
                out["groundtruth_is_crowd"], [[False, True, False][i] for i, _ in expected]
            )
            for key in ("groundtruth_area", "groundtruth_difficult", "groundtruth_instance_masks"):
                self.assertEqual(out[key].shape[0], n, key)
            for j, (_, b) in enumerate(expected):
                self.assertEqual(
                    out["groundtruth_area"][j], (b[2] - b[0]) * (b[3] - b[1]), (s, oy, ox)
                )
        self.assertGreater(len(seen_counts), 1)  # the seeds exercise different crops

    def test_lsj_keeps_masks_inside_boxes(self):
        ex = _example(height=48, width=80, boxes_px=((5, 7, 40, 60), (20, 30, 47, 79)))
        for s in range(8):
            out = scale_jitter.scale_jitter(ex, tf.constant([s, 9]), output_size=64)
            masks = out["groundtruth_instance_masks"].numpy()
            boxes = out["groundtruth_boxes"].numpy() * 64
            self.assertEqual(out["image"].shape, (64, 64, 3))
            for mask, box in zip(masks, boxes, strict=True):
                ys, xs = np.nonzero(mask)
                self.assertGreater(len(ys), 0)
                self.assertGreaterEqual(ys.min(), np.floor(box[0]) - 1)
                self.assertLessEqual(ys.max(), np.ceil(box[2]) + 1)
                self.assertGreaterEqual(xs.min(), np.floor(box[1]) - 1)
                self.assertLessEqual(xs.max(), np.ceil(box[3]) + 1)

    def test_same_seed_same_output_and_seeds_differ(self):
        ex = _example()
        a = scale_jitter.scale_jitter(ex, SEED, output_size=64)
        b = scale_jitter.scale_jitter(ex, SEED, output_size=64)
        c = scale_jitter.scale_jitter(ex, SEED + 1, output_size=64)
        self.assertAllEqual(a["image"], b["image"])
        self.assertAllEqual(a["image_info"], b["image_info"])
        self.assertNotAllClose(a["image_info"], c["image_info"])

    def test_empty_instances(self):
        out = scale_jitter.scale_jitter(_example(boxes_px=()), SEED, output_size=32)
        self.assertEqual(out["groundtruth_instance_masks"].shape, (0, 32, 32))
        self.assertEqual(out["groundtruth_boxes"].shape, (0, 4))

    def test_eval_resize_is_deterministic_fit(self):
        ex = _example(height=32, width=64, boxes_px=((0, 0, 16, 32),))
        out = scale_jitter.resize_for_eval(ex, output_size=128)
        self.assertAllClose(out["image_info"], [[32, 64], [128, 128], [2, 2], [0, 0]])
        self.assertAllClose(out["groundtruth_boxes"], [[0, 0, 32 / 128, 64 / 128]])
        self.assertTrue((out["image"].numpy()[64:] == 128).all())

    def test_invalid_range(self):
        with self.assertRaisesRegex(ValueError, "scale_range"):
            scale_jitter.scale_jitter(_example(), SEED, output_size=32, scale_range=(2.0, 1.0))

    def test_dataset_map_and_tf_function_with_unknown_dims(self):
        ex = _example(height=48, width=80, boxes_px=((5, 7, 40, 60),))
        eager = scale_jitter.scale_jitter(ex, SEED, output_size=64)

        ds = tf.data.Dataset.from_tensors(ex).map(
            lambda e: scale_jitter.scale_jitter(e, SEED, output_size=64)
        )
        mapped = next(iter(ds))

        spec = {k: tf.TensorSpec([None] * len(v.shape), v.dtype) for k, v in ex.items()}

        @tf.function(input_signature=[spec, tf.TensorSpec([2], tf.int64)])
        def jitter(e, seed):
            return scale_jitter.scale_jitter(e, seed, output_size=64)

        traced = jitter(ex, SEED)
        for out in (mapped, traced):
            for key in eager:
                self.assertAllEqual(out[key], eager[key], key)
        self.assertEqual(traced["image"].shape, (64, 64, 3))


if __name__ == "__main__":
    tf.test.main()

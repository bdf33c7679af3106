"""Tests of tfcp.data.cp2_pipeline: the Copy-Paste composition and the CP2 dataset builder."""

from __future__ import annotations

import os
import tempfile

import gin
import numpy as np
import tensorflow as tf
from official.vision.ops import preprocess_ops
from PIL import Image

from tfcp.data import cp2_pipeline as cp
from tfcp.data import schema
from tfcp.data.synthetic import scenes
from tfcp.ops import moco_augment as ma

SEED = tf.constant([5, 6], tf.int64)
S = 32  # output side in the dataset tests (inputs are 64-96 px)
# Constant-color images identify which image a pixel came from (augmentation off below).
COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (40, 220, 220), (90, 90, 90)]
PLAIN = dict(color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)


def denormalize(images):
    """Normalized float images -> uint8 (inverse of Model Garden's normalize_image)."""
    mean = np.array(preprocess_ops.MEAN_NORM) * 255.0
    std = np.array(preprocess_ops.STDDEV_NORM) * 255.0
    return np.clip(np.round(np.asarray(images) * std + mean), 0, 255).astype(np.uint8)


def colors_of(images, masks, inside):
    """Per example, the one color of the pixels inside (or outside) the mask."""
    out = []
    for image, mask in zip(denormalize(images), np.asarray(masks), strict=True):
        pixels = image[(mask > 0) == inside]
        assert pixels.size, "empty region"
        values = np.unique(pixels.reshape(-1, 3), axis=0)
        assert len(values) == 1, values
        out.append(COLORS.index(tuple(int(v) for v in values[0])))
    return out


def take(dataset, n):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset.take(n)]


def assert_batches_equal(test, a, b):
    test.assertEqual(len(a), len(b))
    for x, y in zip(a, b, strict=True):
        tf.nest.map_structure(test.assertAllEqual, x, y)


class ComposeTest(tf.test.TestCase):
    def test_compose_by_hand(self):
        fg = np.arange(16, dtype=np.uint8).reshape(4, 4, 1) + 100
        bg = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
        image, mask = cp.compose(fg, bg, tf.constant([1, 2, 2, 1]))  # rows 1-2, column 2
        expected_mask = np.zeros([4, 4], np.float32)
        expected_mask[1:3, 2] = 1.0
        self.assertAllEqual(mask, expected_mask)
        self.assertAllEqual(
            image[..., 0],
            [[0, 1, 2, 3], [4, 5, 106, 7], [8, 9, 110, 11], [12, 13, 14, 15]],
        )
        image, mask = cp.compose(fg, bg, tf.constant([0, 0, 0, 0]))  # nothing fits: no paste
        self.assertAllEqual(mask, np.zeros([4, 4]))
        self.assertAllEqual(image, bg)

    def test_example_is_foreground_view_inside_and_background_view_outside(self):
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, [48 + 8 * i, 64, 3], dtype=np.uint8) for i in range(3)]
        options = cp.CompositionOptions(view=ma.ViewOptions(size=S))
        fn = tf.function(
            lambda a, b, c, s: cp.compose_example(a, b, c, s, options),
            input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)] * 3
            + [tf.TensorSpec([2], tf.int64)],
        )
        for out in (cp.compose_example(*images, SEED, options), fn(*images, SEED)):
            out = {k: v.numpy() for k, v in out.items()}
            for name in ("query", "key"):
                mask = out[f"{name}_mask"]
                self.assertEqual((mask.shape, mask.dtype), ((S, S), np.float32))
                self.assertAllEqual(mask, cp.box_mask(out[f"{name}_box"], S, S))
                self.assertAllInRange(mask.mean(), 0.45, 0.85)
                inside = mask[..., None] > 0
                expected = np.where(inside, out[f"{name}_foreground"], out[f"{name}_background"])
                self.assertAllEqual(out[f"{name}_image"], expected)
            self.assertNotAllEqual(out["query_foreground"], out["key_foreground"])
            self.assertNotAllEqual(out["query_box"], out["key_box"])

    def test_constant_images_by_hand(self):
        fg, bg0, bg1 = (np.full([40, 56, 3], COLORS[i], np.uint8) for i in range(3))
        options = cp.CompositionOptions(view=ma.ViewOptions(size=S, **PLAIN))
        out = cp.compose_example(fg, bg0, bg1, SEED, options)
        for name, bg_color in (("query", COLORS[1]), ("key", COLORS[2])):
            inside = out[f"{name}_mask"].numpy() > 0
            image = out[f"{name}_image"].numpy()
            self.assertTrue(np.all(image[inside] == COLORS[0]))
            self.assertTrue(np.all(image[~inside] == bg_color))


class FolderDatasetTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = tempfile.mkdtemp()
        os.makedirs(os.path.join(cls.root, "b", "c"))
        names = ["a0.png", "a1.JPG", "b/b2.png", "b/c/c3.jpeg", "b/c/c4.PNG", "z5.png"]
        for k, name in enumerate(names):
            image = np.full([64 + 6 * k, 96 - 5 * k, 3], COLORS[k], np.uint8)
            # PNG bytes under every extension (decoding sniffs the content): exact colors.
            Image.fromarray(image).save(os.path.join(cls.root, name), format="PNG")
        with open(os.path.join(cls.root, "notes.txt"), "w") as f:
            f.write("not an image")

    def setUp(self):
        super().setUp()
        gin.clear_config()

    def build(self, **kwargs):
        args = dict(global_batch_size=2, image_size=S, **PLAIN)
        args.update(kwargs)
        return cp.build_cp2_dataset(self.root, **args)

    def test_lists_images_recursively_sorted(self):
        files = cp.list_image_files(self.root)
        self.assertEqual(
            [os.path.relpath(f, self.root) for f in files],
            ["a0.png", "a1.JPG", "b/b2.png", "b/c/c3.jpeg", "b/c/c4.PNG", "z5.png"],
        )

    def test_batches_have_static_shapes_and_binary_masks(self):
        dataset = self.build(color_jitter_prob=0.8, grayscale_prob=0.2, blur_prob=0.5)
        features, labels = dataset.element_spec
        for key in ("query_images", "key_images"):
            self.assertEqual(features[key].shape, (2, S, S, 3))
            self.assertEqual(features[key].dtype, tf.float32)
        for key in ("query_masks", "key_masks"):
            self.assertEqual(labels[key].shape, (2, S, S))
            self.assertEqual(labels[key].dtype, tf.float32)
        for _, labels in take(dataset, 2):
            for masks in labels.values():
                self.assertTrue(set(np.unique(masks)) <= {0.0, 1.0})
                self.assertAllInRange(masks.mean(axis=(1, 2)), 0.45, 0.85)

    def test_three_streams_are_independent_epochs_of_the_data(self):
        batches = take(self.build(), 6)  # 12 examples: two epochs of 6 images
        fg, bg0, bg1, key_fg = [], [], [], []
        for features, labels in batches:
            fg += colors_of(features["query_images"], labels["query_masks"], True)
            key_fg += colors_of(features["key_images"], labels["key_masks"], True)
            bg0 += colors_of(features["query_images"], labels["query_masks"], False)
            bg1 += colors_of(features["key_images"], labels["key_masks"], False)
        self.assertEqual(fg, key_fg)  # query and key share their foreground
        for stream in (fg, bg0, bg1):
            self.assertEqual(sorted(stream[:6]), list(range(6)))  # each epoch: every image once
            self.assertEqual(sorted(stream[6:]), list(range(6)))
        self.assertNotEqual(fg, bg0)
        self.assertNotEqual(fg, bg1)
        self.assertNotEqual(bg0, bg1)
        self.assertNotEqual(fg[:6], fg[6:])  # a new permutation every epoch
        self.assertGreaterEqual(sum(f != b for f, b in zip(fg, bg0, strict=True)), 8)

    def test_deterministic_per_seed(self):
        a = take(self.build(seed=3, blur_prob=0.5, color_jitter_prob=0.8), 2)
        b = take(self.build(seed=3, blur_prob=0.5, color_jitter_prob=0.8), 2)
        c = take(self.build(seed=4, blur_prob=0.5, color_jitter_prob=0.8), 2)
        assert_batches_equal(self, a, b)
        self.assertNotAllEqual(a[0][0]["query_images"], c[0][0]["query_images"])

    def test_resume_from_step_3_equals_the_uninterrupted_stream(self):
        kwargs = dict(seed=7, blur_prob=0.5, color_jitter_prob=0.8)
        full = take(self.build(**kwargs), 5)
        resumed = take(self.build(start_step=3, **kwargs), 2)
        assert_batches_equal(self, full[3:], resumed)

    def test_input_pipelines_share_each_epoch(self):
        seen = []
        for k in range(2):
            context = tf.distribute.InputContext(2, k, 2)
            batches = take(self.build(global_batch_size=4, input_context=context), 2)
            self.assertEqual(batches[0][0]["query_images"].shape[0], 2)  # per replica
            colors = []
            for features, labels in batches:
                colors += colors_of(features["query_images"], labels["query_masks"], True)
            seen.append(colors[:3])  # a pipeline's epoch: 3 of the 6 images
        self.assertEqual(sorted(seen[0] + seen[1]), list(range(6)))

    def test_eval_is_one_fixed_pass_with_rotated_backgrounds(self):
        a = take(self.build(is_training=False, seed=0), 10)
        b = take(self.build(is_training=False, seed=9, color_jitter_prob=0.8), 10)
        self.assertEqual(len(a), 3)  # 6 images, batches of 2
        fg, bg0, bg1 = [], [], []
        for features, labels in a:
            fg += colors_of(features["query_images"], labels["query_masks"], True)
            bg0 += colors_of(features["query_images"], labels["query_masks"], False)
            bg1 += colors_of(features["key_images"], labels["key_masks"], False)
        self.assertEqual(fg, list(range(6)))
        self.assertEqual(bg0, [1, 2, 3, 4, 5, 0])
        self.assertEqual(bg1, [2, 3, 4, 5, 0, 1])
        again = take(self.build(is_training=False, seed=5), 10)
        assert_batches_equal(self, a, again)  # the seed does not change evaluation pairs
        self.assertNotAllEqual(a[0][0]["query_images"], b[0][0]["query_images"])  # jitter on

    def test_empty_directory_and_bad_image_are_named(self):
        empty = tempfile.mkdtemp()
        with open(os.path.join(empty, "readme.txt"), "w") as f:
            f.write("x")
        with self.assertRaisesRegex(ValueError, f"no image file.*{empty}"):
            cp.build_cp2_dataset(empty, global_batch_size=2)
        with self.assertRaisesRegex(ValueError, "nothing_here"):
            cp.build_cp2_dataset(os.path.join(empty, "nothing_here*"), global_batch_size=2)
        bad = tempfile.mkdtemp()
        with open(os.path.join(bad, "broken.png"), "wb") as f:
            f.write(b"this is not a PNG")
        dataset = cp.build_cp2_dataset(bad, global_batch_size=1, image_size=S)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "broken.png"):
            next(iter(dataset))

    def test_bad_options_are_named(self):
        with self.assertRaisesRegex(ValueError, "erase_scale"):
            self.build(erase_scale=(0.8, 0.5))
        with self.assertRaisesRegex(ValueError, "blur_prob"):
            self.build(blur_prob=2.0)


class RecordDatasetTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = tempfile.mkdtemp()
        cls.paths = [os.path.join(cls.root, f"train-{i}.tfrecord") for i in range(2)]
        shards = [[], []]
        for i in range(5):  # record i -> shard i % 2, as the converters do
            rng = scenes.image_rng(0, i)
            image, masks, classes = scenes.render_scene(rng, 64 + 8 * (i % 3), 80, [1, 2, 3])
            example = schema.make_example(
                encoded_image=schema.encode_png(image),
                image_format="png",
                height=image.shape[0],
                width=image.shape[1],
                source_id=f"scene{i}",
                boxes=np.tile([[0.1, 0.1, 0.9, 0.9]], [len(classes), 1]),
                classes=[int(c) for c in classes],
                masks=masks,
            )
            shards[i % 2].append(example.SerializeToString())
        for path, shard in zip(cls.paths, shards, strict=True):
            with tf.io.TFRecordWriter(path) as writer:
                for record in shard:
                    writer.write(record)

    def setUp(self):
        super().setUp()
        gin.clear_config()

    def test_train_batches_and_exact_resume(self):
        pattern = os.path.join(self.root, "train-*.tfrecord")
        full = take(cp.build_cp2_dataset(pattern, global_batch_size=2, image_size=S, seed=1), 5)
        features, labels = full[0]
        self.assertEqual(features["query_images"].shape, (2, S, S, 3))
        self.assertEqual(labels["key_masks"].shape, (2, S, S))
        self.assertTrue(set(np.unique(labels["query_masks"])) <= {0.0, 1.0})
        resumed = cp.build_cp2_dataset(
            ",".join(self.paths), global_batch_size=2, image_size=S, seed=1, start_step=3
        )
        assert_batches_equal(self, full[3:], take(resumed, 2))

    def test_eval_is_one_pass_repeatable(self):
        pattern = os.path.join(self.root, "train-*.tfrecord")
        build = lambda: cp.build_cp2_dataset(
            pattern, is_training=False, global_batch_size=2, image_size=S
        )
        a, b = take(build(), 10), take(build(), 10)
        self.assertEqual(len(a), 2)  # 5 records, drop remainder
        assert_batches_equal(self, a, b)

    def test_bad_record_is_named(self):
        path = os.path.join(self.root, "bad.tfrecord")
        example = schema.make_example(
            encoded_image=b"garbage", image_format="png", height=4, width=4, source_id="junk7"
        )
        with tf.io.TFRecordWriter(path) as writer:
            writer.write(example.SerializeToString())
        dataset = cp.build_cp2_dataset(path, global_batch_size=1, image_size=S)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "bad.tfrecord:0"):
            next(iter(dataset))


if __name__ == "__main__":
    tf.test.main()

"""Tests for tfcp.visualize and the shipped gin_configs/data/*.gin files."""

import glob
import json
import os
import tempfile
from unittest import mock

import gin
import numpy as np
import tensorflow as tf
from absl import app, flags
from absl.testing import flagsaver
from PIL import Image

from tfcp import draw, gin_utils, visualize
from tfcp.data import mosaic_stage, pipeline, schema

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_GIN = sorted(glob.glob(os.path.join(REPO, "gin_configs", "data", "*.gin")))
LSJ_CP = os.path.join(REPO, "gin_configs", "data", "lsj_copy_paste.gin")
STUDENT = os.path.join(REPO, "gin_configs", "self_training", "maskrcnn_tiny_student.gin")
SIZE = 64


def _write_records(path: str, num: int = 4, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(num):
            image = rng.integers(0, 255, [48, 56, 3], dtype=np.uint8)
            masks = np.zeros([2, 48, 56], np.uint8)
            masks[0, 4:30, 6:40] = 1
            masks[1, 20:44, 30:50] = 1
            boxes = np.array(
                [[4 / 48, 6 / 56, 30 / 48, 40 / 56], [20 / 48, 30 / 56, 44 / 48, 50 / 56]]
            )
            example = schema.make_example(
                encoded_image=schema.encode_png(image),
                image_format="png",
                height=48,
                width=56,
                source_id=str(i + 1),
                boxes=boxes.astype(np.float32),
                classes=[1, 2],
                masks=masks,
            )
            writer.write(example.SerializeToString())


def _mixed_batch():
    """A 2-image batch as the self-training pipeline gives it (numpy), 64 px, K = 3."""
    gray = np.full([2, SIZE, SIZE, 3], 90, np.uint8)
    images = (gray / 255.0 - draw.MEAN_NORM) / draw.STDDEV_NORM
    boxes = np.zeros([2, 3, 4], np.float32)
    boxes[:, 0] = [20, 20, 40, 40]  # the pasted object of each image
    boxes[:, 1] = [44, 4, 60, 24]
    labels = {
        "gt_classes": np.array([[1, 2, -1], [1, 2, -1]]),
        "gt_boxes": boxes,
        "gt_masks": np.ones([2, 3, 8, 8], np.float32),
        "gt_is_pasted": np.array([[True, False, False], [True, False, False]]),
        "gt_from_pseudo": np.array([[True, False, False], [False, True, False]]),
        "is_pseudo": np.array([False, True]),
    }
    return images.astype(np.float32), labels


def _framed(tile: np.ndarray) -> bool:
    """Whether a 384 px tile has the pseudo-labeled image's violet frame (4 px)."""
    return bool((tile[:4, 150:250] == draw.PSEUDO_COLOR).all())


def _parse(gin_files, bindings):
    """As the CLI parses (data/*.gin include their parts as 'data/...')."""
    gin_utils.parse_gin(gin_files, bindings, finalize_config=False)


class VisualizeTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        gin.clear_config()
        self._tmp = tempfile.TemporaryDirectory()
        self.records = os.path.join(self._tmp.name, "train.tfrecord")
        _write_records(self.records)
        self.bindings = [
            f"TRAIN_FILES = '{self.records}'",
            f"EVAL_FILES = '{self.records}'",
            f"IMAGE_SIZE = {SIZE}",
            "GLOBAL_BATCH_SIZE = 2",
            "build_dataset.max_num_instances = 4",
            "build_dataset.mask_crop_size = 8",
            "build_dataset.occluded_area_threshold = 10.0",
        ]

    def tearDown(self):
        gin.clear_config()
        self._tmp.cleanup()
        super().tearDown()

    def test_every_augmentation_gin_file_parses_with_its_settings(self):
        # Other data/*.gin files (e.g. service.gin) are parts these four include.
        expected = {
            "lsj_copy_paste": (1.0, (0.1, 2.0)),
            "ssj_copy_paste": (1.0, (0.8, 1.25)),
            "lsj": (0.0, (0.1, 2.0)),
            "ssj": (0.0, (0.8, 1.25)),
        }
        for name in expected:
            path = os.path.join(REPO, "gin_configs", "data", f"{name}.gin")
            self.assertIn(path, DATA_GIN)
            gin.clear_config()
            _parse([path], self.bindings)
            query = gin.query_parameter
            self.assertEqual(query("train/build_dataset.copy_paste_prob"), expected[name][0])
            self.assertEqual(query("train/build_dataset.main_scale_range"), expected[name][1])
            self.assertFalse(query("eval/build_dataset.is_training"))

    def test_train_and_eval_build_from_gin_and_mark_pasted_objects(self):
        _parse(
            [LSJ_CP],
            self.bindings
            + [
                "train/build_dataset.main_scale_range = (1.0, 1.0)",
                "train/build_dataset.paste_scale_range = (1.0, 1.0)",
                "train/build_dataset.selection = 'all'",
            ],
        )
        with gin.config_scope("train"):
            images, labels = next(iter(pipeline.build_dataset(keep_is_pasted=True)))
        self.assertEqual(images.shape, (2, SIZE, SIZE, 3))
        self.assertEqual(labels["gt_masks"].shape, (2, 4, 8, 8))
        is_pasted = labels["gt_is_pasted"].numpy()
        classes = labels["gt_classes"].numpy()
        self.assertTrue(is_pasted.any())
        self.assertTrue((classes[is_pasted] > 0).all())
        with gin.config_scope("eval"):
            batches = list(pipeline.build_dataset())
        self.assertEqual([b[0].shape[0] for b in batches], [2, 2])

    def test_main_writes_a_grid_of_readable_tiles(self):
        """64 px samples are drawn on 384 px tiles (the default), masks and boxes visible."""
        output = os.path.join(self._tmp.name, "grid.png")
        bindings = [b for b in self.bindings if not b.startswith("EVAL_FILES")]
        flags.FLAGS.mark_as_parsed()
        with flagsaver.flagsaver(
            gin_file=[LSJ_CP], gin_bindings=bindings, output=output, num_images=3, columns=2
        ):
            visualize.main([])
        self.assertEqual(Image.open(output).format, "PNG")
        grid = np.asarray(Image.open(output))
        tile = draw.DEFAULT_TILE_SIZE
        self.assertEqual(tile, 384)
        self.assertEqual(grid.shape, (2 * tile + 4, 2 * tile + 4, 3))
        self.assertTrue((grid[tile + 4 :, tile + 4 :] == 255).all())  # empty fourth cell
        first = grid[:tile, :tile]
        # Every sample holds objects (masks of 2 boxes + pastes): the first instance's box
        # and mask outline are drawn in its pure color, 2+ px wide at this size.
        self.assertGreater((first == draw.color(0)).all(-1).sum(), 300)

    def test_mosaic_samples_with_and_without_copy_paste(self):
        """lvis/balanced_mosaic_common.gin on a data file: every sample a mosaic of 4 images
        (2 objects each), with Copy-Paste on top or not; the CLI draws them."""
        mosaic_gin = os.path.join(REPO, "gin_configs", "lvis", "balanced_mosaic_common.gin")
        bindings = [
            *[b for b in self.bindings if not b.startswith("EVAL_FILES")],
            "train/build_dataset.mosaic_prob = 1.0",
            "train/build_dataset.mosaic_center_range = (1.0, 1.0)",
            "train/build_dataset.main_scale_range = (1.0, 1.0)",
            "build_dataset.max_num_instances = 16",
        ]
        for copy_paste in (0.0, 1.0):
            gin.clear_config()
            extra = [f"train/build_dataset.copy_paste_prob = {copy_paste}"]
            _parse([LSJ_CP, mosaic_gin], bindings + extra)
            made = mosaic_stage.mosaic_counts()[0]
            with gin.config_scope("train"):
                _, labels = next(iter(pipeline.build_dataset(keep_is_pasted=True)))
            self.assertGreaterEqual(mosaic_stage.mosaic_counts()[0] - made, 2)
            pasted = "gt_is_pasted" in labels and bool(labels["gt_is_pasted"].numpy().any())
            self.assertEqual(pasted, copy_paste > 0)
            output = os.path.join(self._tmp.name, f"mosaic_{copy_paste}.png")
            flags.FLAGS.mark_as_parsed()
            gin.clear_config()
            with flagsaver.flagsaver(
                gin_file=[LSJ_CP, mosaic_gin],
                gin_bindings=bindings + extra,
                output=output,
                num_images=2,
                columns=2,
            ):
                visualize.main([])
            self.assertEqual(Image.open(output).format, "PNG")

    def test_tile_size_zero_keeps_the_training_size(self):
        _parse([LSJ_CP], self.bindings)
        tiles = visualize.sample_tiles(2, tile_size=0)
        self.assertEqual([t.shape for t in tiles], [(SIZE, SIZE, 3)] * 2)

    def test_label_map_names_the_classes(self):
        path = os.path.join(self._tmp.name, "train_label_map.json")
        with open(path, "w") as f:
            json.dump({"1": "person", "3": "car"}, f)
        flags.FLAGS.mark_as_parsed()
        with flagsaver.flagsaver(label_map=path):
            self.assertEqual(visualize.load_class_names(flags.FLAGS), {1: "person", 3: "car"})
        with flagsaver.flagsaver(label_map=path, class_names=["bg", "a"]):
            self.assertEqual(visualize.load_class_names(flags.FLAGS), ["bg", "a"])

    def test_draw_batch_marks_pseudo_images_and_objects_pasted_from_them(self):
        """Hand-made self-training labels: image 0 labeled (an object pasted from a pseudo
        image), image 1 pseudo-labeled (an object pasted from a labeled image)."""
        images, labels = _mixed_batch()
        tiles = visualize.draw_batch(images, labels, tile_size=384)
        violet = np.asarray(draw.PSEUDO_COLOR)
        labeled, pseudo = tiles
        self.assertEqual(labeled.shape, (384, 384, 3))
        # The pseudo-labeled tile is framed (4 px at 384) and badged; the labeled one is not.
        self.assertTrue((pseudo[:4, 200] == violet).all() and (pseudo[-4:, 200] == violet).all())
        self.assertFalse((labeled[:4, 200] == violet).all(-1).any())
        # Tile 0's pasted object (box rows 20..40 x cols 20..40 of 64 -> x6) is dashed
        # violet/instance color: its bottom edge (y 239) alternates the two.
        bottom = labeled[239, 120:241]
        self.assertTrue((bottom == violet).all(-1).any())
        self.assertTrue((bottom == draw.color(0)).all(-1).any())
        self.assertFalse((bottom == draw.PASTED_OUTLINE).all(-1).any())
        # Tile 1's pasted object comes from a labeled image: white dashes, no violet on it.
        bottom = pseudo[239, 120:241]
        self.assertTrue((bottom == draw.PASTED_OUTLINE).all(-1).any())
        self.assertFalse((bottom == violet).all(-1).any())
        # Nothing else of tile 0 is violet: the padding row (class -1) draws nothing.
        inside = labeled.copy()
        inside[100:260, 100:260] = 0
        self.assertFalse((inside == violet).all(-1).any())

    def test_augmented_grid_of_a_mixed_batch_has_a_legend(self):
        images, labels = _mixed_batch()
        flags.FLAGS.mark_as_parsed()
        with flagsaver.flagsaver(columns=2, tile_size=384):
            with mock.patch.object(visualize, "sample_batch", return_value=(images, labels)):
                mixed = visualize.augmented_grid(flags.FLAGS)
            single = {k: v for k, v in labels.items() if k not in ("is_pseudo", "gt_from_pseudo")}
            with mock.patch.object(visualize, "sample_batch", return_value=(images, single)):
                plain = visualize.augmented_grid(flags.FLAGS)
        self.assertEqual(plain.shape, (384, 2 * 384 + 4, 3))
        legend = draw.mixed_batch_legend(2 * 384 + 4, font_size=16)
        self.assertEqual(mixed.shape, (384 + 4 + legend.shape[0], 2 * 384 + 4, 3))
        self.assertAllEqual(mixed[-legend.shape[0] :], legend)
        self.assertFalse((plain == draw.PSEUDO_COLOR).all(-1).any())

    def _student_bindings(self, paste_from="labeled"):
        """The tiny student config on two generated record sets (4 images each): every
        image has 2 objects; all of a source's objects are pasted, no jitter."""
        pseudo = os.path.join(self._tmp.name, "pseudo.tfrecord")
        _write_records(pseudo, seed=1)
        return [b for b in self.bindings if not b.startswith("EVAL_FILES")] + [
            f"PSEUDO_FILES = '{pseudo}'",
            "NUM_CLASSES = 3",
            "train/build_dataset.selection = 'all'",
            "train/build_dataset.main_scale_range = (1.0, 1.0)",
            "train/build_dataset.paste_scale_range = (1.0, 1.0)",
            f"train/build_dataset.paste_from = '{paste_from}'",
        ]

    def test_mixed_batch_of_the_tiny_student_marks_its_pseudo_labeled_images(self):
        """Batch of 4 = 2 labeled + 2 pseudo-labeled; objects pasted from labeled images."""
        _parse([STUDENT], self._student_bindings())
        images, labels = visualize.sample_batch(4)
        is_pseudo = labels["is_pseudo"]
        self.assertEqual(sorted(is_pseudo.tolist()), [False, False, True, True])
        valid = labels["gt_classes"] >= 0
        pasted, from_pseudo = labels["gt_is_pasted"], labels["gt_from_pseudo"]
        self.assertTrue(pasted[valid].any())
        self.assertFalse(from_pseudo[pasted & valid].any())  # paste_from='labeled'
        own = valid & ~pasted
        self.assertAllEqual(from_pseudo[own], np.broadcast_to(is_pseudo[:, None], own.shape)[own])
        tiles = visualize.draw_batch(images, labels, tile_size=384)
        self.assertEqual([_framed(t) for t in tiles], is_pseudo.tolist())
        for tile, pseudo in zip(tiles, is_pseudo, strict=True):
            if not pseudo:  # no frame, no badge, nothing pasted from a pseudo image
                self.assertFalse((tile == draw.PSEUDO_COLOR).all(-1).any())

    def test_main_draws_a_mixed_batch_with_objects_pasted_from_pseudo_images(self):
        output = os.path.join(self._tmp.name, "mixed.png")
        flags.FLAGS.mark_as_parsed()
        bindings = self._student_bindings(paste_from="pseudo")
        with flagsaver.flagsaver(
            gin_file=[STUDENT], gin_bindings=bindings, output=output, num_images=4, columns=4
        ):
            visualize.main([])
        grid = np.asarray(Image.open(output))
        tile, width = draw.DEFAULT_TILE_SIZE, 4 * draw.DEFAULT_TILE_SIZE + 3 * 4
        legend = draw.mixed_batch_legend(width, font_size=16)
        self.assertEqual(grid.shape, (tile + 4 + legend.shape[0], width, 3))
        self.assertAllEqual(grid[-legend.shape[0] :], legend)
        tiles = [grid[:tile, c * (tile + 4) : c * (tile + 4) + tile] for c in range(4)]
        framed = [_framed(t) for t in tiles]
        self.assertEqual(sum(framed), 2)
        for t in (t for t, f in zip(tiles, framed, strict=True) if not f):
            # A labeled image: violet only on the dashed boxes of objects pasted from a
            # pseudo-labeled image (all of a pseudo image's 2 objects are pasted).
            self.assertFalse(_framed(t))
            self.assertGreater((t == draw.PSEUDO_COLOR).all(-1).sum(), 100)

    def test_cp2_pairs_mode_draws_query_key_pairs(self):
        """`--mode=cp2_pairs` (gin_configs/cp2/): query | key tiles of T x (2T + 4), the
        pasted foreground outlined in yellow on both halves."""
        output = os.path.join(self._tmp.name, "cp2.png")
        bindings = [f"TRAIN_FILES = '{self.records}'", "TRAIN_STEPS = 1", "IMAGE_SIZE = 64"]
        flags.FLAGS.mark_as_parsed()
        with flagsaver.flagsaver(
            mode="cp2_pairs", gin_file=["cp2/cp2_tiny.gin"], gin_bindings=bindings,
            output=output, num_images=4, columns=4, tile_size=96,
        ):  # fmt: skip
            visualize.main([])
        grid = np.asarray(Image.open(output))
        self.assertEqual(grid.shape, (2 * 96 + 12, 2 * (2 * 96 + 4) + 12, 3))  # 2 x 2 pairs
        yellow = (grid == (255, 221, 0)).all(-1)
        for row, col in ((0, 0), (0, 1), (1, 0), (1, 1)):
            top, left = row * 108, col * 208
            self.assertGreater(yellow[top : top + 96, left : left + 96].sum(), 40)  # query
            self.assertGreater(yellow[top : top + 96, left + 100 : left + 196].sum(), 40)  # key

    def test_unknown_mode_is_a_usage_error(self):
        flags.FLAGS.mark_as_parsed()
        with flagsaver.flagsaver(mode="nope"):
            with self.assertRaisesRegex(app.UsageError, "augmented"):
                visualize.main([])


if __name__ == "__main__":
    tf.test.main()

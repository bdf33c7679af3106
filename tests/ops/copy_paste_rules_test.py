"""Tests of tfcp.ops.copy_paste's occlusion rules (paper's area rule, MMDetection's box rule)
and of its instance cap (`max_num_instances`), in three execution modes."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from copy_paste_test import MODES, const_image, example, rect, run, run_seeds, tight

from tfcp.ops import copy_paste as cp


def mmdet_scene():
    """MMDetection's `TestCopyPaste` scene (tests/test_datasets/test_transforms/
    test_transforms.py) on its 288 x 512 test image `color.jpg`: boxes [x1, y1, x2, y2] in
    pixels as fractions of (w, h), masks filled like its `create_full_masks` (int() of the box
    edges), ignore flags as crowd flags. Returns (target, source) in our layout."""
    h, w = 288, 512
    rng = np.random.default_rng(0)

    def side(fractions, cls, ignore):
        xyxy = (np.array(fractions, np.float32) * np.array([w, h, w, h], np.float32)).astype(
            np.float32
        )
        masks = np.zeros([len(xyxy), h, w], np.uint8)
        for i, (x1, y1, x2, y2) in enumerate(xyxy):
            masks[i, int(y1) : int(y2), int(x1) : int(x2)] = 1
        boxes = xyxy[:, [1, 0, 3, 2]] / np.array([h, w, h, w], np.float32)
        ex = example(
            list(masks),
            [cls] * len(masks),
            rng.integers(0, 256, [h, w, 3], np.uint8),
            h,
            w,
            boxes=boxes,
            crowd=ignore,
        )
        return ex

    target = side([[0.2, 0.2, 0.4, 0.4], [0.5, 0.5, 0.6, 0.6]], 1, [0, 1])
    source = side([[0.1, 0.1, 0.3, 0.5], [0.4, 0.4, 0.7, 0.7], [0.8, 0.8, 0.9, 0.9]], 2, [0, 0, 1])
    return target, source


class CopyPasteOccludedBoxThresholdTest(tf.test.TestCase, parameterized.TestCase):
    """MMDetection's occlusion rule: kept when visible area > 300 or no box edge moved > 10."""

    @parameterized.parameters(*MODES)
    def test_mmdetection_unit_test_scene_selected_false(self, mode):
        target, source = mmdet_scene()
        # CopyPaste(selected=False): every source object is pasted, ignore flags included.
        mmdet = dict(selection="all", paste_crowd=True, occluded_box_threshold=10)
        out = run(mode, target, source, occluded_area_threshold=301, **mmdet)
        # "one object of destination image is totally occluded": 2 + 3 - 1 objects.
        np.testing.assert_array_equal(out["groundtruth_classes"], [1, 2, 2, 2])
        np.testing.assert_array_equal(out["groundtruth_is_crowd"], [False, False, False, True])
        # "the object of destination image is partially occluded": it keeps columns 153-203
        # of rows 57-114 (2958 px); its left edge moved 153 - 102.4 px, so the mask rule
        # (2958 > 300) keeps it, not the box rule.
        ori_mask = target["groundtruth_instance_masks"][0]
        occ_mask = out["groundtruth_instance_masks"][0]
        np.testing.assert_array_equal(occ_mask, rect(288, 512, 57, 153, 115, 204))
        self.assertGreater(ori_mask.sum(), occ_mask.sum())
        self.assertEqual(out["groundtruth_area"][0], 2958)
        hw = np.array([288, 512, 288, 512], np.float32)
        occ_px = out["groundtruth_boxes"][0] * hw
        np.testing.assert_allclose(occ_px, [57, 153, 115, 204], atol=1e-4)
        ori_px = target["groundtruth_boxes"][0] * hw
        self.assertTrue(np.all(np.abs(occ_px - ori_px) <= 10) or occ_mask.sum() > 300)
        np.testing.assert_array_equal(
            out["groundtruth_instance_masks"][1:], source["groundtruth_instance_masks"]
        )
        union = source["groundtruth_instance_masks"].any(0)[..., None]
        np.testing.assert_array_equal(
            out["image"], np.where(union, source["image"], target["image"])
        )
        # The box rule alone drops it (an edge moved 50.6 px > 10); the paper's rule keeps it.
        box_only = run(mode, target, source, occluded_area_threshold=1e9, **mmdet)
        np.testing.assert_array_equal(box_only["groundtruth_classes"], [2, 2, 2])
        paper = run(mode, target, source, selection="all", paste_crowd=True)
        np.testing.assert_array_equal(paper["groundtruth_classes"], [1, 2, 2, 2])

    @parameterized.product(mode=MODES, box_threshold=(None, 1.0, 2.0, 10.0, 12.0))
    def test_small_objects_losing_a_few_pixels(self, mode, box_threshold):
        h = w = 64
        t0 = rect(h, w, 2, 2, 12, 12)  # loses columns 10-11: right edge moves 2 px, 80 px left
        t1 = rect(h, w, 20, 20, 26, 26)  # loses a 2x2 hole inside: no edge moves, 32 px left
        t2 = rect(h, w, 40, 2, 44, 32)  # loses columns 2-13: left edge moves 12 px, 72 px left
        t3 = rect(h, w, 50, 50, 54, 54)  # fully covered: always dropped
        s = [
            rect(h, w, 0, 10, 20, 14),
            rect(h, w, 22, 22, 24, 24),
            rect(h, w, 38, 0, 46, 14),
            rect(h, w, 48, 48, 58, 58),
        ]
        target = example([t0, t1, t2, t3], [1, 2, 3, 4], const_image(10, h, w), h, w)
        source = example(s, [11, 12, 13, 14], const_image(200, h, w), h, w)
        out = run(
            mode,
            target,
            source,
            selection="all",
            occluded_area_threshold=301,
            occluded_box_threshold=box_threshold,
        )
        moved = {1: 2, 2: 0, 3: 12}  # class -> largest edge movement in pixels
        kept = [c for c, m in moved.items() if box_threshold is not None and m <= box_threshold]
        np.testing.assert_array_equal(out["groundtruth_classes"], kept + [11, 12, 13, 14])
        visible = {1: t0 & (1 - s[0]), 2: t1 & (1 - s[1]), 3: t2 & (1 - s[2])}
        for i, c in enumerate(kept):
            np.testing.assert_array_equal(out["groundtruth_instance_masks"][i], visible[c])
            np.testing.assert_array_equal(out["groundtruth_boxes"][i], tight(visible[c]))
            self.assertEqual(out["groundtruth_area"][i], visible[c].sum())


class CopyPasteMaxNumInstancesTest(tf.test.TestCase, parameterized.TestCase):
    """With max_num_instances K, at most max(K - N_target, 0) objects are pasted."""

    @staticmethod
    def grid(n, row0, first_class):
        """n disjoint 2x2 objects on a 4-pixel grid of a 64x64 image, from row `row0`."""
        masks = [
            rect(
                64,
                64,
                row0 + 4 * (i // 16),
                4 * (i % 16),
                row0 + 4 * (i // 16) + 2,
                4 * (i % 16) + 2,
            )
            for i in range(n)
        ]
        value = 10 if first_class < 1000 else 200
        return example(masks, np.arange(n) + first_class, const_image(value, 64, 64), 64, 64)

    @parameterized.parameters(*MODES)
    def test_90_target_and_60_source_objects_give_exactly_100(self, mode):
        target, source = self.grid(90, 0, 0), self.grid(60, 32, 1000)
        out = run(mode, target, source, selection="all", max_num_instances=100)
        np.testing.assert_array_equal(
            out["groundtruth_classes"], list(range(90)) + list(range(1000, 1010))
        )
        self.assertEqual(out["groundtruth_instance_masks"].shape, (100, 64, 64))
        for sub in run_seeds(
            mode, target, source, [(i, 1) for i in range(6)], max_num_instances=100
        ):
            self.assertLessEqual(len(sub["groundtruth_classes"]), 100)
        unlimited = run(mode, target, source, selection="all")
        self.assertLen(unlimited["groundtruth_classes"], 150)

    @parameterized.parameters(*MODES)
    def test_target_alone_above_k_pastes_nothing(self, mode):
        target, source = self.grid(120, 0, 0), self.grid(5, 48, 1000)
        for selection in cp.SELECTIONS:
            out = run(mode, target, source, selection=selection, max_num_instances=100)
            for key, value in target.items():
                np.testing.assert_array_equal(out[key], value, err_msg=key)

    def test_select_objects_limit(self):
        pasteable = tf.constant([True, False, True, True, False, True])
        seed = tf.constant([1, 1], tf.int64)
        np.testing.assert_array_equal(cp.select_objects(pasteable, seed, "all", 9, 2), [0, 2])
        self.assertEqual(cp.select_objects(pasteable, seed, "one", 9, 0).shape, (0,))
        for i in range(8):  # a limit that does not bind changes nothing
            sd = tf.constant([i, 3])
            free = cp.select_objects(pasteable, sd, "random_subset", 3)
            self.assertAllEqual(cp.select_objects(pasteable, sd, "random_subset", 3, 3), free)
            self.assertLessEqual(len(cp.select_objects(pasteable, sd, "random_subset", 3, 1)), 1)


if __name__ == "__main__":
    tf.test.main()

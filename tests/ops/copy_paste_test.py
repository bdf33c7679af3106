"""Tests of tfcp.ops.copy_paste on small hand-checkable scenes, in three execution modes."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfcp.ops import copy_paste as cp

MODES = ("eager", "dataset", "function")


def rect(h, w, y0, x0, y1, x1):
    """uint8 [h, w] mask with rows y0:y1 and columns x0:x1 set."""
    m = np.zeros([h, w], np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def tight(mask):
    h, w = mask.shape
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    return np.array([rows[0] / h, cols[0] / w, (rows[-1] + 1) / h, (cols[-1] + 1) / w], np.float32)


def example(masks, classes, image, h=16, w=16, boxes=None, crowd=None, area=True):
    """Example dict from uint8 masks; boxes default to the tight boxes."""
    n = len(masks)
    masks = np.stack(masks).astype(np.uint8) if n else np.zeros([0, h, w], np.uint8)
    if boxes is None:
        boxes = np.stack([tight(m) for m in masks]) if n else np.zeros([0, 4], np.float32)
    ex = {
        "image": np.asarray(image),
        "groundtruth_boxes": np.asarray(boxes, np.float32).reshape([n, 4]),
        "groundtruth_classes": np.asarray(classes, np.int64).reshape([n]),
        "groundtruth_instance_masks": masks,
        "groundtruth_is_crowd": np.zeros([n], bool) if crowd is None else np.asarray(crowd, bool),
    }
    if area:
        ex["groundtruth_area"] = masks.sum((1, 2)).astype(np.float32)
    return ex


def const_image(value, h=16, w=16, dtype=np.uint8):
    return np.full([h, w, 3], value, dtype)


def run_seeds(mode, target, source, seeds, **kwargs):
    """Runs copy_paste for each seed eagerly, in tf.data.Dataset.map, or in one tf.function
    with None dims (traced once). Returns a list of dicts of numpy arrays."""
    target = {k: tf.constant(v) for k, v in target.items()}
    source = {k: tf.constant(v) for k, v in source.items()}
    seeds = [tf.constant(seed, tf.int64) for seed in seeds]
    if mode == "eager":
        outs = [cp.copy_paste(target, source, seed, **kwargs) for seed in seeds]
    elif mode == "dataset":
        ds = tf.data.Dataset.from_tensor_slices(tf.stack(seeds))
        ds = ds.map(lambda sd: cp.copy_paste(target, source, sd, **kwargs))
        outs = list(ds)
    else:

        def spec(d):
            return {k: tf.TensorSpec([None] * v.shape.rank, v.dtype) for k, v in d.items()}

        fn = tf.function(
            lambda t, s, sd: cp.copy_paste(t, s, sd, **kwargs),
            input_signature=[spec(target), spec(source), tf.TensorSpec([2], tf.int64)],
        )
        outs = [fn(target, source, seed) for seed in seeds]
    return [{k: v.numpy() for k, v in out.items()} for out in outs]


def run(mode, target, source, seed=(1, 2), **kwargs):
    """Runs copy_paste once in the given mode."""
    return run_seeds(mode, target, source, [seed], **kwargs)[0]


class CopyPasteBehaviourTest(tf.test.TestCase, parameterized.TestCase):
    """Every behaviour is checked in the three execution modes."""

    def setUp(self):
        super().setUp()
        # Target: A (rows 0-7, cols 0-7, 64 px) and B (rows 12-15, cols 12-15, 16 px).
        self.a = rect(16, 16, 0, 0, 8, 8)
        self.b = rect(16, 16, 12, 12, 16, 16)
        self.target = example([self.a, self.b], [1, 2], const_image(10))
        # Source object covering the right half of A: rows 0-7, cols 4-11.
        self.s = rect(16, 16, 0, 4, 8, 12)
        self.source = example([self.s], [7], const_image(200))

    @parameterized.parameters(*MODES)
    def test_partial_occlusion_updates_mask_box_and_area(self, mode):
        out = run(mode, self.target, self.source, selection="all", occluded_area_threshold=10)
        visible = rect(16, 16, 0, 0, 8, 4)
        np.testing.assert_array_equal(out["groundtruth_classes"], [1, 2, 7])
        np.testing.assert_array_equal(out["groundtruth_instance_masks"][0], visible)
        np.testing.assert_array_equal(out["groundtruth_boxes"][0], [0.0, 0.0, 0.5, 0.25])
        np.testing.assert_array_equal(out["groundtruth_area"], [32.0, 16.0, 64.0])
        np.testing.assert_array_equal(out["groundtruth_instance_masks"][1], self.b)
        np.testing.assert_array_equal(out["groundtruth_instance_masks"][2], self.s)
        np.testing.assert_array_equal(out["groundtruth_boxes"][2], tight(self.s))
        np.testing.assert_array_equal(out["groundtruth_is_crowd"], [False] * 3)

    @parameterized.parameters(*MODES)
    def test_full_occlusion_drops_object(self, mode):
        source = example([rect(16, 16, 0, 0, 9, 9)], [7], const_image(200))
        out = run(mode, self.target, source, selection="all", occluded_area_threshold=0)
        np.testing.assert_array_equal(out["groundtruth_classes"], [2, 7])
        np.testing.assert_array_equal(out["groundtruth_area"], [16.0, 81.0])

    @parameterized.product(mode=MODES, threshold=(32.0, 33.0))
    def test_occluded_area_threshold(self, mode, threshold):
        out = run(
            mode, self.target, self.source, selection="all", occluded_area_threshold=threshold
        )
        # A keeps 32 visible pixels: kept at threshold 32, dropped at 33. B is not occluded.
        expected = [1, 2, 7] if threshold <= 32 else [2, 7]
        np.testing.assert_array_equal(out["groundtruth_classes"], expected)

    @parameterized.parameters(*MODES)
    def test_unoccluded_boxes_and_areas_unchanged_exactly(self, mode):
        loose = np.array([[0.01, 0.02, 0.6, 0.7], [0.7, 0.71, 0.99, 0.98]], np.float32)
        target = dict(self.target, groundtruth_boxes=loose)
        target["groundtruth_area"] = np.array([63.5, 17.25], np.float32)
        source = example([rect(16, 16, 9, 0, 11, 4)], [7], const_image(200))
        out = run(mode, target, source, selection="all")
        np.testing.assert_array_equal(out["groundtruth_boxes"][:2], loose)
        np.testing.assert_array_equal(out["groundtruth_area"], [63.5, 17.25, 8.0])
        np.testing.assert_array_equal(out["groundtruth_instance_masks"][:2], [self.a, self.b])

    @parameterized.product(mode=MODES, hw=((16, 16), (5, 7), (12, 10)))
    def test_hard_paste_copies_source_pixels_only_under_the_union(self, mode, hw):
        h, w = hw
        rng = np.random.default_rng(0)
        t_img = rng.integers(0, 256, [h, w, 3], dtype=np.uint8)
        s_img = rng.integers(0, 256, [h, w, 3], dtype=np.uint8)
        s1, s2 = rect(h, w, 0, 1, 3, 4), rect(h, w, 2, 3, h, w - 1)
        target = example([rect(h, w, 0, 0, h, w)], [1], t_img, h, w)
        source = example([s1, s2], [7, 8], s_img, h, w)
        out = run(mode, target, source, selection="all", occluded_area_threshold=0)
        union = (s1 | s2).astype(bool)
        np.testing.assert_array_equal(out["image"], np.where(union[..., None], s_img, t_img))
        np.testing.assert_array_equal(out["groundtruth_instance_masks"][0], ~union)
        self.assertEqual(out["image"].dtype, np.uint8)

    @parameterized.parameters(*MODES)
    def test_blend_changes_pixels_only_near_edges_and_not_annotations(self, mode):
        h = w = 32
        target = example([rect(h, w, 0, 0, 32, 32)], [1], const_image(0, h, w), h, w)
        s = rect(h, w, 8, 8, 24, 24)
        source = example([s], [7], const_image(200, h, w), h, w)
        hard = run(mode, target, source, selection="all", occluded_area_threshold=0)
        soft = run(
            mode, target, source, selection="all", blend_sigma=1.0, occluded_area_threshold=0
        )
        for key in hard:
            if key != "image":
                np.testing.assert_array_equal(soft[key], hard[key], err_msg=key)
        img = soft["image"][..., 0].astype(int)
        # Distance of each pixel to the mask edge (Chebyshev), radius of the kernel = 3.
        yy, xx = np.mgrid[:h, :w]
        inside = np.minimum.reduce([yy - 8, 23 - yy, xx - 8, 23 - xx])  # >= 0 inside the square
        far_in, far_out = inside >= 3, inside <= -4
        np.testing.assert_array_equal(img[far_in], 200)
        np.testing.assert_array_equal(img[far_out], 0)
        edge = (inside == 0) | (inside == -1)  # the pixel rows/columns on both sides of the edge
        self.assertTrue(np.all((img[edge] > 0) & (img[edge] < 200)))
        # Symmetric and monotone across the edge along the middle row.
        row = img[16]
        np.testing.assert_array_equal(row, row[::-1])
        self.assertTrue(np.all(np.diff(row[:16]) >= 0))

    @parameterized.parameters(*MODES)
    def test_crowd_not_pasted_unless_paste_crowd(self, mode):
        source = example([self.s], [7], const_image(200), crowd=[True])
        out = run(mode, self.target, source, selection="all")
        for key, value in self.target.items():
            np.testing.assert_array_equal(out[key], value, err_msg=key)
        out = run(mode, self.target, source, selection="all", paste_crowd=True)
        np.testing.assert_array_equal(out["groundtruth_classes"], [2, 7])  # A: 32 px < 300
        np.testing.assert_array_equal(out["groundtruth_is_crowd"], [False, True])

    @parameterized.parameters(*MODES)
    def test_empty_source_returns_target_unchanged(self, mode):
        source = example([], [], const_image(200))
        out = run(mode, self.target, source, selection="all")
        self.assertEqual(set(out), set(self.target))
        for key, value in self.target.items():
            np.testing.assert_array_equal(out[key], value, err_msg=key)
            self.assertEqual(out[key].dtype, value.dtype, msg=key)

    @parameterized.parameters(*MODES)
    def test_drawing_zero_objects_returns_target_with_masks_made_zero_one(self, mode):
        # m ~ uniform{0, 1} for one pasteable object: the seeds that draw m = 0 take the
        # nothing-pasted branch even though the source has an object to paste.
        target = dict(self.target)
        target["groundtruth_instance_masks"] = target["groundtruth_instance_masks"] * 255
        outs = run_seeds(mode, target, self.source, [(0, k) for k in range(12)])
        unchanged = [out for out in outs if 7 not in out["groundtruth_classes"]]
        self.assertNotEmpty(unchanged)
        self.assertLess(len(unchanged), len(outs))  # some seeds paste
        for out in unchanged:
            for key, value in self.target.items():
                np.testing.assert_array_equal(out[key], value, err_msg=key)
                self.assertEqual(out[key].dtype, value.dtype, msg=key)

    @parameterized.parameters(*MODES)
    def test_source_with_only_empty_masks_pastes_nothing(self, mode):
        source = example(
            [np.zeros([16, 16], np.uint8)], [7], const_image(200), boxes=[[0, 0, 1, 1]]
        )
        out = run(mode, self.target, source, selection="all")
        for key, value in self.target.items():
            np.testing.assert_array_equal(out[key], value, err_msg=key)

    @parameterized.parameters(*MODES)
    def test_empty_target_gives_pasted_objects(self, mode):
        target = example([], [], const_image(10))
        out = run(mode, target, self.source, selection="all")
        np.testing.assert_array_equal(out["groundtruth_classes"], [7])
        np.testing.assert_array_equal(out["groundtruth_instance_masks"], [self.s])
        np.testing.assert_array_equal(out["groundtruth_boxes"], [tight(self.s)])
        np.testing.assert_array_equal(out["groundtruth_area"], [64.0])
        np.testing.assert_array_equal(out["image"][..., 0], np.where(self.s > 0, 200, 10))

    @parameterized.parameters(*MODES)
    def test_all_empty(self, mode):
        target = example([], [], const_image(10))
        source = example([], [], const_image(200))
        out = run(mode, target, source)
        self.assertEqual(out["groundtruth_boxes"].shape, (0, 4))
        self.assertEqual(out["groundtruth_instance_masks"].shape, (0, 16, 16))
        np.testing.assert_array_equal(out["image"], target["image"])

    @parameterized.parameters(*MODES)
    def test_selection_all_pastes_every_non_crowd_object_in_order(self, mode):
        masks = [rect(16, 16, 0, i, 1, i + 2) for i in range(0, 10, 2)]
        source = example(masks, [11, 12, 13, 14, 15], const_image(200), crowd=[0, 1, 0, 0, 1])
        target = example([self.b], [2], const_image(10))
        out = run(mode, target, source, selection="all")
        np.testing.assert_array_equal(out["groundtruth_classes"], [2, 11, 13, 14])

    @parameterized.parameters(*MODES)
    def test_selection_one_pastes_exactly_one(self, mode):
        masks = [rect(16, 16, 0, i, 1, i + 2) for i in range(0, 10, 2)]
        source = example(masks, [11, 12, 13, 14, 15], const_image(200))
        target = example([self.b], [2], const_image(10))
        picked = set()
        for out in run_seeds(mode, target, source, [(i, 5) for i in range(6)], selection="one"):
            self.assertLen(out["groundtruth_classes"], 2)
            picked.add(int(out["groundtruth_classes"][1]))
        self.assertTrue(picked <= {11, 12, 13, 14, 15})
        self.assertGreater(len(picked), 1)

    @parameterized.parameters(*MODES)
    def test_random_subset_count_in_range_ordered_and_varies(self, mode):
        masks = [rect(16, 16, 0, i, 1, i + 2) for i in range(0, 16, 2)]
        source = example(masks, list(range(11, 19)), const_image(200))
        target = example([self.b], [2], const_image(10))
        counts = set()
        seeds = [(i, 9) for i in range(8)]
        for out in run_seeds(mode, target, source, seeds, max_num_pasted=5):
            pasted = out["groundtruth_classes"][1:]
            self.assertLessEqual(len(pasted), 5)
            np.testing.assert_array_equal(pasted, np.sort(pasted))
            self.assertEqual(len(set(pasted)), len(pasted))
            counts.add(len(pasted))
        self.assertGreater(len(counts), 1)

    @parameterized.parameters(*MODES)
    def test_same_seed_same_output(self, mode):
        masks = [rect(16, 16, i, 0, i + 3, 16) for i in range(0, 16, 3)]
        source = example(masks, list(range(11, 17)), const_image(200))
        one, two = run_seeds(mode, self.target, source, [(3, 4), (3, 4)])
        for key in one:
            np.testing.assert_array_equal(one[key], two[key], err_msg=key)

    @parameterized.parameters(*MODES)
    def test_other_keys_pass_through_and_per_object_keys_follow_objects(self, mode):
        target = dict(self.target, groundtruth_difficult=np.array([True, False]))
        target.update(source_id=np.array(b"img-1"), height=np.array(16), width=np.array(16))
        source = dict(self.source, groundtruth_difficult=np.array([True]))
        source["source_id"] = np.array(b"img-2")
        out = run(mode, target, source, selection="all", occluded_area_threshold=40)
        np.testing.assert_array_equal(out["groundtruth_classes"], [2, 7])
        np.testing.assert_array_equal(out["groundtruth_difficult"], [False, True])
        self.assertEqual(out["source_id"], b"img-1")
        self.assertEqual(out["height"], 16)


class CopyPasteDtypeTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.product(
        mode=MODES,
        image_dtype=(np.uint8, np.float32),
        mask_dtype=(np.uint8, np.float32, bool),
    )
    def test_dtypes_preserved(self, mode, image_dtype, mask_dtype):
        a, s = rect(8, 8, 0, 0, 4, 4), rect(8, 8, 0, 2, 4, 8)
        target = example([a], [1], const_image(10, 8, 8, image_dtype), 8, 8)
        source = example([s], [7], const_image(200, 8, 8, image_dtype), 8, 8)
        target["groundtruth_instance_masks"] = target["groundtruth_instance_masks"].astype(
            mask_dtype
        )
        source["groundtruth_instance_masks"] = source["groundtruth_instance_masks"].astype(
            mask_dtype
        )
        target["groundtruth_classes"] = target["groundtruth_classes"].astype(np.int32)
        out = run(mode, target, source, selection="all", occluded_area_threshold=1)
        for key, value in target.items():
            self.assertEqual(out[key].dtype, value.dtype, msg=key)
        np.testing.assert_array_equal(
            out["groundtruth_instance_masks"].astype(np.uint8), [rect(8, 8, 0, 0, 4, 2), s]
        )
        np.testing.assert_array_equal(out["image"][..., 0], np.where(s > 0, 200, 10))

    def test_float_source_image_into_uint8_target_rounds(self):
        target = example([], [], const_image(10, 8, 8), 8, 8)
        source = example([rect(8, 8, 0, 0, 2, 2)], [7], const_image(99.6, 8, 8, np.float32), 8, 8)
        out = run("eager", target, source, selection="all")
        self.assertEqual(out["image"].dtype, np.uint8)
        self.assertEqual(out["image"][0, 0, 0], 100)
        self.assertEqual(out["image"][5, 5, 0], 10)


def mask_conventions(masks):
    """The same 0/1 uint8 masks in each accepted convention."""
    return {
        "uint8 0/1": masks.astype(np.uint8),
        "uint8 0/255": masks.astype(np.uint8) * 255,
        "bool": masks.astype(bool),
        "float32": masks.astype(np.float32),
    }


class CopyPasteMaskConventionTest(tf.test.TestCase, parameterized.TestCase):
    """uint8 0/255 (PNG), uint8 0/1, bool and float masks give the same output."""

    @parameterized.product(mode=MODES, hw=((16, 16), (9, 12)))
    def test_every_convention_gives_identical_outputs(self, mode, hw):
        h, w = hw
        rng = np.random.default_rng(h * w)
        a, b = rect(h, w, 0, 0, h // 2, w // 2), rect(h, w, h - 3, w - 4, h, w)
        s1, s2 = rect(h, w, 0, w // 4, h // 2, 3 * w // 4), rect(h, w, h - 5, 0, h - 3, 3)
        target = example([a, b], [1, 2], rng.integers(0, 256, [h, w, 3], np.uint8), h, w)
        source = example([s1, s2], [7, 8], rng.integers(0, 256, [h, w, 3], np.uint8), h, w)
        del source["groundtruth_area"]  # pasted areas come from the mask pixel counts
        outs = {}
        for name, t_masks in mask_conventions(target["groundtruth_instance_masks"]).items():
            s_masks = mask_conventions(source["groundtruth_instance_masks"])[name]
            outs[name] = run(
                mode,
                dict(target, groundtruth_instance_masks=t_masks),
                dict(source, groundtruth_instance_masks=s_masks),
                selection="all",
                occluded_area_threshold=1,
            )
            self.assertEqual(outs[name]["groundtruth_instance_masks"].dtype, t_masks.dtype)
        ref = outs["uint8 0/1"]
        visible = a & (1 - s1)
        np.testing.assert_array_equal(ref["groundtruth_classes"], [1, 2, 7, 8])
        np.testing.assert_array_equal(ref["groundtruth_instance_masks"], [visible, b, s1, s2])
        np.testing.assert_array_equal(ref["groundtruth_boxes"][0], tight(visible))
        np.testing.assert_array_equal(
            ref["groundtruth_area"], [visible.sum(), b.sum(), s1.sum(), s2.sum()]
        )
        union = (s1 | s2).astype(bool)[..., None]
        np.testing.assert_array_equal(
            ref["image"], np.where(union, source["image"], target["image"])
        )
        for name, out in outs.items():
            for key in ref:
                np.testing.assert_array_equal(
                    out[key].astype(ref[key].dtype), ref[key], err_msg=f"{name}: {key}"
                )
        # uint8 0/255 masks come out 0/1 (also when nothing is pasted).
        empty = example([], [], const_image(0, h, w), h, w)
        t255 = dict(
            target, groundtruth_instance_masks=mask_conventions(np.stack([a, b]))["uint8 0/255"]
        )
        unchanged = run(mode, t255, empty, selection="all")
        np.testing.assert_array_equal(unchanged["groundtruth_instance_masks"], [a, b])


class CopyPasteHelpersTest(tf.test.TestCase):
    def test_select_objects_respects_pasteable_and_cap(self):
        pasteable = tf.constant([True, False, True, True, False, True])
        seed = tf.constant([1, 1], tf.int64)
        all_ = cp.select_objects(pasteable, seed, "all", 3).numpy()
        np.testing.assert_array_equal(all_, [0, 2, 3])
        for i in range(10):
            sub = cp.select_objects(pasteable, tf.constant([i, 0]), "random_subset", 2).numpy()
            self.assertLessEqual(len(sub), 2)
            self.assertTrue(set(sub) <= {0, 2, 3, 5})
        none = cp.select_objects(tf.zeros([0], tf.bool), seed, "one", 3)
        self.assertEqual(none.shape, (0,))


class CopyPasteValidationTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.target = example([rect(8, 8, 0, 0, 2, 2)], [1], const_image(1, 8, 8), 8, 8)
        self.source = example([rect(8, 8, 0, 0, 2, 2)], [1], const_image(2, 8, 8), 8, 8)

    def test_unknown_selection(self):
        with self.assertRaisesRegex(ValueError, "selection"):
            cp.copy_paste(self.target, self.source, [0, 0], selection="some")

    def test_per_object_key_missing_from_source(self):
        target = dict(self.target, groundtruth_difficult=np.array([False]))
        with self.assertRaisesRegex(ValueError, "groundtruth_difficult"):
            cp.copy_paste(target, self.source, [0, 0])

    def test_missing_required_key(self):
        source = dict(self.source)
        del source["groundtruth_is_crowd"]
        with self.assertRaisesRegex(ValueError, "source lacks"):
            cp.copy_paste(self.target, source, [0, 0])

    def test_image_size_mismatch(self):
        source = example([rect(4, 4, 0, 0, 2, 2)], [1], const_image(2, 4, 4), 4, 4)
        with self.assertRaisesRegex(ValueError, "source image"):
            cp.copy_paste(self.target, source, [0, 0])

    def test_negative_sigma(self):
        with self.assertRaisesRegex(ValueError, "sigma"):
            cp.copy_paste(self.target, self.source, [0, 0], blend_sigma=-1.0)

    def test_negative_thresholds_and_max_num_instances(self):
        for kwargs in (
            {"occluded_box_threshold": -1.0},
            {"occluded_area_threshold": float("nan")},
            {"max_num_instances": -1},
        ):
            with self.assertRaisesRegex(ValueError, next(iter(kwargs))):
                cp.copy_paste(self.target, self.source, [0, 0], **kwargs)


if __name__ == "__main__":
    tf.test.main()

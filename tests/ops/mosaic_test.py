"""Tests of tfcp.ops.mosaic on hand-checkable solid-colour scenes, in three execution modes.

Most tests force the draws (`apply_mosaic` with a given centre, window offset and flip); a
reference that builds the whole 2S x 2S canvas checks the op on random sizes and draws.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfcp.ops import mosaic as mo

MODES = ("eager", "dataset", "function")
GRAY = 128
COLORS = (10, 20, 30, 40)


def rect(h, w, y0, x0, y1, x1):
    m = np.zeros([h, w], np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def example(color, h, w, rects=(), classes=None, crowd=None, image=None):
    """A decoded example: solid image (or `image`), rectangle masks with pixel `rects`."""
    n = len(rects)
    masks = np.stack([rect(h, w, *r) for r in rects]) if n else np.zeros([0, h, w], np.uint8)
    boxes = np.asarray(rects, np.float32).reshape([n, 4]) / [h, w, h, w]
    return {
        "source_id": str(color),
        "height": np.int32(h),
        "width": np.int32(w),
        "image": np.full([h, w, 3], color, np.uint8) if image is None else image,
        "groundtruth_boxes": boxes.astype(np.float32),
        "groundtruth_classes": np.asarray(classes or [color] * n, np.int64).reshape([n]),
        "groundtruth_is_crowd": np.asarray(crowd or [False] * n, bool).reshape([n]),
        "groundtruth_area": masks.sum((1, 2)).astype(np.float32),
        "groundtruth_difficult": np.arange(n) % 2 == 1,
        "groundtruth_instance_masks": masks,
    }


def params(center, offset, flip=False, jitter_seed=(5, 6)):
    return {
        "center": np.asarray(center, np.int32),
        "offset": np.asarray(offset, np.int32),
        "flip": np.asarray(flip),
        "jitter_seed": np.asarray(jitter_seed, np.int64),
    }


def _spec(value):
    value = tf.convert_to_tensor(value)
    return tf.TensorSpec([None] * value.shape.rank, value.dtype)


_TRACED = {}


def run_many(mode, examples, draws, size=16, **kwargs):
    """apply_mosaic (each draw a params dict) or mosaic (each draw a seed) for each of `draws`:
    eagerly, in one Dataset.map, or in one tf.function with None dims (traced once).
    Returns a list of (dict of numpy arrays, int num_dropped)."""
    examples = [{k: tf.constant(v) for k, v in ex.items()} for ex in examples]
    if isinstance(draws[0], dict):
        draws = [{k: tf.constant(v) for k, v in d.items()} for d in draws]
        fn = lambda exs, d: mo.apply_mosaic(exs, d, output_size=size, **kwargs)
        draws_spec = {k: tf.TensorSpec(v.shape, v.dtype) for k, v in draws[0].items()}
        stacked = {k: tf.stack([d[k] for d in draws]) for k in draws[0]}
    else:
        draws = [tf.constant(d, tf.int64) for d in draws]
        fn = lambda exs, s: mo.mosaic(exs, s, output_size=size, **kwargs)
        draws_spec = tf.TensorSpec([2], tf.int64)
        stacked = tf.stack(draws)
    if mode == "eager":
        outs = [fn(examples, d) for d in draws]
    elif mode == "dataset":
        ds = tf.data.Dataset.from_tensor_slices(stacked)
        outs = list(ds.map(lambda d: fn(examples, d)))
    else:
        spec = [{k: _spec(v) for k, v in ex.items()} for ex in examples]
        key = (repr(spec), repr(draws_spec), size, repr(sorted(kwargs.items())))
        if key not in _TRACED:  # None dims: one trace serves every test with these options
            _TRACED[key] = tf.function(fn, input_signature=[spec, draws_spec])
        traced = _TRACED[key]
        outs = [traced(examples, d) for d in draws]
        assert outs[0][0]["image"].shape == (size, size, 3)  # static despite the None dims
    return [({k: v.numpy() for k, v in out.items()}, int(dropped)) for out, dropped in outs]


def run(mode, examples, draws, size=16, **kwargs):
    """`run_many` for one draw."""
    return run_many(mode, examples, [draws], size, **kwargs)[0]


def four_squares():
    """16x16 images coloured 10/20/30/40, one 4x4 square each inside the part the window
    centre (16, 16), offset (8, 8) shows (each image's 8x8 corner at the centre)."""
    return [
        example(10, 16, 16, [(9, 10, 13, 14)]),  # out rows 1-4, cols 2-5
        example(20, 16, 16, [(10, 1, 14, 5)]),  # out rows 2-5, cols 9-12
        example(30, 16, 16, [(0, 12, 4, 16)]),  # out rows 8-11, cols 4-7
        example(40, 16, 16, [(3, 3, 7, 7)]),  # out rows 11-14, cols 11-14
    ]


EXPECTED_RECTS = [(1, 2, 5, 6), (2, 9, 6, 13), (8, 4, 12, 8), (11, 11, 15, 15)]


class MosaicGeometryTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(*MODES)
    def test_quadrants_and_objects_land_with_their_images(self, mode):
        out, dropped = run(mode, four_squares(), params((16, 16), (8, 8)))
        img = out["image"]
        self.assertEqual(img.dtype, np.uint8)
        for color, (rows, cols) in zip(COLORS, [(0, 0), (0, 8), (8, 0), (8, 8)], strict=True):
            np.testing.assert_array_equal(img[rows : rows + 8, cols : cols + 8], color)
        np.testing.assert_array_equal(out["groundtruth_classes"], COLORS)
        masks = out["groundtruth_instance_masks"]
        self.assertEqual(masks.dtype, np.uint8)
        for mask, r in zip(masks, EXPECTED_RECTS, strict=True):
            np.testing.assert_array_equal(mask, rect(16, 16, *r))
        np.testing.assert_array_equal(out["groundtruth_boxes"], np.array(EXPECTED_RECTS) / 16)
        np.testing.assert_array_equal(out["groundtruth_area"], [16.0] * 4)
        np.testing.assert_array_equal(out["groundtruth_is_crowd"], [False] * 4)
        np.testing.assert_array_equal(out["groundtruth_difficult"], [False] * 4)
        self.assertEqual((out["height"], out["width"], out["source_id"]), (16, 16, b"10"))
        self.assertEqual(dropped, 0)

    @parameterized.parameters(*MODES)
    def test_off_centre_window_and_gray_canvas(self, mode):
        # Centre (12, 20), window (4, 6): the centre is at output (8, 14). Image 0 covers canvas
        # rows [-4, 12) and columns [4, 20): output rows 0-7, columns 0-13; image 3 starts at
        # the centre. Image 2 is 4x4 (canvas rows 12-15, columns 16-19): the rest of the
        # bottom-left quadrant is gray.
        exs = four_squares()
        exs[2] = example(30, 4, 4)
        out, _ = run(mode, exs, params((12, 20), (4, 6)))
        img = out["image"][..., 0]
        np.testing.assert_array_equal(img[:8, :14], 10)
        np.testing.assert_array_equal(img[:8, 14:], 20)
        np.testing.assert_array_equal(img[8:12, 10:14], 30)
        np.testing.assert_array_equal(img[12:, :14], GRAY)
        np.testing.assert_array_equal(img[8:12, :10], GRAY)
        np.testing.assert_array_equal(img[8:, 14:], 40)

    @parameterized.parameters(*MODES)
    def test_crop_clips_boxes_and_drops_small_and_outside_objects(self, mode):
        exs = four_squares()
        # Image 0's window part is its rows/columns 8-15 (output 0-7).
        exs[0] = example(
            10,
            16,
            16,
            [(6, 4, 12, 12), (0, 12, 9, 16), (0, 0, 4, 4), (7, 14, 9, 16)],
            classes=[1, 2, 3, 4],
            crowd=[False, False, False, True],
        )
        out, dropped = run(mode, exs, params((16, 16), (8, 8)), min_visible_area=5)
        # 1: cut to rows 8-11, cols 8-11 (16 px); 2: one visible row, 4 px < 5, dropped;
        # 3: entirely outside, dropped; 4 (crowd): 2 px < 5, dropped.
        np.testing.assert_array_equal(out["groundtruth_classes"], [1, 20, 30, 40])
        np.testing.assert_array_equal(out["groundtruth_boxes"][0], [0, 0, 4 / 16, 4 / 16])
        np.testing.assert_array_equal(
            out["groundtruth_instance_masks"][0], rect(16, 16, 0, 0, 4, 4)
        )
        np.testing.assert_array_equal(out["groundtruth_area"], [16.0] * 4)
        np.testing.assert_array_equal(out["groundtruth_difficult"], [False] * 4)
        self.assertEqual(dropped, 3)
        out, dropped = run(mode, exs, params((16, 16), (8, 8)), min_visible_area=2)
        np.testing.assert_array_equal(out["groundtruth_classes"], [1, 2, 4, 20, 30, 40])
        np.testing.assert_array_equal(out["groundtruth_is_crowd"], [0, 0, 1, 0, 0, 0])
        np.testing.assert_array_equal(out["groundtruth_difficult"], [0, 1, 1, 0, 0, 0])
        np.testing.assert_array_equal(out["groundtruth_boxes"][1] * 16, [0, 4, 1, 8])
        np.testing.assert_array_equal(out["groundtruth_area"][:3], [16.0, 4.0, 2.0])
        self.assertEqual(dropped, 1)

    @parameterized.parameters(*MODES)
    def test_corner_centre_shows_only_image_3_and_counts_the_others(self, mode):
        # center_range (0, 0): centre (0, 0), the only window is (0, 0): images 0-2 lie
        # outside the canvas and image 3 fills the output unchanged (s = 1).
        exs = four_squares()
        exs[0] = example(10, 16, 16, [(0, 0, 16, 16), (1, 1, 2, 2)])
        exs[3] = example(
            0,
            16,
            16,
            [(3, 3, 7, 7)],
            classes=[9],
            image=np.arange(768).reshape([16, 16, 3]).astype(np.uint8),
        )
        out, dropped = run(mode, exs, (1, 2), center_range=(0.0, 0.0), flip_prob=0.0)
        np.testing.assert_array_equal(out["image"], exs[3]["image"])
        np.testing.assert_array_equal(
            out["groundtruth_instance_masks"], exs[3]["groundtruth_instance_masks"]
        )
        np.testing.assert_array_equal(out["groundtruth_classes"], [9])
        self.assertEqual(dropped, 4)

    @parameterized.parameters(*MODES)
    def test_scale_comes_from_x0_and_sizes_differ(self, mode):
        # s = 16 / max(32, 16) = 0.5: x_0 32x16 -> 16x8, x_1 16x32 -> 8x16, x_2 64x64 ->
        # 32x32, x_3 8x8 -> 4x4. Centre (16, 16), window (8, 8).
        exs = [
            example(10, 32, 16, [(16, 0, 32, 16)]),  # resized rows 8-15 -> output 0-7, cols 0-7
            example(20, 16, 32, [(2, 2, 6, 10)]),  # resized (1, 1, 3, 5) -> (1, 9, 3, 13)
            example(30, 64, 64, [(0, 40, 20, 64)]),  # resized (0, 20, 10, 32): cut to (8, 0, 16, 8)
            example(40, 8, 8, [(0, 0, 4, 4)]),  # resized (0, 0, 2, 2) -> (8, 8, 10, 10)
        ]
        out, dropped = run(mode, exs, params((16, 16), (8, 8)))
        img = out["image"][..., 0]
        np.testing.assert_array_equal(img[:8, :8], 10)
        np.testing.assert_array_equal(img[:8, 8:], 20)
        np.testing.assert_array_equal(img[8:, :8], 30)
        np.testing.assert_array_equal(img[8:12, 8:12], 40)
        np.testing.assert_array_equal(img[12:, 8:], GRAY)
        np.testing.assert_array_equal(img[8:12, 12:], GRAY)
        expected = [(0, 0, 8, 8), (1, 9, 3, 13), (8, 0, 16, 8), (8, 8, 10, 10)]
        np.testing.assert_array_equal(out["groundtruth_boxes"] * 16, expected)
        for mask, r in zip(out["groundtruth_instance_masks"], expected, strict=True):
            np.testing.assert_array_equal(mask, rect(16, 16, *r))
        np.testing.assert_array_equal(out["groundtruth_area"], [64, 8, 64, 4])
        self.assertEqual(dropped, 0)

    @parameterized.parameters(*MODES)
    def test_flip_mirrors_image_masks_and_boxes(self, mode):
        exs = four_squares()
        draws = [params((13, 18), (5, 9)), params((13, 18), (5, 9), flip=True)]
        (plain, _), (flipped, dropped) = run_many(mode, exs, draws)
        np.testing.assert_array_equal(flipped["image"], plain["image"][:, ::-1])
        np.testing.assert_array_equal(
            flipped["groundtruth_instance_masks"], plain["groundtruth_instance_masks"][:, :, ::-1]
        )
        ymin, xmin, ymax, xmax = plain["groundtruth_boxes"].T
        mirrored = np.stack([ymin, 1 - xmax, ymax, 1 - xmin], 1)
        np.testing.assert_allclose(flipped["groundtruth_boxes"], mirrored, atol=1e-6)
        np.testing.assert_array_equal(flipped["groundtruth_classes"], plain["groundtruth_classes"])
        self.assertEqual(dropped, 0)

    @parameterized.parameters(*MODES)
    def test_color_jitter_changes_pixels_not_geometry(self, mode):
        exs = four_squares()
        plain, _ = run(mode, exs, params((16, 16), (8, 8)))
        jittered, _ = run(mode, exs, params((16, 16), (8, 8)), brightness=0.5, hue=0.2)
        self.assertFalse(np.array_equal(jittered["image"], plain["image"]))
        for key in plain:
            if key != "image":
                np.testing.assert_array_equal(jittered[key], plain[key], err_msg=key)

    @parameterized.parameters(*MODES)
    def test_same_seed_same_output_and_modes_agree(self, mode):
        rng = np.random.default_rng(1)
        exs = [
            example(
                c, h, w, [(1, 2, h - 1, w - 3)], image=rng.integers(0, 256, [h, w, 3], np.uint8)
            )
            for c, (h, w) in zip(COLORS, [(20, 14), (9, 30), (16, 16), (40, 7)], strict=True)
        ]
        kwargs = {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.05}
        (a, da), (b, db), (c, _) = run_many(mode, exs, [(3, 4), (3, 4), (4, 4)], **kwargs)
        ref, dref = run("eager", exs, (3, 4), **kwargs)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
            np.testing.assert_array_equal(a[key], ref[key], err_msg=key)
        self.assertEqual((da, db), (dref, dref))
        self.assertFalse(np.array_equal(a["image"], c["image"]))


def reference(examples, p, size):
    """The mosaic by the book: full resizes, the whole 2S x 2S canvas, crop, flip."""
    h0, w0 = examples[0]["image"].shape[:2]
    s = min(size / h0, size / w0)
    margin = 4 * size  # room for the parts of the images outside the canvas
    full = 2 * size + 2 * margin
    canvas = np.full([full, full, 3], GRAY, np.float32)
    layers = []
    cy, cx = p["center"]
    for i, ex in enumerate(examples):
        h, w = ex["image"].shape[:2]
        nh, nw = max(int(np.round(s * h)), 1), max(int(np.round(s * w)), 1)
        top = margin + (cy - nh if i < 2 else cy)
        left = margin + (cx - nw if i % 2 == 0 else cx)
        canvas[top : top + nh, left : left + nw] = tf.image.resize(ex["image"], [nh, nw])
        masks = ex["groundtruth_instance_masks"][..., None]
        layer = np.zeros([len(masks), full, full], np.uint8)
        resized = tf.image.resize(masks, [nh, nw], "nearest").numpy()[..., 0]
        layer[:, top : top + nh, left : left + nw] = resized
        layers.append(layer)
    y0, x0 = p["offset"] + margin
    image = canvas[y0 : y0 + size, x0 : x0 + size]
    masks = np.concatenate(layers)[:, y0 : y0 + size, x0 : x0 + size]
    if p["flip"]:
        image, masks = image[:, ::-1], masks[:, :, ::-1]
    return np.round(image).astype(np.uint8), masks[masks.sum((1, 2)) > 0]


class MosaicReferenceTest(tf.test.TestCase):
    def test_matches_the_materialized_canvas(self):
        rng = np.random.default_rng(7)
        size = 24
        for trial in range(6):
            exs = []
            for i in range(4):
                h, w = rng.integers(5, 60, 2)
                rects = []
                for _ in range(rng.integers(0, 4)):
                    y0, x0 = rng.integers(0, h - 1), rng.integers(0, w - 1)
                    rects.append((y0, x0, rng.integers(y0 + 1, h + 1), rng.integers(x0 + 1, w + 1)))
                image = rng.integers(0, 256, [h, w, 3], np.uint8)
                exs.append(example(COLORS[i], h, w, rects, image=image))
            p = {
                k: v.numpy()
                for k, v in mo.mosaic_params(
                    tf.constant([trial, 9]), output_size=size, center_range=(0.3, 1.7)
                ).items()
            }
            out, dropped = run("eager", exs, p, size=size)
            ref_image, ref_masks = reference(exs, p, size)
            np.testing.assert_array_equal(out["image"], ref_image, err_msg=str(trial))
            np.testing.assert_array_equal(out["groundtruth_instance_masks"], ref_masks)
            for box, mask in zip(out["groundtruth_boxes"] * size, ref_masks, strict=True):
                ys, xs = np.nonzero(mask)
                np.testing.assert_allclose(box, [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
            n_in = sum(len(ex["groundtruth_classes"]) for ex in exs)
            self.assertEqual(dropped, n_in - len(ref_masks))

    def test_draws_keep_the_window_in_the_canvas_around_the_centre(self):
        offsets = set()
        for s in range(40):
            p = mo.mosaic_params(tf.constant([s, 1]), output_size=(16, 20), flip_prob=0.5)
            (cy, cx), (y0, x0) = p["center"].numpy(), p["offset"].numpy()
            self.assertTrue(8 <= cy <= 24 and 10 <= cx <= 30, (cy, cx))
            self.assertTrue(0 <= y0 <= 16 and y0 <= cy <= y0 + 16, (cy, y0))
            self.assertTrue(0 <= x0 <= 20 and x0 <= cx <= x0 + 20, (cx, x0))
            offsets.add((int(y0), int(x0), bool(p["flip"])))
        self.assertGreater(len(offsets), 20)
        never = mo.mosaic_params(tf.constant([1, 1]), output_size=8, flip_prob=0.0)
        self.assertFalse(never["flip"])

    def test_mosaic_is_apply_mosaic_of_its_draws(self):
        exs = four_squares()
        seed = tf.constant([11, 12], tf.int64)
        out, dropped = mo.mosaic(exs, seed, output_size=16, brightness=0.2)
        p = mo.mosaic_params(seed, output_size=16)
        again, dropped_again = mo.apply_mosaic(exs, p, output_size=16, brightness=0.2)
        for key in out:
            self.assertAllEqual(out[key], again[key], msg=key)
        self.assertEqual(int(dropped), int(dropped_again))

    def test_empty_examples_and_extra_per_object_keys(self):
        exs = [example(c, 16, 16) for c in COLORS]
        for ex in exs:
            ex["groundtruth_track_id"] = np.zeros([0], np.int32)
        exs[3] = example(40, 16, 16, [(0, 0, 4, 4)])
        exs[3]["groundtruth_track_id"] = np.array([7], np.int64)  # cast to x_0's int32
        out, dropped = mo.apply_mosaic(exs, params((16, 16), (8, 8)), output_size=16)
        self.assertAllEqual(out["groundtruth_track_id"], [7])
        self.assertEqual(out["groundtruth_track_id"].dtype, tf.int32)
        self.assertEqual(out["groundtruth_instance_masks"].shape, (1, 16, 16))
        self.assertEqual(int(dropped), 0)

    def test_validation(self):
        exs = four_squares()
        with self.assertRaisesRegex(ValueError, "exactly 4"):
            mo.mosaic(exs[:3], [1, 2], output_size=16)
        with self.assertRaisesRegex(ValueError, "center_range"):
            mo.mosaic(exs, [1, 2], output_size=16, center_range=(0.5, 2.5))
        bad = dict(exs[2])
        del bad["groundtruth_difficult"]
        with self.assertRaisesRegex(ValueError, "example 2 lacks"):
            mo.mosaic([*exs[:2], bad, exs[3]], [1, 2], output_size=16)
        with self.assertRaisesRegex(ValueError, "hue"):
            mo.mosaic(exs, [1, 2], output_size=16, hue=0.7)


if __name__ == "__main__":
    tf.test.main()

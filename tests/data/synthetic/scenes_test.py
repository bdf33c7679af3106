"""Tests for tfcp.data.synthetic.scenes and tfcp.data.synthetic.shapes."""

from __future__ import annotations

import numpy as np
import pytest

from tfcp.data.synthetic import scenes as syn_scenes
from tfcp.data.synthetic import shapes as syn_shapes


def _square(h, w, y0, x0, size):
    m = np.zeros((h, w), bool)
    m[y0 : y0 + size, x0 : x0 + size] = True
    return m


def test_visible_parts_later_objects_occlude_earlier_ones():
    back = _square(10, 10, 0, 0, 6)  # 36 px
    front = _square(10, 10, 3, 3, 4)  # 16 px, covers back[3:6, 3:6] (9 px)
    keep, masks = syn_scenes.visible_parts([back, front], 1, 0.0)
    np.testing.assert_array_equal(keep, [0, 1])
    assert masks.dtype == np.uint8 and masks.shape == (2, 10, 10)
    expected_back = back.copy()
    expected_back[3:6, 3:6] = False
    np.testing.assert_array_equal(masks[0], expected_back)
    np.testing.assert_array_equal(masks[1], front)
    assert masks[0].sum() == 27


def test_visible_parts_drops_tiny_remainders_and_dropped_objects_still_occlude():
    back = _square(10, 10, 0, 0, 4)  # 16 px, 12 of them covered by `middle`
    middle = _square(10, 10, 1, 1, 4)  # 16 px, 15 covered by `front` -> dropped
    front = _square(10, 10, 1, 1, 5)
    front[1, 1] = False
    keep, masks = syn_scenes.visible_parts([back, middle, front], 2, 0.0)
    np.testing.assert_array_equal(keep, [0, 2])
    # `back` keeps row 0 and column 0 (7 px): `middle` is dropped but its pixels are painted.
    expected = np.zeros((10, 10), np.uint8)
    expected[0, :4] = 1
    expected[:4, 0] = 1
    np.testing.assert_array_equal(masks[0], expected)
    keep, _ = syn_scenes.visible_parts([back, middle, front], 1, 0.5)
    np.testing.assert_array_equal(keep, [2])  # 7/16 and 1/16 visible: below half


def test_render_scene_contract():
    classes = [1, 3, 13, 18]
    image, masks, ids = syn_scenes.render_scene(
        np.random.default_rng(0), 96, 128, classes, num_instances=8
    )
    assert image.shape == (96, 128, 3) and image.dtype == np.uint8
    assert masks.dtype == np.uint8 and masks.shape[1:] == (96, 128) and len(masks) >= 1
    assert ids.dtype == np.int64 and ids.shape == (len(masks),)
    assert set(ids.tolist()) <= set(classes)
    assert set(np.unique(masks).tolist()) <= {0, 1}
    assert masks.sum(axis=0).max() == 1  # visible masks are disjoint
    assert (masks.sum(axis=(1, 2)) >= 20).all()


def test_generate_scene_metadata_is_consistent():
    for i in range(6):
        scene = syn_scenes.generate_scene(
            np.random.default_rng(i), 120, 160, 8, crowd=True, num_instances=6
        )
        n = len(scene.masks)
        for field in (scene.class_indices, scene.is_crowd, scene.truncated, scene.full_areas):
            assert field.shape == (n,)
        visible = scene.masks.sum(axis=(1, 2))
        assert (visible <= scene.full_areas).all()
        assert (visible >= 0.05 * scene.full_areas).all()
        assert n + scene.num_dropped == 7  # 6 objects + 1 crowd drawn
        assert scene.is_crowd.sum() <= 1
        assert visible[-1] == scene.full_areas[-1]  # the front object is never occluded


def test_scenes_cover_coco_size_buckets_truncation_and_occlusion():
    areas, truncated, occluded = [], [], 0
    for i in range(12):
        scene = syn_scenes.generate_scene(np.random.default_rng(i), 480, 640, 8)
        visible = scene.masks.sum(axis=(1, 2))
        areas += visible.tolist()
        truncated += scene.truncated.tolist()
        occluded += int((visible < scene.full_areas).sum())
    areas = np.array(areas)
    assert (areas < 32**2).any() and ((areas >= 32**2) & (areas < 96**2)).any()
    assert (areas >= 96**2).any()
    assert any(truncated) and not all(truncated)
    assert occluded > 0


def test_generate_scene_is_deterministic_per_generator_state():
    a = syn_scenes.generate_scene(np.random.default_rng(7), 64, 80, 8, crowd=True)
    b = syn_scenes.generate_scene(np.random.default_rng(7), 64, 80, 8, crowd=True)
    c = syn_scenes.generate_scene(np.random.default_rng(8), 64, 80, 8, crowd=True)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.class_indices, b.class_indices)
    assert not np.array_equal(a.image, c.image)


def test_generate_scene_draws_the_given_class_indices_back_to_front():
    given = [5, 0, 7, 2, 3]
    kept = 0
    for i in range(4):
        scene = syn_scenes.generate_scene(
            np.random.default_rng(i), 96, 128, 8, class_indices=np.array(given)
        )
        order = [given.index(k) for k in scene.class_indices.tolist()]
        assert order == sorted(order)  # a subsequence: drawing order, occluded ones dropped
        assert scene.num_dropped == len(given) - len(scene.masks)
        assert not scene.is_crowd.any()
        kept += len(scene.masks)
    assert kept >= 10
    empty = syn_scenes.generate_scene(np.random.default_rng(0), 40, 50, 3, class_indices=[])
    assert empty.masks.shape == (0, 40, 50) and empty.num_dropped == 0
    with pytest.raises(ValueError, match=r"class_indices must be in \[0, 8\)"):
        syn_scenes.generate_scene(np.random.default_rng(0), 40, 50, 8, class_indices=[8])
    with pytest.raises(ValueError, match="excludes num_instances and crowd"):
        syn_scenes.generate_scene(
            np.random.default_rng(0), 40, 50, 8, class_indices=[1], crowd=True
        )


def test_empty_scene_and_bad_arguments():
    scene = syn_scenes.generate_scene(np.random.default_rng(0), 40, 50, 3, num_instances=0)
    assert scene.masks.shape == (0, 40, 50) and scene.class_indices.shape == (0,)
    with pytest.raises(ValueError, match="at least 16x16"):
        syn_scenes.generate_scene(np.random.default_rng(0), 8, 50, 3)
    with pytest.raises(ValueError, match="num_classes"):
        syn_scenes.generate_scene(np.random.default_rng(0), 40, 50, 0)


def test_image_shape_aspects_and_override():
    shapes = {syn_scenes.image_shape(syn_scenes.image_rng(0, i), 256, None) for i in range(40)}
    assert shapes == {(192, 256), (256, 192), (256, 256)}
    rng = syn_scenes.image_rng(0, 1)
    assert syn_scenes.image_shape(rng, 256, (480, 640)) == (480, 640)
    with pytest.raises(ValueError, match="seed"):
        syn_scenes.image_rng(-1)


def test_class_styles_are_distinct_for_twenty_classes():
    styles = [syn_shapes.class_style(i) for i in range(20)]
    keys = {(s.shape, s.texture, tuple(np.round(s.color).astype(int))) for s in styles}
    assert len(keys) == 20
    assert len({s.shape for s in styles[:8]}) == 8  # COCO subset: one shape family each
    hues = [tuple(np.round(s.color).astype(int)) for s in styles[:8]]
    assert len(set(hues)) == 8


def test_draw_mask_area_matches_requested_size_and_flags_border_crossing():
    for shape in syn_shapes.SHAPES:
        scale = 30.0 / np.sqrt(syn_shapes.unit_area(shape))  # area 900 px
        pose = syn_shapes.Pose(100.0, 100.0, scale, 1.0, 1.0, 0.3)
        mask, outside = syn_shapes.draw_mask(shape, pose, 200, 200)
        assert not outside
        assert abs(int(mask.sum()) - 900) < 0.1 * 900, shape
        _, outside = syn_shapes.draw_mask(shape, pose._replace(cx=2.0), 200, 200)
        assert outside, shape

"""Property tests of tfcp.ops.copy_paste on random small scenes (hypothesis).

Target objects have classes 1-9 and source objects 11-19, so each output object can be traced
back to its side: kept target objects come first, then pasted source objects. Scenes draw the
paper's occlusion rule alone or with MMDetection's box rule (`occluded_box_threshold`), and an
instance cap (`max_num_instances`) or none; masks come in every accepted convention.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcp.ops import copy_paste as cp

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


def tight_px(mask):
    """int [4] pixel bounds [row_min, col_min, row_max + 1, col_max + 1] of a non-empty mask."""
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1])


def tight(mask):
    h, w = mask.shape
    y0, x0, y1, x1 = tight_px(mask)
    return np.array([y0 / h, x0 / w, y1 / h, x1 / w], np.float32)


@st.composite
def scenes(draw):
    h = draw(st.integers(4, 20))
    w = draw(st.integers(4, 20))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)

    def side(n, first_class, allow_empty):
        masks = np.zeros([n, h, w], np.uint8)
        for i in range(n):
            kind = rng.integers(3 if allow_empty else 2)
            if kind == 0:  # rectangle
                y0, x0 = rng.integers(h), rng.integers(w)
                masks[i, y0 : rng.integers(y0 + 1, h + 1), x0 : rng.integers(x0 + 1, w + 1)] = 1
            elif kind == 1:  # random pixels, at least one
                masks[i] = rng.random([h, w]) < 0.3
                masks[i, rng.integers(h), rng.integers(w)] = 1
        boxes = np.array(
            [tight(m) if m.any() else [0.1, 0.1, 0.2, 0.2] for m in masks], np.float32
        ).reshape([n, 4])
        # Some target boxes are loose (not tight): unoccluded ones must stay exactly as given.
        loose = rng.random(n) < 0.3
        boxes[loose] = np.clip(boxes[loose] + [-0.05, -0.05, 0.05, 0.05], 0, 1)
        return {
            "image": rng.integers(0, 256, [h, w, 3], dtype=np.uint8),
            "groundtruth_boxes": boxes,
            "groundtruth_classes": rng.integers(first_class, first_class + 9, n).astype(np.int64),
            "groundtruth_instance_masks": masks,
            "groundtruth_is_crowd": rng.random(n) < 0.2,
            "groundtruth_area": masks.sum((1, 2)).astype(np.float32) + 0.5,
        }

    target = side(draw(st.integers(0, 5)), 1, allow_empty=False)
    source = side(draw(st.integers(0, 5)), 11, allow_empty=True)
    kwargs = {
        "selection": draw(st.sampled_from(cp.SELECTIONS)),
        "occluded_area_threshold": float(draw(st.integers(0, 12))),
        "occluded_box_threshold": draw(st.sampled_from([None, 0.0, 1.0, 2.5, 4.0])),
        "paste_crowd": draw(st.booleans()),
        "max_num_pasted": draw(st.integers(0, 6)),
        "max_num_instances": draw(st.sampled_from([None, 0, 2, 4, 6, 8])),
    }
    convention = draw(st.sampled_from(["uint8", "uint8_255", "bool", "float32"]))
    return target, source, (seed % 1000, seed // 1000), kwargs, convention


def with_mask_convention(example, convention):
    """The example with its 0/1 uint8 masks as uint8 0/255, bool or float32 (or as is)."""
    masks = example["groundtruth_instance_masks"]
    converted = {
        "uint8": masks,
        "uint8_255": masks * np.uint8(255),
        "bool": masks.astype(bool),
        "float32": masks.astype(np.float32),
    }[convention]
    return dict(example, groundtruth_instance_masks=converted)


def run(target, source, seed, kwargs, convention="uint8"):
    """The op on the scene with its masks in `convention`; output masks as uint8 0/1."""
    out = cp.copy_paste(
        with_mask_convention(target, convention),
        with_mask_convention(source, convention),
        tf.constant(seed, tf.int64),
        **kwargs,
    )
    out = {k: v.numpy() for k, v in out.items()}
    masks = out["groundtruth_instance_masks"]
    assert (
        masks.dtype == with_mask_convention(target, convention)["groundtruth_instance_masks"].dtype
    )
    assert np.all((masks == 0) | (masks == 1)), "output masks hold 0/1"
    out["groundtruth_instance_masks"] = masks.astype(np.uint8)
    return out


def reference(target, source, chosen, threshold, box_threshold=None):
    """NumPy statement of the contract, given the chosen source objects."""
    masks = target["groundtruth_instance_masks"].astype(bool)
    union = source["groundtruth_instance_masks"][chosen].astype(bool).any(0)
    if not len(chosen):
        return target
    h, w = union.shape
    hw = np.array([h, w, h, w], np.float32)
    out = {k: [] for k in target if k != "image"}
    for i, m in enumerate(masks):
        vis = m & ~union
        occluded = vis.sum() < m.sum()
        if vis.sum() == 0:
            continue
        if occluded and vis.sum() < threshold:
            # MMDetection's rule: kept when no edge of the visible tight box moved more than
            # box_threshold pixels from the given box.
            if box_threshold is None:
                continue
            given = target["groundtruth_boxes"][i].astype(np.float32) * hw
            shift = np.abs(tight_px(vis).astype(np.float32) - given)
            if not np.all(shift <= box_threshold):
                continue
        out["groundtruth_instance_masks"].append(vis.astype(np.uint8))
        out["groundtruth_boxes"].append(tight(vis) if occluded else target["groundtruth_boxes"][i])
        out["groundtruth_area"].append(vis.sum() if occluded else target["groundtruth_area"][i])
        for k in ("groundtruth_classes", "groundtruth_is_crowd"):
            out[k].append(target[k][i])
    for j in chosen:
        for k in out:
            out[k].append(source[k][j])
    result = {k: np.array(v, target[k].dtype) for k, v in out.items()}
    result["groundtruth_instance_masks"] = result["groundtruth_instance_masks"].reshape([-1, h, w])
    result["groundtruth_boxes"] = result["groundtruth_boxes"].reshape([-1, 4])
    result["image"] = np.where(union[..., None], source["image"], target["image"])
    return result


@SETTINGS
@given(scenes())
def test_matches_reference_given_the_pasted_objects(scene):
    target, source, seed, kwargs, convention = scene
    out = run(target, source, seed, kwargs, convention)
    classes = out["groundtruth_classes"]
    num_pasted = int((classes > 10).sum())
    # Pasted objects form the tail; recover which source objects they are from the order.
    pasteable = source["groundtruth_instance_masks"].any((1, 2))
    if not kwargs["paste_crowd"]:
        pasteable &= ~source["groundtruth_is_crowd"]
    candidates = np.nonzero(pasteable)[0]
    pasted_masks = out["groundtruth_instance_masks"][len(classes) - num_pasted :]
    chosen = []
    for m in pasted_masks:
        matches = [
            j
            for j in candidates
            if j > (chosen[-1] if chosen else -1)
            and np.array_equal(source["groundtruth_instance_masks"][j], m)
        ]
        assert matches, "a pasted mask is not a pasteable source mask (in source order)"
        chosen.append(matches[0])
    n = len(candidates)
    n_target = len(target["groundtruth_classes"])
    max_instances = kwargs["max_num_instances"]
    allowed = n if max_instances is None else min(n, max(max_instances - n_target, 0))
    cap = min(allowed, kwargs["max_num_pasted"])
    if kwargs["selection"] == "all":
        assert num_pasted == cap
    elif kwargs["selection"] == "one":
        assert num_pasted == min(allowed, 1)
    else:
        assert 0 <= num_pasted <= cap
    if max_instances is not None:
        assert len(classes) <= max(max_instances, n_target)
    assert np.all(classes[: len(classes) - num_pasted] < 10), "target objects come first"
    # Counts may be ambiguous when two source masks are equal; the reference uses the chosen.
    expected = reference(
        target,
        source,
        np.array(chosen, int),
        kwargs["occluded_area_threshold"],
        kwargs["occluded_box_threshold"],
    )
    for key, value in expected.items():
        np.testing.assert_array_equal(out[key], value, err_msg=key)
        assert out[key].dtype == target[key].dtype, key


@SETTINGS
@given(scenes())
def test_invariants(scene):
    target, source, seed, kwargs, convention = scene
    out = run(target, source, seed, kwargs, convention)
    again = run(target, source, seed, kwargs, convention)
    for key in out:  # determinism for a fixed seed
        np.testing.assert_array_equal(out[key], again[key], err_msg=key)
    masks = out["groundtruth_instance_masks"].astype(bool)
    classes = out["groundtruth_classes"]
    pasted = classes > 10
    # No empty mask survives (target masks are generated non-empty).
    assert np.all(masks.any((1, 2)))
    # Every box is the tight box of its mask, or an unchanged input box of the same mask.
    inputs = [
        (d["groundtruth_instance_masks"][i].astype(bool), d["groundtruth_boxes"][i])
        for d in (target, source)
        for i in range(len(d["groundtruth_boxes"]))
    ]
    for m, box in zip(masks, out["groundtruth_boxes"], strict=True):
        unchanged = any(np.array_equal(m, im) and np.array_equal(box, ib) for im, ib in inputs)
        assert unchanged or np.array_equal(box, tight(m))
    # Output count = kept target objects + pasted objects; kept objects are not hidden.
    union = masks[pasted].any(0) if pasted.any() else np.zeros(masks.shape[1:], bool)
    assert len(classes) == (~pasted).sum() + pasted.sum()
    assert not np.any(masks[~pasted] & union)
    # Union pixels of the image are source pixels, the others target pixels.
    np.testing.assert_array_equal(
        out["image"], np.where(union[..., None], source["image"], target["image"])
    )

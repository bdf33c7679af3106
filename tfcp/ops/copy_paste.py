"""Simple Copy-Paste (Ghiasi et al., CVPR 2021, arXiv 2012.07177) as a pure TF op.

`copy_paste(target, source, seed)` pastes a random subset of the source's objects onto the
target image, removes the pasted pixels from the target's masks, drops target objects that
became fully (or mostly) hidden, and recomputes tight boxes of the partly hidden ones.

It is written for the host CPU inside `tf.data` at full resolution (1024x1024, tens of
objects): every mask input is normalized once to uint8 0/1 (`packed_masks.binarize_masks`,
so uint8 0/255, bool and float masks give the same result; for the source, the same per-object
max also says which masks are empty), then all per-pixel work stays in uint8 and mask
reductions read 8 mask bytes as one uint64 word (`tfcp.ops.packed_masks`). When the draw
pastes nothing, the target is returned from a `tf.cond` branch that does none of the work below:

* the union of the pasted masks is a bitwise-OR loop over uint64 words;
* visible target masks are one broadcast AND of uint64 words with the union's complement;
* per-object pixel counts come from packed per-row counts;
* tight boxes come from row/column projections ([N, H] and [N, W]), computed only for the
  objects that lost pixels (and could be kept);
* the hard paste of uint8 RGB images is a table-driven select on uint64 words
  (`tfcp.ops.blend.paste_image`).

Occluded target objects are kept by the paper's rule (visible area >= threshold) or, with
`occluded_box_threshold`, also by MMDetection's (no edge of the visible tight box moved more
than that many pixels). `max_num_instances` limits the pasted count to the room left below
the padded instance count K of the training targets.
"""

from __future__ import annotations

import tensorflow as tf

from tfcp.ops import blend
from tfcp.ops import packed_masks as pm

IMAGE = "image"
BOXES = "groundtruth_boxes"
CLASSES = "groundtruth_classes"
MASKS = "groundtruth_instance_masks"
IS_CROWD = "groundtruth_is_crowd"
AREA = "groundtruth_area"
_REQUIRED = (IMAGE, BOXES, CLASSES, MASKS, IS_CROWD)
PER_OBJECT_PREFIX = "groundtruth_"
SELECTIONS = ("random_subset", "all", "one")


def select_objects(
    pasteable: tf.Tensor,
    seed: tf.Tensor,
    selection: str,
    max_num_pasted: int,
    limit: tf.Tensor | int | None = None,
) -> tf.Tensor:
    """Chooses which source objects to paste.

    Args:
      pasteable: bool [N], which source objects may be pasted.
      seed: int [2] stateless seed.
      selection: 'random_subset' (m ~ uniform{0..min(n, max_num_pasted, limit)} of the n
        pasteable objects, without replacement), 'all', or 'one' (exactly one when n > 0
        and limit > 0).
      max_num_pasted: cap on the number of pasted objects for 'random_subset' and 'all'.
      limit: None, or an int32 scalar (or int) >= 0: a cap for every selection (the room
        left below `max_num_instances`). Without effect on the draws when it does not bind.

    Returns:
      int32 [M] indices into the source objects, increasing (source order).
    """
    candidates = tf.cast(tf.where(pasteable)[:, 0], tf.int32)
    n = tf.size(candidates)
    allowed = n if limit is None else tf.minimum(n, tf.cast(limit, tf.int32))
    count_seed, order_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if selection == "all":
        return candidates[: tf.minimum(allowed, max_num_pasted)]
    if selection == "one":
        k = tf.random.stateless_uniform(
            [], count_seed, minval=0, maxval=tf.maximum(n, 1), dtype=tf.int32
        )
        return candidates[k : k + tf.minimum(allowed, 1)]
    cap = tf.minimum(allowed, max_num_pasted)
    m = tf.random.stateless_uniform([], count_seed, minval=0, maxval=cap + 1, dtype=tf.int32)
    scores = tf.random.stateless_uniform([n], order_seed)
    chosen = tf.gather(candidates, tf.argsort(scores, stable=True)[:m])
    return tf.sort(chosen)


def occlude(
    masks: tf.Tensor,
    boxes: tf.Tensor,
    union: tf.Tensor,
    area_threshold: float,
    box_threshold: float | None = None,
) -> dict:
    """Removes the pasted pixels from the target masks and decides which objects stay.

    An object is kept when its visible area is > 0 and it lost no pixel, or its visible area
    is >= `area_threshold` (the paper's rule), or (only when `box_threshold` is set) no
    edge of its visible tight box moved more than `box_threshold` pixels from its given box
    (MMDetection's `bbox_occluded_thr`).

    Args:
      masks: uint8 [N, H, W] 0/1 target masks.
      boxes: float [N, 4] normalized target boxes [ymin, xmin, ymax, xmax].
      union: uint8 [H, W] 0/1, the union of the pasted masks.
      area_threshold: Python float, pixels.
      box_threshold: None or Python float, pixels.

    Returns:
      dict with `visible` uint8 [N, H, W], `visible_counts` int32 [N], `occluded` bool [N]
      (lost pixels), `keep` bool [N], and `boxes` (same dtype as `boxes`) [N, 4]: tight boxes
      of the visible masks for the kept occluded objects, the given boxes for the others.
    """
    visible = pm.mask_difference(masks, union)  # [N, H, W] uint8
    vis_rows = pm.row_counts(visible)
    vis_counts = tf.reduce_sum(vis_rows, axis=1)
    occluded = vis_counts < tf.reduce_sum(pm.row_counts(masks), axis=1)
    big_enough = tf.cast(vis_counts, tf.float32) >= area_threshold
    # Objects that need their visible tight box: those the box rule may keep, or (paper's
    # rule) just the kept occluded ones. Only their masks are projected.
    candidates = occluded & (vis_counts > 0)
    if box_threshold is None:
        candidates &= big_enough
    cand = tf.cast(tf.where(candidates)[:, 0], tf.int32)
    bounds = pm.tight_bounds(
        tf.gather(vis_rows, cand) > 0, pm.column_any(tf.gather(visible, cand))
    )  # int32 [C, 4] pixels
    h, w = tf.shape(masks)[1], tf.shape(masks)[2]
    if box_threshold is not None:
        hw = tf.cast(tf.stack([h, w, h, w]), tf.float32)
        given = tf.cast(tf.gather(boxes, cand), tf.float32) * hw
        shift = tf.abs(tf.cast(bounds, tf.float32) - given)
        box_ok = tf.reduce_all(shift <= box_threshold, axis=1)
        kept_c = box_ok | tf.gather(big_enough, cand)
        cand, bounds = tf.boolean_mask(cand, kept_c), tf.boolean_mask(bounds, kept_c)
    keep = (vis_counts > 0) & ~occluded
    keep = tf.tensor_scatter_nd_update(keep, cand[:, None], tf.ones_like(cand, tf.bool))
    new_boxes = tf.cast(pm.normalize_bounds(bounds, h, w), boxes.dtype)
    return {
        "visible": visible,
        "visible_counts": vis_counts,
        "occluded": occluded,
        "keep": keep,
        "boxes": tf.tensor_scatter_nd_update(boxes, cand[:, None], new_boxes),
    }


def _validate(target, source, selection, max_num_pasted, blend_sigma, thresholds, max_inst):
    if selection not in SELECTIONS:
        raise ValueError(f"copy_paste: selection must be one of {SELECTIONS}, got {selection!r}")
    if int(max_num_pasted) < 0:
        raise ValueError(f"copy_paste: max_num_pasted must be >= 0, got {max_num_pasted!r}")
    blend.kernel_radius(float(blend_sigma))
    for name, value in thresholds.items():
        if value is not None and not float(value) >= 0:
            raise ValueError(f"copy_paste: {name} must be a number >= 0, got {value!r}")
    if max_inst is not None and (isinstance(max_inst, bool) or int(max_inst) < 0):
        raise ValueError(f"copy_paste: max_num_instances must be None or >= 0, got {max_inst!r}")
    for name, d in (("target", target), ("source", source)):
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise ValueError(f"copy_paste: {name} lacks required keys {missing}")
    for key in target:
        if key.startswith(PER_OBJECT_PREFIX) and key != AREA and key not in source:
            raise ValueError(
                f"copy_paste: per-object key {key!r} is in the target but not in the source; "
                "the pasted objects would have no value for it"
            )
    t_hw = tf.TensorShape(target[IMAGE].shape[:2])
    s_hw = tf.TensorShape(source[IMAGE].shape[:2])
    if t_hw.is_fully_defined() and s_hw.is_fully_defined() and t_hw != s_hw:
        raise ValueError(f"copy_paste: target image is {t_hw} but source image is {s_hw}")


def copy_paste(
    target: dict,
    source: dict,
    seed,
    *,
    selection: str = "random_subset",
    max_num_pasted: int = 100,
    blend_sigma: float = 0.0,
    occluded_area_threshold: float = 300.0,
    occluded_box_threshold: float | None = None,
    paste_crowd: bool = False,
    max_num_instances: int | None = None,
) -> dict:
    """Pastes objects of `source` onto `target` (Simple Copy-Paste).

    Both dicts describe images of the same size H x W (the pipeline scale-jitters both to the
    output size first). N may be 0 or unknown; H and W may be unknown.

    Args:
      target: dict with `image` uint8 or float [H, W, 3]; `groundtruth_boxes` float32 [N, 4]
        normalized [ymin, xmin, ymax, xmax]; `groundtruth_classes` int [N];
        `groundtruth_instance_masks` [N, H, W]: uint8 0/1 or 0/255 (any nonzero is set),
        bool, or float 0/1 (>= 0.5 is set); `groundtruth_is_crowd` bool [N]; optional
        `groundtruth_area` [N]. Any other `groundtruth_*` key is per-object [N, ...] (e.g.
        `groundtruth_difficult`) and must also be in `source`; all other keys (`source_id`,
        `height`, ...) pass through unchanged.
      source: dict with the same keys (extra keys ignored), images of the same H x W.
      seed: int32/int64 [2] seed for the stateless random ops: same inputs and seed give the
        same output.
      selection: 'random_subset' (paper: m ~ uniform{0..min(n, max_num_pasted)} of the n
        pasteable source objects, without replacement), 'all', or 'one' (paper Table 10).
      max_num_pasted: cap on the number of pasted objects.
      blend_sigma: 0 for a hard paste; > 0 smooths the alpha map (the union of the pasted
        masks) with a Gaussian of this sigma in pixels (image only; annotations use the hard
        union).
      occluded_area_threshold: a target object that lost pixels is kept when at least this
        many of its pixels stay visible (the paper's rule; MMDetection's `area > 300` is 301).
      occluded_box_threshold: None (the paper's rule only), or pixels: a target object that
        lost pixels is also kept when no edge of the tight box of its visible pixels is more
        than this far from its given box (MMDetection's `bbox_occluded_thr`, 10 in its
        configs). An object with no visible pixel is always dropped.
      paste_crowd: whether crowd objects of the source may be pasted.
      max_num_instances: None, or K (a Python int): at most `max(K - N, 0)` objects are
        pasted, N the number of target objects before occlusion, so the output has at most K
        objects unless the target alone has more.

    Returns:
      dict with the target's keys and dtypes: the pasted image; kept target objects in their
      order (partly occluded ones with visible mask, tight box and visible pixel area;
      untouched ones unchanged) followed by the pasted objects in source order (source masks,
      boxes, classes, crowd flags, and area, or mask pixel count when the source has no
      area). Masks hold 0/1 in the target's mask dtype (uint8 0/255 input gives 0/1).
      Source objects with empty masks are never pasted. When nothing is pasted the target
      is returned unchanged (masks normalized to 0/1).
    """
    thresholds = {
        "occluded_area_threshold": occluded_area_threshold,
        "occluded_box_threshold": occluded_box_threshold,
    }
    _validate(target, source, selection, max_num_pasted, blend_sigma, thresholds, max_num_instances)
    per_object = [k for k in target if k.startswith(PER_OBJECT_PREFIX)]
    target = {
        k: tf.convert_to_tensor(v) if k in per_object or k == IMAGE else v
        for k, v in target.items()
    }
    source = {k: tf.convert_to_tensor(v) for k, v in source.items() if k in target}
    options = {
        "blend_sigma": float(blend_sigma),
        "area_threshold": float(occluded_area_threshold),
        "box_threshold": None if occluded_box_threshold is None else float(occluded_box_threshold),
    }
    seed = tf.convert_to_tensor(seed)

    t_image = tf.convert_to_tensor(target[IMAGE])
    s_image = tf.convert_to_tensor(source[IMAGE])
    tf.debugging.assert_equal(
        tf.shape(t_image)[:2],
        tf.shape(s_image)[:2],
        message="copy_paste: target and source images differ in size",
    )

    s_masks, pasteable = pm.binarize_and_nonempty(source[MASKS])
    if not paste_crowd:
        pasteable &= ~tf.cast(source[IS_CROWD], tf.bool)
    room = None
    if max_num_instances is not None:
        room = tf.maximum(int(max_num_instances) - tf.shape(target[CLASSES])[0], 0)
    chosen = select_objects(pasteable, seed, selection, int(max_num_pasted), room)

    t_masks = pm.binarize_masks(target[MASKS])
    out = tf.cond(
        tf.size(chosen) > 0,
        lambda: _paste(target, source, t_masks, s_masks, chosen, per_object, options),
        lambda: _unchanged(target, t_masks, per_object),
    )
    output = dict(target)
    for key, value in out.items():
        static = target[key].shape
        value.set_shape(tf.TensorShape([None]).concatenate(static[1:]) if key != IMAGE else static)
        output[key] = value
    return output


def _paste(target, source, t_masks, s_masks, chosen, per_object, options) -> dict:
    """The pasted outputs of `copy_paste` for a non-empty `chosen` (int32 [M], M > 0)."""
    pasted = tf.gather(s_masks, chosen)  # [M, H, W] uint8
    union = pm.mask_union(pasted)  # [H, W] uint8
    t_boxes = target[BOXES]
    occ = occlude(t_masks, t_boxes, union, options["area_threshold"], options["box_threshold"])
    keep = occ["keep"]
    keep_idx = tf.cast(tf.where(keep)[:, 0], tf.int32)

    out = {IMAGE: blend.paste_image(target[IMAGE], source[IMAGE], union, options["blend_sigma"])}
    visible = occ["visible"]
    vis_k = tf.cond(tf.reduce_all(keep), lambda: visible, lambda: tf.gather(visible, keep_idx))
    out[BOXES] = tf.concat(
        [
            tf.gather(occ["boxes"], keep_idx),
            blend.cast_like(tf.gather(source[BOXES], chosen), t_boxes.dtype),
        ],
        0,
    )
    t_mask_dtype = target[MASKS].dtype
    out[MASKS] = tf.concat(
        [blend.cast_like(vis_k, t_mask_dtype), blend.cast_like(pasted, t_mask_dtype)], 0
    )
    if AREA in target:
        t_area = target[AREA]
        area_k = tf.where(
            tf.gather(occ["occluded"], keep_idx),
            tf.cast(tf.gather(occ["visible_counts"], keep_idx), t_area.dtype),
            tf.gather(t_area, keep_idx),
        )
        if AREA in source:
            s_area = tf.gather(source[AREA], chosen)
        else:  # the pasted masks' pixel counts
            s_area = tf.reduce_sum(pm.row_counts(pasted), axis=1)
        out[AREA] = tf.concat([area_k, blend.cast_like(s_area, t_area.dtype)], 0)
    for key in per_object:
        if key in out:
            continue
        t_val = target[key]
        s_val = blend.cast_like(tf.gather(source[key], chosen), t_val.dtype)
        out[key] = tf.concat([tf.gather(t_val, keep_idx), s_val], 0)
    return out


def _unchanged(target, t_masks, per_object) -> dict:
    """The outputs of `copy_paste` when nothing is pasted: the target, masks made 0/1."""
    out = {key: tf.identity(target[key]) for key in per_object}
    out[IMAGE] = tf.identity(target[IMAGE])
    out[MASKS] = blend.cast_like(t_masks, target[MASKS].dtype)
    return out

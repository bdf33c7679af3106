"""Simple Copy-Paste (Ghiasi et al., CVPR 2021, arXiv 2012.07177) as a pure TF op.

`copy_paste(target, source, seed)` pastes a random subset of the source's objects onto the
target image, removes the pasted pixels from the target's masks, drops target objects that
became fully (or mostly) hidden, and recomputes tight boxes of the partly hidden ones.

It is written for the host CPU inside `tf.data` at full resolution (1024x1024, tens of
objects), so all per-pixel work stays in uint8 (no int32/float32 copy of an [N, H, W] tensor)
and mask reductions view 8 mask bytes as one uint64 word:

* the union of the pasted masks is a bitwise-OR loop over uint64 words;
* visible target masks are one broadcast `bitwise_and` with the complement of the union;
* per-object pixel counts per row sum uint64 words along the row, each byte acting as an
  independent 8-bit counter (exact while W <= 2040; other widths use an int32 reduction);
* tight boxes come from row/column projections ([N, H] and [N, W]), computed only for the
  objects that lost pixels;
* the hard paste of uint8 RGB images is a table-driven select on uint64 words
  (`tfcp.ops.blend.paste_image`).

uint8 masks must hold 0/1 (as `tfcp.data.decoder` emits); other dtypes are binarized.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfcp.ops import blend

IMAGE = "image"
BOXES = "groundtruth_boxes"
CLASSES = "groundtruth_classes"
MASKS = "groundtruth_instance_masks"
IS_CROWD = "groundtruth_is_crowd"
AREA = "groundtruth_area"
_REQUIRED = (IMAGE, BOXES, CLASSES, MASKS, IS_CROWD)
_PER_OBJECT_PREFIX = "groundtruth_"
SELECTIONS = ("random_subset", "all", "one")

# Widest row for which 8-bit lane counters cannot overflow: W / 8 <= 255.
_MAX_PACKED_WIDTH = 8 * 255


def binarize_masks(masks: tf.Tensor) -> tf.Tensor:
    """Masks of any dtype -> uint8 0/1 [N, H, W].

    uint8 masks are assumed to hold 0/1 already (as the decoder emits) and are returned as is;
    other integer masks use `!= 0`, float masks `>= 0.5`, bool masks a cast.
    """
    masks = tf.convert_to_tensor(masks)
    if masks.dtype == tf.uint8:
        return masks
    if masks.dtype.is_floating:
        return tf.cast(masks >= 0.5, tf.uint8)
    if masks.dtype == tf.bool:
        return tf.cast(masks, tf.uint8)
    return tf.cast(tf.not_equal(masks, 0), tf.uint8)


def _divisible_by_8(*dims) -> tf.Tensor | bool:
    """Whether the product of `dims` (ints or scalar tensors) is a multiple of 8.

    A Python bool when all dims are static, so that reshapes to [..., 8] are only traced when
    they are valid.
    """
    if all(isinstance(d, int) for d in dims):
        return int(np.prod(dims)) % 8 == 0
    product = tf.constant(1, tf.int32)
    for d in dims:
        product *= tf.cast(d, tf.int32)
    return tf.equal(product % 8, 0)


def _dims(x: tf.Tensor) -> list:
    """Each dimension of x as a Python int when static, else as a scalar tensor."""
    dynamic = tf.shape(x)
    return [d if d is not None else dynamic[i] for i, d in enumerate(x.shape.as_list())]


def _branch(pred, true_fn, false_fn):
    """`tf.cond` that resolves at trace time when `pred` is a Python bool."""
    if isinstance(pred, bool):
        return true_fn() if pred else false_fn()
    return tf.cond(pred, true_fn, false_fn)


def row_counts(masks: tf.Tensor) -> tf.Tensor:
    """Number of set pixels per object and row.

    Args:
      masks: uint8 [N, H, W] with values 0/1.

    Returns:
      int32 [N, H].
    """
    shape = tf.shape(masks)
    n, h, w = shape[0], shape[1], shape[2]

    def packed():
        words = tf.bitcast(tf.reshape(masks, [n, h, w // 8, 8]), tf.uint64)
        lanes = tf.reduce_sum(words, axis=2)  # [N, H]: 8 byte counters, each <= W / 8
        return tf.reduce_sum(tf.cast(tf.bitcast(lanes, tf.uint8), tf.int32), axis=2)

    def plain():
        return tf.reduce_sum(tf.cast(masks, tf.int32), axis=2)

    static_w = masks.shape[2]
    if static_w is not None:
        ok = static_w % 8 == 0 and static_w <= _MAX_PACKED_WIDTH
    else:
        ok = tf.equal(w % 8, 0) & (w <= _MAX_PACKED_WIDTH)
    return _branch(ok, packed, plain)


def mask_union(masks: tf.Tensor) -> tf.Tensor:
    """Union of masks.

    Args:
      masks: uint8 [M, H, W] with values 0/1.

    Returns:
      uint8 [H, W] with values 0/1 (all zeros when M == 0).
    """
    shape = tf.shape(masks)
    m, h, w = shape[0], shape[1], shape[2]

    def packed():
        # Bitwise OR of the masks viewed as uint64 words: exact for any M, 8 pixels per op.
        words = tf.bitcast(tf.reshape(masks, [m, h * w // 8, 8]), tf.uint64)
        union = tf.while_loop(
            lambda i, acc: i < m,
            lambda i, acc: (i + 1, tf.bitwise.bitwise_or(acc, words[i])),
            (tf.constant(0), tf.zeros([h * w // 8], tf.uint64)),
        )[1]
        return tf.reshape(tf.bitcast(union, tf.uint8), [h, w])

    def plain():
        return tf.reduce_max(masks, axis=0)

    return _branch(_divisible_by_8(*_dims(masks)[1:]), packed, plain)


def column_any(masks: tf.Tensor) -> tf.Tensor:
    """Whether each column of each mask has a set pixel.

    Args:
      masks: uint8 [N, H, W] with values 0/1.

    Returns:
      bool [N, W].
    """
    shape = tf.shape(masks)
    n, h, w = shape[0], shape[1], shape[2]

    def packed():
        # Rows are summed in chunks of 128 so that each byte counter stays <= 128.
        chunks = (h + 127) // 128
        row = tf.range(n * h)
        ids = (row // h) * chunks + (row % h) // 128
        words = tf.bitcast(tf.reshape(masks, [n * h, w // 8, 8]), tf.uint64)
        sums = tf.math.unsorted_segment_sum(words, ids, n * chunks)  # [N * C, W / 8]
        counts = tf.reshape(tf.bitcast(sums, tf.uint8), [n, chunks, w])
        return tf.reduce_max(counts, axis=1) > 0

    def plain():
        return tf.reduce_max(masks, axis=1) > 0

    return _branch(_divisible_by_8(_dims(masks)[2]), packed, plain)


def tight_boxes(rows_any: tf.Tensor, cols_any: tf.Tensor) -> tf.Tensor:
    """Tight normalized boxes from mask projections.

    Args:
      rows_any: bool [N, H], whether each row of each mask has a set pixel.
      cols_any: bool [N, W], whether each column of each mask has a set pixel.

    Returns:
      float32 [N, 4] [row_min / H, col_min / W, (row_max + 1) / H, (col_max + 1) / W].
      Rows of empty masks are meaningless.
    """

    def bounds(any_, length):
        idx = tf.range(length, dtype=tf.int32)[None, :]
        lo = tf.reduce_min(tf.where(any_, idx, length), axis=1)
        hi = tf.reduce_max(tf.where(any_, idx, -1), axis=1) + 1
        return tf.cast(lo, tf.float32), tf.cast(hi, tf.float32)

    h = tf.shape(rows_any)[1]
    w = tf.shape(cols_any)[1]
    ymin, ymax = bounds(rows_any, h)
    xmin, xmax = bounds(cols_any, w)
    hf = tf.cast(h, tf.float32)
    wf = tf.cast(w, tf.float32)
    return tf.stack([ymin / hf, xmin / wf, ymax / hf, xmax / wf], axis=1)


def select_objects(
    pasteable: tf.Tensor, seed: tf.Tensor, selection: str, max_num_pasted: int
) -> tf.Tensor:
    """Chooses which source objects to paste.

    Args:
      pasteable: bool [N], which source objects may be pasted.
      seed: int [2] stateless seed.
      selection: 'random_subset' (m ~ uniform{0..min(n, max_num_pasted)} of the n pasteable
        objects, without replacement), 'all', or 'one' (exactly one when n > 0).
      max_num_pasted: cap on the number of pasted objects for 'random_subset' and 'all'.

    Returns:
      int32 [M] indices into the source objects, increasing (source order).
    """
    candidates = tf.cast(tf.where(pasteable)[:, 0], tf.int32)
    n = tf.size(candidates)
    count_seed, order_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if selection == "all":
        return candidates[: tf.minimum(n, max_num_pasted)]
    if selection == "one":
        k = tf.random.stateless_uniform(
            [], count_seed, minval=0, maxval=tf.maximum(n, 1), dtype=tf.int32
        )
        return candidates[k : k + tf.minimum(n, 1)]
    cap = tf.minimum(n, max_num_pasted)
    m = tf.random.stateless_uniform([], count_seed, minval=0, maxval=cap + 1, dtype=tf.int32)
    scores = tf.random.stateless_uniform([n], order_seed)
    chosen = tf.gather(candidates, tf.argsort(scores, stable=True)[:m])
    return tf.sort(chosen)


def _validate(target, source, selection, max_num_pasted, blend_sigma, occluded_area_threshold):
    if selection not in SELECTIONS:
        raise ValueError(f"copy_paste: selection must be one of {SELECTIONS}, got {selection!r}")
    if int(max_num_pasted) < 0:
        raise ValueError(f"copy_paste: max_num_pasted must be >= 0, got {max_num_pasted!r}")
    blend.kernel_radius(float(blend_sigma))
    if float(occluded_area_threshold) < 0:
        raise ValueError(
            f"copy_paste: occluded_area_threshold must be >= 0, got {occluded_area_threshold!r}"
        )
    for name, d in (("target", target), ("source", source)):
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise ValueError(f"copy_paste: {name} lacks required keys {missing}")
    for key in target:
        if key.startswith(_PER_OBJECT_PREFIX) and key != AREA and key not in source:
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
    paste_crowd: bool = False,
) -> dict:
    """Pastes objects of `source` onto `target` (Simple Copy-Paste).

    Both dicts describe images of the same size H x W (the pipeline scale-jitters both to the
    output size first). N may be 0 or unknown; H and W may be unknown.

    Args:
      target: dict with `image` uint8 or float [H, W, 3]; `groundtruth_boxes` float32 [N, 4]
        normalized [ymin, xmin, ymax, xmax]; `groundtruth_classes` int [N];
        `groundtruth_instance_masks` [N, H, W] 0/1 (uint8, float or bool);
        `groundtruth_is_crowd` bool [N]; optional `groundtruth_area` [N]. Any other
        `groundtruth_*` key is per-object [N, ...] (e.g. `groundtruth_difficult`) and must also
        be in `source`; all other keys (`source_id`, `height`, ...) pass through unchanged.
      source: dict with the same keys (extra keys ignored), images of the same H x W.
      seed: int32/int64 [2] seed for the stateless random ops: same inputs and seed give the
        same output.
      selection: 'random_subset' (paper: m ~ uniform{0..min(n, max_num_pasted)} of the n
        pasteable source objects, without replacement), 'all', or 'one' (paper Table 10).
      max_num_pasted: cap on the number of pasted objects.
      blend_sigma: 0 for a hard paste; > 0 smooths the alpha map (the union of the pasted
        masks) with a Gaussian of this sigma in pixels (image only; annotations use the hard
        union).
      occluded_area_threshold: a target object that lost pixels is dropped when fewer than
        this many of its pixels stay visible.
      paste_crowd: whether crowd objects of the source may be pasted.

    Returns:
      dict with the target's keys and dtypes: the pasted image; kept target objects in their
      order (partly occluded ones with visible mask, tight box and visible pixel area;
      untouched ones unchanged) followed by the pasted objects in source order (source masks,
      boxes, classes, crowd flags, and area, or mask pixel count when the source has no
      area). Source objects with empty masks are never pasted. When nothing is pasted the
      target is returned unchanged.
    """
    _validate(target, source, selection, max_num_pasted, blend_sigma, occluded_area_threshold)
    per_object = [k for k in target if k.startswith(_PER_OBJECT_PREFIX)]
    target = {
        k: tf.convert_to_tensor(v) if k in per_object or k == IMAGE else v
        for k, v in target.items()
    }
    source = {k: tf.convert_to_tensor(v) for k, v in source.items() if k in target}
    blend_sigma = float(blend_sigma)
    threshold = float(occluded_area_threshold)
    seed = tf.convert_to_tensor(seed)

    t_image = tf.convert_to_tensor(target[IMAGE])
    s_image = tf.convert_to_tensor(source[IMAGE])
    tf.debugging.assert_equal(
        tf.shape(t_image)[:2],
        tf.shape(s_image)[:2],
        message="copy_paste: target and source images differ in size",
    )

    s_masks = binarize_masks(source[MASKS])
    s_counts = tf.reduce_sum(row_counts(s_masks), axis=1)  # [Ns] int32
    pasteable = s_counts > 0
    if not paste_crowd:
        pasteable &= ~tf.cast(source[IS_CROWD], tf.bool)
    chosen = select_objects(pasteable, seed, selection, int(max_num_pasted))

    pasted = tf.gather(s_masks, chosen)  # [M, H, W] uint8
    union = mask_union(pasted)  # [H, W] uint8
    t_masks = binarize_masks(target[MASKS])
    visible = tf.bitwise.bitwise_and(t_masks, (1 - union)[None])  # [N, H, W] uint8
    vis_rows = row_counts(visible)
    vis_counts = tf.reduce_sum(vis_rows, axis=1)
    orig_counts = tf.reduce_sum(row_counts(t_masks), axis=1)
    occluded = vis_counts < orig_counts
    keep = (vis_counts > 0) & (~occluded | (tf.cast(vis_counts, tf.float32) >= threshold))
    # Nothing pasted: the target is returned as is (also objects with empty masks).
    keep |= tf.equal(tf.size(chosen), 0)
    keep_idx = tf.cast(tf.where(keep)[:, 0], tf.int32)

    out = {IMAGE: blend.paste_image(t_image, s_image, union, blend_sigma)}
    # Boxes: tight box of the visible mask for occluded objects, the original otherwise.
    t_boxes = tf.convert_to_tensor(target[BOXES])
    occ_k = tf.gather(occluded, keep_idx)
    # Only the partly occluded kept objects need a new box: project just those masks.
    moved = tf.cast(tf.where(occluded & keep)[:, 0], tf.int32)
    new_boxes = tight_boxes(tf.gather(vis_rows, moved) > 0, column_any(tf.gather(visible, moved)))
    boxes = tf.tensor_scatter_nd_update(t_boxes, moved[:, None], tf.cast(new_boxes, t_boxes.dtype))
    boxes_k = tf.gather(boxes, keep_idx)
    all_kept = tf.reduce_all(keep)
    vis_k = tf.cond(all_kept, lambda: visible, lambda: tf.gather(visible, keep_idx))
    out[BOXES] = tf.concat(
        [boxes_k, blend.cast_like(tf.gather(source[BOXES], chosen), t_boxes.dtype)], 0
    )
    t_mask_dtype = tf.convert_to_tensor(target[MASKS]).dtype
    out[MASKS] = tf.concat(
        [blend.cast_like(vis_k, t_mask_dtype), blend.cast_like(pasted, t_mask_dtype)], 0
    )
    if AREA in target:
        t_area = tf.convert_to_tensor(target[AREA])
        area_k = tf.where(
            occ_k,
            tf.cast(tf.gather(vis_counts, keep_idx), t_area.dtype),
            tf.gather(t_area, keep_idx),
        )
        s_area = source[AREA] if AREA in source else s_counts
        out[AREA] = tf.concat([area_k, blend.cast_like(tf.gather(s_area, chosen), t_area.dtype)], 0)
    for key in per_object:
        if key in out:
            continue
        t_val = tf.convert_to_tensor(target[key])
        s_val = blend.cast_like(tf.gather(source[key], chosen), t_val.dtype)
        out[key] = tf.concat([tf.gather(t_val, keep_idx), s_val], 0)
    output = dict(target)
    for key, value in out.items():
        static = target[key].shape
        value.set_shape(tf.TensorShape([None]).concatenate(static[1:]) if key != IMAGE else static)
        output[key] = value
    return output

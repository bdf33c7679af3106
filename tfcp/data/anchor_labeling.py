"""RPN anchor labeling: Model Garden's rule, computed in a host-friendly layout, seeded sampling.

`StatelessRpnAnchorLabeler.label_anchors` gives exactly what Model Garden's
`anchor.RpnAnchorLabeler.label_anchors` gives (IoU matching at 0.3 / 0.7 with forced matches for
every object's best anchor, Faster R-CNN box encoding of the matched object, zero targets for
the rest), except for the fg/bg subsampling, which is stateless (seeded) so that the same seed
gives the same targets under any tf.data parallelism (Model Garden's sampler calls the
stateful `tf.random.shuffle`).

Why not Model Garden's code: at 1024 px there are 261,888 anchors and Model Garden builds the
IoU matrix as [anchors, objects], reduces along the short objects axis, forces matches through
a float one-hot [objects, anchors] and box-encodes every anchor before zeroing all but the
positives. Here the IoU is [objects, anchors] (the reductions over objects are elementwise
maxima of long rows), forced matches are a scatter-min of object indices, and only the
positive anchors are encoded. The IoU values are bit-identical (the same float operations;
min, max and + are commutative) and so are the matches; the tests check the results against
Model Garden's labeler.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf
from official.vision.ops import anchor
from official.vision.utils.object_detection import box_list

POSITIVE, IGNORED, NEGATIVE = 1, -2, -1


def _stateless_subsample(indicator: tf.Tensor, num_samples: tf.Tensor, seed: tf.Tensor):
    """Picks `min(num_samples, count)` true entries of bool [A] `indicator` uniformly at random.

    Random keys + top-k: O(A log k), no shuffle of all candidate indices.
    """
    keys = tf.random.stateless_uniform(tf.shape(indicator), seed)
    keys = tf.where(indicator, keys, -1.0)
    k = tf.minimum(tf.cast(num_samples, tf.int32), tf.size(indicator))
    values, indices = tf.math.top_k(keys, k=k, sorted=False)
    picked = tf.boolean_mask(indices, values >= 0.0)
    return tf.scatter_nd(
        tf.cast(picked[:, None], tf.int64),
        tf.ones_like(picked, tf.bool),
        tf.shape(indicator, out_type=tf.int64),
    )


def _iou(intersections: tf.Tensor, anchor_areas: tf.Tensor, box_areas: tf.Tensor) -> tf.Tensor:
    """IoU from intersections [N, A], anchor areas [1, A] and box areas [N, 1].

    Model Garden's `where(inter == 0, 0, inter / union)` in one op: `divide_no_nan` gives
    the same +0 wherever the intersection is 0 (a union there is an area > 0, or 0).
    """
    return tf.math.divide_no_nan(intersections, anchor_areas + box_areas - intersections)


def _box_areas(boxes: tf.Tensor) -> tf.Tensor:
    return (boxes[:, 2:3] - boxes[:, 0:1]) * (boxes[:, 3:4] - boxes[:, 1:2])


def iou_objects_by_anchors(boxes: tf.Tensor, anchors: tf.Tensor) -> tf.Tensor:
    """IoU float32 [N, A] of boxes [N, 4] and anchors [A, 4] (ymin, xmin, ymax, xmax, pixels).

    The same float operations as Model Garden's `iou_similarity.iou(anchors, boxes)` (which is
    [A, N]), so the values are bit-identical; 0 where the boxes do not intersect.
    """
    g = [boxes[:, i : i + 1] for i in range(4)]  # [N, 1] each
    a = [anchors[None, :, i] for i in range(4)]  # [1, A] each
    heights = tf.maximum(0.0, tf.minimum(a[2], g[2]) - tf.maximum(a[0], g[0]))
    widths = tf.maximum(0.0, tf.minimum(a[3], g[3]) - tf.maximum(a[1], g[1]))
    return _iou(heights * widths, (a[2] - a[0]) * (a[3] - a[1]), _box_areas(boxes))


def grid_iou(boxes: tf.Tensor, anchor_boxes: dict[str, tf.Tensor]) -> tf.Tensor:
    """`iou_objects_by_anchors(boxes, flattened anchors)` for grid anchors: float32 [N, A].

    Model Garden's multilevel anchors are grids: at each level the y extent of an anchor
    depends only on its row and shape, the x extent only on its column and shape. The
    intersection heights are therefore computed per (object, row, shape) and the widths per
    (object, column, shape); only their product and the IoU run over every (object, anchor)
    pair. The same float operations per element as `iou_objects_by_anchors`, so the values
    are identical.

    Args:
      boxes: float32 [N, 4] pixel boxes.
      anchor_boxes: {level: float32 [h_l, w_l, K*4]} grid anchors (Model Garden's
        generator), in the order of the flattened anchors.

    Returns:
      float32 [N, A], A = sum of h_l * w_l * K.
    """
    g = [boxes[:, i, None, None] for i in range(4)]  # [N, 1, 1] each
    intersections = []
    for anchors in anchor_boxes.values():
        h, w = anchors.shape[0], anchors.shape[1]
        grid = tf.reshape(anchors, [h, w, -1, 4])
        rows, cols = grid[None, :, 0], grid[None, 0]  # [1, h, K, 4], [1, w, K, 4]
        heights = tf.maximum(0.0, tf.minimum(rows[..., 2], g[2]) - tf.maximum(rows[..., 0], g[0]))
        widths = tf.maximum(0.0, tf.minimum(cols[..., 3], g[3]) - tf.maximum(cols[..., 1], g[1]))
        intersections.append(
            tf.reshape(heights[:, :, None, :] * widths[:, None, :, :], [tf.shape(boxes)[0], -1])
        )
    flat = tf.concat([tf.reshape(a, [-1, 4]) for a in anchor_boxes.values()], axis=0)
    anchor_areas = (flat[None, :, 2] - flat[None, :, 0]) * (flat[None, :, 3] - flat[None, :, 1])
    return _iou(tf.concat(intersections, axis=1), anchor_areas, _box_areas(boxes))


def match_anchors(
    iou_fn: Callable[[int | tf.Tensor, int | tf.Tensor], tf.Tensor],
    num_anchors: int | tf.Tensor,
    num_boxes: tf.Tensor,
    *,
    match_threshold: float,
    unmatched_threshold: float,
    chunk_size: int = 8,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Model Garden's `BoxMatcher(force_match_for_each_col=True)` rule for RPN anchors.

    The objects are matched `chunk_size` at a time, so the float [objects, anchors]
    intermediates stay small whatever N is (a crowded pasted image has 60+ objects: 3
    float32 [60, 261888] IoU intermediates are 190 MB per example at 1024 px).

    Args:
      iou_fn: `iou_fn(start, stop)` returns the float32 [stop - start, A] IoU of objects
        start..stop-1 with the anchors (`grid_iou` or `iou_objects_by_anchors` on a slice).
      num_anchors: A.
      num_boxes: N (may be 0).
      match_threshold: max IoU >= this: positive (1).
      unmatched_threshold: max IoU < this: negative (-1); in between: ignored (-2).
      chunk_size: objects per IoU block.

    Returns:
      `(matched, indicators)`: int32 [A] index of each anchor's object (its highest IoU, the
      first on ties; 0 without objects) and int32 [A] indicator in {1, -2, -1}. Every object's
      best anchor (first on ties) is forced positive and matched to it; an anchor that is the
      best of several objects goes to the first of them.
    """

    def chunk(i, best_iou, best_box, best_anchors):
        start = i * chunk_size
        stop = tf.minimum(start + chunk_size, num_boxes)
        iou = iou_fn(start, stop)
        chunk_best = tf.reduce_max(iou, axis=0)
        better = chunk_best > best_iou  # strictly: an earlier object keeps a tie
        chunk_box = tf.argmax(iou, axis=0, output_type=tf.int32) + start
        return (
            i + 1,
            tf.where(better, chunk_best, best_iou),
            tf.where(better, chunk_box, best_box),
            best_anchors.write(i, tf.argmax(iou, axis=1, output_type=tf.int32)),
        )

    def matched():
        num_chunks = (num_boxes + chunk_size - 1) // chunk_size
        _, best_iou, best_box, best_anchors = tf.while_loop(
            lambda i, *_: i < num_chunks,
            chunk,
            (
                tf.constant(0),
                tf.fill([num_anchors], -1.0),
                tf.zeros([num_anchors], tf.int32),
                tf.TensorArray(tf.int32, size=num_chunks, infer_shape=False),
            ),
        )
        indicators = tf.where(
            best_iou >= match_threshold,
            POSITIVE,
            tf.where(best_iou >= unmatched_threshold, IGNORED, NEGATIVE),
        )
        forced_box = tf.tensor_scatter_nd_min(
            tf.fill([num_anchors], num_boxes),
            best_anchors.concat()[:, None],  # [N, 1]: each object's best anchor
            tf.range(num_boxes, dtype=tf.int32),
        )
        forced = forced_box < num_boxes
        return (
            tf.where(forced, forced_box, best_box),
            tf.where(forced, POSITIVE, indicators),
        )

    def unmatched():
        return tf.zeros([num_anchors], tf.int32), tf.fill([num_anchors], NEGATIVE)

    return tf.cond(num_boxes > 0, matched, unmatched)


class StatelessRpnAnchorLabeler(anchor.RpnAnchorLabeler):
    """Model Garden's `RpnAnchorLabeler` with stateless (seeded) fg/bg subsampling.

    The sampling rule is the one of `BalancedPositiveNegativeSampler(is_static=False)`: up
    to `fg_fraction * batch_size` positives, then `batch_size - num_positives` negatives,
    each chosen uniformly at random.
    """

    def __init__(
        self,
        seed: tf.Tensor,
        *,
        match_threshold: float = 0.7,
        unmatched_threshold: float = 0.3,
        **kwargs,
    ):
        super().__init__(
            match_threshold=match_threshold, unmatched_threshold=unmatched_threshold, **kwargs
        )
        self._seed = tf.cast(seed, tf.int64)
        self._thresholds = dict(
            match_threshold=match_threshold, unmatched_threshold=unmatched_threshold
        )

    def _get_rpn_samples(self, match_results):
        pos_seed, neg_seed = tf.unstack(tf.random.experimental.stateless_split(self._seed, 2))
        indicator = tf.greater(match_results, -2)
        labels = tf.greater(match_results, -1)
        max_pos = int(self._rpn_fg_fraction * self._rpn_batch_size_per_im)
        positives = _stateless_subsample(tf.logical_and(labels, indicator), max_pos, pos_seed)
        num_pos = tf.reduce_sum(tf.cast(positives, tf.int32))
        negatives = _stateless_subsample(
            tf.logical_and(tf.logical_not(labels), indicator),
            self._rpn_batch_size_per_im - num_pos,
            neg_seed,
        )
        positive_labels = 2 * tf.cast(positives, tf.int32)
        negative_labels = tf.cast(negatives, tf.int32)
        score_targets = positive_labels + negative_labels - 1
        return score_targets, positive_labels, negative_labels

    def label_anchors(self, anchor_boxes, gt_boxes, gt_labels):
        """As Model Garden's `RpnAnchorLabeler.label_anchors` (see the module doc).

        Args:
          anchor_boxes: {level: float32 [h_l, w_l, K*4]} multilevel anchors.
          gt_boxes: float32 [N, 4] object boxes in pixels.
          gt_labels: [N, 1] classes (unused by the RPN, kept for the signature).

        Returns:
          `(score_targets, box_targets)`: {level: int32 [h_l, w_l, K]} in {1, 0, -1}
          (positive, negative, not sampled) and {level: float32 [h_l, w_l, K*4]} encoded
          boxes of the matched objects at positive anchors, 0 elsewhere.
        """
        del gt_labels
        flat = tf.concat([tf.reshape(a, [-1, 4]) for a in anchor_boxes.values()], axis=0)
        matched, indicators = match_anchors(
            lambda start, stop: grid_iou(gt_boxes[start:stop], anchor_boxes),
            tf.shape(flat)[0],
            tf.shape(gt_boxes)[0],
            **self._thresholds,
        )
        positive = tf.where(indicators >= 0)
        encoded = self.box_coder.encode(
            box_list.BoxList(tf.gather(gt_boxes, tf.gather_nd(matched, positive))),
            box_list.BoxList(tf.gather_nd(flat, positive)),
        )
        box_targets = tf.scatter_nd(positive, encoded, tf.shape(flat, out_type=tf.int64))
        score_targets, _, _ = self._get_rpn_samples(indicators)
        return (
            anchor.unpack_targets(score_targets, anchor_boxes),
            anchor.unpack_targets(box_targets, anchor_boxes),
        )

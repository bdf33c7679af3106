"""tfcp.data.anchor_labeling against Model Garden's RpnAnchorLabeler (the same targets)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st
from official.vision.ops import anchor, box_matcher, iou_similarity

from tfcp.data import anchor_labeling, targets

ANCHORS = dict(
    min_level=2, max_level=6, num_scales=1, aspect_ratios=(0.5, 1.0, 2.0), anchor_size=8.0
)
SEED = tf.constant([3, 9], tf.int64)


class ModelGardenWithStatelessSampling(anchor.RpnAnchorLabeler):
    """Model Garden's labeler unchanged but for tfcp's seeded fg/bg sampling (the old code)."""

    def __init__(self, seed, **kwargs):
        super().__init__(**kwargs)
        self._seed = tf.cast(seed, tf.int64)

    _get_rpn_samples = anchor_labeling.StatelessRpnAnchorLabeler._get_rpn_samples


def _label(labeler_class, size, boxes):
    anchors = targets.anchor_boxes(size, **ANCHORS)
    labeler = labeler_class(SEED, match_threshold=0.7, unmatched_threshold=0.3)
    classes = tf.ones([tf.shape(boxes)[0], 1])
    return labeler.label_anchors(anchors, boxes, classes)


@tf.function(reduce_retracing=True)
def both(size, boxes):
    return (
        _label(anchor_labeling.StatelessRpnAnchorLabeler, size, boxes),
        _label(ModelGardenWithStatelessSampling, size, boxes),
    )


@tf.function(reduce_retracing=True)
def matches(size, boxes):
    """(matched, indicators) of `match_anchors` and of Model Garden's BoxMatcher."""
    anchors = targets.anchor_boxes(size, **ANCHORS)
    flat = tf.concat([tf.reshape(a, [-1, 4]) for a in anchors.values()], 0)
    matcher = box_matcher.BoxMatcher(
        thresholds=[0.3, 0.7], indicators=[-1, -2, 1], force_match_for_each_col=True
    )
    ours = anchor_labeling.match_anchors(
        lambda start, stop: anchor_labeling.grid_iou(boxes[start:stop], anchors),
        tf.shape(flat)[0],
        tf.shape(boxes)[0],
        match_threshold=0.7,
        unmatched_threshold=0.3,
    )
    return ours, matcher(iou_similarity.IouSimilarity()(flat, boxes))


def assert_identical(test, size, boxes):
    """Matches and score targets bit-identical; box targets equal to float32 rounding (1e-6):
    Model Garden encodes against constant-folded anchors, whose arithmetic grappler may
    rewrite; here the positive anchors are gathered first."""
    boxes = tf.constant(boxes, tf.float32)
    for a, b in zip(*matches(size, boxes), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg="matches")
    ours, reference = both(size, boxes)
    for name, a, b in zip(("score", "box"), ours, reference, strict=True):
        test.assertEqual(sorted(a), sorted(b))
        for level in a:
            x, y = a[level].numpy(), b[level].numpy()
            message = f"{name} targets, level {level}"
            if name == "score":
                np.testing.assert_array_equal(x, y, err_msg=message)
            else:
                np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6, err_msg=message)
    return ours


def random_boxes(rng, n, size, grid=None):
    """n boxes inside [0, size]^2; with `grid`, corners on multiples of it (IoU ties)."""
    y0, x0 = rng.uniform(0, size * 0.9, [2, n])
    h, w = rng.uniform(2, size * 0.6, [2, n])
    boxes = np.stack([y0, x0, np.minimum(y0 + h, size), np.minimum(x0 + w, size)], 1)
    if grid:
        boxes = np.round(boxes / grid) * grid
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + grid)
    return boxes.astype(np.float32)


class AnchorLabelingTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(
        (256, 0, None), (256, 1, None), (256, 7, None), (256, 30, 16), (256, 60, 8),
        (1024, 7, None), (1024, 30, 32),
    )  # fmt: skip
    def test_targets_equal_model_garden(self, size, n, grid):
        rng = np.random.default_rng(size + n)
        scores = assert_identical(self, size, random_boxes(rng, n, size, grid))[0]
        positives = sum(int((s.numpy() == 1).sum()) for s in scores.values())
        self.assertEqual(positives > 0, n > 0)

    def test_duplicate_boxes_share_their_forced_anchor_with_the_first(self):
        box = [40.0, 40.0, 47.0, 61.0]  # small and thin: its best IoU is well below 0.7
        boxes = np.array([box, box, [100.0, 100.0, 180.0, 200.0]], np.float32)
        assert_identical(self, 256, boxes)
        flat = tf.concat(
            [tf.reshape(a, [-1, 4]) for a in targets.anchor_boxes(256, **ANCHORS).values()], 0
        )
        matched, indicators = anchor_labeling.match_anchors(
            lambda start, stop: anchor_labeling.iou_objects_by_anchors(
                tf.constant(boxes)[start:stop], flat
            ),
            tf.shape(flat)[0],
            tf.shape(boxes)[0],
            match_threshold=0.7,
            chunk_size=1,  # the duplicates fall in different chunks: the first keeps ties
            unmatched_threshold=0.3,
        )
        best = int(tf.argmax(iou_similarity.iou(flat, tf.constant(boxes[:1]))[:, 0]))
        self.assertEqual(int(indicators[best]), 1)
        self.assertEqual(int(matched[best]), 0)

    def test_iou_is_bit_identical_to_model_garden(self):
        rng = np.random.default_rng(0)
        boxes = tf.constant(random_boxes(rng, 20, 512, grid=None))
        anchors = tf.constant(random_boxes(rng, 5000, 512, grid=4))
        np.testing.assert_array_equal(
            anchor_labeling.iou_objects_by_anchors(boxes, anchors).numpy(),
            tf.transpose(iou_similarity.iou(anchors, boxes)).numpy(),
        )

    @parameterized.parameters((256, 9, None), (1024, 5, 32))
    def test_grid_iou_is_bit_identical(self, size, n, grid):
        boxes = tf.constant(random_boxes(np.random.default_rng(n), n, size, grid))
        anchors = targets.anchor_boxes(size, **ANCHORS)
        flat = tf.concat([tf.reshape(a, [-1, 4]) for a in anchors.values()], 0)
        np.testing.assert_array_equal(
            anchor_labeling.grid_iou(boxes, anchors).numpy(),
            tf.transpose(iou_similarity.iou(flat, boxes)).numpy(),
        )

    @settings(max_examples=25, deadline=None)
    @given(
        n=st.integers(0, 12),
        grid=st.sampled_from([None, 8, 16]),
        seed=st.integers(0, 2**31 - 1),
    )
    def test_equal_model_garden_on_random_objects(self, n, grid, seed):
        assert_identical(self, 128, random_boxes(np.random.default_rng(seed), n, 128, grid))


if __name__ == "__main__":
    tf.test.main()

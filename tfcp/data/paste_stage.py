"""The training-example stages of `tfcp.data.pipeline`: jittered views, Copy-Paste, targets.

Each record's decoded example becomes a target view (and, when the pasted images have
their own jitter range, a separate source view), then an example with pasted objects,
then Mask R-CNN targets. Every random draw derives from the example seed
`fold_in(stream_seed, position)`:

- `split(example_seed, 3)[0]` jitters the target view, `[1]` the source view;
- `fold_in(example_seed, 1)` seeds the targets (RPN anchor sampling);
- `fold_in(example_seed, 2)` seeds Copy-Paste, and `fold_in(that, 3)` its coin when
  `copy_paste_prob < 1`.

The options of these stages are one frozen `ExampleOptions`, built once by
`pipeline.build_dataset` and passed along.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import tensorflow as tf
from absl import logging

from tfcp.data import targets
from tfcp.ops import copy_paste as copy_paste_lib
from tfcp.ops import scale_jitter

# The keys of a decoded example that a paste source needs.
SOURCE_KEYS = (
    "image",
    "groundtruth_boxes",
    "groundtruth_classes",
    "groundtruth_is_crowd",
    "groundtruth_area",
    "groundtruth_difficult",
    "groundtruth_instance_masks",
    "groundtruth_is_pasted",
    "groundtruth_from_pseudo",
)

# bool []: the example is a Balanced Mosaic of views that were already scale-jittered
# (and, with mosaic_order 'jitter_paste_mosaic', pasted): see `tfcp.data.mosaic_stage`.
VIEWS_FLAG = "mosaic_of_views"

# The map functions are plain TF graphs (no Python control flow on tensors); skipping
# AutoGraph's source conversion of them and of Model Garden's ops saves ~10 s per build.
_no_autograph = tf.autograph.experimental.do_not_convert


@dataclasses.dataclass(frozen=True)
class ExampleOptions:
    """Options of the training-example stages (see `pipeline.build_dataset`'s arguments).

    Attributes:
      image_size: S, the square output size.
      main_scale_range, paste_scale_range: scale jitter ranges of the target and source
        views.
      flip_prob, pad_value: horizontal flip probability and uint8 padding of each view.
      copy_paste_prob: probability of Copy-Paste per example (0: no pasting).
      selection, max_num_pasted, blend_sigma, occluded_area_threshold,
        occluded_box_threshold, paste_crowd: `tfcp.ops.copy_paste.copy_paste` arguments
        (thresholds in pixels of the S x S output).
      keep_is_pasted: track `groundtruth_is_pasted` into `labels['gt_is_pasted']`
        (only meaningful when pasting).
      mosaic_order: `tfcp.data.mosaic_stage.ORDERS` entry (matters with Balanced Mosaic).
      anchor_config, rpn_match_threshold, rpn_unmatched_threshold,
        rpn_batch_size_per_im, rpn_fg_fraction, max_num_instances, mask_crop_size,
        include_mask, skip_crowd, include_anchor_boxes:
        `tfcp.data.targets.maskrcnn_train_targets` arguments (`max_num_instances` also caps
        the objects Copy-Paste keeps).
    """

    image_size: int
    main_scale_range: Sequence[float]
    paste_scale_range: Sequence[float]
    flip_prob: float
    pad_value: float
    copy_paste_prob: float
    selection: str
    max_num_pasted: int
    blend_sigma: float
    occluded_area_threshold: float
    occluded_box_threshold: float | None
    paste_crowd: bool
    keep_is_pasted: bool
    mosaic_order: str
    anchor_config: dict
    rpn_match_threshold: float
    rpn_unmatched_threshold: float
    rpn_batch_size_per_im: int
    rpn_fg_fraction: float
    max_num_instances: int
    mask_crop_size: int
    include_mask: bool
    skip_crowd: bool
    include_anchor_boxes: bool = False

    @property
    def paste(self) -> bool:
        """Whether Copy-Paste is on."""
        return self.copy_paste_prob > 0.0

    @property
    def separate_source_view(self) -> bool:
        """Pasted images get their own jittered view (paper Table 11)."""
        return self.paste and tuple(self.paste_scale_range) != tuple(self.main_scale_range)


def scale_occlusion(
    area: float, box: float | None, image_size: int, reference_size: int
) -> tuple[float, float | None]:
    """Occlusion thresholds in pixels of an R x R image -> pixels of the S x S output.

    Returns:
      (area x (S/R)^2, box x S/R), box None stays None.
    """
    ratio = image_size / float(reference_size)
    area = area * ratio**2
    if box is not None:
        box = box * ratio
    logging.info(
        "Copy-Paste occlusion thresholds scaled from %d px to %d px images: area %g px, box %s px",
        reference_size,
        image_size,
        area,
        box,
    )
    return area, box


def jitter_view(
    example: dict,
    seed: tf.Tensor,
    options: ExampleOptions,
    scale_range: Sequence[float],
    flip_prob: float | None = None,
) -> dict:
    """`tfcp.ops.scale_jitter.scale_jitter` of one example to its S x S view with the stage's
    output size, padding and (unless `flip_prob` is given) flip probability."""
    return scale_jitter.scale_jitter(
        example,
        seed,
        output_size=options.image_size,
        scale_range=scale_range,
        flip_prob=options.flip_prob if flip_prob is None else flip_prob,
        pad_value=options.pad_value,
    )


def source_part(example: dict) -> dict:
    """The `SOURCE_KEYS` entries of an example: what a paste source needs."""
    return {k: v for k, v in example.items() if k in SOURCE_KEYS}


def _take_views_flag(target: dict, options: ExampleOptions) -> tuple[dict, tf.Tensor | None]:
    """`target` without `VIEWS_FLAG`, and bool [] "already pasted, paste no more" (a mosaic of
    pasted views, mosaic_order 'jitter_paste_mosaic'), or None when that cannot be."""
    target = dict(target)
    of_views = target.pop(VIEWS_FLAG, None)
    if options.mosaic_order != "jitter_paste_mosaic":
        return target, None
    return target, of_views


@_no_autograph
def decode_views(
    index: tf.Tensor, decoded: dict, stream_seed: tf.Tensor, options: ExampleOptions
) -> tuple:
    """Jitters one decoded example into its view(s).

    Args:
      index: int64 [], the example's position in the stream.
      decoded: a decoded example (`tfcp.data.decoder`), uint8 image [H, W, 3].
      stream_seed: int64 [2], the stream's seed.
      options: the stage options.

    Returns:
      `(example_seed int64 [2], target)`, plus the source view when
      `options.separate_source_view`; views are S x S (`tfcp.ops.scale_jitter`).
    """
    example_seed = tf.random.experimental.stateless_fold_in(stream_seed, index)
    seeds = tf.random.experimental.stateless_split(example_seed, 3)
    decoded = dict(decoded)
    of_views = decoded.pop(VIEWS_FLAG, None)

    def jitter(example, seed, scale_range):
        random = functools.partial(jitter_view, example, seed, options, scale_range)
        if of_views is None:
            return random()
        # A mosaic of jittered views is S x S already: the identity transform.
        identity = functools.partial(jitter_view, example, seed, options, (1.0, 1.0), 0.0)
        return tf.cond(of_views, identity, random)

    target = jitter(decoded, seeds[0], options.main_scale_range)
    if options.keep_is_pasted and "groundtruth_is_pasted" not in target:
        target["groundtruth_is_pasted"] = tf.zeros_like(target["groundtruth_is_crowd"])
    if of_views is not None and options.paste:
        target[VIEWS_FLAG] = of_views
    if not options.separate_source_view:
        return example_seed, target
    source = jitter(source_part(decoded), seeds[1], options.paste_scale_range)
    return example_seed, target, source


@_no_autograph
def make_targets(example: dict, example_seed: tf.Tensor, options: ExampleOptions) -> tuple:
    """`(image uint8 [S, S, 3], labels)` of one (pasted) view, seeded by `example_seed`."""
    return targets.maskrcnn_train_targets(
        example,
        tf.random.experimental.stateless_fold_in(example_seed, 1),
        image_size=options.image_size,
        anchor_config=options.anchor_config,
        rpn_match_threshold=options.rpn_match_threshold,
        rpn_unmatched_threshold=options.rpn_unmatched_threshold,
        rpn_batch_size_per_im=options.rpn_batch_size_per_im,
        rpn_fg_fraction=options.rpn_fg_fraction,
        max_num_instances=options.max_num_instances,
        mask_crop_size=options.mask_crop_size,
        include_mask=options.include_mask,
        skip_crowd=options.skip_crowd,
        keep_is_pasted=options.keep_is_pasted,
        include_anchor_boxes=options.include_anchor_boxes,
    )


def paste_one(target: dict, source: dict, example_seed: tf.Tensor, options: ExampleOptions) -> dict:
    """Copy-Paste of `source` onto `target` with probability `options.copy_paste_prob`.

    A target carrying `VIEWS_FLAG` (a mosaic of views) is not pasted onto when the flag is
    True and `options.mosaic_order` is 'jitter_paste_mosaic' (its views were pasted); the
    flag is removed either way.
    """
    target, pasted_views = _take_views_flag(target, options)
    if pasted_views is not None:
        return tf.cond(
            pasted_views,
            lambda: dict(target),
            lambda: paste_one(target, source, example_seed, options),
        )
    paste_seed = tf.random.experimental.stateless_fold_in(example_seed, 2)

    def pasted():
        return copy_paste_lib.copy_paste(
            target,
            source,
            paste_seed,
            selection=options.selection,
            max_num_pasted=options.max_num_pasted,
            blend_sigma=options.blend_sigma,
            occluded_area_threshold=options.occluded_area_threshold,
            occluded_box_threshold=options.occluded_box_threshold,
            paste_crowd=options.paste_crowd,
            max_num_instances=options.max_num_instances,
        )

    if options.copy_paste_prob >= 1.0:
        return pasted()
    coin = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(paste_seed, 3))
    return tf.cond(coin < options.copy_paste_prob, pasted, lambda: dict(target))


def as_source(source: dict, options: ExampleOptions) -> dict:
    """Marks a paste source's objects as pasted when `options.keep_is_pasted`."""
    if options.keep_is_pasted:
        source["groundtruth_is_pasted"] = tf.ones_like(source["groundtruth_is_crowd"])
    return source


@_no_autograph
def paste_example(
    example_seed: tf.Tensor,
    target: dict,
    source: dict,
    do_paste: tf.Tensor,
    *,
    options: ExampleOptions,
) -> tuple:
    """Two sources: pastes the assigned `source` when `do_paste` (bool []), then targets."""
    source = as_source(dict(source), options)
    target, pasted_views = _take_views_flag(target, options)
    if pasted_views is not None:
        do_paste = tf.logical_and(do_paste, tf.logical_not(pasted_views))
    example = tf.cond(
        do_paste,
        lambda: paste_one(target, source, example_seed, options),
        lambda: dict(target),
    )
    return make_targets(example, example_seed, options)


def cross_views(
    example_seeds: Sequence[tf.Tensor],
    pair_targets: Sequence[dict],
    pair_sources: Sequence[dict],
    options: ExampleOptions,
) -> tuple:
    """`paste(t0, s1)`, `paste(t1, s0)`, then the targets of both.

    Args:
      example_seeds: the two examples' int64 [2] seeds.
      pair_targets: their target views (`decode_views`).
      pair_sources: their source views (the targets' `source_part` when the sources have
        no view of their own).
      options: the stage options.

    Returns:
      The two examples' `(image, labels)` stacked along a leading dim of 2.
    """
    outputs = []
    for k in (0, 1):
        source = as_source(dict(pair_sources[1 - k]), options)
        example = paste_one(pair_targets[k], source, example_seeds[k], options)
        outputs.append(make_targets(example, example_seeds[k], options))
    return tf.nest.map_structure(lambda a, b: tf.stack([a, b]), outputs[0], outputs[1])


@_no_autograph
def cross_pair(
    example_seeds: tf.Tensor,
    pair_targets: dict,
    pair_sources: dict | None = None,
    *,
    options: ExampleOptions,
) -> tuple:
    """A ragged pair (leading dim 2) of views -> `cross_views`.

    `pair_sources` are the separate source views (None: the targets serve as sources).
    """
    if pair_sources is None:
        pair_sources = source_part(pair_targets)
    rows = [{key: value[k] for key, value in pair_targets.items()} for k in (0, 1)]
    sources = [{key: value[k] for key, value in pair_sources.items()} for k in (0, 1)]
    return cross_views(example_seeds, rows, sources, options)


def views_stage(
    decoded: tf.data.Dataset,
    stream_seed: tf.Tensor,
    options: ExampleOptions,
    num_parallel_calls: int,
) -> tf.data.Dataset:
    """`(index, decoded example)` elements -> `decode_views` elements, in order."""
    return decoded.map(
        lambda index, example: decode_views(index, example, stream_seed, options),
        num_parallel_calls=num_parallel_calls,
        deterministic=True,
    )


def examples_stage(
    dataset: tf.data.Dataset,
    options: ExampleOptions,
    *,
    mixed: bool,
    drop: int,
    num_parallel_calls: int,
) -> tf.data.Dataset:
    """Views -> unbatched `(image, labels)` training examples.

    One source with Copy-Paste goes through this ragged pairing of views only with Balanced
    Mosaic; otherwise `tfcp.data.pair_stage` pairs the records before decoding them.

    Args:
      dataset: `views_stage` elements, or with `mixed` `tfcp.data.mixed_sources.mix`
        elements `(example_seed, target, source, do_paste)`.
      options: the stage options.
      mixed: two sources (pairs are assigned by `mixed_sources`).
      drop: leading examples to drop after pairing (`records.read`; one source only).
      num_parallel_calls: parallelism of the maps.
    """
    if mixed and options.paste:
        return dataset.map(
            functools.partial(paste_example, options=options),
            num_parallel_calls=num_parallel_calls,
            deterministic=True,
        )
    if options.paste:
        dataset = dataset.ragged_batch(2, drop_remainder=True)
        dataset = dataset.map(
            functools.partial(cross_pair, options=options),
            num_parallel_calls=num_parallel_calls,
            deterministic=True,
        )
        return dataset.unbatch().skip(drop)
    return dataset.map(
        lambda s, t: make_targets(t, s, options), num_parallel_calls=num_parallel_calls
    )

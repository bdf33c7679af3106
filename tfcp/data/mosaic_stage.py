"""Balanced Mosaic as a stage of the training pipeline (LVIS 2020 challenge report, Alg. 1).

The record reader pairs every training record at position p with three partner records
(`tfcp.data.records.read(mosaic_partners=3)`): partner positions 3p, 3p+1, 3p+2 of a second,
independently shuffled stream over the same files. That stream uses the main stream's repeat
factors when repeat factor sampling is on, so within an epoch image i is a partner
floor(r_i) + Bernoulli(frac(r_i)) times: its expected share of the partners is exactly
p_i = r_i / sum_j r_j (the report's balanced sampling; uniform without factors). Because
partners are keyed by the main record's position, a resumed run gets the same partners.

`mosaic_stage` then applies `tfcp.ops.mosaic.mosaic` to a decoded example with probability
`prob` (seeded by the example's position): the three partners are decoded and checked only
when the mosaic is drawn, so `prob` < 1 costs no partner decode for the other examples. The
result has the decoded example's structure, so the rest of the pipeline (scale jitter,
Copy-Paste, targets) runs unchanged. The order of the three augmentations is `order`:

- 'mosaic_jitter_paste' (default): the mosaic of the four decoded images (pre-transform
  scale from x_0), then scale jitter of the mosaic, then Copy-Paste onto it (mosaic then
  paste: pasted sources are mosaics too when their example was drawn).
- 'jitter_mosaic_paste': each of the four images first gets its own scale jitter (the
  target range, flip) to S x S, the four views are composed (pre-transform scale 1), the
  mosaic is not jittered again (`paste_stage.decode_views` sees `VIEWS_FLAG`), then
  Copy-Paste onto it.
- 'jitter_paste_mosaic': as above, and each view first gets Copy-Paste from the next image
  of its group (x_0 <- x_1 <- x_2 <- x_3 <- x_0; with a separate paste jitter range, from
  that image's own source view), then the four pasted views are composed and the mosaic is
  not pasted onto again (`paste_stage.paste_one` sees `VIEWS_FLAG`). Four pastes per mosaic;
  the sources are the partners, drawn by repeat factor.

Seeds of the member views: split(fold_in(mosaic seed, VIEW_SALT), 8), [i] jitters image i's
view, [4 + i] its source view and seeds its paste; the mosaic itself draws from the same
seed in every order. Examples not drawn for a mosaic are unchanged in every order.

Bad partner records: with `on_bad_record='raise'` a bad partner stops the input naming it
like any bad record; with 'skip' the example is kept without mosaic and a warning names the
partner (it is counted as skipped where it is read as a main record, not here).

Counters (process-wide, like `record_policy.skipped_counter`): `mosaic_counts()` returns the
mosaics made and the objects the mosaic crop dropped (visible area below the threshold).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfcp.data import paste_stage, record_policy, records, validation
from tfcp.ops import mosaic as mosaic_lib

NUM_PARTNERS = 3
PARTNER_SEED_OFFSET = 0x3051_0000  # the partner stream's seed: seed + this
_SEED_SALT = 0x3051  # folds the example seed into the mosaic's: other draws stay unchanged
NUM_IMAGES = mosaic_lib.NUM_IMAGES
VIEW_SALT = 0x5649  # folds the mosaic seed into its member views' seeds
ORDERS = ("mosaic_jitter_paste", "jitter_mosaic_paste", "jitter_paste_mosaic")
VIEWS_FLAG = paste_stage.VIEWS_FLAG
_counters: tuple[tf.Variable, tf.Variable] | None = None


def with_partners(
    dataset: tf.data.Dataset,
    files: Sequence[str],
    *,
    num_partners: int,
    seed: int,
    shuffle_window: int,
    input_context: tf.distribute.InputContext | None,
    first_position: int,
    repeat_factors: Sequence[np.ndarray] | None,
) -> tf.data.Dataset:
    """Adds `num_partners` partner records to each element of a training record stream.

    Args:
      dataset: `records.train_records` elements `(position, record_name, serialized)`
        whose first position is `first_position`.
      files: the stream's files (partners come from the same input pipeline's share).
      num_partners: n, partners per element.
      seed, shuffle_window: the stream's; the partner stream uses seed + PARTNER_SEED_OFFSET.
      input_context: the stream's input pipeline layout.
      first_position: the main stream's first position p0.
      repeat_factors: per-file factors of the partners (None: uniform).

    Returns:
      `(position, record_name, serialized, partner_names string [n], partner_serialized
      string [n])`: the element at position p gets partner positions n*p .. n*p + n - 1.
    """
    num_pipelines, pipeline_id, _ = records.pipeline_layout(input_context, 1)
    partners = records.train_records(
        files,
        seed=seed + PARTNER_SEED_OFFSET,
        shuffle_window=shuffle_window,
        num_pipelines=num_pipelines,
        pipeline_id=pipeline_id,
        start=num_partners * int(first_position),
        repeat_factors=repeat_factors,
    )
    partners = partners.map(lambda position, name, serialized: (name, serialized)).batch(
        num_partners, drop_remainder=True
    )
    return tf.data.Dataset.zip(dataset, partners).map(lambda element, partner: (*element, *partner))


def mosaic_counters() -> tuple[tf.Variable, tf.Variable]:
    """The process-wide int64 counters (mosaics made, objects dropped), created on first use
    (the trainer creates them outside its distribution strategy's scope)."""
    global _counters
    if _counters is None:
        with tf.init_scope():
            _counters = (
                tf.Variable(0, dtype=tf.int64, trainable=False, name="mosaics_made"),
                tf.Variable(0, dtype=tf.int64, trainable=False, name="mosaic_objects_dropped"),
            )
    return _counters


def mosaic_counts() -> tuple[int, int]:
    """(mosaics made, objects dropped by the mosaic crop) so far in this process."""
    if _counters is None:
        return 0, 0
    return int(_counters[0].numpy()), int(_counters[1].numpy())


def _like(example: dict[str, tf.Tensor], reference: dict[str, tf.Tensor]) -> dict:
    """`example` restricted to `reference`'s keys and dtypes (the two tf.cond branches)."""
    missing = sorted(set(reference) - set(example))
    if missing:
        raise ValueError(f"the mosaic op's output lacks the decoded keys {missing}")
    return {key: tf.cast(example[key], value.dtype) for key, value in reference.items()}


def without_mosaic(position: tf.Tensor, decoded: dict[str, tf.Tensor]) -> tuple:
    """A stream without mosaics in the structure of a 'jitter_*' order's (two sources)."""
    return position, {**decoded, VIEWS_FLAG: tf.constant(False)}


def member_views(
    members: list[dict[str, tf.Tensor]],
    seed: tf.Tensor,
    options: paste_stage.ExampleOptions,
    paste: bool,
) -> list[dict[str, tf.Tensor]]:
    """The S x S views of a mosaic's four images for the 'jitter_*' orders.

    Args:
      members: the four decoded examples (uint8 image [H_i, W_i, 3], masks uint8).
      seed: int64 [2], the mosaic seed (module docstring).
      options: the pipeline's stage options (jitter ranges, flip, Copy-Paste settings).
      paste: paste image (i + 1) % 4 onto view i ('jitter_paste_mosaic').

    Returns:
      Four examples of the decoded structure at S x S (no `image_info`), pasted if asked
      (`groundtruth_is_pasted` kept when `options.keep_is_pasted`).
    """
    seeds = tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(seed, VIEW_SALT), 2 * NUM_IMAGES
    )

    def view(example, view_seed, scale_range):
        out = paste_stage.jitter_view(example, view_seed, options, scale_range)
        out.pop("image_info")
        return out

    views = [view(m, seeds[i], options.main_scale_range) for i, m in enumerate(members)]
    if not paste:
        return views
    if options.keep_is_pasted:
        for v in views:
            v["groundtruth_is_pasted"] = tf.zeros_like(v["groundtruth_is_crowd"])
    if options.separate_source_view:
        sources = [
            view(paste_stage.source_part(m), seeds[NUM_IMAGES + i], options.paste_scale_range)
            for i, m in enumerate(members)
        ]
    else:
        sources = [paste_stage.source_part(m) for m in views]
    return [
        paste_stage.paste_one(
            views[i],
            paste_stage.as_source(dict(sources[(i + 1) % NUM_IMAGES]), options),
            seeds[NUM_IMAGES + i],
            options,
        )
        for i in range(NUM_IMAGES)
    ]


def mosaic_stage(
    dataset: tf.data.Dataset,
    *,
    base_seed: tf.Tensor,
    prob: float,
    options: paste_stage.ExampleOptions,
    on_bad_record: str,
    num_classes: int | None,
    order: str = ORDERS[0],
    center_range: Sequence[float] = (0.5, 1.5),
    color_jitter: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
    min_visible_area: float = 1.0,
    num_parallel_calls: int = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """Balanced Mosaic on `(position, decoded, partner_names, partner_serialized)` elements.

    Args:
      dataset: `record_policy.decode_stage`'s output with the reader's partner records:
        position int64 [], decoded dict (`decoder.decode`, masks uint8 [N, H, W]),
        partner_names string [3], partner_serialized string [3].
      base_seed: int64 [2], the pipeline's stream seed; the example's mosaic seed is
        fold_in(fold_in(base_seed, position), salt), so the other augmentations of an
        example draw the same numbers with and without this stage.
      prob: probability of a mosaic per example, in (0, 1].
      options: the pipeline's stage options: `image_size` S (the mosaic is S x S),
        `pad_value`, and for the 'jitter_*' orders the jitter and Copy-Paste settings.
      on_bad_record: 'raise' or 'skip' (module docstring).
      num_classes: class id check of the partners (as for the main records).
      order: one of `ORDERS` (module docstring).
      center_range, min_visible_area: `tfcp.ops.mosaic.mosaic`'s arguments.
      color_jitter: (brightness, contrast, saturation, hue) of the mosaic's post-transform.
      num_parallel_calls: parallelism of the map.

    Returns:
      A dataset of `(position int64 [], decoded dict)`: the decoded structure, plus
      `VIEWS_FLAG` bool [] (True for mosaics) in the 'jitter_*' orders, and
      `groundtruth_is_pasted` int [N] in 'jitter_paste_mosaic' with
      `options.keep_is_pasted`.
    """
    if order not in ORDERS:
        raise ValueError(f"mosaic_order must be one of {ORDERS}, got {order!r}")
    if order == "jitter_paste_mosaic" and not options.paste:
        raise ValueError(
            "mosaic_order='jitter_paste_mosaic' needs Copy-Paste (copy_paste_prob > 0)"
        )
    of_views = order != ORDERS[0]
    paste_first = order == "jitter_paste_mosaic"
    if not 0.0 < prob <= 1.0:
        raise ValueError(f"mosaic_prob must be in (0, 1] for the mosaic stage, got {prob}")
    if len(color_jitter) != 4:
        raise ValueError(
            f"mosaic color_jitter is (brightness, contrast, saturation, hue), got {color_jitter}"
        )
    made, dropped_total = mosaic_counters()
    brightness, contrast, saturation, hue = (float(x) for x in color_jitter)

    def reference(decoded):
        """The decoded structure of the stage's output (without a mosaic)."""
        out = dict(decoded)
        if of_views:
            out[VIEWS_FLAG] = tf.constant(False)
        if paste_first and options.keep_is_pasted:
            out["groundtruth_is_pasted"] = tf.zeros_like(decoded["groundtruth_is_crowd"])
        return out

    def combine(decoded, partners, seed):
        members = [decoded, *partners]
        if of_views:
            members = member_views(members, seed, options, paste_first)
        out, dropped = mosaic_lib.mosaic(
            members,
            seed,
            output_size=options.image_size,
            center_range=tuple(center_range),
            flip_prob=0.0,  # scale jitter flips every image afterwards
            brightness=brightness,
            contrast=contrast,
            saturation=saturation,
            hue=hue,
            min_visible_area=min_visible_area,
            pad_value=options.pad_value,
        )
        if of_views:
            out[VIEWS_FLAG] = tf.constant(True)
        with tf.control_dependencies(
            [made.assign_add(1), dropped_total.assign_add(tf.cast(dropped, tf.int64))]
        ):
            return {k: tf.identity(v) for k, v in _like(out, reference(decoded)).items()}

    def make(decoded, names, serialized, seed):
        partners, oks, messages = [], [], []
        for k in range(NUM_PARTNERS):
            partner, ok, reason = validation.decode_checked(
                serialized[k], include_mask=True, num_classes=num_classes
            )
            partners.append(partner)
            oks.append(ok)
            messages.append(validation.format_error(names[k], partner, reason))
        if on_bad_record == "raise":
            checks = [record_policy.assert_good(ok, m) for ok, m in zip(oks, messages, strict=True)]
            with tf.control_dependencies(checks):
                return combine(decoded, partners, seed)
        all_ok = tf.reduce_all(tf.stack(oks))

        def keep_plain():
            bad = tf.strings.reduce_join(
                tf.boolean_mask(tf.stack(messages), tf.logical_not(tf.stack(oks))),
                separator="; ",
            )
            warn = tf.print(
                "WARNING: no mosaic for this example, bad partner:", bad, output_stream=sys.stderr
            )
            with tf.control_dependencies([warn]):
                return {k: tf.identity(v) for k, v in reference(decoded).items()}

        return tf.cond(all_ok, lambda: combine(decoded, partners, seed), keep_plain)

    @tf.autograph.experimental.do_not_convert
    def maybe_mosaic(position, decoded, names, serialized):
        example_seed = tf.random.experimental.stateless_fold_in(base_seed, position)
        seed = tf.random.experimental.stateless_fold_in(example_seed, _SEED_SALT)
        coin_seed, op_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        if prob >= 1.0:
            return position, make(decoded, names, serialized, op_seed)
        coin = tf.random.stateless_uniform([], coin_seed)
        return position, tf.cond(
            coin < prob,
            lambda: make(decoded, names, serialized, op_seed),
            lambda: {k: tf.identity(v) for k, v in reference(decoded).items()},
        )

    return dataset.map(maybe_mosaic, num_parallel_calls=num_parallel_calls, deterministic=True)

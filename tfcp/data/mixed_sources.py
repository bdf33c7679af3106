"""Two training sources in every batch: labeled and pseudo-labeled images (self-training).

The paper's self-training Copy-Paste (Ghiasi et al. 2021, Sec. 4.4, Tables 2-3): a teacher
pseudo-labels unlabeled images (`python -m tfcp.pseudo_label`); the student trains on batches
of which a fixed share comes from the pseudo-labeled records (half in the paper), and
Copy-Paste pastes objects from one kind of image (`paste_from`, ground truth in the paper)
into the labeled images, the pseudo-labeled ones, or both (`paste_into`).

Each per-replica batch of B images holds exactly `num_labeled` labeled images (rows
0..num_labeled-1) and `num_pseudo` pseudo-labeled ones (the other rows). Each source is
read by its own resumable stream (`tfcp.data.records`): at step s, the labeled stream is at
position s x num_labeled and the pseudo stream at s x num_pseudo, so batches depend on the
seed and the step only and a resumed run gets exactly the batches of an uninterrupted one.

Copy-Paste sources are the other images of the same batch of the `paste_from` kind (their
jittered views, or their separate source views when the pasted images have their own jitter
range): a seeded rotation of a seeded permutation gives each target of that kind a source
other than itself (with two of them, the single-source pipeline's cross pairing), and the
targets of the other kind take the pool's images in a second seeded order, each used once
before any is used twice. No image is decoded twice.
"""

from __future__ import annotations

import tensorflow as tf

PASTE_INTO = ("labeled", "pseudo", "both")
PASTE_FROM = ("labeled", "pseudo")


def split_batch(batch_size: int, pseudo_fraction: float) -> tuple[int, int]:
    """(labeled, pseudo-labeled) images of a per-replica batch.

    Args:
      batch_size: the per-replica batch size B.
      pseudo_fraction: the share of pseudo-labeled images, in (0, 1).

    Returns:
      (B - P, P) with P = pseudo_fraction x B, which must be a whole number so that every
      replica batch (and so every global batch) has exactly the requested share.

    Raises:
      ValueError: pseudo_fraction outside (0, 1), or P not a whole number, or a source with
        no image in the batch.
    """
    if not 0.0 < pseudo_fraction < 1.0:
        raise ValueError(
            f"pseudo_fraction must be in (0, 1), got {pseudo_fraction} (to train on labeled "
            "data only, leave pseudo_file_pattern (PSEUDO_FILES) unset)"
        )
    share = pseudo_fraction * batch_size
    num_pseudo = round(share)
    if abs(share - num_pseudo) > 1e-6 or not 0 < num_pseudo < batch_size:
        raise ValueError(
            f"pseudo_fraction {pseudo_fraction} x per-replica batch {batch_size} = {share:g} "
            "is not a whole number of images between 1 and the batch size - 1; choose a "
            "GLOBAL_BATCH_SIZE or pseudo_fraction that divide exactly"
        )
    return batch_size - num_pseudo, num_pseudo


def check_paste(paste_into: str, paste_from: str, num_labeled: int, num_pseudo: int) -> None:
    """Raises ValueError for unknown placements or a batch too small for them."""
    if paste_into not in PASTE_INTO:
        raise ValueError(f"paste_into must be one of {PASTE_INTO}, got {paste_into!r}")
    if paste_from not in PASTE_FROM:
        raise ValueError(f"paste_from must be one of {PASTE_FROM}, got {paste_from!r}")
    pool = num_labeled if paste_from == "labeled" else num_pseudo
    if paste_into in (paste_from, "both") and pool < 2:
        raise ValueError(
            f"paste_into={paste_into!r} with paste_from={paste_from!r} pastes {paste_from} "
            f"images into each other, which needs at least 2 {paste_from} images per replica "
            f"batch; the batch has {pool} (raise GLOBAL_BATCH_SIZE)"
        )


def paste_targets(paste_into: str, num_labeled: int, num_pseudo: int) -> list[bool]:
    """Which rows of a batch (labeled first) get Copy-Paste: B Python bools."""
    into_labeled = paste_into in ("labeled", "both")
    into_pseudo = paste_into in ("pseudo", "both")
    return [into_labeled] * num_labeled + [into_pseudo] * num_pseudo


def assign_sources(
    seed: tf.Tensor, num_labeled: int, num_pseudo: int, paste_from: str
) -> tf.Tensor:
    """The pool image each row of a batch takes its pasted objects from.

    The pool is the batch's `paste_from` images (rows 0..n-1 of that kind, n = num_labeled
    or num_pseudo). A row of the pool's kind never gets itself: with a seeded permutation p
    of the pool and a seeded shift r in [1, n-1], row p[i] gets p[(i + r) mod n], so every
    pool image is the source of exactly one row of its own kind. Rows of the other kind get
    the pool's images in a second seeded order, cycling.

    Args:
      seed: int [2] stateless seed.
      num_labeled, num_pseudo: images of each kind in the batch (labeled rows first).
      paste_from: 'labeled' or 'pseudo'.

    Returns:
      int32 [num_labeled + num_pseudo], indices into the pool.
    """
    n = num_labeled if paste_from == "labeled" else num_pseudo
    other = num_pseudo if paste_from == "labeled" else num_labeled
    perm_seed, shift_seed, other_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    perm = tf.argsort(tf.random.stateless_uniform([n], perm_seed), stable=True)
    if n > 1:
        shift = tf.random.stateless_uniform([], shift_seed, minval=1, maxval=n, dtype=tf.int32)
    else:
        shift = tf.constant(0, tf.int32)  # a single pool image only feeds the other kind
    rotated = tf.gather(perm, (tf.range(n) + shift) % n)
    own = tf.scatter_nd(perm[:, None], rotated, [n])  # own[perm[i]] = perm[(i + r) % n]
    order = tf.argsort(tf.random.stateless_uniform([n], other_seed), stable=True)
    others = tf.gather(order, tf.range(other) % n)
    parts = [own, others] if paste_from == "labeled" else [others, own]
    return tf.cast(tf.concat(parts, 0), tf.int32)


def tag_views(views: tuple, is_pseudo: bool, keep_flags: bool) -> tuple:
    """Adds the source flags to a view tuple `(example_seed, target[, source])`.

    With `keep_flags`, the target gets `is_pseudo` bool [] and every view gets
    `groundtruth_from_pseudo` bool [N] (carried by Copy-Paste with the pasted objects).
    """
    if not keep_flags:
        return views
    tagged = [views[0]]
    for k, view in enumerate(views[1:]):
        view = dict(view)
        view["groundtruth_from_pseudo"] = tf.fill(tf.shape(view["groundtruth_is_crowd"]), is_pseudo)
        if k == 0:
            view["is_pseudo"] = tf.constant(is_pseudo)
        tagged.append(view)
    return tuple(tagged)


def mix(
    labeled: tf.data.Dataset,
    pseudo: tf.data.Dataset,
    *,
    num_labeled: int,
    num_pseudo: int,
    paste: bool,
    paste_into: str = "both",
    paste_from: str = "labeled",
    source_keys: tuple[str, ...] = (),
    num_parallel_calls: int = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """Interleaves two view streams batch-wise and picks each row's Copy-Paste source.

    Args:
      labeled, pseudo: datasets of views `(example_seed int64 [2], target dict[, source
        dict])` (a separate source view when the pasted images have their own jitter), as
        the pipeline's `decode_views` makes them.
      num_labeled, num_pseudo: images of each kind per batch (`split_batch`).
      paste: whether Copy-Paste is on (False: no sources are gathered).
      paste_into, paste_from: see the module doc; validated by the caller
        (`check_paste`, which `build_dataset` calls before opening any record).
      source_keys: the keys of a view that a paste source needs.
      num_parallel_calls: parallelism of the batch-wise map.

    Returns:
      Without `paste`: per-example `(example_seed, target)`. With it: per-example
      `(example_seed, target, source, do_paste bool [])`; rows come in batch order, each
      batch's labeled rows first, so batching by B restores the batches.
    """
    batches = tf.data.Dataset.zip(
        labeled.ragged_batch(num_labeled, drop_remainder=True),
        pseudo.ragged_batch(num_pseudo, drop_remainder=True),
    )
    do_paste = tf.constant(paste_targets(paste_into, num_labeled, num_pseudo))

    def combine(lab, pse):
        seeds = tf.concat([lab[0], pse[0]], 0)
        targets = {k: tf.concat([lab[1][k], pse[1][k]], 0) for k in lab[1]}
        if not paste:
            return seeds, targets
        pool = (lab if paste_from == "labeled" else pse)[-1]  # source views, or targets
        rows = assign_sources(
            tf.random.experimental.stateless_fold_in(seeds[0], 5),
            num_labeled,
            num_pseudo,
            paste_from,
        )
        sources = {k: tf.gather(v, rows) for k, v in pool.items() if k in source_keys}
        return seeds, targets, sources, do_paste

    mixed = batches.map(combine, num_parallel_calls=num_parallel_calls, deterministic=True)
    return mixed.unbatch()

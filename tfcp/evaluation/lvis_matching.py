"""Matching, accumulation and summary of LVIS evaluation (numpy), as lvis-api 0.5.3 `LVISEval`.

`match_detections` is `LVISEval.evaluate_img` for one (image, category) pair, vectorized over
the four area ranges and the ten IoU thresholds; `accumulate` is `LVISEval.accumulate`
(101-point interpolated precision, recall at the last detection); `summarize` is
`LVISEval.summarize`. The rules kept from the reference:

- greedy matching in decreasing score order: a detection takes, among the ground truth not yet
  matched at that threshold with IoU >= threshold, the one of highest IoU (the later one on
  ties), preferring ground truth inside the area range (not ignored) over ignored ground truth;
- a detection matched to ignored ground truth is ignored (neither true nor false positive);
- an unmatched detection is ignored when its area is outside the range or when its category is
  in the image's `not_exhaustive_category_ids`;
- a (category, area range) with no counted ground truth gets precision and recall -1 and is left
  out of the means.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Exactly the reference's `Params` (np.linspace, so that 0.5 and 0.75 compare equal).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = np.array([[0**2, 1e5**2], [0**2, 32**2], [32**2, 96**2], [96**2, 1e5**2]], np.float64)
AREA_NAMES = ("all", "small", "medium", "large")


def _greedy_match(ious: np.ndarray, ignored: np.ndarray) -> np.ndarray:
    """The reference's greedy matching for U patterns of ignored ground truth.

    Args:
      ious: float64 [D, G], detections in decreasing score order.
      ignored: bool [U, G].

    Returns:
      int [U, T, D]: the ground-truth index each detection matches, -1 for none.
    """
    num_dt, num_gt = ious.shape
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[None, :, None]  # [1, T, 1]
    match = np.full((ignored.shape[0], len(IOU_THRESHOLDS), num_dt), -1)
    if not num_dt or not num_gt:
        return match
    # Exact integer keys: the dense rank of the IoU (equal IoUs, equal rank) plus a bonus that
    # puts every counted object before every ignored one. The last maximal key wins (the
    # reference's `>=` scan keeps the later of tied objects).
    rank = np.unique(ious, return_inverse=True)[1].reshape(ious.shape)
    bonus = np.where(ignored, 0, ious.size)[:, None, :]  # [U, 1, G]
    taken = np.zeros(match.shape[:2] + (num_gt,), bool)  # [U, T, G]
    rows, cols = np.arange(match.shape[0])[:, None], np.arange(match.shape[1])[None, :]
    # A detection below the lowest threshold against every object matches nothing.
    for d in np.flatnonzero(ious.max(axis=1) >= thresholds.min()):
        key = np.where(~taken & (ious[d] >= thresholds), rank[d] + bonus, -1)  # [U, T, G]
        best = num_gt - 1 - np.argmax(key[..., ::-1], axis=-1)  # [U, T]
        hit = key[rows, cols, best] >= 0
        taken[rows, cols, best] |= hit
        match[:, :, d] = np.where(hit, best, -1)
    return match


def match_detections(
    ious: np.ndarray,
    gt_area: np.ndarray,
    gt_ignore: np.ndarray,
    dt_area: np.ndarray,
    not_exhaustive: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matches the detections of one (image, category) to its ground truth.

    Args:
      ious: float64 [D, G] IoU of each detection (rows, in decreasing score order, ties in
        input order) with each ground-truth object (columns, in annotation order).
      gt_area: float [G] ground-truth `area` fields.
      gt_ignore: bool [G] ground-truth `ignore` flags (LVIS has none: all False).
      dt_area: float [D] detection areas (box w*h for `bbox`, mask pixels for `segm`).
      not_exhaustive: the category is in the image's `not_exhaustive_category_ids`.

    Returns:
      `dt_matched` bool [A, T, D], `dt_ignore` bool [A, T, D] and `gt_ignore` bool [A, G],
      A = len(AREA_RANGES) area ranges, T = len(IOU_THRESHOLDS) thresholds.
    """
    lo, hi = AREA_RANGES[:, 0:1], AREA_RANGES[:, 1:2]
    gt_ig = np.asarray(gt_ignore, bool)[None] | (gt_area[None] < lo) | (gt_area[None] > hi)
    # Area ranges that ignore the same objects match identically: match each pattern once.
    patterns, inverse = np.unique(gt_ig, axis=0, return_inverse=True)
    match = _greedy_match(ious, patterns)[inverse.reshape(-1)]  # [A, T, D]
    dt_matched = match >= 0
    areas = np.arange(len(AREA_RANGES))[:, None, None]
    dt_ig = dt_matched & gt_ig[areas, np.maximum(match, 0)] if gt_ig.size else dt_matched
    dt_out = (dt_area[None] < lo) | (dt_area[None] > hi)  # [A, D]
    if not_exhaustive:
        dt_out = np.ones_like(dt_out)
    dt_ig = dt_ig | (~dt_matched & dt_out[:, None, :])
    return dt_matched, dt_ig, gt_ig


def accumulate(
    per_category: Sequence[Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]],
) -> tuple[np.ndarray, np.ndarray]:
    """Precision/recall tables from the per-(image, category) matches.

    Args:
      per_category: for each of the K categories, the evaluated images in increasing image-id
        order, each a tuple (`scores` float [D] in decreasing order, `dt_matched` [A, T, D],
        `dt_ignore` [A, T, D], `gt_ignore` [A, G]) from `match_detections`.

    Returns:
      `precision` float64 [T, R, K, A] (R = len(RECALL_THRESHOLDS)) and `recall` float64
      [T, K, A]; -1 where the category has no counted ground truth in the area range.
    """
    num_a, num_t, num_r = len(AREA_RANGES), len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    num_k = len(per_category)
    precision = -np.ones((num_t, num_r, num_k, num_a))
    recall = -np.ones((num_t, num_k, num_a))
    for k, entries in enumerate(per_category):
        if not entries:
            continue
        num_gt = sum(np.count_nonzero(~e[3], axis=-1) for e in entries)  # [A]
        scores = np.concatenate([e[0] for e in entries])
        order = np.argsort(-scores, kind="mergesort")
        matched = np.concatenate([e[1] for e in entries], axis=-1)[..., order]
        ignored = np.concatenate([e[2] for e in entries], axis=-1)[..., order]
        tp_sum = np.cumsum(matched & ~ignored, axis=-1).astype(np.float64)
        fp_sum = np.cumsum(~matched & ~ignored, axis=-1).astype(np.float64)
        num_dt = len(scores)
        for a in np.flatnonzero(num_gt):
            rc = tp_sum[a] / num_gt[a]  # [T, D]
            pr = tp_sum[a] / (fp_sum[a] + tp_sum[a] + np.spacing(1))
            pr = np.maximum.accumulate(pr[:, ::-1], axis=-1)[:, ::-1]
            recall[:, k, a] = rc[:, -1] if num_dt else 0.0
            for t in range(num_t):
                index = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
                valid = index < num_dt
                precision[t, :, k, a] = 0.0
                precision[t, valid, k, a] = pr[t, index[valid]]
    return precision, recall


def _mean(values: np.ndarray) -> float:
    kept = values[values > -1]
    return float(np.mean(kept)) if kept.size else -1.0


def summarize(
    precision: np.ndarray, recall: np.ndarray, frequency_groups: Sequence[Sequence[int]]
) -> dict[str, float]:
    """The LVIS summary metrics from `accumulate`'s tables.

    Args:
      precision: float64 [T, R, K, A].
      recall: float64 [T, K, A].
      frequency_groups: the category indices (into K) of the rare, common and frequent groups.

    Returns:
      AP, AP50, AP75, APs, APm, APl, APr, APc, APf and AR, ARs, ARm, ARl (recall at the
      detection cap): means over the entries > -1, or -1 when there is none.
    """
    t50 = np.flatnonzero(IOU_THRESHOLDS == 0.5)
    t75 = np.flatnonzero(IOU_THRESHOLDS == 0.75)
    metrics = {
        "AP": _mean(precision[..., 0]),
        "AP50": _mean(precision[t50, ..., 0]),
        "AP75": _mean(precision[t75, ..., 0]),
        "APs": _mean(precision[..., 1]),
        "APm": _mean(precision[..., 2]),
        "APl": _mean(precision[..., 3]),
    }
    for name, group in zip(("APr", "APc", "APf"), frequency_groups, strict=True):
        metrics[name] = _mean(precision[:, :, np.asarray(group, np.int64), 0])
    for name, a in (("AR", 0), ("ARs", 1), ("ARm", 2), ("ARl", 3)):
        metrics[name] = _mean(recall[..., a])
    return metrics

"""Synthetic COCO-like examples for the Copy-Paste benchmarks, and their .npz exchange format.

NumPy only (no TensorFlow): `benchmarks/copy_paste_op.py` and `benchmarks/peer_copy_paste.py`
generate examples with `make_example`; the peer side (`benchmarks/peers/mmdet_copy_paste.py`,
run in another venv) reads the very same examples back with `read_pool`.

Example layout (tfcp's, `tfcp.ops.copy_paste`): `image` uint8 [S, S, 3];
`groundtruth_boxes` float32 [N, 4] normalized [ymin, xmin, ymax, xmax], the tight boxes of
the masks (integer pixels / S); `groundtruth_classes` int64 [N] in 1..80;
`groundtruth_instance_masks` uint8 [N, S, S] 0/1; `groundtruth_is_crowd` bool [N] (all
False); `groundtruth_area` float32 [N] mask pixel counts.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np

IMAGE = "image"
BOXES = "groundtruth_boxes"
CLASSES = "groundtruth_classes"
MASKS = "groundtruth_instance_masks"
IS_CROWD = "groundtruth_is_crowd"
AREA = "groundtruth_area"


class PairFile(NamedTuple):
    """What `read_pool` returns.

    Attributes:
      pool: examples in the module's layout.
      pairs: int64 [P, 2] (target, source) indices into `pool`.
      selected: None, or P int64 arrays: the source objects pasted in pair i (increasing).
    """

    pool: list
    pairs: np.ndarray
    selected: list | None


def make_example(rng: np.random.Generator, size: int) -> dict:
    """One synthetic example: uint8 image, Poisson(7) elliptical uint8 masks, tight boxes.

    Args:
      rng: NumPy generator (consumed in a fixed order: same seed, same example).
      size: image height and width S in pixels.

    Returns:
      dict in the layout of the module docstring; N = clip(Poisson(7), 1, 40) objects, ellipse
      diameters uniform in [10, 400] px, centers uniform in the image (clipped at its edges).
    """
    n = int(np.clip(rng.poisson(7), 1, 40))
    masks = np.zeros([n, size, size], np.uint8)
    boxes = np.zeros([n, 4], np.float32)
    yy, xx = np.arange(size)[:, None], np.arange(size)[None, :]
    for i in range(n):
        dy, dx = rng.uniform(10, 400, size=2)
        cy, cx = rng.uniform(0, size, size=2)
        inside = ((yy - cy) / (dy / 2)) ** 2 + ((xx - cx) / (dx / 2)) ** 2 <= 1.0
        masks[i] = inside
        rows, cols = np.nonzero(inside.any(1))[0], np.nonzero(inside.any(0))[0]
        boxes[i] = [rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]
    boxes /= size
    return {
        IMAGE: rng.integers(0, 256, [size, size, 3], dtype=np.uint8),
        BOXES: boxes,
        CLASSES: rng.integers(1, 81, [n]).astype(np.int64),
        MASKS: masks,
        IS_CROWD: np.zeros([n], bool),
        AREA: masks.sum((1, 2)).astype(np.float32),
    }


def make_pool(seed: int, size: int, pool_size: int) -> list[dict]:
    """`pool_size` examples of `size` x `size` from `np.random.default_rng(seed)`."""
    rng = np.random.default_rng(seed)
    return [make_example(rng, size) for _ in range(pool_size)]


def pair_indices(pool_size: int, num_pairs: int) -> np.ndarray:
    """int64 [num_pairs, 2] (target, source) pool indices: pair i is (i, i + 1) mod pool_size."""
    i = np.arange(num_pairs, dtype=np.int64)
    return np.stack([i % pool_size, (i + 1) % pool_size], axis=1)


def write_pool(path: str, pool: list[dict], pairs: np.ndarray, selected=None) -> None:
    """Writes examples of one size and the pairs to run on them to an uncompressed .npz.

    Args:
      path: output file (`.npz`).
      pool: examples in the module's layout, all with the same image size.
      pairs: int [P, 2] (target, source) indices into `pool`.
      selected: None, or P int arrays: indices of the source objects pasted in each pair.

    Raises:
      ValueError: empty pool, mixed image sizes, a pair index outside the pool, or a
        selection that does not fit its pair, naming the file.
    """
    if not pool:
        raise ValueError(f"write_pool({path}): empty pool")
    shapes = {ex[IMAGE].shape for ex in pool}
    if len(shapes) != 1:
        raise ValueError(f"write_pool({path}): examples differ in image shape: {sorted(shapes)}")
    pairs = np.asarray(pairs, np.int64)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.min() < 0 or pairs.max() >= len(pool):
        raise ValueError(f"write_pool({path}): pairs must be [P, 2] indices into {len(pool)}")
    extra = {}
    if selected is not None:
        selected = [np.asarray(s, np.int64).reshape(-1) for s in selected]
        if len(selected) != len(pairs) or any(
            len(s) and (s.min() < 0 or s.max() >= len(pool[src][CLASSES]))
            for s, (_, src) in zip(selected, pairs, strict=True)
        ):
            raise ValueError(f"write_pool({path}): selected must hold one index array per pair")
        extra["selected_counts"] = np.array([len(s) for s in selected], np.int64)
        extra["selected"] = np.concatenate(selected + [np.zeros([0], np.int64)])
    np.savez(
        path,
        images=np.stack([ex[IMAGE] for ex in pool]),
        counts=np.array([len(ex[CLASSES]) for ex in pool], np.int64),
        boxes=np.concatenate([ex[BOXES] for ex in pool]).astype(np.float32),
        classes=np.concatenate([ex[CLASSES] for ex in pool]).astype(np.int64),
        masks=np.concatenate([ex[MASKS] for ex in pool]).astype(np.uint8),
        is_crowd=np.concatenate([ex[IS_CROWD] for ex in pool]).astype(bool),
        area=np.concatenate([ex[AREA] for ex in pool]).astype(np.float32),
        pairs=pairs,
        **extra,
    )


def _split(values: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    ends = np.cumsum(counts)
    return [values[start:end] for start, end in zip(ends - counts, ends, strict=True)]


def read_pool(path: str) -> PairFile:
    """Reads what `write_pool` wrote.

    Returns:
      PairFile(pool, pairs, selected).

    Raises:
      ValueError: a missing array or counts that do not add up, naming the file.
    """
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    keys = ("images", "counts", "boxes", "classes", "masks", "is_crowd", "area", "pairs")
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ValueError(f"read_pool({path}): missing arrays {missing}")
    counts = arrays["counts"]
    total = int(counts.sum())
    per_object = ("boxes", "classes", "masks", "is_crowd", "area")
    if len(counts) != len(arrays["images"]) or any(len(arrays[k]) != total for k in per_object):
        raise ValueError(f"read_pool({path}): object counts do not match the per-object arrays")
    split = {k: _split(arrays[k], counts) for k in per_object}
    pool = [
        {
            IMAGE: image,
            BOXES: split["boxes"][i],
            CLASSES: split["classes"][i],
            MASKS: split["masks"][i],
            IS_CROWD: split["is_crowd"][i],
            AREA: split["area"][i],
        }
        for i, image in enumerate(arrays["images"])
    ]
    selected = None
    if "selected_counts" in arrays:
        sel_counts = arrays["selected_counts"]
        if len(sel_counts) != len(arrays["pairs"]) or sel_counts.sum() != len(arrays["selected"]):
            raise ValueError(f"read_pool({path}): selected counts do not match the pairs")
        selected = _split(arrays["selected"], sel_counts)
    return PairFile(pool, arrays["pairs"], selected)


def file_digest(path: str) -> str:
    """First 16 hex digits of the file's SHA-256 (both sides report it: same examples)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]

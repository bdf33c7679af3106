"""MMDetection 3.3's CopyPaste transform on tfcp's synthetic examples, on one thread.

Runs in the peer venv built by `benchmarks/peers/setup_mmdet.sh` (torch CPU, mmengine,
mmcv-lite 2.1.0, mmdet 3.3.0), started by `benchmarks/peer_copy_paste.py`, which writes the
examples (`benchmarks/synthetic_pairs.py` .npz files) and runs tfcp's op on the same ones:

  benchmarks/peers/.venv-mmdet/bin/python benchmarks/peers/mmdet_copy_paste.py \
      --examples=/tmp/x/pairs_1024.npz --examples=/tmp/x/pairs_512.npz

For each pair (target, source) it builds the dicts MMDetection's loading transforms produce
(`img` uint8 HWC, `gt_bboxes` HorizontalBoxes float32 xyxy pixels, `gt_bboxes_labels` int64,
`gt_masks` BitmapMasks uint8, `gt_ignore_flags` bool; `mix_results=[source]` as
MultiImageMixDataset passes it) outside the timed region, then times only the transform call
`CopyPaste(max_num_pasted=100)(results)` with MMDetection's defaults (random subset of the
source's objects, bbox_occluded_thr=10, mask_occluded_thr=300). Prints one JSON line.

Same draws: when the file holds `selected` (tfcp's random subset for each pair), a subclass
returns it from `_get_selected_inds` instead of MMDetection's own draw (`np.random.randint` for
the count, `np.random.choice` without replacement for the objects: the same distribution), so
both ops paste the same objects of the same pairs; the rest of the transform is MMDetection's
code as shipped. `--own_draws` keeps MMDetection's own draws (seeded by `--seed`).

With `--check_pairs=K` it also writes `<examples>.check.npz`, the outputs of the first K pairs
with the same draws, which the tfcp side compares with its op's outputs.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # one thread, set before numpy and torch load their runtimes

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
torch.set_num_interop_threads(1)

import mmcv  # noqa: E402
import mmdet  # noqa: E402
import mmengine  # noqa: E402
from mmdet.datasets.transforms import CopyPaste  # noqa: E402
from mmdet.structures.bbox import HorizontalBoxes  # noqa: E402
from mmdet.structures.mask import BitmapMasks  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import synthetic_pairs as sp  # noqa: E402  (benchmarks/synthetic_pairs.py, NumPy only)


def to_results(example: dict) -> dict:
    """An example in tfcp's layout -> MMDetection's results dict (boxes as xyxy pixels)."""
    image = example[sp.IMAGE]
    h, w = image.shape[:2]
    yxyx = example[sp.BOXES].astype(np.float32) * np.array([h, w, h, w], np.float32)
    return {
        "img": image,
        "img_shape": (h, w),
        "gt_bboxes": HorizontalBoxes(torch.from_numpy(np.ascontiguousarray(yxyx[:, [1, 0, 3, 2]]))),
        "gt_bboxes_labels": example[sp.CLASSES].astype(np.int64),
        "gt_masks": BitmapMasks(example[sp.MASKS], h, w),
        "gt_ignore_flags": example[sp.IS_CROWD].astype(bool),
    }


class SharedDrawCopyPaste(CopyPaste):
    """CopyPaste that pastes the given subset (`next_inds`) instead of drawing one."""

    next_inds: np.ndarray | None = None

    def _get_selected_inds(self, num_bboxes: int) -> np.ndarray:
        if self.next_inds is None or (len(self.next_inds) and self.next_inds.max() >= num_bboxes):
            raise ValueError(f"no valid preset selection for a source of {num_bboxes} objects")
        return self.next_inds


def pair_results(pool: list[dict], target: int, source: int) -> dict:
    results = to_results(pool[target])
    results["mix_results"] = [to_results(pool[source])]
    return results


def measure(path: str, warmup: int, seed: int, own_draws: bool) -> dict:
    """Times CopyPaste on the pairs of one examples file (transform call only)."""
    pool, pairs, selected = sp.read_pool(path)
    shared = selected is not None and not own_draws
    transform = SharedDrawCopyPaste(max_num_pasted=100) if shared else CopyPaste(max_num_pasted=100)
    random.seed(seed)
    np.random.seed(seed)
    for i in range(warmup):
        k = i % len(pairs)
        if shared:
            transform.next_inds = selected[k]
        transform(pair_results(pool, *pairs[k]))
    cpu = 0.0
    pasted, times = [], []
    for k, (t, s) in enumerate(pairs):
        results = pair_results(pool, t, s)
        if shared:
            transform.next_inds = selected[k]
        start, cpu_start = time.perf_counter(), time.process_time()
        transform(results)
        times.append(time.perf_counter() - start)
        cpu += time.process_time() - cpu_start
        pasted.append(len(results["mix_results"][0]["gt_bboxes"]))
    n = len(pairs)
    return {
        "size": int(pool[0][sp.IMAGE].shape[0]),
        "examples_digest": sp.file_digest(path),
        "num_pairs": n,
        "pairs_per_s": n / sum(times),
        "cpu_time_pairs_per_s": n / cpu,
        "mean_pasted": float(np.mean(pasted)),
        "draws": "shared (tfcp's subsets)" if shared else "own (np.random)",
        "transform": repr(transform),
    }


def write_check(path: str, num_pairs: int) -> str:
    """Outputs of the first pairs with the file's draws -> `<path minus .npz>.check.npz`."""
    pool, pairs, selected = sp.read_pool(path)
    if selected is None:
        raise ValueError(f"{path}: --check_pairs needs the `selected` draws in the file")
    transform = SharedDrawCopyPaste(max_num_pasted=100)
    arrays = {}
    for k, (t, s) in enumerate(pairs[:num_pairs]):
        transform.next_inds = selected[k]
        out = transform(pair_results(pool, t, s))
        arrays[f"img_{k}"] = out["img"]
        arrays[f"boxes_xyxy_{k}"] = out["gt_bboxes"].tensor.numpy()
        arrays[f"labels_{k}"] = out["gt_bboxes_labels"]
        arrays[f"masks_{k}"] = out["gt_masks"].masks
        arrays[f"ignore_flags_{k}"] = out["gt_ignore_flags"]
    out_path = path.removesuffix(".npz") + ".check.npz"
    np.savez(out_path, num_pairs=np.int64(min(num_pairs, len(pairs))), **arrays)
    return out_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", action="append", required=True, help=".npz (repeatable)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed pairs per file")
    parser.add_argument("--seed", type=int, default=0, help="seed of random and np.random")
    parser.add_argument("--check_pairs", type=int, default=0, help="pairs written for the check")
    parser.add_argument("--own_draws", action="store_true", help="MMDetection draws its subsets")
    args = parser.parse_args()
    results = []
    for path in args.examples:
        if not os.path.isfile(path):
            sys.exit(f"mmdet_copy_paste: examples file not found: {path}")
        results.append(measure(path, args.warmup, args.seed, args.own_draws))
        if args.check_pairs > 0:
            results[-1]["check_file"] = write_check(path, args.check_pairs)
    print(
        json.dumps(
            {
                "peer": "mmdet.datasets.transforms.CopyPaste",
                "results": results,
                "threads": torch.get_num_threads(),
                "versions": {
                    "python": sys.version.split()[0],
                    "numpy": np.__version__,
                    "torch": torch.__version__,
                    "mmengine": mmengine.__version__,
                    "mmcv": mmcv.__version__,
                    "mmdet": mmdet.__version__,
                },
            }
        )
    )


if __name__ == "__main__":
    main()

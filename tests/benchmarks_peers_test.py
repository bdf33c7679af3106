"""Tests of the peer benchmark's pieces that need no MMDetection venv.

`benchmarks/synthetic_pairs.py` (examples and their .npz exchange format), the `mmcv.ops` stub
installed into the peer venv, and `benchmarks/peer_copy_paste.py`'s message when that venv is
missing. The benchmark itself (and the peer venv) is never run here.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from cli_utils import REPO, env

BENCHMARKS = os.path.join(REPO, "benchmarks")


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sp = _load("synthetic_pairs", os.path.join(BENCHMARKS, "synthetic_pairs.py"))


def test_make_example_is_seeded_and_boxes_are_tight():
    a = sp.make_example(np.random.default_rng(3), 64)
    b = sp.make_example(np.random.default_rng(3), 64)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    n = len(a[sp.CLASSES])
    assert 1 <= n <= 40 and a[sp.MASKS].shape == (n, 64, 64) and a[sp.MASKS].dtype == np.uint8
    assert a[sp.IMAGE].shape == (64, 64, 3) and a[sp.IMAGE].dtype == np.uint8
    assert set(np.unique(a[sp.MASKS])) <= {0, 1}
    assert ((a[sp.CLASSES] >= 1) & (a[sp.CLASSES] <= 80)).all()
    np.testing.assert_array_equal(a[sp.AREA], a[sp.MASKS].sum((1, 2)))
    for mask, box in zip(a[sp.MASKS], a[sp.BOXES] * 64, strict=True):
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        np.testing.assert_array_equal(box, [rows[0], cols[0], rows[-1] + 1, cols[-1] + 1])


def test_pair_indices():
    np.testing.assert_array_equal(sp.pair_indices(3, 4), [[0, 1], [1, 2], [2, 0], [0, 1]])


@pytest.mark.parametrize("with_selection", [True, False])
def test_write_read_round_trip(tmp_path, with_selection):
    pool = sp.make_pool(seed=1, size=32, pool_size=3)
    pairs = sp.pair_indices(3, 5)
    selected = None
    if with_selection:
        selected = [np.arange(min(i, len(pool[s][sp.CLASSES]))) for i, (_, s) in enumerate(pairs)]
    path = str(tmp_path / "pairs.npz")
    sp.write_pool(path, pool, pairs, selected)
    got = sp.read_pool(path)
    np.testing.assert_array_equal(got.pairs, pairs)
    assert len(got.pool) == 3
    for ours, theirs in zip(pool, got.pool, strict=True):
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert theirs[key].dtype == ours[key].dtype, key
            np.testing.assert_array_equal(theirs[key], ours[key])
    if with_selection:
        assert [x.tolist() for x in got.selected] == [x.tolist() for x in selected]
    else:
        assert got.selected is None
    assert len(sp.file_digest(path)) == 16


def test_write_pool_rejects_bad_input(tmp_path):
    path = str(tmp_path / "bad.npz")
    pool = sp.make_pool(seed=0, size=16, pool_size=2)
    with pytest.raises(ValueError, match="bad.npz.*pairs"):
        sp.write_pool(path, pool, [[0, 2]])
    with pytest.raises(ValueError, match="image shape"):
        sp.write_pool(path, pool + sp.make_pool(seed=0, size=8, pool_size=1), [[0, 1]])
    too_far = len(pool[1][sp.CLASSES])
    with pytest.raises(ValueError, match="selected"):
        sp.write_pool(path, pool, [[0, 1]], [[too_far]])


def test_read_pool_names_file_with_missing_arrays(tmp_path):
    path = str(tmp_path / "partial.npz")
    np.savez(path, images=np.zeros([1, 4, 4, 3], np.uint8))
    with pytest.raises(ValueError, match="partial.npz.*missing"):
        sp.read_pool(path)


def test_mmcv_ops_stub_imports_but_refuses_calls(tmp_path):
    # A bare `mmcv` package stands in for mmcv-lite; the stub must serve `mmcv.ops` and its
    # submodules (mmdet imports both), allow subclassing, and fail loudly when an op is used.
    (tmp_path / "mmcv").mkdir()
    (tmp_path / "mmcv" / "__init__.py").write_text("")
    stub = os.path.join(BENCHMARKS, "peers", "mmcv_ops_stub.py")
    code = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("_mmcv_ops_stub", {stub!r})
spec.loader.exec_module(importlib.util.module_from_spec(spec))
from mmcv.ops import batched_nms, DeformConv2d
from mmcv.ops.roi_align import roi_align
class Pack(DeformConv2d):
    pass
for thing in (batched_nms, roi_align, Pack):
    try:
        thing(1)
    except NotImplementedError as e:
        print(e)
    else:
        sys.exit("no error from " + repr(thing))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3
    assert "mmcv.ops.batched_nms is a stub" in lines[0]
    assert "mmcv.ops.roi_align.roi_align is a stub" in lines[1]


def test_peer_benchmark_without_peer_venv_says_how_to_build_it(tmp_path):
    missing = str(tmp_path / "no-venv" / "bin" / "python")
    script = os.path.join(BENCHMARKS, "peer_copy_paste.py")
    proc = subprocess.run(
        [sys.executable, script, f"--peer_python={missing}"],
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert missing in proc.stderr and "benchmarks/peers/setup_mmdet.sh" in proc.stderr
    assert "make bench-peers" in proc.stderr

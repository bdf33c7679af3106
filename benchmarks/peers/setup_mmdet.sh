#!/usr/bin/env bash
# Builds the MMDetection 3.3 peer venv for benchmarks/peer_copy_paste.py (idempotent).
#
# Usage: bash benchmarks/peers/setup_mmdet.sh [VENV_DIR]   (default benchmarks/peers/.venv-mmdet)
#   PYTHON=python3.11  interpreter for the venv (default python3)
#   TORCH_SPEC=...     what pip installs for torch (a requirement or a wheel path); default: a
#                      `torch-*+cpu-*` wheel for this Python found in pip's find-links, else
#                      PyPI's `torch` (on Linux x86_64 that pulls the CUDA runtime wheels, a few
#                      GB; it still runs on the CPU).
#
# Pins: mmdet 3.3.0, mmcv-lite 2.1.0 (mmdet 3.3 needs mmcv < 2.2), mmengine 0.10.7, numpy < 2
# (mmcv 2.1 predates numpy 2). mmdet imports `mmcv.ops` at module level, which fails under
# mmcv-lite (no compiled `mmcv._ext`): mmcv_ops_stub.py is copied into the venv as
# `_mmcv_ops_stub.py` and loaded by `_mmcv_ops_stub.pth` at start-up (see that file); mmcv and
# mmdet are not edited. CopyPaste is imported as `mmdet.datasets.transforms.CopyPaste`.
# A finished venv is skipped: it holds a stamp named after the hash of this script and the stub.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${1:-$HERE/.venv-mmdet}"
PYTHON="${PYTHON:-python3}"
PINS=(mmengine==0.10.7 mmcv-lite==2.1.0 mmdet==3.3.0 "numpy<2")
KEY=$(cat "$HERE/setup_mmdet.sh" "$HERE/mmcv_ops_stub.py" | sha256sum | cut -c1-12)
STAMP="$VENV/.installed-$KEY"
if [ -f "$STAMP" ]; then
  echo "mmdet peer venv ready: $VENV"
  exit 0
fi

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip

if [ -z "${TORCH_SPEC:-}" ]; then
  TAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  LINKS="${PIP_FIND_LINKS:-} $("$PY" -m pip config get global.find-links 2>/dev/null || true)"
  for dir in $LINKS; do
    dir="${dir#file://}"
    [ -d "$dir" ] || continue
    wheel=$(ls -1 "$dir"/torch-*+cpu-"$TAG"-"$TAG"-*linux*_"$(uname -m)".whl 2>/dev/null \
      | sort -V | tail -1 || true)
    if [ -n "$wheel" ]; then TORCH_SPEC="$wheel"; break; fi
  done
fi
TORCH_SPEC="${TORCH_SPEC:-torch}"
echo "installing torch from: $TORCH_SPEC"
"$PY" -m pip install -q "$TORCH_SPEC"
# torch is installed first, so the pins below keep it (none of them asks for another one).
"$PY" -m pip install -q "${PINS[@]}"

SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp "$HERE/mmcv_ops_stub.py" "$SITE/_mmcv_ops_stub.py"
echo "import _mmcv_ops_stub" > "$SITE/_mmcv_ops_stub.pth"

"$PY" - <<'PY'
import mmcv, mmdet, mmengine, torch
from mmdet.datasets.transforms import CopyPaste  # noqa: F401  (the import path the benchmark uses)
print(f"torch {torch.__version__}, mmengine {mmengine.__version__}, mmcv(-lite) {mmcv.__version__}, "
      f"mmdet {mmdet.__version__}: CopyPaste imports")
PY
rm -f "$VENV"/.installed-*
touch "$STAMP"
echo "mmdet peer venv ready: $VENV"

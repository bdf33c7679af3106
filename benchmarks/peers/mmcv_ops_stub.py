"""Stand-in for `mmcv.ops` in the MMDetection peer venv (mmcv-lite ships no compiled ops).

mmdet 3.3 imports `mmcv.ops` (and submodules such as `mmcv.ops.roi_align`) at module level.
mmcv-lite ships the Python files of `mmcv/ops` but not the compiled extension `mmcv._ext`
they load, so that import fails (`No module named 'mmcv._ext'`). The CopyPaste transform
never calls an op from it, so
`setup_mmdet.sh` copies this file into the venv's site-packages as `_mmcv_ops_stub.py` and
adds `_mmcv_ops_stub.pth` (one line, `import _mmcv_ops_stub`), which registers the finder
below at interpreter start-up. Neither mmcv nor mmdet is edited.

Every name looked up in `mmcv.ops` or `mmcv.ops.<anything>` is a placeholder class: it can
be imported and subclassed (mmdet subclasses a few ops at import time), but calling or
instantiating it raises NotImplementedError naming the op, so a benchmark that reached a
real op would fail loudly rather than measure a stub.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

_PREFIX = "mmcv.ops"


class _MissingOpMeta(type):
    def __call__(cls, *args, **kwargs):
        raise NotImplementedError(
            f"{cls.__module__}.{cls.__name__} is a stub: mmcv-lite has no compiled ops "
            "(see benchmarks/peers/mmcv_ops_stub.py)"
        )


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        placeholder = _MissingOpMeta(name, (), {"__module__": self.__name__})
        setattr(self, name, placeholder)
        return placeholder


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []  # a package, so `mmcv.ops.<sub>` imports resolve too
        return module

    def exec_module(self, module):
        module.IS_STUB = True


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == _PREFIX or fullname.startswith(_PREFIX + "."):
            return importlib.machinery.ModuleSpec(fullname, _Loader(), is_package=True)
        return None


if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())

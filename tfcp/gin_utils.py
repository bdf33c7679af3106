"""Parsing gin configs for the tfcp binaries (`python -m tfcp.train`, export)."""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Sequence

import gin

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_CONFIGS_DIR = os.path.join(REPO_ROOT, "gin_configs")

# Modules that register gin configurables. Core ones must import; the others are
# imported when present in this installation (a module that exists but fails to import
# is an error, never skipped).
CORE_MODULES = ("tfcp.trainer", "tfcp.optimization", "tfcp.distribute_utils")
OPTIONAL_MODULES = (
    "tfcp.data.pipeline",
    "tfcp.data.segmentation_pipeline",
    "tfcp.modeling.factory",
    "tfcp.modeling.segmentation",
    "tfcp.tasks.maskrcnn",
    "tfcp.tasks.segmentation",
    "tfcp.tasks.voc_detection",
    "tfcp.evaluation.coco",
)
_SEARCH_PATHS_ADDED: set[str] = set()


class GinConfigError(ValueError):
    """A gin file or binding could not be parsed (unknown configurable, parameter...)."""


def resolve_gin_file(path: str) -> str:
    """Absolute path of a --gin_file: as given (cwd-relative), or under gin_configs/.

    Raises:
      GinConfigError: the file exists in neither place.
    """
    for candidate in (path, os.path.join(GIN_CONFIGS_DIR, path)):
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise GinConfigError(f"gin file not found: {path!r} (looked in . and {GIN_CONFIGS_DIR})")


def _add_search_paths() -> None:
    """Puts gin_configs/ and the repo root first in gin's include search path.

    First, so that includes resolve through plain file reads before gin's package-resource
    reader, which crashes (TypeError) when the include's directory name ('data/', 'runs/',
    ...) happens to be a namespace package on sys.path, e.g. a 'data' folder in the cwd.
    """
    prefixes = getattr(gin.config, "_LOCATION_PREFIXES", None)
    for path in (REPO_ROOT, GIN_CONFIGS_DIR):
        if path in _SEARCH_PATHS_ADDED:
            continue
        if isinstance(prefixes, list):
            prefixes.insert(0, path)
        else:  # pragma: no cover - other gin versions
            gin.add_config_file_search_path(path)
        _SEARCH_PATHS_ADDED.add(path)


def import_configurables(extra_modules: Sequence[str] = ()) -> list[str]:
    """Imports the modules that define gin configurables; returns the imported names."""
    imported = []
    for name in (*CORE_MODULES, *extra_modules):
        importlib.import_module(name)
        imported.append(name)
    for name in OPTIONAL_MODULES:
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:  # parent package missing
            spec = None
        if spec is not None:
            importlib.import_module(name)
            imported.append(name)
    return imported


def parse_gin(
    gin_files: Sequence[str], gin_bindings: Sequence[str] = (), finalize_config: bool = True
) -> None:
    """Imports the configurables, then parses gin files and bindings (bindings win).

    `gin_files` are looked up relative to the current directory, then to the repo's
    `gin_configs/` directory. `include` paths inside them are looked up relative to
    `gin_configs/`, then to the repo root, then to the current directory (so both
    `include 'models/x.gin'` and `include 'gin_configs/models/x.gin'` work from any cwd).

    Raises:
      GinConfigError: a missing file, an unknown configurable or parameter, or a syntax
        error; the message names the offending binding.
    """
    import_configurables()
    _add_search_paths()
    resolved = [resolve_gin_file(f) for f in gin_files]
    try:
        gin.parse_config_files_and_bindings(
            resolved, list(gin_bindings), finalize_config=finalize_config
        )
    except (ValueError, KeyError, SyntaxError, ImportError, OSError) as e:
        where = f"files {list(gin_files)} / bindings {list(gin_bindings)}"
        raise GinConfigError(f"invalid gin configuration ({where}): {e}") from e

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
    "tfcp.modeling",
    "tfcp.modeling.maskrcnn",
    "tfcp.modeling.factory",
    "tfcp.tasks.maskrcnn",
    "tfcp.tasks.segmentation",
    "tfcp.tasks.voc",
    "tfcp.evaluation.coco",
)
_SEARCH_PATHS_ADDED: set[str] = set()


class GinConfigError(ValueError):
    """A gin file or binding could not be parsed (unknown configurable, parameter...)."""


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


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str] = ()) -> None:
    """Imports the configurables, then parses gin files and bindings (bindings win).

    `include` paths are looked up relative to the current directory, then to the repo's
    `gin_configs/` directory, then to the repo root (so both `include 'models/x.gin'` and
    `include 'gin_configs/models/x.gin'` work).

    Raises:
      GinConfigError: a missing file, an unknown configurable or parameter, or a syntax
        error; the message names the offending binding.
    """
    import_configurables()
    for path in (GIN_CONFIGS_DIR, REPO_ROOT):
        if path not in _SEARCH_PATHS_ADDED:
            gin.add_config_file_search_path(path)
            _SEARCH_PATHS_ADDED.add(path)
    try:
        gin.parse_config_files_and_bindings(list(gin_files), list(gin_bindings))
    except (ValueError, KeyError, SyntaxError, ImportError, OSError) as e:
        where = f"files {list(gin_files)} / bindings {list(gin_bindings)}"
        raise GinConfigError(f"invalid gin configuration ({where}): {e}") from e

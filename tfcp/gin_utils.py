"""Parsing gin configs for the tfcp binaries (`python -m tfcp.train`, export, visualize).

On top of gin, `parse_gin` adds:
- lookup: a --gin_file is taken from the current directory or from the shipped configs
  (`GIN_CONFIGS_DIR`: `tfcp/gin_configs/` in an installed wheel, the repo's top-level
  `gin_configs/` in a source checkout);
- `TRAIN_EPOCHS`, the alternative to `TRAIN_STEPS`: converted to steps with the number of
  training records (`tfcp.schedule`), logged, and bound to `TRAIN_STEPS` so config.gin
  records the value;
- one clear error for unbound macros: every macro the configuration uses without a value
  is listed at once, with the gin file line that uses it and an example `--gin_bindings`
  (`MissingMacrosError`), instead of gin's dump of the whole config naming the first one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import os
from collections.abc import Iterable, Sequence
from typing import Any

import gin
from absl import logging
from gin import config_parser


def _find_gin_configs_dir() -> str:
    package_dir = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(package_dir, "gin_configs")  # wheel: setup.py maps it here
    if os.path.isdir(installed):
        return installed
    return os.path.join(os.path.dirname(package_dir), "gin_configs")  # source checkout


GIN_CONFIGS_DIR = _find_gin_configs_dir()
# 'gin_configs/models/x.gin' (a --gin_file or an include) resolves against this directory.
CONFIG_ROOT = os.path.dirname(GIN_CONFIGS_DIR)

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

TRAIN_STEPS, TRAIN_EPOCHS = "TRAIN_STEPS", "TRAIN_EPOCHS"
# Macros only training and evaluation read (data, schedule, initialization): export binds
# the ones a config leaves unbound to None (`placeholder_bindings`).
RUN_ONLY_MACROS = (
    "TRAIN_FILES",
    "EVAL_FILES",
    "EVAL_ANNOTATIONS",
    "TRAIN_ANNOTATIONS",
    "PSEUDO_FILES",
    TRAIN_STEPS,
    TRAIN_EPOCHS,
    "INIT_CHECKPOINT",
    "DATA_SERVICE_ADDRESS",
)
# Example values for the missing-macro message.
EXAMPLE_VALUES = {
    "TRAIN_FILES": "'/data/coco/train-*.tfrecord'",
    "EVAL_FILES": "'/data/coco/val-*.tfrecord'",
    "EVAL_ANNOTATIONS": "'/data/coco/annotations/instances_val2017.json'",
    "TRAIN_ANNOTATIONS": "'/data/coco/annotations/instances_train2017.json'",
    "PSEUDO_FILES": "'/data/pseudo/train-*.tfrecord'",
    "NUM_CLASSES": "91",
    "IMAGE_SIZE": "1024",
    "GLOBAL_BATCH_SIZE": "64",
    TRAIN_STEPS: "1000",
    TRAIN_EPOCHS: "12",
    "INIT_CHECKPOINT": "'/path/to/model_dir/ckpt-1000'",
    "DATA_SERVICE_ADDRESS": "'localhost:5050'",
}


class GinConfigError(ValueError):
    """A gin file or binding could not be parsed (unknown configurable, parameter...)."""


class MissingMacrosError(GinConfigError):
    """Macros used by the configuration have no value; `missing` maps each to its uses."""

    def __init__(self, message: str, missing: dict[str, list[str]]):
        super().__init__(message)
        self.missing = missing


def resolve_gin_file(path: str) -> str:
    """Absolute path of a --gin_file: as given (cwd-relative), or under gin_configs/.

    Raises:
      GinConfigError: the file exists in neither place.
    """
    for candidate in (path, os.path.join(GIN_CONFIGS_DIR, path), os.path.join(CONFIG_ROOT, path)):
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise GinConfigError(f"gin file not found: {path!r} (looked in . and {GIN_CONFIGS_DIR})")


def _add_search_paths() -> None:
    """Puts gin_configs/ and its parent first in gin's include search path.

    First, so that includes resolve through plain file reads before gin's package-resource
    reader, which crashes (TypeError) when the include's directory name ('data/', 'runs/',
    ...) happens to be a namespace package on sys.path, e.g. a 'data' folder in the cwd.
    """
    prefixes = getattr(gin.config, "_LOCATION_PREFIXES", None)
    for path in (CONFIG_ROOT, GIN_CONFIGS_DIR):
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


@contextlib.contextmanager
def _gin_errors(gin_files: Sequence[str], gin_bindings: Sequence[str]):
    try:
        yield
    except (ValueError, KeyError, SyntaxError, ImportError, OSError) as e:
        if isinstance(e, GinConfigError):
            raise
        where = f"files {list(gin_files)} / bindings {list(gin_bindings)}"
        raise GinConfigError(f"invalid gin configuration ({where}): {e}") from e


# ------------------------------------------------------------------ macros in the config
def _is_bound(name: str) -> bool:
    return (name, "gin.macro") in gin.config._CONFIG  # what gin's finalize hook checks


def _macro_value(name: str) -> Any:
    return gin.config._CONFIG.get((name, "gin.macro"), {}).get("value")


def _macro_uses() -> dict[str, list[str]]:
    """{macro: binding keys whose value uses it} over the parsed configuration."""
    macro_fn = gin.config.get_configurable(gin.config.macro)
    uses: dict[str, list[str]] = {}
    for (scope, selector), params in gin.config._CONFIG.items():
        for param, value in params.items():
            if selector == "gin.macro":
                key = scope  # a macro bound to another macro
            else:
                key = f"{scope}/{selector}.{param}" if scope else f"{selector}.{param}"
            for ref in gin.config.iterate_references({"": value}, to=macro_fn):
                uses.setdefault(ref.config_key[0], []).append(key)
    return uses


@dataclasses.dataclass(frozen=True)
class _Statement:
    where: str  # 'data/lsj.gin:10' or '--gin_bindings'
    text: str  # the statement's first line as written
    binds: str | None  # the macro a `NAME = value` statement binds
    value: Any  # its value
    uses: tuple[str, ...]  # macros in the value


class _Recorder(config_parser.ParserDelegate):
    """Parses like gin but only notes the macros each statement uses."""

    def __init__(self):
        self.macros: list[str] = []

    def configurable_reference(self, scoped_configurable_name, evaluate):
        return ("@", scoped_configurable_name)

    def macro(self, macro_name):
        if "." not in macro_name:  # 'gin.REQUIRED' and other constants are not macros
            self.macros.append(macro_name)
        return ("%", macro_name)


def _display(path: str) -> str:
    for root in (GIN_CONFIGS_DIR, os.getcwd()):
        if path.startswith(root + os.sep):
            return os.path.relpath(path, root)
    return path


def _find_include(name: str) -> str | None:
    if os.path.isabs(name):
        return name if os.path.isfile(name) else None
    for prefix in gin.config._LOCATION_PREFIXES:
        candidate = os.path.join(prefix, name)
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return None


def _scan(text_or_file, where: str, seen: set[str]) -> Iterable[_Statement]:
    """The statements of a gin file (includes expanded in place) or of the bindings."""
    recorder = _Recorder()
    for statement in config_parser.ConfigParser(text_or_file, recorder):
        uses, recorder.macros = tuple(recorder.macros), []
        location = statement.location
        label = f"{where}:{location.line_num}" if where != "--gin_bindings" else where
        if isinstance(statement, config_parser.IncludeStatement):
            path = _find_include(statement.filename)
            if path is not None and path not in seen:
                seen.add(path)
                with open(path) as f:
                    yield from _scan(f, _display(path), seen)
        elif isinstance(statement, config_parser.BindingStatement):
            binds = None
            if not statement.arg_name:
                binds = f"{statement.scope}/{statement.selector}".lstrip("/")
            yield _Statement(label, location.line_content.strip(), binds, statement.value, uses)


def _sources(resolved: Sequence[str], bindings: Sequence[str]) -> list[list[_Statement]]:
    """One statement list per gin file (with its includes), then one for the bindings."""
    sources = []
    for path in resolved:
        with open(path) as f:
            sources.append(list(_scan(f, _display(path), {path})))
    if bindings:
        sources.append(list(_scan("\n".join(bindings), "--gin_bindings", set())))
    return sources


def _missing_message(
    missing: dict[str, list[str]], sources: list[list[_Statement]], gin_files: Sequence[str]
) -> str:
    first_use = {}
    for statements in sources:
        for st in statements:
            for name in st.uses:
                first_use.setdefault(name, st)
    noun = "macro is" if len(missing) == 1 else "macros are"
    lines = [f"{len(missing)} gin {noun} used but not bound:"]
    width = max(len(name) for name in missing)
    for name in sorted(missing):
        st = first_use.get(name)
        where = f"{st.where}: {st.text}" if st else ", ".join(missing[name])
        example = f'--gin_bindings="{name}={EXAMPLE_VALUES.get(name, "<value>")}"'
        if name == TRAIN_STEPS:
            example += f'   or   --gin_bindings="{TRAIN_EPOCHS}={EXAMPLE_VALUES[TRAIN_EPOCHS]}"'
        lines += [f"  {name:<{width}}  used by {where}", f"  {'':<{width}}  e.g. {example}"]
    lines.append(
        f"(gin files: {', '.join(gin_files) or 'none'}; bind each with --gin_bindings or "
        "in a gin file)"
    )
    return "\n".join(lines)


def _check_macros(gin_files, resolved, bindings, provided=()) -> None:
    """Raises MissingMacrosError naming every used macro without a value (but `provided`)."""
    uses = _macro_uses()
    missing = {n: u for n, u in uses.items() if not _is_bound(n) and n not in provided}
    if missing:
        message = _missing_message(missing, _sources(resolved, bindings), gin_files)
        raise MissingMacrosError(message, missing)


# ------------------------------------------------------------------------ TRAIN_EPOCHS
def _schedule_choice(sources: list[list[_Statement]]) -> _Statement | None:
    """The statement whose TRAIN_STEPS or TRAIN_EPOCHS binding decides the run length.

    The later source wins (the command line over gin files, a later --gin_file over an
    earlier one); one source binding both to non-None values is an error.
    """
    choice = None
    for statements in sources:
        last = {st.binds: st for st in statements if st.binds in (TRAIN_STEPS, TRAIN_EPOCHS)}
        bound = [st for st in last.values() if st.value is not None]
        if len(bound) == 2:
            a, b = bound
            raise GinConfigError(
                f"both {a.binds} ({a.where}: {a.text}) and {b.binds} ({b.where}: {b.text}) "
                f"are bound: bind one of them (or set the other to None)"
            )
        if bound:
            if choice is not None and choice.binds != bound[0].binds:
                new = bound[0]
                logging.info("%s (%s) replaces %s (%s)", new.text, new.where, choice.text,
                             choice.where)  # fmt: skip
            choice = bound[0]
        elif choice is not None and choice.binds in last:  # set to None here
            choice = None
    return choice


def _apply_train_epochs(choice: _Statement, sources, gin_files) -> int:
    """Binds TRAIN_STEPS from the TRAIN_EPOCHS that decides the run length; returns it."""
    if TRAIN_STEPS not in _macro_uses():
        raise GinConfigError(
            f"{choice.text} ({choice.where}) is bound, but this configuration does not use "
            f"{TRAIN_STEPS}: it has no run length to set"
        )
    needed = [n for n in ("TRAIN_FILES", "GLOBAL_BATCH_SIZE") if not _is_bound(n)]
    if needed:
        missing = {n: [f"{TRAIN_EPOCHS} (to count the training records)"] for n in needed}
        raise MissingMacrosError(_missing_message(missing, sources, gin_files), missing)
    from tfcp import schedule  # noqa: PLC0415 - TensorFlow, only when needed

    epochs, batch = _macro_value(TRAIN_EPOCHS), _macro_value("GLOBAL_BATCH_SIZE")
    per_step, how = batch, ""
    try:
        fraction = _pseudo_fraction()
        if fraction is not None and isinstance(batch, int):
            from tfcp.data import mixed_sources  # noqa: PLC0415 - TensorFlow, only when needed

            # Two sources: an epoch is a pass over TRAIN_FILES (the labeled share of a batch).
            per_step = mixed_sources.split_batch(batch, fraction)[0]
            how = f" ({per_step} labeled per step, pseudo_fraction={fraction:g})"
        count = schedule.count_training_records(_macro_value("TRAIN_FILES"))
        steps = schedule.epochs_to_steps(epochs, count.num_records, per_step)
    except ValueError as e:
        raise GinConfigError(f"{TRAIN_EPOCHS}={epochs!r}: {e}") from e
    gin.bind_parameter((TRAIN_STEPS, "gin.macro", "value"), steps)
    message = "TRAIN_EPOCHS=%s: %s, GLOBAL_BATCH_SIZE=%s%s -> TRAIN_STEPS=%d"
    logging.info(message, epochs, count.describe(), batch, how, steps)
    return steps


def _resolved(value: Any) -> Any:
    """A bound value with macro references (`%NAME`, also chained) replaced by their values."""
    while isinstance(value, gin.config.ConfigurableReference) and value.config_key[1] == (
        "gin.macro"
    ):
        value = _macro_value(value.config_key[0])
    return value


def _pseudo_fraction() -> float | None:
    """The pseudo-labeled share of a training batch, or None when training on one source."""
    params = gin.config._CONFIG.get(("train", "tfcp.data.pipeline.build_dataset"), {})
    if not _resolved(params.get("pseudo_file_pattern")):
        return None
    return float(_resolved(params.get("pseudo_fraction", 0.5)))


# ------------------------------------------------------------------------- parse_gin
def _parse(resolved, bindings, gin_files) -> None:
    import_configurables()
    _add_search_paths()
    with _gin_errors(gin_files, bindings):
        gin.parse_config_files_and_bindings(resolved, list(bindings), finalize_config=False)


def parse_gin(
    gin_files: Sequence[str], gin_bindings: Sequence[str] = (), finalize_config: bool = True
) -> None:
    """Imports the configurables, then parses gin files and bindings (bindings win).

    `gin_files` are looked up relative to the current directory, then to `GIN_CONFIGS_DIR`.
    `include` paths inside them are looked up relative to `GIN_CONFIGS_DIR`, then to its
    parent, then to the current directory (so both `include 'models/x.gin'` and
    `include 'gin_configs/models/x.gin'` work from any cwd).

    Run length: `TRAIN_EPOCHS` (a positive number) may be bound instead of `TRAIN_STEPS`;
    `TRAIN_STEPS` is then bound to ceil(TRAIN_EPOCHS * records of TRAIN_FILES /
    GLOBAL_BATCH_SIZE) (`tfcp.schedule`) and logged. When both are bound the later source
    wins (--gin_bindings over gin files, a later --gin_file over an earlier one; None
    unbinds), so `--gin_bindings=TRAIN_EPOCHS=48` also replaces a run config's
    `TRAIN_STEPS = 90000`; one source binding both is an error.

    With `finalize_config` (a complete configuration, as for training and export), every
    macro the configuration uses must have a value; the ones that do not are reported
    together (`MissingMacrosError`). Without it (e.g. `tfcp.visualize`, which builds only
    part of the configuration), an unbound macro fails only when it is evaluated.

    Raises:
      MissingMacrosError: unbound macros (the message lists each with the file line that
        uses it and an example --gin_bindings).
      GinConfigError: a missing file, an unknown configurable or parameter, a syntax
        error (the message names the offending binding), or a bad TRAIN_EPOCHS.
    """
    resolved = [resolve_gin_file(f) for f in gin_files]
    bindings = list(gin_bindings)
    _parse(resolved, bindings, gin_files)
    choice, sources = None, []
    if _macro_value(TRAIN_EPOCHS) is not None:
        sources = _sources(resolved, bindings)
        choice = _schedule_choice(sources)
    use_epochs = choice is not None and choice.binds == TRAIN_EPOCHS
    if finalize_config:
        _check_macros(gin_files, resolved, bindings, (TRAIN_STEPS,) if use_epochs else ())
    if use_epochs:
        _apply_train_epochs(choice, sources, gin_files)
    if finalize_config:
        with _gin_errors(gin_files, bindings):
            gin.finalize()


def placeholder_bindings(
    gin_files: Sequence[str], gin_bindings: Sequence[str] = (), macros=RUN_ONLY_MACROS
) -> list[str]:
    """`NAME=None` bindings for the `macros` a configuration uses but leaves unbound.

    For tools that reuse a training configuration without its data or schedule, e.g.
    export: `parse_gin(files, bindings + placeholder_bindings(files, bindings))`. A bound
    TRAIN_EPOCHS is also set to None (in `macros`, it is not converted to steps).
    Clears gin's configuration before and after.
    """
    resolved = [resolve_gin_file(f) for f in gin_files]
    gin.clear_config()
    try:
        _parse(resolved, gin_bindings, gin_files)
        uses = _macro_uses()
        names = [n for n in macros if n in uses and not _is_bound(n)]
        if TRAIN_EPOCHS in macros and _macro_value(TRAIN_EPOCHS) is not None:
            names.append(TRAIN_EPOCHS)
    finally:
        gin.clear_config()
    return [f"{name}=None" for name in names]

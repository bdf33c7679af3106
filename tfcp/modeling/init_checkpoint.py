"""Restores a backbone (+ decoder) from a tfcp checkpoint or a feature-extractor SavedModel.

Both a `tf.train.Checkpoint` written by the trainer (objects under e.g. `model/backbone/`)
and an exported SavedModel whose root module holds `backbone` (and `decoder`) store an
object-graph checkpoint; the SavedModel keeps it at `<dir>/variables/variables`. We locate
the object path that leads to `backbone/` in that checkpoint and restore through a nested
`tf.train.Checkpoint` of the same shape, so variables are matched by object path, and
every variable of the backbone (and decoder, when the checkpoint has one) must match.
`restore_model` restores a whole model the same way from a tfcp training checkpoint.
"""

from __future__ import annotations

import collections
import os

import tensorflow as tf
import tf_keras


def resolve_checkpoint_path(path: str) -> str:
    """Returns the checkpoint file prefix for a prefix, a checkpoint dir or a SavedModel dir.

    Raises:
      FileNotFoundError: nothing loadable at `path`.
    """
    if tf.io.gfile.isdir(path):
        if tf.saved_model.contains_saved_model(path):
            prefix = os.path.join(path, "variables", "variables")
            if tf.io.gfile.exists(prefix + ".index"):
                return prefix
            raise FileNotFoundError(f"SavedModel {path} has no variables/variables.index")
        latest = tf.train.latest_checkpoint(path)
        if latest:
            return latest
        raise FileNotFoundError(
            f"init checkpoint directory {path} holds neither a checkpoint nor a SavedModel"
        )
    if tf.io.gfile.exists(path + ".index"):
        return path
    raise FileNotFoundError(f"init checkpoint {path} not found (no {path}.index)")


def _owner_prefix(keys: list[str], module: str) -> tuple[str, ...] | None:
    """Most common object path P such that variable keys start with P/module/."""
    counts: collections.Counter[tuple[str, ...]] = collections.Counter()
    for key in keys:
        parts = key.split("/")
        if module in parts:
            index = parts.index(module)
            if index + 1 < len(parts):
                counts[tuple(parts[:index])] += 1
    if not counts:
        return None
    return min(counts, key=lambda p: (len(p), -counts[p]))


_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def _check_variable_counts(path, keys, owner, leaves) -> None:
    """Fails when the checkpoint's module holds another number of variables than the model's.

    Catches a shallower model restored from a deeper checkpoint, which a partial restore
    would otherwise accept silently.
    """
    for name, model in leaves.items():
        module_prefix = "/".join(owner + (name, ""))
        num_stored = sum(
            k.startswith(module_prefix) and k.endswith(_VALUE_SUFFIX) and ".OPTIMIZER_SLOT" not in k
            for k in keys
        )
        num_given = len({id(v) for v in model.variables})
        if num_stored != num_given:
            raise ValueError(
                f"init checkpoint {path} is incompatible with the model's {name}: it holds "
                f"{num_stored} {name} variables, the model's {name} has {num_given} "
                "(different architecture)"
            )


def _nest(prefix: tuple[str, ...], leaves: dict[str, tf_keras.Model]) -> tf.train.Checkpoint:
    node = tf.train.Checkpoint(**leaves)
    for name in reversed(prefix):
        node = tf.train.Checkpoint(**{name: node})
    return node


def restore_backbone_and_decoder(
    path: str, backbone: tf_keras.Model, decoder: tf_keras.Model | None = None
) -> list[str]:
    """Restores `backbone` (and `decoder` if given and present) from `path`.

    Args:
      path: checkpoint prefix, checkpoint directory (latest is used) or SavedModel dir.
      backbone: the built backbone whose variables are overwritten.
      decoder: optional built decoder (FPN/NAS-FPN); restored if the checkpoint has one.

    Returns:
      The restored module names, e.g. ['backbone', 'decoder'].

    Raises:
      FileNotFoundError: `path` is missing.
      ValueError: the checkpoint has no backbone, or a variable is missing or has a
        different shape (the message names the path and the mismatch).
    """
    prefix = resolve_checkpoint_path(path)
    keys = [name for name, _ in tf.train.list_variables(prefix)]
    backbone_owner = _owner_prefix(keys, "backbone")
    if backbone_owner is None:
        raise ValueError(f"init checkpoint {path} ({prefix}) contains no 'backbone' variables")
    leaves = {"backbone": backbone}
    if decoder is not None and any(
        k.startswith("/".join(backbone_owner + ("decoder", ""))) for k in keys
    ):
        leaves["decoder"] = decoder
    _check_variable_counts(path, keys, backbone_owner, leaves)
    checkpoint = _nest(backbone_owner, leaves)
    try:
        status = checkpoint.read(prefix)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        raise ValueError(
            f"init checkpoint {path} is incompatible with the model's "
            f"{' + '.join(leaves)}: {str(e)[:2000]}"
        ) from e
    return list(leaves)


def restore_model(path: str, model: tf_keras.Model) -> None:
    """Restores every variable of `model` from a tfcp training checkpoint.

    For fine-tuning a whole model, e.g. LVIS stage 2 from the stage-1 run (paper Table 9).
    The model is found as the object that owns `backbone/` in the checkpoint (`model/` in
    the trainer's checkpoints); the optimizer state and step are not restored.

    Args:
      path: checkpoint prefix or directory (latest checkpoint used).
      model: the built model; every one of its variables is overwritten.

    Raises:
      FileNotFoundError: `path` is missing.
      ValueError: the checkpoint holds no whole model (e.g. a feature-extractor or serving
        SavedModel), or its model has other variables or shapes than `model`.
    """
    prefix = resolve_checkpoint_path(path)
    keys = [name for name, _ in tf.train.list_variables(prefix)]
    owner = _owner_prefix(keys, "backbone")
    if not owner:
        raise ValueError(
            f"init checkpoint {path} ({prefix}) holds no whole model (no object owning "
            "'backbone/', as the trainer's 'model/'); restoring the whole model needs a tfcp "
            "training checkpoint"
        )
    leaves = {owner[-1]: model}
    _check_variable_counts(path, keys, owner[:-1], leaves)
    checkpoint = _nest(owner[:-1], leaves)
    try:
        status = checkpoint.read(prefix)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        raise ValueError(
            f"init checkpoint {path} is incompatible with the model: {str(e)[:2000]}"
        ) from e

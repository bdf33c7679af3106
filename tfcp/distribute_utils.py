"""Distribution strategy selection and small multi-worker helpers."""

from __future__ import annotations

import json
import os

import gin
import tensorflow as tf
from absl import logging

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


@gin.configurable(module="tfcp")
def build_strategy(
    distribution_strategy: str = "auto",
    tpu: str | None = None,
    num_gpus: int | None = None,
    all_reduce_alg: str | None = None,
) -> tf.distribute.Strategy:
    """Builds the `tf.distribute.Strategy` for a run.

    Args:
      distribution_strategy: one of 'auto', 'default', 'one_device', 'mirrored',
        'multi_worker_mirrored', 'tpu'. 'auto' picks 'tpu' when `tpu` is given,
        'multi_worker_mirrored' when `TF_CONFIG` names more than one worker, 'mirrored'
        when several GPUs are visible and 'one_device' otherwise.
      tpu: TPU address ('' or 'local' for a TPU VM, a grpc:// address or a TPU name).
      num_gpus: 'mirrored' only: number of GPUs to use (default all). With no GPU,
        'mirrored' uses all visible (possibly logical) CPU devices.
      all_reduce_alg: 'mirrored' only: 'nccl' or 'hierarchical_copy' (default TF's choice).

    Returns:
      The strategy.

    Raises:
      ValueError: unknown strategy name.
    """
    name = distribution_strategy
    if name == "auto":
        name = _auto_strategy_name(tpu)
    if name not in STRATEGIES:
        raise ValueError(f"unknown distribution_strategy {name!r}; expected 'auto' or {STRATEGIES}")
    logging.info("Distribution strategy: %s", name)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(device)
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            devices = [d.name for d in gpus[: num_gpus or len(gpus)]]
        else:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        cross_device_ops = None
        if all_reduce_alg == "nccl":
            cross_device_ops = tf.distribute.NcclAllReduce()
        elif all_reduce_alg == "hierarchical_copy":
            cross_device_ops = tf.distribute.HierarchicalCopyAllReduce()
        elif all_reduce_alg is not None:
            raise ValueError(f"unknown all_reduce_alg {all_reduce_alg!r}")
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device_ops)
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    # TPU.
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu="" if tpu in (None, "local") else tpu
    )
    if tpu not in ("", "local"):
        tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _auto_strategy_name(tpu: str | None) -> str:
    if tpu is not None:
        return "tpu"
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    cluster = tf_config.get("cluster", {})
    if len(cluster.get("worker", [])) + len(cluster.get("chief", [])) > 1:
        return "multi_worker_mirrored"
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return "mirrored"
    return "one_device"


MIXED_PRECISION_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16", "auto")


def resolve_mixed_precision(policy: str, strategy: tf.distribute.Strategy) -> str:
    """Resolves `policy` ('auto' picks by device) to a Keras mixed-precision policy name.

    'auto' is 'mixed_bfloat16' under a TPU strategy (the paper's setting), 'mixed_float16'
    (with loss scaling in the trainer) when GPUs are visible, else 'float32' (CPUs gain
    nothing from half precision). Any other name is returned as is.

    Raises:
      ValueError: an unknown policy name.
    """
    if policy not in MIXED_PRECISION_POLICIES:
        raise ValueError(f"unknown mixed precision policy {policy!r}")
    if policy != "auto":
        return policy
    if isinstance(strategy, tf.distribute.TPUStrategy):
        resolved = "mixed_bfloat16"
    elif tf.config.list_logical_devices("GPU"):
        resolved = "mixed_float16"
    else:
        resolved = "float32"
    logging.info("Mixed precision 'auto' -> %s", resolved)
    return resolved


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the process that writes checkpoints, summaries and metrics."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None:
        return True
    return task_type == "chief" or (
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()
    )


def worker_id(strategy: tf.distribute.Strategy) -> int:
    """The task id of this worker in a multi-worker cluster, 0 otherwise."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_id is None:
        return 0
    return int(resolver.task_id)


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Number of input pipelines/hosts (1 unless multi-worker)."""
    extended = strategy.extended
    return int(getattr(extended, "_num_workers", 1) or 1)


def any_worker(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    """True if `flag` is True on any worker (a collective; every worker must call it)."""
    if num_workers(strategy) <= 1:
        return bool(flag)
    value = tf.constant(1.0 if flag else 0.0)
    per_replica = strategy.run(lambda: tf.identity(value))
    return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None) > 0)

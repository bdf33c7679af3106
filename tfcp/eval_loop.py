"""The evaluation loop: every eval example of every worker reaches the evaluator exactly once.

Each worker's input pipeline reads its own shard of the eval records (the scalable way), so
with several workers the outputs of `Task.validation_step` are spread over processes while
the task's evaluator (e.g. pycocotools) runs on the host of the chief. With `gather=True`,
every eval step serializes each replica's outputs (`tf.io.serialize_tensor`, any dtype,
strings included) and all-gathers them through the strategy's collectives; the chief decodes
the outputs of all replicas, in global replica order (worker-major), and feeds them to
`task.evaluator_update` as one global batch. After the last step the chief broadcasts the
metrics (or its evaluator's error) so that every worker returns the same record (or raises).

Under `MultiWorkerMirroredStrategy` the distributed eval iterator synchronizes the end of
input across workers: a worker whose shard is exhausted keeps stepping with empty (batch 0)
per-replica batches until every shard is, so all workers run the same number of steps and
collectives.
"""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import tensor_pb2


def concat_replicas(*values: np.ndarray) -> np.ndarray:
    """Concatenates per-replica numpy values along the batch axis (scalars: the first)."""
    arrays = [np.asarray(v) for v in values]
    if arrays[0].ndim == 0:
        return arrays[0]
    return np.concatenate(arrays, axis=0)


def _serialize(structure) -> tf.Tensor:
    """A nest of tensors -> scalar tf.string: a serialized [n] string tensor of the
    serialized leaves (`tf.nest.flatten` order)."""
    leaves = [tf.io.serialize_tensor(t) for t in tf.nest.flatten(structure)]
    return tf.io.serialize_tensor(tf.stack(leaves) if leaves else tf.constant([], tf.string))


def _all_gather_blob(blob: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """All-gathers one scalar tf.string per replica (replica context).

    Collectives take numeric tensors only, so the bytes travel as int32 words (zero padded
    to a multiple of 4).

    Returns:
      sizes: int32 [R, 2], per replica (in global replica order) its number of words and
        of bytes; data: int32 [sum of words], the replicas' words one after the other.
    """
    num_bytes = tf.strings.length(blob)
    padding = tf.strings.substr(tf.constant("\0\0\0"), 0, tf.math.floormod(-num_bytes, 4))
    words = tf.io.decode_raw(blob + padding, tf.int32, little_endian=True)
    words = tf.reshape(words, [-1])
    context = tf.distribute.get_replica_context()
    sizes = context.all_gather(tf.stack([tf.size(words), num_bytes])[None], axis=0)
    return sizes, context.all_gather(words, axis=0)


def _split_blobs(sizes: np.ndarray, data: np.ndarray) -> list[bytes]:
    """Inverse of `_all_gather_blob` on the host: the R blobs, in global replica order."""
    blobs, start = [], 0
    for num_words, num_bytes in np.asarray(sizes).reshape([-1, 2]).tolist():
        words = np.asarray(data[start : start + num_words], "<i4")
        blobs.append(words.tobytes()[:num_bytes])
        start += num_words
    if start != len(data):
        raise ValueError(f"gathered {len(data)} words but the sizes account for {start}")
    return blobs


def _parse_tensor(blob: bytes) -> np.ndarray:
    return tf.make_ndarray(tensor_pb2.TensorProto.FromString(blob))


def _deserialize(blob: bytes, template):
    """Inverse of `_serialize`: numpy leaves packed like `template` (strings: object arrays
    of bytes, as `Tensor.numpy()` gives)."""
    leaves = [_parse_tensor(b) for b in _parse_tensor(blob).reshape([-1])]
    return tf.nest.pack_sequence_as(template, leaves)


def _to_builtin(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"metric value of type {type(value).__name__} is not JSON serializable")


def _broadcast_result(strategy, chief: bool, metrics: dict | None, error) -> dict:
    """Every worker gets the chief's metrics, or raises the chief's evaluator error.

    A collective: every worker must call it once per evaluation.
    """
    payload = ""
    if chief and error is None:
        try:
            payload = json.dumps({"metrics": metrics}, default=_to_builtin)
        except TypeError as e:  # raised below, after the collective
            error = e
    if chief and error is not None:
        payload = json.dumps({"error": repr(error)})

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def gather(blob):
        return strategy.run(_all_gather_blob, args=(blob,))

    sizes, data = (strategy.experimental_local_results(t)[0].numpy() for t in gather(payload))
    if chief:
        if error is not None:
            raise error
        return metrics
    sent = [b for b in _split_blobs(sizes, data) if b]
    if not sent:
        raise RuntimeError("evaluation: no worker sent metrics (is a chief in the cluster?)")
    message = json.loads(sent[0].decode("utf-8"))
    if "error" in message:
        raise RuntimeError(f"evaluation failed on the chief: {message['error']}")
    return message["metrics"]


def evaluate(
    strategy: tf.distribute.Strategy,
    task,
    model,
    dataset: tf.distribute.DistributedDataset,
    *,
    step: int,
    chief: bool,
    gather: bool,
    image_summaries: bool = False,
) -> tuple[dict, np.ndarray | None]:
    """Runs `task.validation_step` over `dataset` and computes the task's metrics.

    Every batch, including the last partial one and empty per-replica batches, goes through
    the strategy; the chief feeds the host-side (numpy) outputs, replicas concatenated along
    the batch axis, to `task.evaluator_update` once per step.

    Args:
      strategy: the strategy `model` lives in.
      task: the `tfcp.tasks.base.Task` (validation_step, evaluator_begin/update/result,
        sample_images).
      model: the model to evaluate.
      dataset: the distributed eval dataset (`strategy.distribute_datasets_from_function`);
        finite.
      step: the global step (for the log line).
      chief: the process that writes the results; with `gather`, the only one that feeds
        the evaluator.
      gather: all-gather the outputs of every replica of every worker to the chief (needed
        whenever the workers read different shards, i.e. `num_workers > 1`). False: no
        collective; each process feeds its own replicas' outputs to its own evaluator.
      image_summaries: on the chief, also return `task.sample_images` of its first batch.

    Returns:
      (metrics, images): `task.evaluator_result()` (with `gather`, the non-chief workers
      return the chief's metrics, numpy values as Python builtins), and on the chief with
      `image_summaries` the task's sample images of its first batch (else None).

    Raises:
      RuntimeError: with `gather`, on a non-chief worker, when the chief's evaluator failed.
      Any error of the task's evaluator (on the chief; with `gather` only after the last
      step, so that the other workers are not left waiting in a collective).
    """

    def replica_step(inputs):
        outputs = task.validation_step(model, inputs[0], inputs[1])
        if not gather:
            return outputs, ()
        return outputs, _all_gather_blob(_serialize(outputs))

    # One trace for every batch size (the last, partial and empty batches included).
    @tf.function(input_signature=[dataset.element_spec])
    def eval_step(inputs):
        return strategy.run(replica_step, args=(inputs,))

    local_results = strategy.experimental_local_results
    to_numpy = lambda x: tf.nest.map_structure(lambda t: t.numpy(), x)
    feeds = chief or not gather  # this process feeds the task's evaluator
    if feeds:
        task.evaluator_begin()
    images, num_batches, error = None, 0, None
    for inputs in dataset:
        outputs, gathered = eval_step(inputs)
        if feeds and error is None:
            if gather:
                sizes, data = (local_results(t)[0].numpy() for t in gathered)
                template = local_results(outputs)[0]
                replicas = [_deserialize(b, template) for b in _split_blobs(sizes, data)]
            else:
                replicas = [to_numpy(out) for out in local_results(outputs)]
            try:
                task.evaluator_update(tf.nest.map_structure(concat_replicas, *replicas))
            except Exception as e:
                if not gather:
                    raise
                # Keep stepping (the other workers wait in the collectives); raise at the end.
                logging.error("Evaluator update failed at eval batch %d: %r", num_batches, e)
                error = e
        if images is None and image_summaries and chief:
            features, labels = (local_results(x)[0] for x in inputs)
            images = task.sample_images(features, labels, to_numpy(local_results(outputs)[0]))
        num_batches += 1
    metrics = None
    if feeds and error is None:
        try:
            metrics = task.evaluator_result()
        except Exception as e:
            if not gather:
                raise
            error = e
    if gather:
        metrics = _broadcast_result(strategy, chief, metrics, error)
    logging.info("Eval at step %d over %d batches: %s", step, num_batches, metrics)
    return metrics, images

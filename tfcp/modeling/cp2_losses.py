"""CP2 losses and accuracies (Wang et al., ECCV 2022), as pure TF functions.

The formulas are those of the authors' PyTorch code (repository wangf3014/CP2: `builder.py`
`CP2_MOCO.forward` and `main.py` `train`), restated per shape:

  * Masks go to feature resolution by sampling pixel `stride // 2 + stride * i` of every row
    and column (`downsample_masks`).
  * Per-pixel embeddings are L2-normalized (`normalize`); an instance embedding is the
    L2-normalized sum of the foreground pixels' normalized embeddings (`instance_embeddings`).
  * Instance loss: InfoNCE with the key instance embedding as the positive (index 0) and the
    queue as negatives, logits divided by the temperature (`instance_logits`,
    `instance_loss`); accuracy: top-1 in percent (`instance_accuracy`).
  * Dense loss: cosine logits between every query pixel x and key pixel y (no temperature),
    log-softmax over the QUERY axis x, averaged over the positive pairs (x and y both
    foreground) of a row, then over the batch (`dense_logits`, `dense_labels`, `dense_loss`);
    accuracy: whether the argmax over all (x, y) of a row is a positive pair, in percent
    (`dense_accuracy`).

Degenerate cases (documented choices):
  * All-background mask: its instance embedding is the zero vector (torch's `normalize`
    with eps does the same), so all its instance logits are 0 (loss log(1 + K)); the row
    stays in the instance loss and accuracy as in the reference.
  * Dense loss of a row without any positive pair (all-background query or key mask): the
    reference divides by zero (NaN); here such rows are left out of the batch mean, and the
    loss is 0 when no row has a positive pair. The dense accuracy keeps them (they count as
    wrong), as the reference's mean over the batch does.
  * Ties in the top-1 of `instance_accuracy` and `dense_accuracy` go to the lowest index
    (`tf.math.argmax`, like `np.argmax`).
"""

from __future__ import annotations

import tensorflow as tf

# torch.nn.functional.normalize divides by max(||x||, 1e-12); l2_normalize's epsilon bounds
# the squared norm.
_NORM_EPSILON_SQUARED = 1e-24


def normalize(x: tf.Tensor, axis: int = -1) -> tf.Tensor:
    """L2-normalizes `x` along `axis`; zero vectors stay zero.

    Args:
      x: float tensor of any shape.
      axis: the axis to normalize.

    Returns:
      float32 tensor of the shape of `x`.
    """
    return tf.math.l2_normalize(tf.cast(x, tf.float32), axis=axis, epsilon=_NORM_EPSILON_SQUARED)


def downsample_masks(masks: tf.Tensor, stride: int) -> tf.Tensor:
    """Samples binary masks at feature resolution: pixel `stride // 2 + stride * i`.

    Args:
      masks: [B, S_h, S_w] masks with values 0/1 (any real or bool dtype).
      stride: python int, the feature stride (e.g. 16 for output stride 16).

    Returns:
      float32 [B, ceil((S_h - stride // 2) / stride), ceil((S_w - stride // 2) / stride)];
      [B, S_h / stride, S_w / stride] when `stride` divides the sizes.

    Raises:
      ValueError: `stride` < 1 or `masks` not of rank 3.
    """
    if int(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    masks = tf.convert_to_tensor(masks)
    if masks.shape.rank is not None and masks.shape.rank != 3:
        raise ValueError(f"masks must be [B, H, W], got shape {masks.shape}")
    stride = int(stride)
    return tf.cast(masks[:, stride // 2 :: stride, stride // 2 :: stride], tf.float32)


def _flatten_pixels(dense: tf.Tensor) -> tf.Tensor:
    """[B, h, w, D] -> [B, h * w, D] (row-major, as torch's reshape of NCHW to NC(HW))."""
    shape = tf.shape(dense)
    return tf.reshape(dense, [shape[0], shape[1] * shape[2], shape[3]])


def _flatten_masks(masks: tf.Tensor) -> tf.Tensor:
    """[B, h, w] -> float32 [B, h * w]."""
    shape = tf.shape(masks)
    return tf.reshape(tf.cast(masks, tf.float32), [shape[0], shape[1] * shape[2]])


def instance_embeddings(dense: tf.Tensor, masks: tf.Tensor) -> tf.Tensor:
    """Mask-pooled instance embeddings: normalize(sum over foreground of normalize(pixel)).

    Args:
      dense: float [B, h, w, D] per-pixel embeddings (raw or already normalized: pixels
        are L2-normalized first, which is idempotent).
      masks: [B, h, w] foreground masks at feature resolution, values 0/1.

    Returns:
      float32 [B, D]: unit vectors; the zero vector for an all-background mask.
    """
    pixels = normalize(_flatten_pixels(dense))
    pooled = tf.einsum("bxd,bx->bd", pixels, _flatten_masks(masks))
    return normalize(pooled)


def instance_logits(
    query: tf.Tensor, key: tf.Tensor, queue: tf.Tensor, temperature: float
) -> tf.Tensor:
    """MoCo logits: [q . k, q . queue_j for j < K] / temperature; the positive is index 0.

    Args:
      query: float32 [B, D] query instance embeddings.
      key: float32 [B, D] key instance embeddings (gradient is not stopped here).
      queue: float32 [K, D] negative keys.
      temperature: softmax temperature (the reference: 0.2).

    Returns:
      float32 [B, 1 + K].
    """
    query = tf.cast(query, tf.float32)
    positive = tf.reduce_sum(query * tf.cast(key, tf.float32), axis=1, keepdims=True)
    negatives = tf.matmul(query, tf.cast(queue, tf.float32), transpose_b=True)
    return tf.concat([positive, negatives], axis=1) / temperature


def instance_loss(logits: tf.Tensor) -> tf.Tensor:
    """Cross-entropy with target 0, averaged over the batch.

    Args:
      logits: float32 [B, 1 + K] from `instance_logits`.

    Returns:
      float32 scalar.
    """
    labels = tf.zeros(tf.shape(logits)[:1], tf.int32)
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )


def instance_accuracy(logits: tf.Tensor) -> tf.Tensor:
    """Top-1 accuracy of the positive (index 0), in percent.

    Args:
      logits: float32 [B, 1 + K].

    Returns:
      float32 scalar in [0, 100].
    """
    correct = tf.equal(tf.math.argmax(logits, axis=1), 0)
    return 100.0 * tf.reduce_mean(tf.cast(correct, tf.float32))


def dense_logits(query_dense: tf.Tensor, key_dense: tf.Tensor) -> tf.Tensor:
    """Cosine similarity of every query pixel x with every key pixel y.

    Args:
      query_dense: float [B, h, w, D] query embeddings (normalized here).
      key_dense: float [B, h', w', D] key embeddings (normalized here).

    Returns:
      float32 [B, h * w, h' * w'] (pixels flattened row-major).
    """
    query = normalize(_flatten_pixels(query_dense))
    key = normalize(_flatten_pixels(key_dense))
    return tf.einsum("bxd,byd->bxy", query, key)


def dense_labels(query_masks: tf.Tensor, key_masks: tf.Tensor) -> tf.Tensor:
    """1 where query pixel x and key pixel y are both foreground.

    Args:
      query_masks: [B, h, w] values 0/1.
      key_masks: [B, h', w'] values 0/1.

    Returns:
      float32 [B, h * w, h' * w'].
    """
    return tf.einsum("bx,by->bxy", _flatten_masks(query_masks), _flatten_masks(key_masks))


def dense_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Mean over positive pairs of -log softmax over the query axis, then over rows.

    Per row b: `sum_xy(-log_softmax(logits[b], axis=x) * labels[b]) / sum_xy(labels[b])`.
    Rows without a positive pair are left out of the batch mean (the reference gives NaN);
    0 when no row has one.

    Args:
      logits: float32 [B, X, Y] from `dense_logits`.
      labels: float32 [B, X, Y] from `dense_labels`.

    Returns:
      float32 scalar.
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.float32)
    neg_log_prob = -tf.nn.log_softmax(logits, axis=1)
    num_positive = tf.reduce_sum(labels, axis=[1, 2])
    per_row = tf.math.divide_no_nan(tf.reduce_sum(neg_log_prob * labels, axis=[1, 2]), num_positive)
    valid = tf.cast(num_positive > 0, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(per_row * valid), tf.reduce_sum(valid))


def dense_accuracy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Percent of rows whose highest logit over all (x, y) is a positive pair.

    Args:
      logits: float32 [B, X, Y].
      labels: float32 [B, X, Y] values 0/1.

    Returns:
      float32 scalar in [0, 100] (rows without a positive pair count as wrong).
    """
    batch = tf.shape(logits)[0]
    flat_logits = tf.reshape(logits, [batch, -1])
    flat_labels = tf.reshape(tf.cast(labels, tf.float32), [batch, -1])
    best = tf.math.argmax(flat_logits, axis=1, output_type=tf.int32)
    hit = tf.gather(flat_labels, best, axis=1, batch_dims=1)
    return 100.0 * tf.reduce_mean(hit)

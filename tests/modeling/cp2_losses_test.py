"""Tests of tfcp.modeling.cp2_losses against a NumPy statement of the reference formulas.

The NumPy functions below restate wangf3014/CP2 (builder.py CP2_MOCO.forward, main.py train)
in its own layout: embeddings N x C x (hw), masks N x (hw), logits_dense N x x x y.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfcp.modeling import cp2_losses

B, H, W, D, K, T = 3, 4, 4, 8, 16, 0.2


def np_normalize(x, axis):
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def np_log_softmax(x, axis):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def np_reference(q, k, mask_q, mask_k, queue):
    """The reference's forward + loss, float64; q, k: N x C x hw; masks N x hw; queue C x K."""
    q_dense, k_dense = np_normalize(q, 1), np_normalize(k, 1)
    q_pos = np_normalize(np.einsum("ncx,nx->nc", q_dense, mask_q), 1)
    k_pos = np_normalize(np.einsum("ncx,nx->nc", k_dense, mask_k), 1)
    logits_dense = np.einsum("ncx,ncy->nxy", q_dense, k_dense)
    labels_dense = np.einsum("nx,ny->nxy", mask_q, mask_k).reshape(len(q), -1)
    l_pos = np.einsum("nc,nc->n", q_pos, k_pos)[:, None]
    l_neg = np.einsum("nc,ck->nk", q_pos, queue)
    logits_moco = np.concatenate([l_pos, l_neg], axis=1) / T
    loss_instance = -np_log_softmax(logits_moco, 1)[:, 0].mean()
    neg_log = (-np_log_softmax(logits_dense, 1)).reshape(len(q), -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_row = (neg_log * labels_dense).sum(1) / labels_dense.sum(1)  # NaN without positives
    acc_instance = 100.0 * (logits_moco.argmax(1) == 0).mean()
    best = logits_dense.reshape(len(q), -1).argmax(1)
    acc_dense = 100.0 * labels_dense[np.arange(len(q)), best].mean()
    return dict(
        q_pos=q_pos,
        k_pos=k_pos,
        logits_moco=logits_moco,
        logits_dense=logits_dense,
        loss_instance=loss_instance,
        per_row=per_row,
        acc_instance=acc_instance,
        acc_dense=acc_dense,
    )


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(3)
    query = rng.normal(size=[B, H, W, D]).astype(np.float32)
    key = rng.normal(size=[B, H, W, D]).astype(np.float32)
    key[0] = query[0] + 0.1 * key[0]  # a row whose instance and dense predictions can be right
    query_masks = (rng.uniform(size=[B, H, W]) > 0.5).astype(np.float32)
    key_masks = (rng.uniform(size=[B, H, W]) > 0.4).astype(np.float32)
    query_masks[0], key_masks[0] = 1.0, 1.0
    query_masks[2] = 0.0  # all-background query: no positive pair in row 2
    queue = np_normalize(rng.normal(size=[K, D]), 1).astype(np.float32)

    def torch_layout(x):  # [B, h, w, D] -> N x C x hw
        return np.transpose(x, [0, 3, 1, 2]).reshape(B, D, H * W).astype(np.float64)

    ref = np_reference(
        torch_layout(query),
        torch_layout(key),
        query_masks.reshape(B, -1).astype(np.float64),
        key_masks.reshape(B, -1).astype(np.float64),
        queue.T.astype(np.float64),
    )
    return dict(
        query=query, key=key, query_masks=query_masks, key_masks=key_masks, queue=queue, ref=ref
    )


def _tf_outputs(c):
    q_inst = cp2_losses.instance_embeddings(c["query"], c["query_masks"])
    k_inst = cp2_losses.instance_embeddings(c["key"], c["key_masks"])
    logits = cp2_losses.instance_logits(q_inst, k_inst, c["queue"], T)
    logits_dense = cp2_losses.dense_logits(c["query"], c["key"])
    labels_dense = cp2_losses.dense_labels(c["query_masks"], c["key_masks"])
    return dict(
        q_inst=q_inst,
        k_inst=k_inst,
        logits=logits,
        logits_dense=logits_dense,
        instance_loss=cp2_losses.instance_loss(logits),
        instance_accuracy=cp2_losses.instance_accuracy(logits),
        dense_loss=cp2_losses.dense_loss(logits_dense, labels_dense),
        dense_accuracy=cp2_losses.dense_accuracy(logits_dense, labels_dense),
    )


def _check_against_reference(out, ref):
    np.testing.assert_allclose(out["q_inst"], ref["q_pos"], atol=1e-5)
    np.testing.assert_allclose(out["k_inst"], ref["k_pos"], atol=1e-5)
    np.testing.assert_allclose(out["logits"], ref["logits_moco"], atol=1e-4)
    np.testing.assert_allclose(out["logits_dense"], ref["logits_dense"], atol=1e-5)
    np.testing.assert_allclose(out["instance_loss"], ref["loss_instance"], rtol=1e-5)
    np.testing.assert_allclose(out["instance_accuracy"], ref["acc_instance"], rtol=1e-6)
    # The all-background row (NaN in the reference) is left out of the batch mean.
    assert np.isnan(ref["per_row"][2]) and not np.isnan(ref["per_row"][:2]).any()
    np.testing.assert_allclose(out["dense_loss"], ref["per_row"][:2].mean(), rtol=1e-5)
    np.testing.assert_allclose(out["dense_accuracy"], ref["acc_dense"], rtol=1e-6)


def test_losses_and_accuracies_match_the_reference_formulas(case):
    out = {k: v.numpy() for k, v in _tf_outputs(case).items()}
    _check_against_reference(out, case["ref"])
    # The case exercises both outcomes of both accuracies.
    assert 0.0 < case["ref"]["acc_instance"] < 100.0
    assert 0.0 < case["ref"]["acc_dense"] < 100.0
    # All-background mask -> zero instance embedding, others unit vectors.
    np.testing.assert_allclose(out["q_inst"][2], 0.0)
    np.testing.assert_allclose(np.linalg.norm(out["q_inst"][:2], axis=1), 1.0, rtol=1e-5)


def test_graph_mode_with_unknown_shapes(case):
    spec = tf.TensorSpec([None, None, None, None], tf.float32)
    mask_spec = tf.TensorSpec([None, None, None], tf.float32)
    fn = tf.function(
        lambda q, k, qm, km, queue: _tf_outputs(
            dict(query=q, key=k, query_masks=qm, key_masks=km, queue=queue)
        ),
        input_signature=[spec, spec, mask_spec, mask_spec, tf.TensorSpec([None, None])],
    )
    out = fn(case["query"], case["key"], case["query_masks"], case["key_masks"], case["queue"])
    _check_against_reference({k: v.numpy() for k, v in out.items()}, case["ref"])


def test_hand_computed_accuracies():
    logits = tf.constant([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 0.0], [5.0, 0.0, 0.0]])
    assert float(cp2_losses.instance_accuracy(logits)) == pytest.approx(75.0)  # tie -> index 0
    dense = tf.constant([[[0.1, 0.9], [0.2, 0.3]], [[0.8, 0.1], [0.2, 0.3]]])
    labels = tf.constant([[[0.0, 1.0], [1.0, 1.0]], [[0.0, 1.0], [1.0, 1.0]]])
    assert float(cp2_losses.dense_accuracy(dense, labels)) == pytest.approx(50.0)


def test_dense_loss_softmax_is_over_the_query_axis():
    # One key pixel (y), two query pixels (x): only x=0 is a positive; the loss is
    # -log softmax_x(logits[:, 0])[0], not a softmax over y.
    logits = tf.constant([[[2.0], [0.5]]])
    labels = tf.constant([[[1.0], [0.0]]])
    expected = -np.log(np.exp(2.0) / (np.exp(2.0) + np.exp(0.5)))
    assert float(cp2_losses.dense_loss(logits, labels)) == pytest.approx(expected, rel=1e-6)


def test_dense_loss_without_any_positive_is_zero_with_finite_gradient():
    logits = tf.Variable(tf.random.stateless_normal([2, 4, 4], seed=[1, 2]))
    labels = tf.zeros([2, 4, 4])
    with tf.GradientTape() as tape:
        loss = cp2_losses.dense_loss(logits, labels)
    grad = tape.gradient(loss, logits)
    assert float(loss) == 0.0
    assert np.all(np.isfinite(grad.numpy()))


def test_downsample_masks_samples_center_pixels():
    size = 8
    coded = np.arange(2 * size * size, dtype=np.float32).reshape(2, size, size)
    out = cp2_losses.downsample_masks(coded, 4).numpy()
    assert out.shape == (2, 2, 2)
    rows = cols = [2, 6]  # stride // 2 + stride * i
    np.testing.assert_array_equal(out, coded[:, rows][:, :, cols])
    assert out[0, 1, 0] == 6 * size + 2
    # Not a multiple of the stride: as torch's slicing [s//2::s].
    odd = np.zeros([1, 10, 9], np.uint8)
    odd[0, 6, 2] = 1
    out = cp2_losses.downsample_masks(tf.constant(odd), 4).numpy()
    assert out.dtype == np.float32 and out.shape == (1, 2, 2)
    np.testing.assert_array_equal(out[0], [[0, 0], [1, 0]])
    # Stride 16 on 64 px: pixels 8, 24, 40, 56.
    big = np.zeros([1, 64, 64], np.float32)
    big[0, 24, 56] = 1.0
    big[0, 25, 56] = 1.0  # not sampled
    out = cp2_losses.downsample_masks(big, 16).numpy()
    assert out.sum() == 1.0 and out[0, 1, 3] == 1.0


def test_downsample_masks_rejects_bad_arguments():
    with pytest.raises(ValueError, match="stride"):
        cp2_losses.downsample_masks(tf.zeros([1, 8, 8]), 0)
    with pytest.raises(ValueError, match="B, H, W"):
        cp2_losses.downsample_masks(tf.zeros([8, 8]), 4)

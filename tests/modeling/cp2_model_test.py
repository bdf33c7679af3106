"""Tests of tfcp.modeling.cp2: state updates on a tiny model, the ResNet-18 build, Mirrored.

The state-update tests use a tiny CP2Model (one conv + BN backbone, 1x1 decoder, stride 4);
the builder test builds the tiny ResNet-18 ASPP setting once per module. The MirroredStrategy
test runs this file as a script in a subprocess (`--mirrored`): logical devices must be set
before TensorFlow initializes.
"""

import json
import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfcp.modeling import cp2, cp2_losses, init_checkpoint, segmentation

SIZE, DIM = 16, 8  # tiny model: 16 px images, stride 4 -> 4x4 embeddings of 8 dims


class TinyBackbone(tf_keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = tf_keras.layers.Conv2D(4, 3, strides=4, padding="same")
        self.norm = tf_keras.layers.BatchNormalization(momentum=0.5)

    def call(self, images, training=None):
        return {"2": self.norm(self.conv(images), training=training)}


class TinyDecoder(tf_keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = tf_keras.layers.Conv2D(4, 1)

    def call(self, features, training=None):
        return {"2": self.conv(features["2"])}


def tiny_model(queue_size=5, momentum=0.9, seed=0):
    def parts(name):
        return TinyBackbone(), TinyDecoder(), cp2.build_projection(4, DIM, name)

    model = cp2.CP2Model(
        *parts("projection"),
        cp2.Encoder(*parts("key_projection"), level=2),
        level=2,
        projection_dim=DIM,
        queue_size=queue_size,
        momentum=momentum,
        temperature=0.2,
        dense_weight=0.2,
        seed=seed,
    )
    model.create_variables([SIZE, SIZE, 3])
    return model


def batch(batch_size, seed):
    rng = np.random.default_rng(seed)
    masks = (rng.uniform(size=[2, batch_size, SIZE, SIZE]) > 0.5).astype(np.float32)
    masks[:, :, 4:8, 4:8] = 1.0  # every image has foreground at a sampled pixel
    features = {
        "query_images": tf.constant(rng.normal(size=[batch_size, SIZE, SIZE, 3]), tf.float32),
        "key_images": tf.constant(rng.normal(size=[batch_size, SIZE, SIZE, 3]), tf.float32),
    }
    return features, {"query_masks": tf.constant(masks[0]), "key_masks": tf.constant(masks[1])}


def values(variables):
    return [v.numpy().copy() for v in variables]


def perturb_key(model, seed=1):
    """Gives the key encoder weights different from the query's (known, random)."""
    rng = np.random.default_rng(seed)
    for _, k in model.weight_pairs():
        k.assign(rng.uniform(0.5, 1.5, size=k.shape).astype(np.float32))


@pytest.fixture(autouse=True)
def clear_gin():
    gin.clear_config()


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def test_variables_structure(tiny):
    key_ids = {v.ref() for v in tiny.key_encoder.weights}
    query = tiny.query_variables
    assert query and not any(v.ref() in key_ids for v in query)
    assert {v.ref() for v in tiny.trainable_variables} == {v.ref() for v in query}
    assert {v.ref() for v in tiny.weights} >= key_ids | {tiny.queue.ref(), tiny.queue_ptr.ref()}
    assert tiny.feature_stride == 4
    assert tiny.queue.shape == (5, DIM) and tiny.queue_ptr.dtype == tf.int64
    np.testing.assert_allclose(np.linalg.norm(tiny.queue.numpy(), axis=1), 1.0, rtol=1e-5)
    # The queue's initial keys are a function of the seed.
    np.testing.assert_array_equal(tiny_model(seed=0).queue.numpy(), tiny.queue.numpy())
    assert not np.allclose(tiny_model(seed=1).queue.numpy(), tiny.queue.numpy())
    out = tiny(tf.zeros([2, SIZE, SIZE, 3]))
    assert out.shape == (2, 4, 4, DIM) and out.dtype == tf.float32


def test_copy_query_to_key_makes_all_weights_equal():
    model = tiny_model()
    perturb_key(model)
    pairs = model.weight_pairs()
    assert any(not k.trainable for _, k in pairs)  # BN moving statistics are included
    assert not all(np.array_equal(q.numpy(), k.numpy()) for q, k in pairs)
    model.copy_query_to_key()
    for q, k in pairs:
        np.testing.assert_array_equal(q.numpy(), k.numpy())


def test_momentum_update_matches_hand_computation_and_touches_only_key_weights():
    model = tiny_model(momentum=0.9)
    perturb_key(model)
    pairs = model.weight_pairs()
    query_before = values(q for q, _ in pairs)
    key_before = values(k for _, k in pairs)
    queue_before = model.queue.numpy().copy()
    model.momentum_update()
    for (q, k), q0, k0 in zip(pairs, query_before, key_before, strict=True):
        np.testing.assert_array_equal(q.numpy(), q0)
        expected = 0.9 * k0 + 0.1 * q0 if q.trainable else k0  # BN statistics untouched
        np.testing.assert_allclose(k.numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(model.queue.numpy(), queue_before)
    # A hand case on one kernel: key 1, query 0 -> 0.9.
    q, k = next((q, k) for q, k in pairs if q.trainable)
    q.assign(tf.zeros_like(q))
    k.assign(tf.ones_like(k))
    tf.function(model.momentum_update)()
    np.testing.assert_allclose(k.numpy(), 0.9, rtol=1e-6)


def test_queue_wraps_around_by_hand():
    model = tiny_model(queue_size=5)
    rows = np.arange(1, 10, dtype=np.float32)[:, None] * np.ones([1, DIM], np.float32)
    initial = model.queue.numpy().copy()
    model.enqueue(rows[0:3])
    np.testing.assert_array_equal(model.queue.numpy(), np.concatenate([rows[0:3], initial[3:]]))
    assert int(model.queue_ptr.numpy()) == 3
    enqueue = tf.function(model.enqueue)
    enqueue(rows[3:6])  # rows 3, 4 <- keys 4, 5; row 0 <- key 6
    assert int(model.queue_ptr.numpy()) == 1
    enqueue(rows[6:9])  # rows 1, 2, 3 <- keys 7, 8, 9
    np.testing.assert_array_equal(model.queue.numpy()[:, 0], [6, 7, 8, 9, 5])
    assert int(model.queue_ptr.numpy()) == 4
    with pytest.raises(ValueError, match="queue of 5"):
        model.enqueue(np.ones([6, DIM], np.float32))


def test_training_step_order_gradients_and_state():
    model = tiny_model(queue_size=5, momentum=0.9)
    perturb_key(model)
    pairs = model.weight_pairs()
    features, labels = batch(3, seed=0)
    query_before = values(q for q, _ in pairs)
    key_before = values(k for _, k in pairs)
    queue_before = model.queue.numpy().copy()
    step = tf.function(lambda f, lab: model.compute_losses(f, lab, training=True))
    with tf.GradientTape() as tape:
        out = step(features, labels)
    key_grads, query_grads = tape.gradient(
        out["total_loss"], [model.key_encoder.trainable_variables, model.query_variables]
    )
    assert key_grads and all(g is None for g in key_grads)
    assert all(g is not None and np.any(g.numpy() != 0) for g in query_grads)
    assert set(out) == {
        "total_loss", "instance_loss", "dense_loss", "instance_accuracy", "dense_accuracy",
    }  # fmt: skip
    np.testing.assert_allclose(
        out["total_loss"], out["instance_loss"] + 0.2 * out["dense_loss"], rtol=1e-6
    )
    for (q, k), q0, k0 in zip(pairs, query_before, key_before, strict=True):
        if q.trainable:  # momentum update before the key forward; no query weight changes
            np.testing.assert_array_equal(q.numpy(), q0)
            np.testing.assert_allclose(k.numpy(), 0.9 * k0 + 0.1 * q0, rtol=1e-6)
        else:  # BN statistics: each encoder's training-mode forward updates its own
            assert not np.allclose(q.numpy(), q0) and not np.allclose(k.numpy(), k0)
    # Recompute the step's losses by hand: key embeddings after the momentum update (BN in
    # training mode) against the queue BEFORE the enqueue; the enqueued rows are those keys.
    query = model(features["query_images"], training=True)
    key = model.key_encoder(features["key_images"], training=True)
    masks = {n: cp2_losses.downsample_masks(labels[n], 4) for n in labels}
    key_inst = cp2_losses.instance_embeddings(key, masks["key_masks"])
    query_inst = cp2_losses.instance_embeddings(query, masks["query_masks"])
    logits = cp2_losses.instance_logits(query_inst, key_inst, queue_before, 0.2)
    np.testing.assert_allclose(out["instance_loss"], cp2_losses.instance_loss(logits), rtol=1e-5)
    dense = cp2_losses.dense_loss(
        cp2_losses.dense_logits(query, key),
        cp2_losses.dense_labels(masks["query_masks"], masks["key_masks"]),
    )
    np.testing.assert_allclose(out["dense_loss"], dense, rtol=1e-5)
    np.testing.assert_allclose(model.queue.numpy()[:3], key_inst.numpy(), atol=1e-6)
    np.testing.assert_array_equal(model.queue.numpy()[3:], queue_before[3:])
    assert int(model.queue_ptr.numpy()) == 3


def test_evaluation_changes_no_state(tiny):
    perturb_key(tiny, seed=2)
    state = values(tiny.variables)
    features, labels = batch(2, seed=1)
    out = tiny.compute_losses(features, labels, training=False)
    out_graph = tf.function(lambda f, lab: tiny.compute_losses(f, lab, training=False))(
        features, labels
    )
    for name in out:
        np.testing.assert_allclose(out_graph[name], out[name], rtol=1e-5)
        assert np.isfinite(out[name].numpy())
    for v, before in zip(tiny.variables, state, strict=True):
        np.testing.assert_array_equal(v.numpy(), before)


def test_mask_size_must_match_the_images(tiny):
    features, labels = batch(2, seed=1)
    labels = {n: m[:, :8, :8] for n, m in labels.items()}
    with pytest.raises(ValueError, match="masks must have the images' size"):
        tiny.compute_losses(features, labels, training=False)


def run_mirrored() -> dict:
    """Subprocess body: one training step under MirroredStrategy on 2 logical CPUs."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = tiny_model(queue_size=6, momentum=0.9)
    perturb_key(model)
    model.copy_query_to_key()  # cross-replica copy, BN statistics (SyncOnRead) included
    copied = all(
        np.array_equal(q.numpy(), k.numpy()) for q, k in model.weight_pairs()
    )  # fmt: skip
    perturb_key(model)
    pairs = model.weight_pairs()
    query_before = values(q for q, _ in pairs if q.trainable)
    key_before = values(k for q, k in pairs if q.trainable)
    features, labels = batch(4, seed=0)  # global batch 4: 2 per replica
    dataset = tf.data.Dataset.from_tensors((features, labels)).unbatch().batch(4)
    inputs = next(iter(strategy.experimental_distribute_dataset(dataset)))

    @tf.function
    def step(inputs):
        def replica_fn(features, labels):
            out = model.compute_losses(features, labels, training=True)
            key = model.key_encoder(features["key_images"], training=True)
            masks = cp2_losses.downsample_masks(labels["key_masks"], 4)
            return out["total_loss"], cp2_losses.instance_embeddings(key, masks)

        return strategy.run(replica_fn, args=inputs)

    losses, keys = step(inputs)
    key_values = [np.asarray(x) for x in strategy.experimental_local_results(keys)]
    trainable_pairs = [p for p in pairs if p[0].trainable]
    momentum_ok = all(
        np.allclose(component.numpy(), 0.9 * k0 + 0.1 * q0, rtol=1e-6)
        for (q, k), q0, k0 in zip(trainable_pairs, query_before, key_before, strict=True)
        for component in k.values
    )
    return {
        "num_replicas": strategy.num_replicas_in_sync,
        "copied": copied,
        "momentum_ok": bool(momentum_ok),
        "losses": [float(x) for x in strategy.experimental_local_results(losses)],
        "keys": [x.tolist() for x in key_values],
        "queues": [c.numpy().tolist() for c in model.queue.values],
        "ptrs": [int(c.numpy()) for c in model.queue_ptr.values],
    }


def test_mirrored_strategy_gathers_keys_of_both_replicas():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--mirrored"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")][-1]
    out = json.loads(line[len("RESULT ") :])
    assert out["num_replicas"] == 2 and out["copied"] and out["momentum_ok"]
    assert all(np.isfinite(out["losses"]))
    gathered = np.concatenate([np.asarray(k) for k in out["keys"]])  # replica order
    assert gathered.shape == (4, DIM) and not np.allclose(out["keys"][0], out["keys"][1])
    for queue, ptr in zip(out["queues"], out["ptrs"], strict=True):
        np.testing.assert_allclose(np.asarray(queue)[:4], gathered, atol=1e-5)
        assert ptr == 4


@pytest.fixture(scope="module")
def resnet_cp2():
    return cp2.build_cp2_model(
        image_size=64, model_id=18, decoder_num_filters=32, queue_size=16, aspp_level=4
    )


def test_build_cp2_model_embeddings_and_a_step(resnet_cp2):
    model = resnet_cp2
    assert type(model.decoder).__name__ == "ASPP" and model.feature_stride == 16
    for q, k in model.weight_pairs():
        np.testing.assert_array_equal(q.numpy(), k.numpy())
    assert model.key_encoder.backbone is not model.backbone
    features, labels = batch(2, seed=3)
    features = {n: tf.image.resize(x, [64, 64]) for n, x in features.items()}
    labels = {
        n: tf.image.resize(x[..., None], [64, 64], "nearest")[..., 0] for n, x in labels.items()
    }
    assert model(features["query_images"]).shape == (2, 4, 4, 128)
    out = model.compute_losses(features, labels, training=True)
    assert all(np.isfinite(v.numpy()) for v in out.values())
    assert int(model.queue_ptr.numpy()) == 2


def test_build_cp2_model_rejects_bad_arguments():
    for kwargs, message in [
        (dict(momentum=1.5), "momentum"),
        (dict(temperature=0.0), "temperature"),
        (dict(queue_size=0), "queue_size"),
        (dict(image_size=72), "multiple of 16"),
    ]:
        with pytest.raises(ValueError, match=message):
            cp2.build_cp2_model(**{"image_size": 64, "model_id": 18, **kwargs})


def test_checkpoint_restores_into_the_segmentation_model(resnet_cp2, tmp_path):
    path = tf.train.Checkpoint(model=resnet_cp2).write(str(tmp_path / "ckpt"))
    keys = [name for name, _ in tf.train.list_variables(path)]
    assert any(k.startswith("model/key_encoder/backbone/") for k in keys)
    assert any(k.startswith("model/queue/") for k in keys)
    seg = segmentation.build_segmentation_model(
        num_classes=21, image_size=64, backbone="resnet", model_id=18, decoder="aspp",
        aspp_level=4, head_level=4, decoder_num_filters=32, use_sync_bn=False,
    )  # fmt: skip
    pairs = [
        (resnet_cp2.backbone, seg.backbone),
        (resnet_cp2.decoder, seg.decoder),
    ]
    assert not all(
        np.array_equal(a.numpy(), b.numpy()) for src, dst in pairs
        for a, b in zip(src.weights, dst.weights, strict=True)
    )  # fmt: skip
    restored = init_checkpoint.restore_backbone_and_decoder(path, seg.backbone, seg.decoder)
    assert restored == ["backbone", "decoder"]
    for src, dst in pairs:
        assert len(src.weights) == len(dst.weights)
        for a, b in zip(src.weights, dst.weights, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


if __name__ == "__main__" and "--mirrored" in sys.argv:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    print("RESULT " + json.dumps(run_mirrored()))

"""CP2 model: a momentum-contrast (MoCo v2) pair of dense segmentation encoders.

CP2 (Wang et al., ECCV 2022) pretrains a segmentation backbone and its ASPP head on images
composed by Copy-Paste; the authors' code (wangf3014/CP2, `builder.py` CP2_MOCO) is the
reference. `CP2Model` holds:

  * the query encoder, trained by the optimizer: `backbone` and `decoder` exactly as
    `tfcp.modeling.segmentation.build_segmentation_model(decoder='aspp', ...)` builds them
    (Model Garden's factories on the same config), then `projection`: 1x1 conv -> ReLU ->
    1x1 conv (projection_dim), the reference's `contrast_conv`. `tf.train.Checkpoint(
    model=cp2_model)` thus restores into a segmentation model by object path
    (`model/backbone/`, `model/decoder/`: `init_checkpoint.restore_backbone_and_decoder`).
  * `key_encoder` (object path `key_encoder/backbone/...`), built identically, never given
    gradients (outputs under `tf.stop_gradient`; left out of `trainable_variables`), updated
    by `momentum_update`: key_w <- m key_w + (1 - m) query_w over the trainable weights
    (torch's `parameters()`), pairwise in build order. Its BN moving statistics are its own,
    updated by its training-mode forward.
  * non-trainable state: `queue` float32 [K, D] (L2-normalized stateless random normal from
    `seed`) and `queue_ptr` int64 scalar, advanced by `enqueue` with wrap-around.

A training step (`compute_losses(..., training=True)`) follows the reference's order: query
forward; momentum update; key forward (BN in training mode); losses against the queue as it
was before this step; enqueue of the key instance embeddings of every replica (`all_gather`).
With training=False no variable changes (held-out evaluation).

Distribution: the state updates run in cross-replica context (`ReplicaContext.merge_call` +
`strategy.extended.update`, as optimizers apply gradients): eagerly, in `tf.function` and in
`strategy.run`, every replica applies the same update to its copy.

BatchNorm leakage: MoCo shuffles the keys across GPUs (shuffle-BN) so that per-device batch
statistics cannot leak which key matches which query. tf.distribute has no cheap
cross-replica batch shuffle; the configs use synchronized BN over the global batch instead
(`use_sync_bn=True`, SimCLR's remedy), and queries and keys never share a BN batch: they go
through separate forward passes of separate encoders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gin
import tensorflow as tf
import tf_keras
from official.vision.modeling.backbones import factory as backbones_factory
from official.vision.modeling.decoders import factory as decoders_factory

from tfcp.modeling import cp2_losses, segmentation


def build_projection(num_filters: int, projection_dim: int, name: str) -> tf_keras.Sequential:
    """The reference's `contrast_conv`: 1x1 conv -> ReLU -> 1x1 conv, with biases.

    Kernels are initialized as torch's Conv2d default (uniform +-1/sqrt(fan_in)); biases 0.
    """

    def init():
        return tf_keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")

    return tf_keras.Sequential(
        [
            tf_keras.layers.Conv2D(num_filters, 1, kernel_initializer=init(), name="conv_0"),
            tf_keras.layers.ReLU(name="relu"),
            tf_keras.layers.Conv2D(projection_dim, 1, kernel_initializer=init(), name="conv_1"),
        ],
        name=name,
    )


def _encode(backbone, decoder, projection, level: int, images, training) -> tf.Tensor:
    """backbone -> ASPP decoder (level `level`) -> projection; float32 [B, h, w, D]."""
    features = backbone(images, training=training)
    decoded = decoder(features, training=training)
    if isinstance(decoded, dict):
        decoded = decoded[str(level)]
    return tf.cast(projection(decoded, training=training), tf.float32)


class Encoder(tf_keras.Model):
    """backbone + decoder + projection: the key encoder (the query's lives in CP2Model)."""

    def __init__(self, backbone, decoder, projection, level: int, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.decoder = decoder
        self.projection = projection
        self._level = int(level)

    def call(self, images: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """float [B, S_h, S_w, 3] images -> float32 [B, S_h / 2**level, ..., D] embeddings."""
        return _encode(self.backbone, self.decoder, self.projection, self._level, images, training)


def _cross_replica(fn: Callable[..., Any], *args) -> Any:
    """Runs `fn(strategy, *args)` in cross-replica context (merge_call from a replica)."""
    context = tf.distribute.get_replica_context()
    if context is None:  # already in cross-replica context
        return fn(tf.distribute.get_strategy(), *args)
    return context.merge_call(fn, args=args)


def _deps(result) -> list:
    return [x for x in tf.nest.flatten(result) if x is not None]


class CP2Model(tf_keras.Model):
    """Query encoder (trainable) + momentum key encoder + queue; see the module docstring.

    Attributes:
      backbone, decoder, projection: the query encoder.
      key_encoder: `Encoder` with its own backbone, decoder and projection.
      queue: non-trainable float32 [K, D] variable of negative keys.
      queue_ptr: non-trainable int64 scalar variable, the next row `enqueue` writes.
      momentum, temperature, dense_weight: python floats.
    """

    def __init__(
        self,
        backbone: tf_keras.Model,
        decoder: tf_keras.Model,
        projection: tf_keras.Model,
        key_encoder: Encoder,
        *,
        level: int,
        projection_dim: int,
        queue_size: int,
        momentum: float,
        temperature: float,
        dense_weight: float,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.decoder = decoder
        self.projection = projection
        self.key_encoder = key_encoder
        self._level = int(level)
        self.momentum = float(momentum)
        self.temperature = float(temperature)
        self.dense_weight = float(dense_weight)
        self.queue_size = int(queue_size)
        initial = cp2_losses.normalize(
            tf.random.stateless_normal([self.queue_size, int(projection_dim)], seed=[seed, 0])
        )
        self.queue = tf.Variable(initial, trainable=False, name="queue")
        self.queue_ptr = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="queue_ptr")

    @property
    def feature_stride(self) -> int:
        """Stride of the dense embeddings w.r.t. the input (2**aspp_level)."""
        return 2**self._level

    @property
    def query_variables(self) -> list[tf.Variable]:
        """The query encoder's trainable variables: what the optimizer updates."""
        return (
            self.backbone.trainable_variables
            + self.decoder.trainable_variables
            + self.projection.trainable_variables
        )

    @property
    def trainable_weights(self) -> list[tf.Variable]:
        """Keras' trainable weights without the key encoder's (never given gradients)."""
        key = {v.ref() for v in self.key_encoder.weights}
        return [v for v in super().trainable_weights if v.ref() not in key]

    @property
    def non_trainable_weights(self) -> list[tf.Variable]:
        """Keras' non-trainable weights plus the key encoder's trainable ones."""
        return super().non_trainable_weights + list(self.key_encoder.trainable_weights)

    def call(self, images: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """Query embeddings, not normalized: float [B, H, W, 3] -> float32 [B, H/s, W/s, D]."""
        return _encode(self.backbone, self.decoder, self.projection, self._level, images, training)

    def create_variables(self, input_size: Sequence[int]) -> None:
        """Builds both encoders on symbolic [None, H, W, 3] images, then key := query."""
        self(tf_keras.Input(list(input_size)), training=False)
        self.key_encoder(tf_keras.Input(list(input_size)), training=False)
        self.copy_query_to_key()

    def weight_pairs(self) -> list[tuple[tf.Variable, tf.Variable]]:
        """(query, key) variable pairs over every weight, in build order (ValueError: unpaired)."""
        pairs = []
        key = self.key_encoder
        for name, query_module, key_module in (
            ("backbone", self.backbone, key.backbone),
            ("decoder", self.decoder, key.decoder),
            ("projection", self.projection, key.projection),
        ):
            query_weights, key_weights = query_module.weights, key_module.weights
            if len(query_weights) != len(key_weights) or not query_weights:
                raise ValueError(
                    f"key encoder {name} has {len(key_weights)} weights, the query's "
                    f"{len(query_weights)} (not built, or built differently)"
                )
            for q, k in zip(query_weights, key_weights, strict=True):
                if q.shape != k.shape or q.trainable != k.trainable or q.dtype != k.dtype:
                    raise ValueError(
                        f"{name}: query weight {q.name} {q.shape} does not pair with key "
                        f"weight {k.name} {k.shape} (encoders built differently)"
                    )
                pairs.append((q, k))
        return pairs

    def copy_query_to_key(self) -> None:
        """Sets every key-encoder weight (trainable and BN moving statistics) to the query's."""
        pairs = self.weight_pairs()

        _cross_replica(lambda _: [k.assign(q.read_value(), read_value=False) for q, k in pairs])

    def momentum_update(self) -> None:
        """key_w <- momentum * key_w + (1 - momentum) * query_w over trainable weights."""
        self._momentum_update()

    def _momentum_update(self) -> list:
        """`momentum_update`, returning its ops (graph mode) for control dependencies."""
        pairs = [(q, k) for q, k in self.weight_pairs() if q.trainable]
        m = self.momentum

        def update(key_var, query_var):
            return key_var.assign(m * key_var + (1.0 - m) * query_var, read_value=False)

        def merge_fn(strategy):
            return [strategy.extended.update(k, update, args=(q,), group=True) for q, k in pairs]

        return _deps(_cross_replica(merge_fn))

    def enqueue(self, keys: tf.Tensor) -> None:
        """Writes every replica's `keys` at `queue_ptr` (wrap-around) and advances it.

        Args:
          keys: float [B, D] key instance embeddings of this replica; the keys of all
            replicas are gathered in replica order, as torch's `concat_all_gather`.

        Raises:
          ValueError / InvalidArgumentError: more gathered keys than the queue holds.
        """
        context = tf.distribute.get_replica_context()
        keys = tf.stop_gradient(tf.cast(keys, tf.float32))
        if context is not None:
            keys = context.all_gather(keys, axis=0)
        size = self.queue_size
        if keys.shape[0] is not None and keys.shape[0] > size:
            raise ValueError(f"cannot enqueue {keys.shape[0]} keys into a queue of {size}")

        def write(queue, keys, ptr):
            n = tf.shape(keys, out_type=tf.int64)[0]
            check = tf.debugging.assert_less_equal(
                n, tf.constant(size, tf.int64), message=f"more keys than queue_size={size}"
            )
            with tf.control_dependencies([check]):
                rows = (ptr + tf.range(n, dtype=tf.int64)) % size
            return queue.scatter_nd_update(rows[:, None], keys)

        def advance(ptr, keys):
            n = tf.shape(keys, out_type=tf.int64)[0]
            return ptr.assign((ptr + n) % size, read_value=False)

        def merge_fn(strategy, keys):
            written = strategy.extended.update(
                self.queue, write, args=(keys, self.queue_ptr), group=True
            )
            with tf.control_dependencies(_deps(written)):
                return strategy.extended.update(self.queue_ptr, advance, args=(keys,), group=True)

        _cross_replica(merge_fn, keys)

    def compute_losses(
        self, features: dict[str, tf.Tensor], labels: dict[str, tf.Tensor], training: bool
    ) -> dict[str, tf.Tensor]:
        """One CP2 step's losses and accuracies (state updates when `training`).

        Args:
          features: {'query_images', 'key_images'}: float32 [B, S, S, 3].
          labels: {'query_masks', 'key_masks'}: float32 [B, S, S] foreground masks, 0/1.
          training: python bool; True updates the key encoder (momentum, BN statistics)
            and the queue, False changes no variable.

        Returns:
          float32 scalars 'total_loss' (= instance + dense_weight * dense),
          'instance_loss', 'dense_loss', 'instance_accuracy' and 'dense_accuracy' (percent),
          each over this replica's batch.
        """
        query = self(features["query_images"], training=training)
        with tf.control_dependencies(self._momentum_update() if training else []):
            key = tf.stop_gradient(self.key_encoder(features["key_images"], training=training))
        query_masks = self._masks(labels["query_masks"], query, "query")
        key_masks = self._masks(labels["key_masks"], key, "key")
        queue = tf.stop_gradient(tf.convert_to_tensor(self.queue))  # before this step's enqueue
        key_instances = cp2_losses.instance_embeddings(key, key_masks)
        query_instances = cp2_losses.instance_embeddings(query, query_masks)
        logits = cp2_losses.instance_logits(query_instances, key_instances, queue, self.temperature)
        logits_dense = cp2_losses.dense_logits(query, key)
        labels_dense = cp2_losses.dense_labels(query_masks, key_masks)
        instance_loss = cp2_losses.instance_loss(logits)
        dense_loss = cp2_losses.dense_loss(logits_dense, labels_dense)
        outputs = {
            "total_loss": instance_loss + self.dense_weight * dense_loss,
            "instance_loss": instance_loss,
            "dense_loss": dense_loss,
            "instance_accuracy": cp2_losses.instance_accuracy(logits),
            "dense_accuracy": cp2_losses.dense_accuracy(logits_dense, labels_dense),
        }
        if training:
            with tf.control_dependencies([queue]):
                self.enqueue(key_instances)
        return outputs

    def _masks(self, masks: tf.Tensor, dense: tf.Tensor, what: str) -> tf.Tensor:
        """Masks at feature resolution, checked against the embeddings' static [h, w]."""
        masks = cp2_losses.downsample_masks(masks, self.feature_stride)
        mask_hw, dense_hw = masks.shape[1:3], dense.shape[1:3]
        if mask_hw.is_fully_defined() and dense_hw.is_fully_defined() and mask_hw != dense_hw:
            raise ValueError(
                f"{what} masks sampled at stride {self.feature_stride} are {mask_hw}, the "
                f"embeddings {dense_hw}: masks must have the images' size"
            )
        return masks


def _build_encoder_parts(config, decoder_num_filters: int, projection_dim: int, name: str):
    """Model Garden backbone + decoder (as `build_segmentation_model`) and a projection."""
    input_specs = tf_keras.layers.InputSpec(shape=[None] + list(config.input_size))
    backbone = backbones_factory.build_backbone(
        input_specs=input_specs,
        backbone_config=config.backbone,
        norm_activation_config=config.norm_activation,
        l2_regularizer=None,
    )
    decoder = decoders_factory.build_decoder(
        input_specs=backbone.output_specs, model_config=config, l2_regularizer=None
    )
    return backbone, decoder, build_projection(decoder_num_filters, projection_dim, name)


@gin.configurable
def build_cp2_model(
    image_size: int | Sequence[int] = gin.REQUIRED,
    backbone: str = "resnet",
    model_id: int | str = 50,
    aspp_level: int = 4,
    aspp_dilation_rates: Sequence[int] = (6, 12, 18),
    decoder_num_filters: int = 256,
    projection_dim: int = 128,
    queue_size: int = 65536,
    momentum: float = 0.999,
    temperature: float = 0.2,
    dense_weight: float = 0.2,
    use_sync_bn: bool = True,
    norm_momentum: float = 0.99,
    norm_epsilon: float = 1e-3,
    seed: int = 0,
    **backbone_kwargs,
) -> CP2Model:
    """gin builder of a built `CP2Model` (variables created, key encoder = query encoder).

    Args:
      image_size: int or (height, width) of the composed images; a multiple of 2**aspp_level.
      backbone, model_id: as `tfcp.modeling.segmentation.segmentation_model_config`.
      aspp_level: backbone level the ASPP reads; the embeddings' stride is 2**aspp_level.
      aspp_dilation_rates: ASPP atrous rates.
      decoder_num_filters: ASPP filters (= the projection's hidden width).
      projection_dim: D, the embedding size (reference: 128).
      queue_size: K, number of negative keys (reference: 65536).
      momentum: key-encoder momentum m (reference: 0.999).
      temperature: instance-loss temperature (reference: 0.2).
      dense_weight: weight of the dense loss in the total (reference: 0.2).
      use_sync_bn, norm_momentum, norm_epsilon: BatchNorm settings (see the module docstring
        on synchronized BN).
      seed: seed of the queue's initial random keys.
      **backbone_kwargs: further keyword arguments of `segmentation_model_config` (e.g.
        `se_ratio`, `stochastic_depth_drop_rate`, `aspp_dropout_rate`, dilated-backbone
        options); unknown names raise TypeError.

    Returns:
      The built `CP2Model`.

    Raises:
      ValueError: invalid sizes, momentum outside [0, 1] or temperature <= 0.
    """
    if queue_size < 1 or projection_dim < 1 or not 0 <= momentum <= 1 or temperature <= 0:
        raise ValueError(
            "need queue_size >= 1, projection_dim >= 1, momentum in [0, 1], temperature > 0; "
            f"got {queue_size}, {projection_dim}, {momentum}, {temperature}"
        )
    config = segmentation.segmentation_model_config(
        num_classes=2,
        image_size=image_size,
        backbone=backbone,
        model_id=model_id,
        decoder="aspp",
        aspp_level=aspp_level,
        head_level=aspp_level,
        aspp_dilation_rates=aspp_dilation_rates,
        decoder_num_filters=decoder_num_filters,
        use_sync_bn=use_sync_bn,
        norm_momentum=norm_momentum,
        norm_epsilon=norm_epsilon,
        **backbone_kwargs,
    )
    query_parts = _build_encoder_parts(config, decoder_num_filters, projection_dim, "projection")
    key_parts = _build_encoder_parts(config, decoder_num_filters, projection_dim, "key_projection")
    model = CP2Model(
        *query_parts,
        Encoder(*key_parts, level=aspp_level, name="key_encoder"),
        level=aspp_level,
        projection_dim=projection_dim,
        queue_size=queue_size,
        momentum=momentum,
        temperature=temperature,
        dense_weight=dense_weight,
        seed=seed,
        name="cp2_model",
    )
    model.create_variables(config.input_size)
    return model

"""gin builder of semantic-segmentation models over `official.vision`.

The builder translates flat, gin-friendly arguments into Model Garden's
`official.vision.configs.semantic_segmentation.SemanticSegmentationModel` and calls
`official.vision.modeling.factory.build_segmentation_model`. The backbones are the ones of
the detection models (`tfcp.modeling.factory`: ResNet, EfficientNet), built from the same
Model Garden configs, so an exported feature extractor or a Mask R-CNN checkpoint restores
into them by object path (`backbone/...`, and `decoder/...` for the FPN variant).

Variants:
  * `decoder='fpn'` (default): the detection models' FPN (same `min_level`, `max_level`,
    `decoder_num_filters` -> the pretrained FPN transfers too) and Model Garden's
    `SegmentationHead` on FPN level `head_level`.
  * `decoder='aspp'`: DeepLabv3's atrous spatial pyramid pooling on backbone level
    `aspp_level` (only the backbone transfers); `feature_fusion='deeplabv3plus'` adds the
    DeepLabv3+ low-level skip from backbone level `low_level`.

The model maps float32 [B, S_h, S_w, 3] normalized images to
`{'logits': float [B, S_h / 2**head_level * upsample_factor, ..., num_classes]}`.
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import tf_keras
from official.vision.configs import backbones as backbones_cfg
from official.vision.configs import common as common_cfg
from official.vision.configs import decoders as decoders_cfg
from official.vision.configs import semantic_segmentation as seg_cfg
from official.vision.modeling import factory as mg_factory

from tfcp.modeling.factory import image_hw

_BACKBONES = ("resnet", "dilated_resnet", "efficientnet")
_DECODERS = ("fpn", "aspp")
_FUSIONS = (None, "deeplabv3plus")


def _backbone_config(
    backbone: str,
    model_id: int | str,
    stochastic_depth_drop_rate: float,
    se_ratio: float | None,
    output_stride: int = 16,
    multigrid: Sequence[int] | None = None,
) -> backbones_cfg.Backbone:
    """The Model Garden backbone config, with `tfcp.modeling.factory`'s se_ratio defaults."""
    if backbone == "dilated_resnet":
        return backbones_cfg.Backbone(
            type="dilated_resnet",
            dilated_resnet=backbones_cfg.DilatedResNet(
                model_id=int(model_id),
                output_stride=int(output_stride),
                multigrid=None if multigrid is None else [int(m) for m in multigrid],
                stochastic_depth_drop_rate=stochastic_depth_drop_rate,
                se_ratio=0.0 if se_ratio is None else se_ratio,
            ),
        )
    if backbone == "resnet":
        return backbones_cfg.Backbone(
            type="resnet",
            resnet=backbones_cfg.ResNet(
                model_id=int(model_id),
                stochastic_depth_drop_rate=stochastic_depth_drop_rate,
                se_ratio=0.0 if se_ratio is None else se_ratio,
            ),
        )
    return backbones_cfg.Backbone(
        type="efficientnet",
        efficientnet=backbones_cfg.EfficientNet(
            model_id=str(model_id),
            stochastic_depth_drop_rate=stochastic_depth_drop_rate,
            se_ratio=0.25 if se_ratio is None else se_ratio,
        ),
    )


def segmentation_model_config(
    num_classes: int,
    image_size: int | Sequence[int],
    *,
    backbone: str = "resnet",
    model_id: int | str = 50,
    stochastic_depth_drop_rate: float = 0.0,
    se_ratio: float | None = None,
    output_stride: int = 16,
    multigrid: Sequence[int] | None = None,
    decoder: str = "fpn",
    decoder_num_filters: int = 256,
    decoder_use_separable_conv: bool = False,
    min_level: int = 2,
    max_level: int = 6,
    aspp_level: int = 5,
    aspp_dilation_rates: Sequence[int] = (6, 12, 18),
    aspp_dropout_rate: float = 0.0,
    head_level: int = 2,
    head_num_convs: int = 2,
    head_num_filters: int = 256,
    head_upsample_factor: int = 1,
    feature_fusion: str | None = None,
    low_level: int = 2,
    low_level_num_filters: int = 48,
    use_sync_bn: bool = True,
    norm_momentum: float = 0.997,
    norm_epsilon: float = 1e-4,
    activation: str = "relu",
) -> seg_cfg.SemanticSegmentationModel:
    """Builds Model Garden's `SemanticSegmentationModel` config from flat arguments.

    Args:
      num_classes: number of classes including background (PASCAL VOC: 21).
      image_size: int or (height, width) of the fixed-size input images; multiples of
        2**max_level (FPN) or 2**aspp_level (ASPP).
      backbone: 'resnet' (`model_id` 18..200), 'dilated_resnet' (DeepLabv3's ResNet,
        `model_id` 50..200, last stages dilated to `output_stride`; its variables have the
        same object paths and shapes as 'resnet''s, so either restores into the other) or
        'efficientnet' (`model_id` 'b0'..'b7').
      se_ratio: squeeze-excitation ratio; None = 0.25 for EfficientNet, 0 for ResNet
        (as `tfcp.modeling.factory`, so the architectures, hence the checkpoints, match).
      output_stride, multigrid: 'dilated_resnet' only: output stride (8 or 16; the
        backbone's last level is then log2(output_stride)) and the multi-grid dilation
        factors of the last block group (None = 1s).
      decoder: 'fpn' or 'aspp'.
      decoder_num_filters: FPN / ASPP filters.
      min_level, max_level: FPN levels (must equal the pretrained FPN's to restore it).
      aspp_level: backbone level the ASPP reads (without a dilated backbone: 5 = stride 32).
      aspp_dilation_rates: ASPP atrous rates.
      head_level: decoder level the segmentation head reads (FPN: min_level..max_level;
        ASPP: aspp_level).
      head_num_convs, head_num_filters, head_upsample_factor: Model Garden
        `SegmentationHead` settings.
      feature_fusion: None or 'deeplabv3plus' (ASPP only: skip from backbone `low_level`
        with `low_level_num_filters` filters).
      use_sync_bn, norm_momentum, norm_epsilon, activation: normalization / activation.

    Returns:
      A validated `SemanticSegmentationModel` config.

    Raises:
      ValueError: unknown backbone/decoder/fusion, or inconsistent levels or image size.
    """
    height, width = image_hw(image_size)
    if backbone not in _BACKBONES:
        raise ValueError(f"backbone must be one of {_BACKBONES}, got {backbone!r}")
    if decoder not in _DECODERS:
        raise ValueError(f"decoder must be one of {_DECODERS}, got {decoder!r}")
    if feature_fusion not in _FUSIONS:
        raise ValueError(f"feature_fusion must be one of {_FUSIONS}, got {feature_fusion!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background class 0; got {num_classes}")
    if decoder == "fpn":
        if not 2 <= min_level <= head_level <= max_level:
            raise ValueError(
                f"FPN needs 2 <= min_level <= head_level <= max_level, got {min_level}, "
                f"{head_level}, {max_level}"
            )
        if feature_fusion is not None:
            raise ValueError("feature_fusion='deeplabv3plus' needs decoder='aspp'")
        if backbone == "dilated_resnet":
            raise ValueError("decoder='fpn' needs backbone 'resnet' or 'efficientnet'")
        stride = 2**max_level
        decoder_config = decoders_cfg.Decoder(
            type="fpn",
            fpn=decoders_cfg.FPN(
                num_filters=decoder_num_filters, use_separable_conv=decoder_use_separable_conv
            ),
        )
    else:
        if head_level != aspp_level:
            raise ValueError(f"ASPP: head_level ({head_level}) must equal aspp_level")
        stride = 2**aspp_level
        if backbone == "dilated_resnet" and 2**aspp_level < output_stride:
            raise ValueError(
                f"aspp_level {aspp_level} is finer than the dilated backbone's output "
                f"stride {output_stride}"
            )
        min_level, max_level = aspp_level, aspp_level
        decoder_config = decoders_cfg.Decoder(
            type="aspp",
            aspp=decoders_cfg.ASPP(
                level=aspp_level,
                dilation_rates=[int(r) for r in aspp_dilation_rates],
                dropout_rate=aspp_dropout_rate,
                num_filters=decoder_num_filters,
            ),
        )
    if height % stride or width % stride:
        raise ValueError(f"image_size {height}x{width} must be a multiple of {stride}")
    return seg_cfg.SemanticSegmentationModel(
        num_classes=num_classes,
        input_size=[height, width, 3],
        min_level=min_level,
        max_level=max_level,
        backbone=_backbone_config(
            backbone, model_id, stochastic_depth_drop_rate, se_ratio, output_stride, multigrid
        ),
        decoder=decoder_config,
        head=seg_cfg.SegmentationHead(
            level=head_level,
            num_convs=head_num_convs,
            num_filters=head_num_filters,
            upsample_factor=head_upsample_factor,
            feature_fusion=feature_fusion,
            low_level=low_level,
            low_level_num_filters=low_level_num_filters,
        ),
        norm_activation=common_cfg.NormActivation(
            activation=activation,
            use_sync_bn=use_sync_bn,
            norm_momentum=norm_momentum,
            norm_epsilon=norm_epsilon,
        ),
    )


@gin.configurable
def build_segmentation_model(
    num_classes: int = gin.REQUIRED,
    image_size: int | Sequence[int] = gin.REQUIRED,
    l2_weight_decay: float = 0.0,
    **kwargs,
) -> tf_keras.Model:
    """gin builder of a Model Garden `SegmentationModel` (variables created).

    Args:
      num_classes: classes including background (macro NUM_CLASSES).
      image_size: int or (height, width) (macro IMAGE_SIZE).
      l2_weight_decay: kernel L2 as a regularizer `l2(l2_weight_decay / 2)` (shows up in
        `model.losses`); keep 0 with tfcp's trainer, which applies weight decay itself.
      **kwargs: any keyword argument of `segmentation_model_config`; unknown names raise
        TypeError.

    Returns:
      The built `tf_keras.Model` with `backbone`, `decoder` and `head` attributes.
    """
    model_config = segmentation_model_config(num_classes, image_size, **kwargs)
    input_size = list(model_config.input_size)
    l2_regularizer = tf_keras.regularizers.l2(l2_weight_decay / 2.0) if l2_weight_decay else None
    model = mg_factory.build_segmentation_model(
        input_specs=tf_keras.layers.InputSpec(shape=[None] + input_size),
        model_config=model_config,
        l2_regularizer=l2_regularizer,
    )
    model(tf_keras.Input(input_size), training=False)  # creates every variable
    return model

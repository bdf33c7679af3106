"""gin builders for Mask R-CNN, Cascade Mask R-CNN and Faster R-CNN over `official.vision`.

The builders translate flat, gin-friendly arguments into Model Garden's
`official.vision.configs.maskrcnn.MaskRCNN` config dataclass and call
`official.vision.modeling.factory.build_maskrcnn`. Nothing of the architecture is
re-implemented here.

Variants:
  * Mask R-CNN: the defaults (`include_mask=True`).
  * Cascade Mask R-CNN: `cascade_iou_thresholds=(0.6, 0.7)` adds two detection heads on
    top of the first one (IoU 0.5); it requires `class_agnostic_bbox_pred=True`, and
    `cascade_class_ensemble=True` averages the class scores of all heads at inference.
  * Faster R-CNN: `include_mask=False` (or `build_faster_rcnn`).
  * Double classifier (LVIS 2020 challenge report): `double_classifier=True` makes every
    detection head a `tfcp.modeling.double_classifier.DoubleDetectionHead` (two class heads on
    the same box features, their softmax scores averaged at inference).
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import tf_keras
from official.vision.configs import backbones as backbones_cfg
from official.vision.configs import common as common_cfg
from official.vision.configs import decoders as decoders_cfg
from official.vision.configs import maskrcnn as maskrcnn_cfg
from official.vision.modeling import factory as mg_factory

from tfcp.modeling import double_classifier as double_classifier_lib

_BACKBONES = ("resnet", "efficientnet")
_DECODERS = ("fpn", "nasfpn")


def image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """Returns `(height, width)` from an int or a `(height, width)` pair."""
    if isinstance(image_size, int):
        return int(image_size), int(image_size)
    size = tuple(int(s) for s in image_size)
    if len(size) != 2:
        raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}")
    return size


def maskrcnn_model_config(
    num_classes: int,
    image_size: int | Sequence[int],
    *,
    backbone: str = "resnet",
    model_id: int | str = 50,
    stochastic_depth_drop_rate: float = 0.0,
    se_ratio: float | None = None,
    decoder: str = "fpn",
    decoder_num_filters: int = 256,
    decoder_use_separable_conv: bool = False,
    nasfpn_num_repeats: int = 5,
    min_level: int = 2,
    max_level: int = 6,
    num_scales: int = 1,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    anchor_size: float = 8.0,
    include_mask: bool = True,
    rpn_head_num_convs: int = 1,
    rpn_head_num_filters: int = 256,
    rpn_pre_nms_top_k: int = 2000,
    rpn_nms_iou_threshold: float = 0.7,
    num_proposals: int = 1000,
    test_rpn_pre_nms_top_k: int = 1000,
    test_num_proposals: int = 1000,
    num_sampled_rois: int = 512,
    foreground_fraction: float = 0.25,
    foreground_iou_threshold: float = 0.5,
    cascade_iou_thresholds: Sequence[float] | None = None,
    roi_crop_size: int = 7,
    detection_head_num_convs: int = 4,
    detection_head_num_filters: int = 256,
    detection_head_num_fcs: int = 1,
    detection_head_fc_dims: int = 1024,
    class_agnostic_bbox_pred: bool = False,
    cascade_class_ensemble: bool = False,
    detection_pre_nms_top_k: int = 5000,
    detection_score_threshold: float = 0.05,
    detection_nms_iou_threshold: float = 0.5,
    max_num_detections: int = 100,
    nms_version: str = "v2",
    mask_head_num_convs: int = 4,
    mask_head_num_filters: int = 256,
    mask_roi_crop_size: int = 14,
    mask_upsample_factor: int = 2,
    num_sampled_masks: int = 128,
    use_sync_bn: bool = True,
    norm_momentum: float = 0.997,
    norm_epsilon: float = 1e-4,
    activation: str = "relu",
) -> maskrcnn_cfg.MaskRCNN:
    """Builds Model Garden's `MaskRCNN` config dataclass from flat arguments.

    Args:
      num_classes: number of classes including the background class 0 (COCO: 91).
      image_size: int or (height, width) of the fixed-size input images; both must be
        multiples of 2**max_level.
      backbone: 'resnet' (`model_id` 18/34/50/101/152/200) or 'efficientnet'
        (`model_id` 'b0'..'b7').
      se_ratio: squeeze-excitation ratio; None = 0.25 for EfficientNet (its published
        architecture; Model Garden's config default is 0.0) and 0.0 for ResNet.
      decoder: 'fpn' or 'nasfpn'.
      cascade_iou_thresholds: IoU thresholds of the extra Cascade R-CNN stages
        (the first stage uses `foreground_iou_threshold`); None for a single stage.
      Other arguments map 1:1 to the fields of `official.vision.configs.maskrcnn`.

    Returns:
      A validated `maskrcnn_cfg.MaskRCNN`.

    Raises:
      ValueError: unknown backbone/decoder, inconsistent levels or image size, or a
        cascade without class-agnostic box regression.
    """
    height, width = image_hw(image_size)
    if backbone not in _BACKBONES:
        raise ValueError(f"backbone must be one of {_BACKBONES}, got {backbone!r}")
    if decoder not in _DECODERS:
        raise ValueError(f"decoder must be one of {_DECODERS}, got {decoder!r}")
    if not 2 <= min_level <= max_level:
        raise ValueError(f"need 2 <= min_level <= max_level, got {min_level}, {max_level}")
    stride = 2**max_level
    if height % stride or width % stride:
        raise ValueError(
            f"image_size {height}x{width} must be a multiple of 2**max_level = {stride}"
        )
    if cascade_iou_thresholds and not class_agnostic_bbox_pred:
        raise ValueError("Cascade R-CNN (cascade_iou_thresholds) needs class_agnostic_bbox_pred")
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background class 0; got {num_classes}")

    if backbone == "resnet":
        backbone_config = backbones_cfg.Backbone(
            type="resnet",
            resnet=backbones_cfg.ResNet(
                model_id=int(model_id),
                stochastic_depth_drop_rate=stochastic_depth_drop_rate,
                se_ratio=0.0 if se_ratio is None else se_ratio,
            ),
        )
    else:
        backbone_config = backbones_cfg.Backbone(
            type="efficientnet",
            efficientnet=backbones_cfg.EfficientNet(
                model_id=str(model_id),
                stochastic_depth_drop_rate=stochastic_depth_drop_rate,
                se_ratio=0.25 if se_ratio is None else se_ratio,
            ),
        )
    if decoder == "fpn":
        decoder_config = decoders_cfg.Decoder(
            type="fpn",
            fpn=decoders_cfg.FPN(
                num_filters=decoder_num_filters, use_separable_conv=decoder_use_separable_conv
            ),
        )
    else:
        decoder_config = decoders_cfg.Decoder(
            type="nasfpn",
            nasfpn=decoders_cfg.NASFPN(
                num_filters=decoder_num_filters,
                num_repeats=nasfpn_num_repeats,
                use_separable_conv=decoder_use_separable_conv,
            ),
        )

    return maskrcnn_cfg.MaskRCNN(
        num_classes=num_classes,
        input_size=[height, width, 3],
        min_level=min_level,
        max_level=max_level,
        anchor=maskrcnn_cfg.Anchor(
            num_scales=num_scales,
            aspect_ratios=[float(a) for a in aspect_ratios],
            anchor_size=anchor_size,
        ),
        include_mask=include_mask,
        backbone=backbone_config,
        decoder=decoder_config,
        rpn_head=maskrcnn_cfg.RPNHead(
            num_convs=rpn_head_num_convs, num_filters=rpn_head_num_filters
        ),
        detection_head=maskrcnn_cfg.DetectionHead(
            num_convs=detection_head_num_convs,
            num_filters=detection_head_num_filters,
            num_fcs=detection_head_num_fcs,
            fc_dims=detection_head_fc_dims,
            class_agnostic_bbox_pred=class_agnostic_bbox_pred,
            cascade_class_ensemble=cascade_class_ensemble,
        ),
        roi_generator=maskrcnn_cfg.ROIGenerator(
            pre_nms_top_k=rpn_pre_nms_top_k,
            nms_iou_threshold=rpn_nms_iou_threshold,
            num_proposals=num_proposals,
            test_pre_nms_top_k=test_rpn_pre_nms_top_k,
            test_nms_iou_threshold=rpn_nms_iou_threshold,
            test_num_proposals=test_num_proposals,
        ),
        roi_sampler=maskrcnn_cfg.ROISampler(
            num_sampled_rois=num_sampled_rois,
            foreground_fraction=foreground_fraction,
            foreground_iou_threshold=foreground_iou_threshold,
            background_iou_high_threshold=foreground_iou_threshold,
            cascade_iou_thresholds=(
                [float(t) for t in cascade_iou_thresholds] if cascade_iou_thresholds else None
            ),
        ),
        roi_aligner=maskrcnn_cfg.ROIAligner(crop_size=roi_crop_size),
        detection_generator=maskrcnn_cfg.DetectionGenerator(
            pre_nms_top_k=detection_pre_nms_top_k,
            pre_nms_score_threshold=detection_score_threshold,
            nms_iou_threshold=detection_nms_iou_threshold,
            max_num_detections=max_num_detections,
            nms_version=nms_version,
        ),
        mask_head=(
            maskrcnn_cfg.MaskHead(
                upsample_factor=mask_upsample_factor,
                num_convs=mask_head_num_convs,
                num_filters=mask_head_num_filters,
            )
            if include_mask
            else None
        ),
        mask_sampler=(
            maskrcnn_cfg.MaskSampler(num_sampled_masks=num_sampled_masks) if include_mask else None
        ),
        mask_roi_aligner=(
            maskrcnn_cfg.MaskROIAligner(crop_size=mask_roi_crop_size) if include_mask else None
        ),
        norm_activation=common_cfg.NormActivation(
            activation=activation,
            use_sync_bn=use_sync_bn,
            norm_momentum=norm_momentum,
            norm_epsilon=norm_epsilon,
        ),
    )


def build_from_config(
    model_config: maskrcnn_cfg.MaskRCNN,
    l2_weight_decay: float = 0.0,
    double_classifier: bool = False,
) -> tf_keras.Model:
    """Builds (and creates the variables of) a Model Garden `MaskRCNNModel`.

    Args:
      model_config: the `MaskRCNN` config dataclass.
      l2_weight_decay: L2 weight decay attached to the model as a kernel regularizer
        `l2(l2_weight_decay / 2)` (Model Garden's `tf.nn.l2_loss` convention; it shows
        up in `model.losses`, not in the task's `total_loss`). Keep 0 (the default)
        with tfcp's trainer, which applies weight decay itself.
      double_classifier: make every detection head a `DoubleDetectionHead`
        (`tfcp.modeling.double_classifier`); training then needs
        `labels['classifier_stream']`.

    Returns:
      The built `tf_keras.Model`, called once on symbolic inputs of the config's size.
    """
    input_size = list(model_config.input_size)
    input_specs = tf_keras.layers.InputSpec(shape=[None] + input_size)
    l2_regularizer = tf_keras.regularizers.l2(l2_weight_decay / 2.0) if l2_weight_decay else None
    model = mg_factory.build_maskrcnn(
        input_specs=input_specs, model_config=model_config, l2_regularizer=l2_regularizer
    )
    if double_classifier:
        model = double_classifier_lib.with_double_heads(model)
    # Creates all variables through a warm-up call on symbolic inputs (as Model Garden).
    dummy_images = tf_keras.Input(input_size)
    dummy_image_shape = tf_keras.layers.Input([2])
    model(dummy_images, image_shape=dummy_image_shape, training=False)
    return model


@gin.configurable
def build_maskrcnn(
    num_classes: int = gin.REQUIRED,
    image_size: int | Sequence[int] = gin.REQUIRED,
    l2_weight_decay: float = 0.0,
    double_classifier: bool = False,
    **kwargs,
) -> tf_keras.Model:
    """gin builder of Mask R-CNN / Cascade Mask R-CNN / Faster R-CNN.

    Args:
      num_classes: number of classes including background (macro NUM_CLASSES).
      image_size: int or (height, width) (macro IMAGE_SIZE).
      l2_weight_decay: see `build_from_config`.
      double_classifier: the double classifier of the LVIS 2020 challenge report
        (`tfcp.modeling.double_classifier`): two class heads per detection head, head a
        trained on the images with `labels['classifier_stream'] == 0`, head b on those with
        1; their softmax scores averaged at inference. Cascade: every stage gets one.
      **kwargs: any keyword argument of `maskrcnn_model_config` (backbone, model_id,
        decoder, min_level, max_level, num_scales, aspect_ratios, anchor_size,
        include_mask, cascade_iou_thresholds, ...). Unknown names raise TypeError.

    Returns:
      The built `tf_keras.Model` (Model Garden `MaskRCNNModel`).
    """
    model_config = maskrcnn_model_config(num_classes, image_size, **kwargs)
    return build_from_config(
        model_config, l2_weight_decay=l2_weight_decay, double_classifier=double_classifier
    )


def build_faster_rcnn(**kwargs) -> tf_keras.Model:
    """Faster R-CNN: `build_maskrcnn(include_mask=False, ...)`; gin bindings still apply."""
    kwargs["include_mask"] = False
    return build_maskrcnn(**kwargs)


def model_properties(model: tf_keras.Model) -> dict[str, object]:
    """Reads the loss-relevant structure of a built `MaskRCNNModel`.

    Returns:
      dict with `include_mask` (bool), `num_detection_heads` (int, 1 + cascade stages),
      `class_agnostic_bbox_pred` (bool), `double_classifier` (bool).
    """
    config = model.get_config()
    samplers = config["roi_sampler"]
    num_heads = len(samplers) if isinstance(samplers, (list, tuple)) else 1
    return {
        "include_mask": config["mask_head"] is not None,
        "num_detection_heads": num_heads,
        "class_agnostic_bbox_pred": bool(config["class_agnostic_bbox_pred"]),
        "double_classifier": double_classifier_lib.is_double(model),
    }

"""PASCAL VOC detection task: Faster R-CNN fine-tuning, VOC07 mAP@0.5 evaluation.

The model is the Mask R-CNN family of `tfcp.tasks.maskrcnn.MaskRCNNTask` without the mask
head (`build_maskrcnn.include_mask = False`, i.e. Faster R-CNN); losses, the inference
step and backbone (+ FPN) initialization are inherited. What differs is the data and the
metric:

* inputs (`build_voc_detection_dataset`, gin scopes `train` / `eval`): VOC detection
  records of `tfcp.data.converters.voc` (boxes, classes 1..20, `image/object/difficult`).
  A thin wrapper over `tfcp.data.pipeline.build_dataset` (no Copy-Paste, no masks):
  training drops difficult objects from the targets (as the VOC baselines do) before the
  scale jitter; eval keeps every object and passes its difficult flag on.
* evaluation: `tfcp.evaluation.voc.VocDetectionEvaluator` (difficult boxes neither count
  as positives nor penalize detections): `voc_mAP50` (11-point VOC2007 AP by default),
  `voc_mAP50_07`, `voc_mAP50_10` (all-point) and `AP50/<class>`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gin
import tensorflow as tf
import tf_keras

from tfcp.data import pipeline
from tfcp.modeling import factory, losses
from tfcp.ops import scale_jitter
from tfcp.tasks import base, maskrcnn


@gin.configurable
def build_voc_detection_dataset(
    file_pattern: str | Sequence[str] = gin.REQUIRED,
    is_training: bool = True,
    global_batch_size: int = 8,
    image_size: int = 640,
    input_context: tf.distribute.InputContext | None = None,
    seed: int = 0,
    shuffle_buffer: int = 256,
    scale_range: Sequence[float] = scale_jitter.SSJ_SCALE_RANGE,
    flip_prob: float = 0.5,
    pad_value: float = scale_jitter.DEFAULT_PAD_VALUE,
    skip_difficult_during_training: bool = True,
    max_num_instances: int = 100,
    min_level: int = 2,
    max_level: int = 6,
    num_scales: int = 1,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    anchor_size: float = 8.0,
    rpn_match_threshold: float = 0.7,
    rpn_unmatched_threshold: float = 0.3,
    rpn_batch_size_per_im: int = 256,
    rpn_fg_fraction: float = 0.5,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    start_step: int = 0,
) -> tf.data.Dataset:
    """Builds the VOC Faster R-CNN training or eval dataset (a `pipeline.build_dataset` wrapper).

    No Copy-Paste and no masks. Training drops difficult objects
    (`skip_difficult_during_training`); eval keeps every object, adds
    `groundtruths['difficult']` and string source ids. Settings not listed here
    (`on_bad_record`, `num_classes`, the tf.data service) come from the gin bindings of
    `build_dataset` in the same scope; bad records are checked as for COCO.

    Args:
      file_pattern: TFRecord glob(s) (comma-separated or a list, e.g. VOC07 trainval +
        VOC12 trainval); every pattern must match a file.
      is_training: scale jitter + flip, shuffle, repeat, drop remainder; or eval
        (deterministic resize, one pass in file order, final partial batch kept).
      global_batch_size: batch over all replicas (per replica via `input_context`).
      image_size: S, the square model input size (multiple of 2**max_level).
      input_context: `tf.distribute.InputContext` for sharding and per-replica batch.
      seed: seed of shuffling and augmentation (stateless, position-derived).
      shuffle_buffer: records per shuffled window (`tfcp.data.records`).
      scale_range: random scale range of the output size (SSJ (0.8, 1.25) by default).
      flip_prob: horizontal flip probability.
      pad_value: image padding value.
      skip_difficult_during_training: drop difficult objects from the training targets.
      max_num_instances: K, objects per image in the padded labels.
      min_level, max_level, num_scales, aspect_ratios, anchor_size: anchors (must match
        the model).
      rpn_match_threshold, rpn_unmatched_threshold, rpn_batch_size_per_im,
        rpn_fg_fraction: RPN anchor labeling.
      num_parallel_calls: parallelism of the map stage.
      start_step: training: the global step the (resumable, index-keyed) stream starts at.

    Returns:
      Training `(images, labels)` as `tfcp.data.pipeline.build_dataset` without masks;
      eval `(images, labels)` with `groundtruths` {`source_id` string [B], `height`,
      `width`, `num_detections`, `boxes` [B, K, 4] original pixels, `classes` [B, K],
      `areas`, `is_crowds`, `difficult` int32 [B, K] (0 padding)}.

    Raises:
      ValueError: a pattern matches no file, or image_size is not a multiple of
        2**max_level.
      tf.errors.InvalidArgumentError: eval: an image with more than K objects (names its
        source id).
    """
    return pipeline.build_dataset(
        file_pattern,
        is_training=is_training,
        global_batch_size=global_batch_size,
        image_size=image_size,
        input_context=input_context,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
        copy_paste_prob=0.0,
        main_scale_range=scale_range,
        paste_scale_range=scale_range,
        flip_prob=flip_prob,
        pad_value=pad_value,
        skip_difficult_during_training=skip_difficult_during_training,
        include_difficult=not is_training,
        max_num_instances=max_num_instances,
        min_level=min_level,
        max_level=max_level,
        num_scales=num_scales,
        aspect_ratios=aspect_ratios,
        anchor_size=anchor_size,
        rpn_match_threshold=rpn_match_threshold,
        rpn_unmatched_threshold=rpn_unmatched_threshold,
        rpn_batch_size_per_im=rpn_batch_size_per_im,
        rpn_fg_fraction=rpn_fg_fraction,
        include_mask=False,
        numeric_source_id=False,
        num_parallel_calls=num_parallel_calls,
        start_step=start_step,
    )


@gin.configurable
class VocDetectionTask(maskrcnn.MaskRCNNTask):
    """Faster R-CNN on PASCAL VOC, evaluated with the VOC devkit's AP."""

    def __init__(
        self,
        model_builder: Callable[[], tf_keras.Model] = factory.build_maskrcnn,
        num_foreground_classes: int = 20,
        class_names: Sequence[str] | None = None,
        iou_threshold: float = 0.5,
        use_07_metric: bool = True,
        loss_config: losses.MaskRCNNLossConfig | None = None,
        init_checkpoint_modules: tuple[str, ...] = ("backbone", "decoder"),
        num_sample_images: int = 4,
    ):
        """Creates the task.

        Args:
          model_builder: zero-argument callable returning a built Faster R-CNN (default
            `build_maskrcnn` with its gin bindings; `include_mask` must be False).
          num_foreground_classes: object classes, ids 1..n (VOC: 20; the model has n + 1).
          class_names: names for `AP50/<name>` (default VOC's 20).
          iou_threshold: IoU of a true positive (0.5: mAP@0.5).
          use_07_metric: `voc_mAP50` is the 11-point VOC2007 AP (else all-point); both
            are reported as `voc_mAP50_07` / `voc_mAP50_10`.
          loss_config, init_checkpoint_modules, num_sample_images: as `MaskRCNNTask`.
        """
        super().__init__(
            model_builder=model_builder,
            annotation_file=None,  # VOC ground truth comes from the eval records
            loss_config=loss_config,
            init_checkpoint_modules=init_checkpoint_modules,
            num_sample_images=num_sample_images,
        )
        self._num_foreground = int(num_foreground_classes)
        self._class_names = class_names
        self._iou_threshold = iou_threshold
        self._use_07_metric = use_07_metric

    def build_model(self) -> tf_keras.Model:
        model = super().build_model()
        if self._include_mask:
            raise ValueError(
                "VOC detection has no instance masks: build the model without a mask head "
                "(build_maskrcnn.include_mask = False)"
            )
        heads = model.get_config()["detection_head"]
        head = heads[0] if isinstance(heads, (list, tuple)) else heads
        num_classes = head.get_config()["num_classes"]
        if num_classes != self._num_foreground + 1:
            raise ValueError(
                f"the model has {num_classes} classes, expected num_foreground_classes + 1 "
                f"= {self._num_foreground + 1} (background included)"
            )
        return model

    def build_inputs(
        self,
        is_training: bool,
        input_context: tf.distribute.InputContext | None = None,
        start_step: int = 0,
    ) -> tf.data.Dataset:
        return base.scoped_dataset(
            build_voc_detection_dataset, is_training, input_context, start_step
        )

    def validation_step(self, model: tf_keras.Model, features: Any, labels: Any) -> dict[str, Any]:
        """`MaskRCNNTask.validation_step` plus the ground truth the VOC metric needs.

        Returns:
          The detections (original-image pixels) and `gt_boxes` float32 [B, K, 4]
          (original pixels), `gt_classes` int32 [B, K], `gt_difficult` int32 [B, K],
          `gt_num` int32 [B].
        """
        outputs = super().validation_step(model, features, labels)
        groundtruths = labels["groundtruths"]
        outputs.update(
            gt_boxes=tf.cast(groundtruths["boxes"], tf.float32),
            gt_classes=tf.cast(groundtruths["classes"], tf.int32),
            gt_difficult=tf.cast(groundtruths["difficult"], tf.int32),
            gt_num=tf.cast(groundtruths["num_detections"], tf.int32),
        )
        return outputs

    def evaluator_begin(self) -> None:
        if self._evaluator is None:
            from tfcp.evaluation import voc  # noqa: PLC0415

            self._evaluator = voc.VocDetectionEvaluator(
                num_classes=self._num_foreground,
                class_names=self._class_names,
                iou_threshold=self._iou_threshold,
                use_07_metric=self._use_07_metric,
            )
        self._evaluator.reset()

    def evaluator_update(self, step_outputs: dict[str, Any]) -> None:
        if self._evaluator is None:
            raise RuntimeError("evaluator_update called before evaluator_begin")
        self._evaluator.update(
            {
                "boxes": step_outputs["gt_boxes"],
                "classes": step_outputs["gt_classes"],
                "difficult": step_outputs["gt_difficult"],
                "num_groundtruths": step_outputs["gt_num"],
            },
            {
                key: step_outputs[key]
                for key in (
                    "detection_boxes",
                    "detection_scores",
                    "detection_classes",
                    "num_detections",
                )
            },
        )

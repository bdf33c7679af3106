"""Mask R-CNN task: Mask R-CNN, Cascade Mask R-CNN and Faster R-CNN on COCO-format data.

Inputs come from `tfcp.data.pipeline.build_dataset` (gin scopes `train` / `eval`) in
Model Garden's `maskrcnn_input.Parser` structure; losses are Model Garden's
(`tfcp.modeling.losses`); evaluation is COCO box/mask AP through
`tfcp.evaluation.coco.CocoEvaluator`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gin
import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging
from official.vision.ops import preprocess_ops

from tfcp.data import targets
from tfcp.modeling import double_classifier, factory, freeze, losses, postprocess
from tfcp.modeling import init_checkpoint as init_checkpoint_lib
from tfcp.tasks import base


@gin.configurable
class MaskRCNNTask(base.Task):
    """Trains and evaluates a Model Garden `MaskRCNNModel` built by tfcp's gin builders."""

    def __init__(
        self,
        model_builder: Callable[[], tf_keras.Model] = factory.build_maskrcnn,
        annotation_file: str | None = None,
        loss_config: losses.MaskRCNNLossConfig | None = None,
        init_checkpoint_modules: tuple[str, ...] = ("backbone", "decoder"),
        num_sample_images: int = 4,
        trainable_variable_patterns: tuple[str, ...] | None = None,
        evaluator: str = "coco",
    ):
        """Creates the task.

        Args:
          model_builder: zero-argument callable returning the built model; by default
            `tfcp.modeling.factory.build_maskrcnn` with its gin bindings.
          annotation_file: COCO JSON of the evaluation split (macro EVAL_ANNOTATIONS);
            required for evaluation.
          loss_config: loss hyper-parameters (None = Model Garden defaults).
          init_checkpoint_modules: what `initialize` restores: ('backbone',),
            ('backbone', 'decoder') or ('all',): every variable, from a tfcp training
            checkpoint (LVIS stage 2).
          num_sample_images: how many images `sample_images` draws.
          trainable_variable_patterns: None trains every variable; else regexes of the
            variable names to train (`tfcp.modeling.freeze.select_variables` include; its
            `exclude` is gin-configurable). Every other layer is frozen, batch norm in
            inference mode (see `tfcp.modeling.freeze`). LVIS stage 2: the final classifier,
            (`freeze.MASKRCNN_CLASSIFIER`,) (gin_configs/lvis/stage2_common.gin); double
            classifier retraining: both heads, (`double_classifier.DOUBLE_CLASSIFIER`,).
          evaluator: 'coco' (`tfcp.evaluation.coco.CocoEvaluator`: box_AP ... box_ARl) or
            'lvis' (`tfcp.evaluation.lvis.LvisEvaluator`, federated LVIS v1 evaluation with
            at most 300 detections per image: box_AP ... box_APr, box_APc, box_APf, box_AR ...;
            `annotation_file` must then be LVIS v1 JSON). `mask_` metrics too with masks.
        """
        if evaluator not in ("coco", "lvis"):
            raise ValueError(f"MaskRCNNTask.evaluator must be 'coco' or 'lvis', got {evaluator!r}")
        unknown = set(init_checkpoint_modules) - {"backbone", "decoder"}
        if tuple(init_checkpoint_modules) != ("all",) and (
            "backbone" not in init_checkpoint_modules or unknown
        ):
            raise ValueError(
                "init_checkpoint_modules must be ('backbone',), ('backbone', 'decoder') or "
                f"('all',), got {init_checkpoint_modules!r}"
            )
        if isinstance(trainable_variable_patterns, str):
            raise TypeError("trainable_variable_patterns must be a tuple of regexes")
        self._model_builder = model_builder
        self._annotation_file = annotation_file
        self._loss_config = loss_config or losses.MaskRCNNLossConfig()
        self._init_modules = tuple(init_checkpoint_modules)
        self._num_sample_images = num_sample_images
        self._trainable_patterns = (
            None if trainable_variable_patterns is None else tuple(trainable_variable_patterns)
        )
        self._evaluator_kind = evaluator
        self._evaluator = None
        self._include_mask = True

    # ----------------------------------------------------------------- model & data
    def build_model(self) -> tf_keras.Model:
        model = self._model_builder()
        self._include_mask = bool(factory.model_properties(model)["include_mask"])
        return model

    def build_inputs(
        self,
        is_training: bool,
        input_context: tf.distribute.InputContext | None = None,
        start_step: int = 0,
    ) -> tf.data.Dataset:
        from tfcp.data import pipeline  # noqa: PLC0415 - heavy, and only needed here

        return base.scoped_dataset(pipeline.build_dataset, is_training, input_context, start_step)

    # ----------------------------------------------------------------------- losses
    def build_losses(
        self, model: tf_keras.Model, features: Any, labels: Any, training: bool
    ) -> dict[str, tf.Tensor]:
        """Training-mode forward pass + Model Garden's Mask R-CNN losses.

        Args:
          model: the model from `build_model`.
          features: uint8 [B, H, W, 3] images of the pipeline (normalized here, on the
            accelerator: `tfcp.data.targets.normalize_images`), or float normalized ones.
          labels: train labels of the parser (optional anchor_boxes, image_info,
            rpn_score_targets, rpn_box_targets, gt_boxes, gt_classes, gt_masks); a
            double-classifier model (`factory.build_maskrcnn(double_classifier=True)`) also
            needs `classifier_stream` int32 [B] (0: the image trains head a, 1: head b).
          training: must be True: the RoI sampling that produces the Fast R-CNN and
            mask targets only runs in training mode (evaluation uses `validation_step`).

        Returns:
          dict of float32 scalars, see `tfcp.modeling.losses.maskrcnn_losses`; with labels
          from `tfcp.data.targets` also `truncated_instances`: the objects of this batch cut
          beyond `max_num_instances` (logged, not part of the loss).
        """
        if not training:
            raise ValueError(
                "MaskRCNNTask.build_losses needs training=True (RoI sampling builds the "
                "targets); use validation_step for evaluation"
            )
        props = factory.model_properties(model)
        model_kwargs = {
            "image_shape": labels["image_info"][:, 1, :],
            # None (tfcp's pipeline): the model generates its own anchors.
            "anchor_boxes": labels.get("anchor_boxes"),
            "gt_boxes": labels["gt_boxes"],
            "gt_classes": labels["gt_classes"],
            "training": True,
        }
        if props["include_mask"]:
            model_kwargs["gt_masks"] = labels["gt_masks"]
        outputs = model(targets.normalize_images(features), **model_kwargs)
        outputs = tf.nest.map_structure(lambda x: tf.cast(x, tf.float32), outputs)
        result = losses.maskrcnn_losses(
            outputs,
            labels,
            num_detection_heads=props["num_detection_heads"],
            class_agnostic_bbox_pred=props["class_agnostic_bbox_pred"],
            include_mask=props["include_mask"],
            double_classifier_heads=props["double_classifier"],
            config=self._loss_config,
        )
        if "num_truncated_instances" in labels:
            result["truncated_instances"] = tf.cast(
                tf.reduce_sum(labels["num_truncated_instances"]), tf.float32
            )
        return result

    # ------------------------------------------------------------------- evaluation
    def validation_step(self, model: tf_keras.Model, features: Any, labels: Any) -> dict[str, Any]:
        """Inference forward pass (uint8 images are normalized first, as in `build_losses`).

        Returns:
          dict with `source_id` [B], `image_info` float32 [B, 4, 2], `detection_boxes`
          float32 [B, K, 4] (ymin, xmin, ymax, xmax) in ORIGINAL-image pixels,
          `detection_scores` float32 [B, K], `detection_classes` int32 [B, K],
          `num_detections` int32 [B] and, with masks, `detection_masks_relative`
          float32 [B, K, m, m] mask probabilities inside each box.
        """
        image_info = labels["image_info"]
        outputs = model(
            targets.normalize_images(features),
            anchor_boxes=labels.get("anchor_boxes"),
            image_shape=image_info[:, 1, :],
            training=False,
        )
        step_outputs = {
            "source_id": labels["groundtruths"]["source_id"],
            "image_info": tf.cast(image_info, tf.float32),
            "detection_boxes": postprocess.boxes_to_original_pixels(
                outputs["detection_boxes"], image_info
            ),
            "detection_scores": tf.cast(outputs["detection_scores"], tf.float32),
            "detection_classes": tf.cast(outputs["detection_classes"], tf.int32),
            "num_detections": tf.cast(outputs["num_detections"], tf.int32),
        }
        if "detection_masks" in outputs:
            step_outputs["detection_masks_relative"] = tf.cast(
                outputs["detection_masks"], tf.float32
            )
        return step_outputs

    def evaluator_begin(self) -> None:
        if not self._annotation_file:
            raise ValueError(
                "MaskRCNNTask.annotation_file (macro EVAL_ANNOTATIONS) is required for evaluation"
            )
        if self._evaluator is None:
            # pycocotools only for eval
            from tfcp.evaluation import coco, lvis  # noqa: PLC0415

            evaluator_class = {"coco": coco.CocoEvaluator, "lvis": lvis.LvisEvaluator}[
                self._evaluator_kind
            ]
            self._evaluator = evaluator_class(
                self._annotation_file, include_mask=self._include_mask
            )
        self._evaluator.reset()

    def evaluator_update(self, step_outputs: dict[str, Any]) -> None:
        if self._evaluator is None:
            raise RuntimeError("evaluator_update called before evaluator_begin")
        predictions = {k: v for k, v in step_outputs.items() if k != "image_info"}
        self._evaluator.update(predictions)

    def evaluator_result(self) -> dict[str, float]:
        if self._evaluator is None:
            raise RuntimeError("evaluator_result called before evaluator_begin")
        return {k: float(v) for k, v in self._evaluator.result().items()}

    # -------------------------------------------------------------- initialization
    def initialize(self, model: tf_keras.Model, init_checkpoint: str | None) -> None:
        """Restores backbone (+ decoder) or all weights; see `tfcp.modeling.init_checkpoint`.

        A double-classifier model restores ('all',) from a double-classifier checkpoint, or
        from a single-classifier one of the same architecture (e.g. the stage-1 run): head b
        then starts as a copy of the restored classifier (`double_classifier.restore_model`).

        Raises:
          ValueError: also when `init_checkpoint_modules=('all',)` (fine-tuning a whole
            trained model, e.g. LVIS stage 2) gets no checkpoint.
        """
        if not init_checkpoint:
            if self._init_modules == ("all",):
                raise ValueError(
                    "MaskRCNNTask.init_checkpoint_modules=('all',) fine-tunes a trained model: "
                    "set INIT_CHECKPOINT (tfcp.Trainer.init_checkpoint) to its checkpoint"
                )
            return
        if self._init_modules == ("all",):
            if double_classifier.is_double(model):
                kind = double_classifier.restore_model(init_checkpoint, model)
                logging.info(
                    "Initialized the whole double-classifier model from %s (%s-classifier "
                    "checkpoint)",
                    init_checkpoint,
                    kind,
                )
            else:
                init_checkpoint_lib.restore_model(init_checkpoint, model)
                logging.info("Initialized the whole model from %s", init_checkpoint)
            return
        decoder = model.decoder if "decoder" in self._init_modules else None
        restored = init_checkpoint_lib.restore_backbone_and_decoder(
            init_checkpoint, model.backbone, decoder
        )
        logging.info("Initialized %s from %s", " + ".join(restored), init_checkpoint)

    def trainable_variables(self, model: tf_keras.Model) -> list[tf.Variable]:
        """All trainable variables, or those of `trainable_variable_patterns` (others frozen)."""
        if self._trainable_patterns is None:
            return super().trainable_variables(model)
        variables = freeze.select_variables(model, include=self._trainable_patterns)
        freeze.freeze_unselected_layers(model, variables)
        return variables

    # ---------------------------------------------------------------- summaries
    def sample_images(
        self, features: Any, labels: Any, outputs: dict[str, Any] | None = None
    ) -> np.ndarray | None:
        """Un-normalized input images with boxes drawn, uint8 [N, H, W, 3].

        Draws the ground-truth boxes of training labels, or the detections of
        `validation_step` outputs (score >= 0.3) when `outputs` is given.
        """
        n = self._num_sample_images
        images = tf.cast(features[:n], tf.float32)
        if features.dtype != tf.uint8:  # normalized float images
            images = images * tf.constant(preprocess_ops.STDDEV_RGB) + tf.constant(
                preprocess_ops.MEAN_RGB
            )
        height = tf.cast(tf.shape(images)[1], tf.float32)
        width = tf.cast(tf.shape(images)[2], tf.float32)
        if outputs is not None and "detection_boxes" in outputs:
            boxes = postprocess.boxes_to_input_pixels(
                outputs["detection_boxes"][:n], labels["image_info"][:n]
            )
            keep = tf.cast(outputs["detection_scores"][:n] >= 0.3, tf.float32)[..., None]
            boxes = boxes * keep
        elif "gt_boxes" in labels:
            boxes = tf.cast(labels["gt_boxes"][:n], tf.float32)
            boxes = tf.where(boxes < 0, tf.zeros_like(boxes), boxes)  # -1 padding
        else:
            boxes = tf.zeros([tf.shape(images)[0], 0, 4])
        boxes = boxes / tf.stack([height, width, height, width])
        colors = tf.constant([[0.0, 255.0, 0.0, 255.0]])
        drawn = tf.image.draw_bounding_boxes(images, boxes, colors)
        return tf.cast(tf.clip_by_value(tf.round(drawn), 0, 255), tf.uint8).numpy()

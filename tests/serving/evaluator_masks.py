"""Test helper: the full-image masks COCO evaluation builds, to compare serving against."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfcp.evaluation import coco
from tfcp.serving import export_lib
from tfcp.tasks import maskrcnn


def evaluator_masks(model, image: np.ndarray, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """What COCO evaluation pastes for `image`: task eval step -> CocoEvaluator masks.

    Args:
      model: a Mask R-CNN model (or a stub with its `call` outputs), input size image_size.
      image: uint8 [h, w, 3].
      image_size: the square model input size S (eval preprocessing pads with 128).

    Returns:
      (uint8 [n, h, w] full-image 0/1 masks, float32 [n, 4] unclipped original-pixel boxes
      (ymin, xmin, ymax, xmax)), n = the model's `num_detections`.
    """
    features, image_info = export_lib.eval_preprocess(
        tf.constant(image), image_size=(image_size, image_size), pad_value=128
    )
    labels = {
        "image_info": image_info[tf.newaxis],
        "anchor_boxes": None,
        "groundtruths": {"source_id": tf.constant([1])},
    }
    outputs = maskrcnn.MaskRCNNTask(lambda: model).validation_step(
        model, features[tf.newaxis], labels
    )
    height, width = image.shape[:2]
    groundtruth = {  # one placeholder object: only the evaluator's mask pasting is used
        "images": [{"id": 1, "height": height, "width": width}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 4, 4],
                "area": 16,
                "iscrowd": 0,
                "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]],
            }
        ],
        "categories": [{"id": c} for c in range(1, 10)],
    }
    evaluator = coco.CocoEvaluator(groundtruth=groundtruth, include_mask=True)
    predictions = {key: np.asarray(value) for key, value in outputs.items()}
    num = int(predictions["num_detections"][0])
    masks = evaluator._image_masks(predictions, 0, num, groundtruth["images"][0])
    return masks, predictions["detection_boxes"][0, :num]

"""Mask R-CNN training and eval targets, in the structure of Model Garden's parser.

`maskrcnn_train_targets` produces exactly what `official.vision.dataloaders.maskrcnn_input.
Parser._parse_train_data` returns (and what Model Garden's Mask R-CNN model and losses take),
from an example already jittered to its output size. Anchors, anchor matching and box
encoding follow Model Garden's rule (`tfcp.data.anchor_labeling`, computed in a cheaper layout);
only the RPN positive/negative subsampling is replaced by a stateless equivalent so that the
same seed gives the same targets under any tf.data parallelism.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
from official.vision.dataloaders import utils as dataloader_utils
from official.vision.ops import anchor, preprocess_ops

from tfcp.data import anchor_labeling


def normalize_images(images: tf.Tensor) -> tf.Tensor:
    """The model's input from the pipeline's images: uint8 -> normalized float32.

    The pipeline hands images over as uint8 (a quarter of the bytes of float32 through
    batching, prefetch, the tf.data service and the host-to-device copy); the task normalizes
    them inside its step, on the accelerator, with exactly Model Garden's
    `preprocess_ops.normalize_image` (ImageNet MEAN_NORM / STDDEV_NORM).

    Args:
      images: uint8 [..., H, W, 3], or float [..., H, W, 3] already normalized (returned
        unchanged).

    Returns:
      float32 [..., H, W, 3] normalized images (float input keeps its dtype).
    """
    if images.dtype != tf.uint8:
        return images
    return preprocess_ops.normalize_image(images)


def anchor_boxes(
    image_size: int,
    *,
    min_level: int,
    max_level: int,
    num_scales: int,
    aspect_ratios: Sequence[float],
    anchor_size: float,
) -> dict[str, tf.Tensor]:
    """Model Garden multilevel anchors {str(level): float32 [S/2^l, S/2^l, A*4]}."""
    generator = anchor.build_anchor_generator(
        min_level=min_level,
        max_level=max_level,
        num_scales=num_scales,
        aspect_ratios=list(aspect_ratios),
        anchor_size=anchor_size,
    )
    return generator(image_size=(image_size, image_size))


def maskrcnn_train_targets(
    example: dict[str, tf.Tensor],
    seed: tf.Tensor,
    *,
    image_size: int,
    anchor_config: dict,
    rpn_match_threshold: float = 0.7,
    rpn_unmatched_threshold: float = 0.3,
    rpn_batch_size_per_im: int = 256,
    rpn_fg_fraction: float = 0.5,
    max_num_instances: int = 100,
    mask_crop_size: int = 112,
    include_mask: bool = True,
    skip_crowd: bool = True,
    keep_is_pasted: bool = False,
    include_anchor_boxes: bool = False,
) -> tuple[tf.Tensor, dict]:
    """Builds `(image, labels)` like `maskrcnn_input.Parser._parse_train_data`.

    Args:
      example: a jittered (and possibly copy-pasted) example at [S, S]: `image` uint8
        [S, S, 3], `groundtruth_boxes` float32 [N, 4] normalized, `groundtruth_classes` int
        [N], `groundtruth_is_crowd` bool [N], `groundtruth_instance_masks` uint8 [N, S, S],
        `image_info` float32 [4, 2]; optional `groundtruth_is_pasted` bool [N], and with
        two training sources `groundtruth_from_pseudo` bool [N] and `is_pseudo` bool [].
      seed: int [2], the seed of the RPN anchor subsampling.
      image_size: S (a multiple of 2**max_level).
      anchor_config: kwargs of `anchor_boxes` (min_level, max_level, num_scales,
        aspect_ratios, anchor_size).
      rpn_match_threshold, rpn_unmatched_threshold, rpn_batch_size_per_im,
        rpn_fg_fraction: RPN anchor labeling, as Model Garden's.
      max_num_instances: K, the padded number of objects. Objects beyond the first K (after
        skipping crowds) are cut BEFORE anchor labeling, so the RPN and the box/mask heads
        see the same objects, and counted in `num_truncated_instances` (the pipeline's
        Copy-Paste pastes at most the room left below K, so only a record that alone has
        more than K objects is cut).
      mask_crop_size: M, the size of the mask targets.
      include_mask: produce `gt_masks` and `gt_outer_boxes`.
      skip_crowd: drop crowd objects from the targets (Model Garden's default).
      keep_is_pasted: also output `gt_is_pasted` bool [K] (for visualization). An example
        with the source flags of two training sources always gets `gt_from_pseudo` bool
        [K] and `is_pseudo` bool [] in its labels.
      include_anchor_boxes: also output `anchor_boxes` (Model Garden's parser does). They
        are the same for every image, 4 MB per 1024 px example to batch and hold in
        buffers; without them the model generates its anchors from its own config
        (`MaskRCNNModel` with `anchor_boxes=None`, as the task calls it).

    Returns:
      `image` uint8 [S, S, 3] (the model normalizes it: `normalize_images`), and labels:
      `image_info` [4, 2], `rpn_score_targets`
      {level: [h, w, A]} int32, `rpn_box_targets` {level: [h, w, A*4]}, `gt_boxes` float32
      [K, 4] in output pixels padded with -1, `gt_classes` [K] padded with -1,
      `num_truncated_instances` int32 [] (objects cut beyond K), and with masks
      `gt_outer_boxes` [K, 4] and `gt_masks` float32 [K, M, M] padded with -1; with
      `include_anchor_boxes` also `anchor_boxes` {level: [h, w, A*4]}.
    """
    boxes = example["groundtruth_boxes"] * float(image_size)
    classes = example["groundtruth_classes"]
    if skip_crowd:
        keep = tf.where(tf.logical_not(example["groundtruth_is_crowd"]))[:, 0]
    else:
        keep = tf.range(tf.shape(classes, out_type=tf.int64)[0])
    num_truncated = tf.maximum(tf.size(keep, out_type=tf.int32) - max_num_instances, 0)
    keep = keep[:max_num_instances]
    boxes = tf.gather(boxes, keep)
    classes = tf.gather(classes, keep)

    image = example["image"]
    anchors = anchor_boxes(image_size, **anchor_config)
    labeler = anchor_labeling.StatelessRpnAnchorLabeler(
        seed,
        match_threshold=rpn_match_threshold,
        unmatched_threshold=rpn_unmatched_threshold,
        rpn_batch_size_per_im=rpn_batch_size_per_im,
        rpn_fg_fraction=rpn_fg_fraction,
    )
    score_targets, box_targets = labeler.label_anchors(
        anchors, boxes, tf.cast(classes[:, None], tf.float32)
    )
    labels = {
        "image_info": example["image_info"],
        "rpn_score_targets": score_targets,
        "rpn_box_targets": box_targets,
        "gt_boxes": preprocess_ops.clip_or_pad_to_fixed_size(boxes, max_num_instances, -1),
        "gt_classes": preprocess_ops.clip_or_pad_to_fixed_size(classes, max_num_instances, -1),
        "num_truncated_instances": num_truncated,
    }
    if include_mask:
        # Same box convention as Model Garden's parser (boxes normalized by the image size,
        # read by crop_and_resize as y * (S - 1)); only the box regions of the kept objects
        # are sampled (no gathered copy of their full-size masks).
        masks = tf.image.crop_and_resize(
            example["groundtruth_instance_masks"][..., None],
            boxes / float(image_size),
            box_indices=tf.cast(keep, tf.int32),
            crop_size=[mask_crop_size, mask_crop_size],
            method="bilinear",
        )[..., 0]
        labels["gt_outer_boxes"] = labels["gt_boxes"]
        labels["gt_masks"] = preprocess_ops.clip_or_pad_to_fixed_size(masks, max_num_instances, -1)
    if include_anchor_boxes:
        labels["anchor_boxes"] = anchors
    if keep_is_pasted:
        is_pasted = tf.gather(example["groundtruth_is_pasted"], keep)
        labels["gt_is_pasted"] = preprocess_ops.clip_or_pad_to_fixed_size(
            is_pasted, max_num_instances, False
        )
    if "groundtruth_from_pseudo" in example:
        from_pseudo = tf.gather(example["groundtruth_from_pseudo"], keep)
        labels["gt_from_pseudo"] = preprocess_ops.clip_or_pad_to_fixed_size(
            from_pseudo, max_num_instances, False
        )
    if "is_pseudo" in example:
        labels["is_pseudo"] = example["is_pseudo"]
    return image, labels


def maskrcnn_eval_targets(
    decoded: dict[str, tf.Tensor],
    image: tf.Tensor,
    image_info: tf.Tensor,
    *,
    image_size: int,
    anchor_config: dict,
    max_num_instances: int = 100,
    numeric_source_id: bool = True,
    include_anchor_boxes: bool = False,
) -> tuple[tf.Tensor, dict]:
    """Builds `(image, labels)` like `maskrcnn_input.Parser._parse_eval_data`.

    Args:
      decoded: the decoded example (`tfcp.data.decoder.decode`), original annotations.
      image: uint8 [S, S, 3], the image after `scale_jitter.resize_for_eval`.
      image_info: float32 [4, 2] from `resize_for_eval`.
      image_size: S.
      anchor_config: kwargs of `anchor_boxes`.
      max_num_instances: K, the padded number of ground-truth objects.
      numeric_source_id: convert `source_id` to int64 as Model Garden's COCO evaluator
        expects (COCO image ids); False keeps the string (e.g. VOC file stems).
      include_anchor_boxes: also output `anchor_boxes` (see `maskrcnn_train_targets`).

    Returns:
      `image` uint8 [S, S, 3] (the model normalizes it: `normalize_images`), and labels
      {`image_info` [4, 2], `groundtruths`: {`source_id`, `height`, `width`, `num_detections`,
      `boxes` [K, 4] original-image pixels (padded -1), `classes` [K] (-1), `areas` [K]
      (-1), `is_crowds` int32 [K] (0)}}.
    """
    height = tf.cast(decoded["height"], tf.float32)
    width = tf.cast(decoded["width"], tf.float32)
    boxes = decoded["groundtruth_boxes"] * tf.stack([height, width, height, width])
    source_id = decoded["source_id"]
    if numeric_source_id:
        source_id = dataloader_utils.process_source_id(source_id)
    groundtruths = {
        "source_id": source_id,
        "height": decoded["height"],
        "width": decoded["width"],
        "num_detections": tf.shape(decoded["groundtruth_classes"])[0],
        "boxes": boxes,
        "classes": decoded["groundtruth_classes"],
        "areas": decoded["groundtruth_area"],
        "is_crowds": tf.cast(decoded["groundtruth_is_crowd"], tf.int32),
    }
    groundtruths = dataloader_utils.pad_groundtruths_to_fixed_size(groundtruths, max_num_instances)
    labels = {"image_info": image_info, "groundtruths": groundtruths}
    if include_anchor_boxes:
        labels["anchor_boxes"] = anchor_boxes(image_size, **anchor_config)
    return image, labels

"""The training and eval input pipeline: TFRecords -> jitter -> Copy-Paste -> Mask R-CNN targets.

Training (`is_training=True`): each record is decoded once (one JPEG decode) and scale
jittered once; consecutive examples are paired (as records, before decoding:
`tfcp.data.pair_stage`) and crossed:
`copy_paste(v0, v1)`, `copy_paste(v1, v0)`, each with probability `copy_paste_prob`. This is
the paper's recipe (Sec. 3.1: jitter each of two images, paste a subset of one onto the
other), and every image serves once as a target and once as a source. When the pasted
images get their own jitter range (`paste_scale_range != main_scale_range`, paper Table 11),
each record gets a second, independently jittered source view: `copy_paste(t0, s1)`,
`copy_paste(t1, s0)`. Crowd objects are removed from the targets only after pasting, so they
still occlude and get occluded. Every random choice derives from `seed` and the example's
position in the (seeded) shuffled stream, so batches are identical for any
`num_parallel_calls`.

Output structures are those of Model Garden's `maskrcnn_input.Parser`: training
`(images, labels)` with `image_info`, `rpn_score_targets`, `rpn_box_targets`, `gt_boxes`,
`gt_classes`, `gt_outer_boxes`, `gt_masks`; eval `(images, labels)` with `image_info`,
`groundtruths`. Two differences, both to save host time and memory: the images are uint8,
not normalized float32 (the task normalizes them in its step with Model Garden's
`normalize_image`: `targets.normalize_images`), a quarter of the bytes through batching,
prefetch, the tf.data service and the host-to-device copy; and `anchor_boxes` (the same for
every image) are left out unless `include_anchor_boxes` (the model generates them).
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import tensorflow as tf
from absl import logging

from tfcp.data import classifier_streams as classifier_streams_lib
from tfcp.data import (
    decoder,
    eval_pipeline,
    mixed_sources,
    mosaic_stage,
    pair_stage,
    paste_stage,
    record_policy,
    records,
    service,
)
from tfcp.ops import scale_jitter


@gin.configurable
def build_dataset(
    file_pattern: str | Sequence[str] = gin.REQUIRED,
    is_training: bool = True,
    global_batch_size: int = 8,
    image_size: int = 1024,
    input_context: tf.distribute.InputContext | None = None,
    seed: int = 0,
    shuffle_buffer: int = 256,
    copy_paste_prob: float = 1.0,
    main_scale_range: Sequence[float] = scale_jitter.LSJ_SCALE_RANGE,
    paste_scale_range: Sequence[float] = scale_jitter.LSJ_SCALE_RANGE,
    flip_prob: float = 0.5,
    pad_value: float = scale_jitter.DEFAULT_PAD_VALUE,
    selection: str = "random_subset",
    max_num_pasted: int = 100,
    blend_sigma: float = 0.0,
    occluded_area_threshold: float = 300.0,
    occluded_box_threshold: float | None = None,
    occlusion_reference_size: int | None = None,
    paste_crowd: bool = False,
    skip_crowd_during_training: bool = True,
    max_num_instances: int = 100,
    mask_crop_size: int = 112,
    min_level: int = 2,
    max_level: int = 6,
    num_scales: int = 1,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    anchor_size: float = 8.0,
    rpn_match_threshold: float = 0.7,
    rpn_unmatched_threshold: float = 0.3,
    rpn_batch_size_per_im: int = 256,
    rpn_fg_fraction: float = 0.5,
    include_mask: bool = True,
    include_anchor_boxes: bool = False,
    numeric_source_id: bool = True,
    skip_difficult_during_training: bool = False,
    include_difficult: bool = False,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    keep_is_pasted: bool = False,
    start_step: int = 0,
    repeat_factor_threshold: float | None = None,
    on_bad_record: str = "raise",
    num_classes: int | None = None,
    data_service_address: str | None = None,
    data_service_processing_mode: str = "distributed_epoch",
    data_service_job_name: str | None = None,
    pseudo_file_pattern: str | Sequence[str] | None = None,
    pseudo_fraction: float = 0.5,
    paste_into: str = "both",
    paste_from: str = "labeled",
    mosaic_prob: float = 0.0,
    mosaic_center_range: Sequence[float] = (0.5, 1.5),
    mosaic_color_jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.1),
    mosaic_min_visible_area: float | None = None,
    mosaic_order: str = "mosaic_jitter_paste",
    images_per_category: int | None = None,
    classifier_streams: bool = False,
) -> tf.data.Dataset:
    """Builds the Mask R-CNN training or eval dataset.

    Args:
      file_pattern: TFRecord glob(s) of Model Garden TF Examples (comma-separated or list).
      is_training: training (jitter, Copy-Paste, shuffle, repeat, drop remainder) or eval
        (deterministic resize, one pass in file order, final partial batch kept).
      global_batch_size: batch size over all replicas; the per-replica size comes from
        `input_context.get_per_replica_batch_size` when `input_context` is given.
      image_size: S, the square output size (a multiple of 2**max_level).
      input_context: `tf.distribute.InputContext`; files (or records, if there are fewer
        files than input pipelines) are sharded by input pipeline.
      seed: the global seed of shuffling and of every augmentation.
      shuffle_buffer: records per shuffled window (training; `tfcp.data.records`).
      copy_paste_prob: probability of applying Copy-Paste to an example (0 disables it and
        skips the source views).
      main_scale_range: scale jitter range of the target views (LSJ (0.1, 2.0), SSJ
        (0.8, 1.25)).
      paste_scale_range: scale jitter range of the source (pasted) views.
      flip_prob: horizontal flip probability of each view.
      pad_value: uint8 gray value of the padding.
      selection, max_num_pasted, blend_sigma, occluded_area_threshold,
        occluded_box_threshold, paste_crowd: the arguments of
        `tfcp.ops.copy_paste.copy_paste`. The op also gets `max_num_instances`, so it never
        pastes more objects than the labels have room for.
      occlusion_reference_size: None: the occlusion thresholds are pixels of the output
        image. R: they are pixels of an R x R image and are scaled to the output size S
        (area x (S/R)^2, box x S/R), e.g. R = 1024 keeps the paper's 300 px (0.03 % of a
        1024 x 1024 image) the same share of a 128 px image (4.7 px) instead of 1.8 % of it.
      skip_crowd_during_training: drop crowd objects from the training targets (after
        Copy-Paste).
      max_num_instances: K, objects per image in the padded labels.
      mask_crop_size: M, the size of the `gt_masks` crops.
      min_level, max_level, num_scales, aspect_ratios, anchor_size: the anchors (must
        match the model).
      rpn_match_threshold, rpn_unmatched_threshold, rpn_batch_size_per_im,
        rpn_fg_fraction: RPN anchor labeling.
      include_mask: produce mask targets (training).
      include_anchor_boxes: also put `anchor_boxes` in the labels, as Model Garden's parser
        does. Off by default: they are the same for every image (4 MB per 1024 px
        example through batching and buffers) and the task's model generates them from
        its own config (`anchor_boxes=None`).
      numeric_source_id: eval `groundtruths.source_id` as int64 (COCO image ids, what Model
        Garden's COCO evaluator takes); False keeps the string.
      skip_difficult_during_training: training: drop difficult objects (VOC's
        `image/object/difficult`) right after decoding (`decoder.drop_difficult`).
      include_difficult: eval: add `groundtruths['difficult']` int32 [B, K] (0 padding)
        for the VOC metric, and fail on an image with more than K objects (naming its
        source id) instead of truncating its ground truth.
      num_parallel_calls: parallelism of the map stages (Copy-Paste pairs: half of it,
        `pair_stage.pair_parallelism`).
      keep_is_pasted: debug/visualization: add `labels['gt_is_pasted']` bool [B, K]; with
        `pseudo_file_pattern` also `labels['gt_from_pseudo']` bool [B, K] (the object's
        label comes from a pseudo-labeled image) and `labels['is_pseudo']` bool [B].
      start_step: training: the global step the stream starts at (a resumed run's
        checkpoint step): the batches are exactly those an uninterrupted run gets from
        that step on, and starting costs the same at any step.
      on_bad_record: training: 'raise' stops at the first bad record naming it (file,
        index, source_id, what is wrong); 'skip' drops and counts bad records, each named
        in a warning (`tfcp.data.record_policy`).
      num_classes: training: class ids must be in [1, num_classes) (bound to NUM_CLASSES by
        the model configs); None checks ids >= 1 only.
      repeat_factor_threshold: training: t of repeat factor sampling (LVIS: 0.001), None
        = off. Per-record factors come from the records' categories
        (`tfcp.data.sampling`); targets and pasted sources both come from the resampled
        stream.
      data_service_address: training: the tf.data service dispatcher ('host:port', gin
        macro DATA_SERVICE_ADDRESS) whose workers run this pipeline up to its batches
        (decode, jitter, Copy-Paste, targets); None reads locally. The batch order then
        depends on the workers' timing: no per-seed determinism, no exact resume (see
        `tfcp.data.service`).
      data_service_processing_mode: 'distributed_epoch' (workers share the stream, each
        record once per epoch) or 'parallel_epochs' (every worker runs the whole stream:
        use one worker only).
      data_service_job_name: None: each iterator owns an anonymous job; a name: the job
        '<name>-p<input pipeline>-s<start_step>', shared by iterators of that pipeline.
      pseudo_file_pattern: training: TFRecord glob(s) of pseudo-labeled images (gin macro
        PSEUDO_FILES; `python -m tfcp.pseudo_label` then `create_coco_tfrecord`); None
        trains on `file_pattern` alone. With it, `file_pattern` is the labeled data and
        every per-replica batch holds both (`tfcp.data.mixed_sources`); repeat factor
        sampling, if on, applies to the labeled data only.
      pseudo_fraction: the share of pseudo-labeled images in every batch (paper: 0.5);
        pseudo_fraction x per-replica batch must be a whole number.
      paste_into: which images get Copy-Paste: 'labeled', 'pseudo' or 'both' (paper
        Table 3; default both).
      paste_from: where pasted objects come from: 'labeled' (ground truth, the paper's
        choice) or 'pseudo'.
      mosaic_prob: training: probability of Balanced Mosaic per example (LVIS 2020
        challenge report; `tfcp.data.mosaic_stage`), 0 = off. Partners are drawn with p_i
        proportional to the repeat factors when `repeat_factor_threshold` is set,
        uniformly otherwise.
      mosaic_order: 'mosaic_jitter_paste' (default: mosaic of the decoded images, scale
        jitter of the mosaic, Copy-Paste onto it), 'jitter_mosaic_paste' (each image
        jittered, then the mosaic, then Copy-Paste) or 'jitter_paste_mosaic' (each image
        jittered and pasted onto, then the mosaic); see `tfcp.data.mosaic_stage`.
      mosaic_center_range: the mosaic centre's range, in units of `image_size`.
      mosaic_color_jitter: (brightness, contrast, saturation, hue) of the mosaic's
        post-transform (`tfcp.ops.mosaic`); zeros = off.
      mosaic_min_visible_area: objects cut by the mosaic crop below this visible area
        (pixels of the image_size mosaic) are dropped and counted; None: the (scaled)
        `occluded_area_threshold`, the same rule as Copy-Paste's occlusion.
      images_per_category: training: class-aware sampling (report Sec. 3): every epoch
        draws this many images of each category (`tfcp.data.class_aware`); the main
        stream then ignores repeat factors (mosaic partners still use them).
      classifier_streams: training: half of every batch from repeat factor sampling, half
        from class-aware sampling, tagged in `labels['classifier_stream']` for the double
        classifier (`tfcp.data.classifier_streams`); needs `repeat_factor_threshold` and
        `images_per_category`.

    Returns:
      A `tf.data.Dataset` of `(images uint8 [B, S, S, 3], labels)`, see the module doc (the
      task normalizes the images: `targets.normalize_images`).

    Raises:
      ValueError: on a pattern matching no file or inconsistent settings.
    """
    if classifier_streams:
        return classifier_streams_lib.two_streams(build_dataset, dict(locals()))
    if data_service_address and not is_training:
        raise ValueError(
            "evaluation reads its records locally: data_service_address is for training"
        )
    if image_size % 2**max_level:
        raise ValueError(f"image_size {image_size} must be a multiple of 2**max_level")
    if not 0.0 <= copy_paste_prob <= 1.0:
        raise ValueError(f"copy_paste_prob must be in [0, 1], got {copy_paste_prob}")
    anchor_config = dict(
        min_level=min_level,
        max_level=max_level,
        num_scales=num_scales,
        aspect_ratios=tuple(aspect_ratios),
        anchor_size=anchor_size,
    )
    paste = copy_paste_prob > 0.0
    mixed = pseudo_file_pattern is not None
    if is_training and paste and occlusion_reference_size:
        occluded_area_threshold, occluded_box_threshold = paste_stage.scale_occlusion(
            occluded_area_threshold, occluded_box_threshold, image_size, occlusion_reference_size
        )
    if mixed and not is_training:
        raise ValueError("pseudo_file_pattern is for training; evaluate on labeled data")
    _, _, batch_size = records.pipeline_layout(input_context, global_batch_size)
    num_labeled, num_pseudo = batch_size, 0
    if mixed:
        num_labeled, num_pseudo = mixed_sources.split_batch(batch_size, pseudo_fraction)
        if paste:
            mixed_sources.check_paste(paste_into, paste_from, num_labeled, num_pseudo)
        logging.info(
            "two training sources: %d labeled + %d pseudo-labeled images per replica batch; "
            "Copy-Paste %s",
            num_labeled,
            num_pseudo,
            f"from {paste_from} into {paste_into}" if paste else "off",
        )
    replicas = global_batch_size // batch_size
    open_args = dict(
        is_training=is_training,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
        input_context=input_context,
        start_step=start_step,
    )
    # Copy-Paste pairs consecutive examples: a resumed stream starts at a pair boundary and
    # drops the first example of the pair when the step's position is odd. (Two sources
    # pair inside each batch: no pairs span batches.)
    mosaic = is_training and mosaic_prob > 0.0
    dataset, drop, pipeline_id, _ = records.open_records(
        file_pattern,
        global_batch_size=num_labeled * replicas,
        position_multiple=2 if paste and not mixed else 1,
        # With class-aware sampling and mosaic, the repeat factors are the partners' only.
        repeat_factor_threshold=(
            None if images_per_category and mosaic else repeat_factor_threshold
        ),
        images_per_category=images_per_category if is_training else None,
        mosaic_partners=mosaic_stage.NUM_PARTNERS if mosaic else 0,
        partner_repeat_factor_threshold=repeat_factor_threshold,
        **open_args,
    )
    if not is_training:
        return eval_pipeline.eval_dataset(
            dataset,
            image_size=image_size,
            batch_size=batch_size,
            pad_value=pad_value,
            anchor_config=anchor_config,
            max_num_instances=max_num_instances,
            numeric_source_id=numeric_source_id,
            include_difficult=include_difficult,
            include_anchor_boxes=include_anchor_boxes,
            num_parallel_calls=num_parallel_calls,
        )

    base_seed = tf.constant([seed, pipeline_id], tf.int64)
    keep_source_flags = keep_is_pasted and mixed
    options = paste_stage.ExampleOptions(
        image_size=image_size,
        main_scale_range=main_scale_range,
        paste_scale_range=paste_scale_range,
        flip_prob=flip_prob,
        pad_value=pad_value,
        copy_paste_prob=copy_paste_prob,
        selection=selection,
        max_num_pasted=max_num_pasted,
        blend_sigma=blend_sigma,
        occluded_area_threshold=occluded_area_threshold,
        occluded_box_threshold=occluded_box_threshold,
        paste_crowd=paste_crowd,
        keep_is_pasted=keep_is_pasted and paste,
        mosaic_order=mosaic_order,
        anchor_config=anchor_config,
        rpn_match_threshold=rpn_match_threshold,
        rpn_unmatched_threshold=rpn_unmatched_threshold,
        rpn_batch_size_per_im=rpn_batch_size_per_im,
        rpn_fg_fraction=rpn_fg_fraction,
        max_num_instances=max_num_instances,
        mask_crop_size=mask_crop_size,
        include_mask=include_mask,
        skip_crowd=skip_crowd_during_training,
        include_anchor_boxes=include_anchor_boxes,
    )

    def views(records_dataset, stream_seed=base_seed, with_mosaic=False):
        decoded = record_policy.decode_stage(
            records_dataset,
            on_bad_record=on_bad_record,
            include_mask=include_mask or paste or with_mosaic,
            num_classes=num_classes,
            num_parallel_calls=num_parallel_calls,
        )
        if skip_difficult_during_training:
            decoded = decoded.map(
                lambda index, example, *partners: (
                    index,
                    decoder.drop_difficult(example),
                    *partners,
                ),
                num_parallel_calls=num_parallel_calls,
                deterministic=True,
            )
        if with_mosaic:
            decoded = mosaic_stage.mosaic_stage(
                decoded,
                base_seed=stream_seed,
                prob=mosaic_prob,
                options=options,
                on_bad_record=on_bad_record,
                num_classes=num_classes,
                order=mosaic_order,
                center_range=mosaic_center_range,
                color_jitter=mosaic_color_jitter,
                min_visible_area=(
                    occluded_area_threshold
                    if mosaic_min_visible_area is None
                    else mosaic_min_visible_area
                ),
                num_parallel_calls=num_parallel_calls,
            )
        elif mosaic and mosaic_order != mosaic_stage.ORDERS[0]:
            decoded = decoded.map(mosaic_stage.without_mosaic)  # the pseudo stream's structure
        return paste_stage.views_stage(decoded, stream_seed, options, num_parallel_calls)

    # One source with Copy-Paste: pair the records, then decode and paste them in one map.
    paired_records = paste and not mixed and not mosaic
    if mixed:
        pseudo, _, _, _ = records.open_records(
            pseudo_file_pattern, global_batch_size=num_pseudo * replicas, **open_args
        )
        streams = []
        for is_pseudo, stream, stream_seed in (
            (False, dataset, base_seed),
            (True, pseudo, tf.random.experimental.stateless_fold_in(base_seed, 1)),
        ):
            streams.append(
                views(stream, stream_seed, mosaic and not is_pseudo).map(
                    lambda *v, p=is_pseudo: mixed_sources.tag_views(v, p, keep_source_flags),
                    num_parallel_calls=num_parallel_calls,
                )
            )
        dataset = mixed_sources.mix(
            *streams,
            num_labeled=num_labeled,
            num_pseudo=num_pseudo,
            paste=paste,
            paste_into=paste_into,
            paste_from=paste_from,
            source_keys=paste_stage.SOURCE_KEYS,
            num_parallel_calls=num_parallel_calls,
        )
    elif not paired_records:
        dataset = views(dataset, with_mosaic=mosaic)
    if not paired_records:
        dataset = paste_stage.examples_stage(
            dataset, options, mixed=mixed, drop=drop, num_parallel_calls=num_parallel_calls
        )
    else:
        dataset = pair_stage.paired_examples(
            dataset,
            stream_seed=base_seed,
            options=options,
            on_bad_record=on_bad_record,
            num_classes=num_classes,
            skip_difficult=skip_difficult_during_training,
            drop=drop,
            num_parallel_calls=num_parallel_calls,
        )
    dataset = dataset.batch(batch_size, drop_remainder=True)
    if data_service_address:
        dataset = service.distribute(
            dataset,
            data_service_address,
            processing_mode=data_service_processing_mode,
            job_name=service.job_name(data_service_job_name, pipeline_id, start_step),
        )
    return dataset.prefetch(tf.data.AUTOTUNE)

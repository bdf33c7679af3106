"""Tests for tfcp.data.pipeline (structure vs Model Garden's parser, determinism, eval)."""

import os
import tempfile

import numpy as np
import tensorflow as tf
from official.vision.dataloaders import maskrcnn_input, tf_example_decoder

from tfcp.data import pipeline, schema, targets

SIZE = 64
CROWD_CLASS = 9
SMALL = dict(
    image_size=SIZE,
    max_num_instances=12,
    mask_crop_size=16,
    shuffle_buffer=8,
    occluded_area_threshold=4.0,
)


def _record(index: int, rng: np.random.Generator) -> bytes:
    height, width = 48, 64
    image = rng.integers(0, 255, [height, width, 3], dtype=np.uint8)
    boxes, masks, classes, crowd = [], [], [], []
    for j in range(3 + index % 3):
        y0, x0 = rng.integers(0, height - 16), rng.integers(0, width - 16)
        h, w = rng.integers(8, 16), rng.integers(8, 16)
        mask = np.zeros([height, width], np.uint8)
        mask[y0 : y0 + h, x0 : x0 + w] = 1
        image[mask > 0] = (40 * j) % 255
        masks.append(mask)
        boxes.append([y0 / height, x0 / width, (y0 + h) / height, (x0 + w) / width])
        is_crowd = j == 2
        classes.append(CROWD_CLASS if is_crowd else 1 + j)
        crowd.append(int(is_crowd))
    example = schema.make_example(
        encoded_image=schema.encode_png(image),
        image_format="png",
        height=height,
        width=width,
        source_id=str(100 + index),
        boxes=np.asarray(boxes, np.float32),
        classes=classes,
        is_crowd=crowd,
        masks=np.stack(masks),
    )
    return example.SerializeToString()


class PipelineTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._tmp = tempfile.TemporaryDirectory()
        rng = np.random.default_rng(0)
        cls.num_records = 7
        cls.records = [_record(i, rng) for i in range(cls.num_records)]
        cls.pattern = os.path.join(cls._tmp.name, "train-*.tfrecord")
        for shard in range(2):
            path = os.path.join(cls._tmp.name, f"train-{shard}.tfrecord")
            with tf.io.TFRecordWriter(path) as writer:
                for record in cls.records[shard::2]:
                    writer.write(record)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()
        super().tearDownClass()

    def _batches(self, num, **kwargs):
        args = dict(SMALL, file_pattern=self.pattern, global_batch_size=2, seed=3)
        args.update(kwargs)
        return list(pipeline.build_dataset(**args).take(num))

    def test_train_structure_matches_model_garden_parser(self):
        parser = maskrcnn_input.Parser(
            output_size=[SIZE, SIZE],
            min_level=2,
            max_level=6,
            num_scales=1,
            aspect_ratios=[0.5, 1.0, 2.0],
            anchor_size=8.0,
            aug_rand_hflip=True,
            aug_scale_min=0.1,
            aug_scale_max=2.0,
            include_mask=True,
            max_num_instances=12,
            mask_crop_size=16,
        )
        decoded = tf_example_decoder.TfExampleDecoder(include_mask=True).decode(
            tf.constant(self.records[0])
        )
        mg_image, mg_labels = parser.parse_fn(is_training=True)(decoded)
        images, all_labels = self._batches(1, include_anchor_boxes=True)[0]
        # tfcp adds one label: objects cut at max_num_instances (counted, never silent).
        truncated = all_labels["num_truncated_instances"]
        self.assertEqual((truncated.shape, truncated.dtype), ((2,), tf.int32))
        labels = {k: v for k, v in all_labels.items() if k != "num_truncated_instances"}
        tf.nest.assert_same_structure(mg_labels, labels)
        self.assertEqual(images.shape, [2, *mg_image.shape])
        # uint8 images: the model normalizes them (targets.normalize_images) exactly as MG.
        self.assertEqual(images.dtype, tf.uint8)
        self.assertEqual(targets.normalize_images(images).dtype, mg_image.dtype)
        flat_mg = tf.nest.flatten(mg_labels)
        for path, (mg, ours) in enumerate(zip(flat_mg, tf.nest.flatten(labels), strict=True)):
            self.assertEqual(ours.shape, [2, *mg.shape], path)
            self.assertEqual(ours.dtype, mg.dtype, path)
        # Normalized like Model Garden's: gray padding 128 -> (128/255 - mean) / std.
        normalized = targets.normalize_images(images)
        self.assertLess(float(tf.reduce_max(tf.abs(normalized))), 3.0)
        # Anchors are Model Garden's, identical for every image.
        for level, anchors in labels["anchor_boxes"].items():
            self.assertAllClose(anchors[0], mg_labels["anchor_boxes"][level])

    def test_anchor_boxes_are_left_to_the_model_by_default(self):
        (_, default), (_, with_anchors) = (
            self._batches(1, **kw)[0] for kw in ({}, {"include_anchor_boxes": True})
        )
        self.assertNotIn("anchor_boxes", default)
        self.assertEqual(set(with_anchors) - set(default), {"anchor_boxes"})
        for key in default:  # everything else is the same batch
            tf.nest.map_structure(self.assertAllEqual, default[key], with_anchors[key])
        (_, eval_labels), (_, eval_with) = (
            list(pipeline.build_dataset(**dict(SMALL, file_pattern=self.pattern,
                 global_batch_size=2, is_training=False, **kw)).take(1))[0]
            for kw in ({}, {"include_anchor_boxes": True})
        )  # fmt: skip
        self.assertEqual(set(eval_with) - set(eval_labels), {"anchor_boxes"})

    def test_targets_are_consistent(self):
        for _, labels in self._batches(3):
            boxes, classes = labels["gt_boxes"].numpy(), labels["gt_classes"].numpy()
            valid = classes >= 0
            self.assertTrue(valid.any())
            self.assertNotIn(CROWD_CLASS, classes)  # crowds skipped in training targets
            self.assertTrue((boxes[~valid] == -1).all())
            self.assertTrue((boxes[valid] >= 0).all() and (boxes[valid] <= SIZE).all())
            self.assertTrue((boxes[valid][:, 2] > boxes[valid][:, 0]).all())
            masks = labels["gt_masks"].numpy()
            self.assertTrue((masks[~valid] == -1).all())
            self.assertTrue(((masks[valid] >= 0) & (masks[valid] <= 1)).all())
            self.assertGreater(masks[valid].mean(), 0.3)  # rectangle masks fill their boxes
            scores = np.concatenate(
                [s.numpy().ravel() for s in labels["rpn_score_targets"].values()]
            )
            self.assertLessEqual(int((scores >= 0).sum()), 2 * 256)
            self.assertGreater(int((scores == 1).sum()), 0)

    def test_same_seed_same_batches_for_any_parallelism(self):
        sequential = self._batches(2, num_parallel_calls=1)
        parallel = self._batches(2, num_parallel_calls=4)
        for a, b in zip(sequential, parallel, strict=True):
            tf.nest.map_structure(self.assertAllEqual, a, b)
        other_seed = self._batches(1, seed=4)[0]
        self.assertNotAllClose(sequential[0][0], other_seed[0])

    def test_copy_paste_changes_batches_and_marks_pasted(self):
        plain = self._batches(3, copy_paste_prob=0.0)
        pasted = self._batches(3, copy_paste_prob=1.0, keep_is_pasted=True)
        self.assertNotIn("gt_is_pasted", plain[0][1])
        self.assertNotAllClose(plain[0][0], pasted[0][0])
        is_pasted = np.concatenate([b[1]["gt_is_pasted"].numpy() for b in pasted])
        classes = np.concatenate([b[1]["gt_classes"].numpy() for b in pasted])
        self.assertTrue(is_pasted.any())
        self.assertTrue((classes[is_pasted] >= 1).all())  # pasted slots are real objects

    def test_occlusion_thresholds_scale_from_the_reference_size(self):
        # 64 px output, reference 256 px: area x 1/16, box x 1/4.
        scaled = self._batches(
            2,
            keep_is_pasted=True,
            occluded_area_threshold=64.0,
            occluded_box_threshold=8.0,
            occlusion_reference_size=256,
        )
        explicit = self._batches(
            2, keep_is_pasted=True, occluded_area_threshold=4.0, occluded_box_threshold=2.0
        )
        for a, b in zip(scaled, explicit, strict=True):
            tf.nest.map_structure(self.assertAllEqual, a, b)
        # Unscaled, 64 px of a 64 px image drop partly occluded objects that 4 px keep.
        more = dict(keep_is_pasted=True, global_batch_size=4)
        unscaled = self._batches(6, occluded_area_threshold=64.0, **more)

        def kept_own(batches):
            return sum(
                int(np.sum((b[1]["gt_classes"].numpy() > 0) & ~b[1]["gt_is_pasted"].numpy()))
                for b in batches
            )

        self.assertLess(kept_own(unscaled), kept_own(self._batches(6, **more)))

    def test_resumed_stream_equals_the_uninterrupted_one(self):
        # Batch 3 makes every other step start in the middle of a Copy-Paste pair; 7 records
        # make steps straddle epochs. Bit-identical batches from any start step.
        for paste_prob, starts in ((1.0, (1, 4)), (0.0, (3,))):
            full = self._batches(6, global_batch_size=3, copy_paste_prob=paste_prob)
            for start_step in starts:
                resumed = self._batches(
                    6 - start_step,
                    global_batch_size=3,
                    copy_paste_prob=paste_prob,
                    start_step=start_step,
                )
                for a, b in zip(full[start_step:], resumed, strict=True):
                    tf.nest.map_structure(self.assertAllEqual, a, b)

    def test_resumed_stream_with_two_replicas_per_pipeline(self):
        # One input pipeline feeding 2 replicas: a step consumes 2 per-replica batches.
        ctx = tf.distribute.InputContext(num_replicas_in_sync=2)
        full = self._batches(6, input_context=ctx, global_batch_size=2)
        resumed = self._batches(2, input_context=ctx, global_batch_size=2, start_step=2)
        for a, b in zip(full[4:], resumed, strict=True):
            tf.nest.map_structure(self.assertAllEqual, a, b)

    def test_sharding_by_input_context(self):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1)
        batches = self._batches(1, input_context=ctx, global_batch_size=4)
        self.assertEqual(batches[0][0].shape[0], 4)

    def test_eval_keeps_every_image_in_order(self):
        dataset = pipeline.build_dataset(
            file_pattern=self.pattern,
            is_training=False,
            global_batch_size=3,
            image_size=SIZE,
            max_num_instances=12,
        )
        batches = list(dataset)
        self.assertEqual([b[0].shape[0] for b in batches], [3, 3, 1])
        ids = np.concatenate([b[1]["groundtruths"]["source_id"].numpy() for b in batches])
        self.assertCountEqual(ids, [100 + i for i in range(self.num_records)])
        first = batches[0][1]
        self.assertAllClose(first["image_info"][0], [[48, 64], [SIZE, SIZE], [1, 1], [0, 0]])
        gt = first["groundtruths"]
        self.assertEqual(int(gt["num_detections"][0]), 3)
        self.assertAllEqual(gt["is_crowds"][0, :3], [0, 0, 1])  # crowds kept for COCO eval
        self.assertTrue((gt["boxes"][0, 3:] == -1).numpy().all())

    def test_missing_files_name_the_pattern(self):
        with self.assertRaisesRegex(ValueError, "nothing-here"):
            pipeline.build_dataset(file_pattern="/nonexistent/nothing-here-*.tfrecord")

    def test_image_size_must_fit_the_levels(self):
        with self.assertRaisesRegex(ValueError, "multiple"):
            pipeline.build_dataset(file_pattern=self.pattern, image_size=100)


if __name__ == "__main__":
    tf.test.main()


class DifficultObjectsTest(tf.test.TestCase):
    """VOC's difficult flag: dropped from training targets (also as pasted objects), kept and
    reported in eval."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._tmp = tempfile.TemporaryDirectory()
        cls.path = os.path.join(cls._tmp.name, "voc.tfrecord")
        masks = np.zeros([2, 48, 64], np.uint8)
        masks[0, 4:40, 4:50] = 1
        masks[1, 40:46, 52:60] = 1
        with tf.io.TFRecordWriter(cls.path) as writer:
            for i in range(4):
                example = schema.make_example(
                    encoded_image=schema.encode_png(np.full([48, 64, 3], 30 * i, np.uint8)),
                    image_format="png", height=48, width=64, source_id=f"2008_{i:06d}",
                    boxes=np.array([[4 / 48, 4 / 64, 40 / 48, 50 / 64],
                                    [40 / 48, 52 / 64, 46 / 48, 60 / 64]], np.float32),
                    classes=[7, 8], difficult=[0, 1], masks=masks,
                )  # fmt: skip
                writer.write(example.SerializeToString())

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()
        super().tearDownClass()

    def test_training_drops_difficult_objects_before_copy_paste(self):
        for skip, expected in ((True, {7}), (False, {7, 8})):
            dataset = pipeline.build_dataset(
                self.path, global_batch_size=4, copy_paste_prob=1.0,
                main_scale_range=(1.0, 1.0), paste_scale_range=(1.0, 1.0), flip_prob=0.0,
                skip_difficult_during_training=skip, **SMALL,
            )  # fmt: skip
            _, labels = next(iter(dataset))
            classes = labels["gt_classes"].numpy()
            self.assertEqual(set(classes[classes > 0].tolist()), expected)

    def test_eval_reports_difficult_flags_with_string_ids(self):
        args = dict(is_training=False, global_batch_size=4, numeric_source_id=False, **SMALL)
        _, labels = next(iter(pipeline.build_dataset(self.path, include_difficult=True, **args)))
        gt = labels["groundtruths"]
        self.assertAllEqual(gt["difficult"][:, :3], [[0, 1, 0]] * 4)
        self.assertAllEqual(gt["classes"][0, :2], [7, 8])
        self.assertEqual(gt["source_id"][3], b"2008_000003")
        _, labels = next(iter(pipeline.build_dataset(self.path, **args)))
        self.assertNotIn("difficult", labels["groundtruths"])

    def test_eval_with_difficult_flags_rejects_more_objects_than_max(self):
        args = dict(SMALL, max_num_instances=1)
        dataset = pipeline.build_dataset(
            self.path, is_training=False, global_batch_size=1, include_difficult=True, **args
        )
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "2008_000000"):
            next(iter(dataset))

"""tfcp.pseudo_label on SavedModels of a stubbed detector (hand-checkable, fast to export).

The stand-in is tfcp's own `DetectionModule` (the exported serving signature) around a
stub whose detections are fixed rectangles in the model frame; the images are 128 x 128
and 64 x 128, so the eval preprocessing does not scale them and every full-image mask is
a known rectangle cut to the image.
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import cli_utils
import numpy as np
import tensorflow as tf
from PIL import Image
from pycocotools import coco as coco_api

from tfcp import pseudo_label
from tfcp.data import decoder, schema, synthetic
from tfcp.data.converters import coco as coco_converter
from tfcp.self_training import coco_labels, partial_file
from tfcp.self_training import pseudo_label as pseudo_label_lib
from tfcp.serving import detection, export_lib

S = 128
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (box ymin, xmin, ymax, xmax in the model frame = input pixels, class, score). 16-pixel
# boxes away from the origin: Detectron's paste of an all-one 28 x 28 mask is exactly the box.
DETECTIONS = [
    ((0, 0, 16, 16), 2, 0.3),  # below the 0.5 threshold
    ((16, 16, 32, 32), 1, 0.9),
    ((16, 64, 32, 80), 2, 0.6),
    ((64, 16, 80, 32), 3, 0.8),  # class 3 is not in the label map
    ((56, 96, 72, 112), 1, 0.7),  # cut to rows 56..63 in a 64-row image
    ((96, 16, 112, 32), 2, 0.55),  # outside a 64-row image: empty mask there
]
KEPT = {128: [1, 4, 2, 5], 64: [1, 4, 2]}  # by image height; by descending score
LABEL_MAP = {"1": "cat", "2": "dog"}
# file -> (height, width); d_corrupt.jpg does not decode, notes.txt is not an image.
IMAGES = {"a.png": (128, 128), "b.jpg": (64, 128), "c.png": (64, 128), "e.png": (128, 128)}


class _StubModel:
    """`DETECTIONS` for every image, with all-one box masks."""

    variables = []

    def call(self, images, image_shape, anchor_boxes=None, training=False):
        del image_shape, anchor_boxes, training
        batch = tf.shape(images)[0]
        tile = lambda x: tf.tile(x[tf.newaxis], [batch] + [1] * len(x.shape))
        return {
            "detection_boxes": tile(tf.constant([d[0] for d in DETECTIONS], tf.float32)),
            "detection_scores": tile(tf.constant([d[2] for d in DETECTIONS])),
            "detection_classes": tile(tf.constant([d[1] for d in DETECTIONS], tf.int32)),
            "num_detections": tf.fill([batch], len(DETECTIONS)),
            "detection_masks": tf.ones([batch, len(DETECTIONS), 28, 28]),
        }


def _export(directory, input_type):
    preprocess = functools.partial(export_lib.eval_preprocess, image_size=(S, S), pad_value=128)
    module = detection.DetectionModule(_StubModel(), preprocess, (S, S))
    tf.saved_model.save(
        module, directory, signatures={"serving_default": module.concrete_function(input_type)}
    )
    info = {"kind": "detection", "input_type": input_type, "label_map": LABEL_MAP}
    export_lib.write_sidecars(directory, info)


def _rectangle(box, height, width):
    mask = np.zeros([height, width], np.uint8)
    ymin, xmin, ymax, xmax = box
    mask[ymin:ymax, xmin:xmax] = 1
    return mask


def _kill(done):
    """An `after_batch` hook that stops the run like a kill after the first batch."""
    raise KeyboardInterrupt(f"killed after {done} images")


class PseudoLabelTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp()
        cls.exports = {}
        for input_type in ("image_bytes", "image_tensor"):
            cls.exports[input_type] = os.path.join(cls.tmp, input_type)
            _export(cls.exports[input_type], input_type)
        cls.image_dir = os.path.join(cls.tmp, "unlabeled")
        os.makedirs(cls.image_dir)
        rng = np.random.default_rng(0)
        for name, (height, width) in IMAGES.items():
            pixels = rng.integers(0, 255, [height, width, 3], np.uint8)
            Image.fromarray(pixels).save(os.path.join(cls.image_dir, name))
        with open(os.path.join(cls.image_dir, "d_corrupt.jpg"), "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 not a jpeg")
        with open(os.path.join(cls.image_dir, "notes.txt"), "w") as f:
            f.write("not an image")
        # The uninterrupted reference run: batches [a, b], [c, d_corrupt], [e].
        cls.reference_path = os.path.join(cls.tmp, "reference", "pseudo.json")
        cls.warnings, cls.progress = [], io.StringIO()
        cls.summary = pseudo_label.pseudo_label(
            cls.exports["image_bytes"],
            cls.image_dir,
            cls.reference_path,
            batch_size=2,
            warn=cls.warnings.append,
            progress_stream=cls.progress,
        )
        with open(cls.reference_path) as f:
            cls.reference = json.load(f)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def _run(self, output, export="image_bytes", **kwargs):
        kwargs.setdefault("warn", lambda _: None)
        kwargs.setdefault("progress_stream", io.StringIO())
        return pseudo_label.pseudo_label(self.exports[export], self.image_dir, output, **kwargs)

    def test_labels_are_coco_with_the_models_masks_above_the_threshold(self):
        coco = coco_api.COCO(self.reference_path)
        self.assertEqual(
            coco.dataset["categories"], [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
        )
        # Ids: 1-based positions among the 5 listed files (d_corrupt.jpg is 4th).
        self.assertEqual(
            [(i["id"], i["file_name"], i["height"], i["width"]) for i in coco.dataset["images"]],
            [(1, "a.png", 128, 128), (2, "b.jpg", 64, 128), (3, "c.png", 64, 128)]
            + [(5, "e.png", 128, 128)],
        )
        detector = pseudo_label_lib.Detector(self.exports["image_bytes"])
        for image in coco.dataset["images"]:
            height, width = image["height"], image["width"]
            annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
            kept = KEPT[height]
            self.assertEqual([a["score"] for a in annotations], [DETECTIONS[k][2] for k in kept])
            with open(os.path.join(self.image_dir, image["file_name"]), "rb") as f:
                ((outputs, b),) = detector.detect([f.read()])
            model_masks = outputs["detection_masks"][b].numpy()
            for annotation, k in zip(annotations, kept, strict=True):
                box, category, _ = DETECTIONS[k]
                expected = _rectangle(box, height, width)
                mask = coco.annToMask(annotation)
                self.assertAllEqual(mask, expected)
                self.assertAllEqual(mask, model_masks[k])
                ymin, xmin, ymax, xmax = box
                ymax = min(ymax, height)
                self.assertEqual(annotation["bbox"], [xmin, ymin, xmax - xmin, ymax - ymin])
                self.assertEqual(annotation["area"], expected.sum())
                self.assertEqual(annotation["category_id"], category)
                self.assertEqual(annotation["iscrowd"], 0)
                self.assertIsInstance(annotation["segmentation"]["counts"], str)
        self.assertEqual([a["id"] for a in coco.dataset["annotations"]], list(range(1, 15)))
        info = coco.dataset["info"]
        self.assertEqual(
            info["detections_dropped"],
            {"below_score_threshold": 4, "empty_mask": 2, "unknown_category": 4},
        )
        self.assertEqual(info["score_threshold"], 0.5)

    def test_a_corrupt_image_is_counted_listed_and_the_rest_labeled(self):
        info = self.reference["info"]
        self.assertEqual(info["num_images_failed"], 1)
        (failed,) = info["failed_images"]
        self.assertEqual(failed["file_name"], "d_corrupt.jpg")
        self.assertIn("corrupt", failed["error"].lower())
        self.assertLen(self.warnings, 1)
        self.assertIn("d_corrupt.jpg", self.warnings[0])
        self.assertEqual(
            (self.summary.images_total, self.summary.images_labeled, self.summary.images_failed),
            (5, 4, 1),
        )
        self.assertEqual(self.summary.annotations, 14)
        self.assertIn("5/5 images", self.progress.getvalue())
        self.assertIn("images/s", self.progress.getvalue())
        # Only the final JSON is left: no partial or temporary file.
        self.assertEqual(os.listdir(os.path.dirname(self.reference_path)), ["pseudo.json"])

    def test_resume_after_a_kill_equals_an_uninterrupted_run(self):
        output = os.path.join(self.tmp, "resume", "pseudo.json")
        with self.assertRaises(KeyboardInterrupt):
            self._run(output, batch_size=2, after_batch=_kill)
        self.assertFalse(os.path.exists(output))
        with open(output + partial_file.PARTIAL_SUFFIX) as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual([r["file_name"] for r in lines[1:]], ["a.png", "b.jpg"])
        with open(output + partial_file.PARTIAL_SUFFIX, "a") as f:
            f.write('{"file_name": "c.png", "hei')  # a line torn by the kill
        done, warnings = [], []
        summary = self._run(output, batch_size=3, after_batch=done.append, warn=warnings.append)
        self.assertEqual(done, [3])  # c, d_corrupt, e: nothing labeled twice
        self.assertEqual(summary.images_resumed, 2)
        self.assertIn("incomplete last line", warnings[0])
        with open(output) as f:
            resumed = json.load(f)
        self.assertEqual(resumed, self.reference)
        self.assertFalse(os.path.exists(output + partial_file.PARTIAL_SUFFIX))

    def test_image_tensor_export_gives_the_same_labels(self):
        output = os.path.join(self.tmp, "tensor", "pseudo.json")
        self._run(output, export="image_tensor", batch_size=4)  # sizes 128, 64, 64 in one batch
        with open(output) as f:
            labels = json.load(f)
        self.assertEqual(labels["info"].pop("saved_model"), self.exports["image_tensor"])
        reference = json.loads(json.dumps(self.reference))
        del reference["info"]["saved_model"]
        self.assertEqual(labels, reference)

    def test_refuses_an_existing_output_and_a_partial_run_of_other_settings(self):
        with self.assertRaisesRegex(FileExistsError, "overwrite"):
            self._run(self.reference_path)
        output = os.path.join(self.tmp, "other", "pseudo.json")
        with self.assertRaises(KeyboardInterrupt):
            self._run(output, after_batch=_kill)
        with self.assertRaisesRegex(ValueError, "score_threshold.*delete it"):
            self._run(output, score_threshold=0.8)

    def test_converts_with_create_coco_tfrecord(self):
        prefix = os.path.join(self.tmp, "records", "pseudo")
        summary = coco_converter.convert_coco(
            self.image_dir,
            self.reference_path,
            prefix,
            num_shards=1,
            num_workers=0,
            progress_stream=io.StringIO(),
        )
        self.assertEqual((summary.images_written, summary.objects_written), (4, 14))
        self.assertEmpty(summary.objects_skipped)
        self.assertEmpty(summary.objects_modified)
        records = list(tf.data.TFRecordDataset(summary.shard_paths))
        example = decoder.decode(records[1])  # b.jpg: 64 x 128
        self.assertEqual(example["source_id"].numpy(), b"2")
        self.assertAllEqual(example["groundtruth_classes"], [1, 1, 2])
        self.assertAllEqual(
            example["groundtruth_instance_masks"][1], _rectangle(DETECTIONS[4][0], 64, 128)
        )

    def test_a_student_trains_on_labeled_data_and_these_pseudo_labels(self):
        """Step 3 of the recipe: 2 steps of `python -m tfcp.train` with PSEUDO_FILES."""
        progress = io.StringIO()
        pseudo = coco_converter.convert_coco(
            self.image_dir,
            self.reference_path,
            os.path.join(self.tmp, "student", "pseudo"),
            num_shards=1,
            num_workers=0,
            progress_stream=progress,
        )
        labeled_dir = os.path.join(self.tmp, "student", "labeled")
        paths = synthetic.write_coco(labeled_dir, num_train=4, num_val=0, image_size=S)
        labeled = coco_converter.convert_coco(
            paths["train_images"],
            paths["train_annotations"],
            os.path.join(self.tmp, "student", "train"),
            num_shards=1,
            num_workers=0,
            progress_stream=progress,
        )
        model_dir = os.path.join(self.tmp, "student", "model")
        result = cli_utils.run_train(
            model_dir,
            ["self_training/maskrcnn_tiny_student.gin"],
            [
                f"TRAIN_FILES='{labeled.shard_paths[0]}'",
                f"PSEUDO_FILES='{pseudo.shard_paths[0]}'",
                "EVAL_FILES='unused-*'",
                f"EVAL_ANNOTATIONS='{paths['train_annotations']}'",
                "NUM_CLASSES=91",
                "TRAIN_STEPS=2",
            ],
            timeout=400,
        )
        self.assertEqual(result.returncode, 0, msg=result.stderr[-3000:])
        self.assertIn(
            "two training sources: 2 labeled + 2 pseudo-labeled images per replica batch; "
            "Copy-Paste from labeled into both",
            result.stderr,
        )
        self.assertTrue(tf.train.latest_checkpoint(model_dir).endswith("ckpt-2"))
        with open(os.path.join(model_dir, "config.gin")) as f:
            self.assertIn(pseudo.shard_paths[0], f.read())

    def test_cli(self):
        output = os.path.join(self.tmp, "cli", "pseudo.json")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "tfcp.pseudo_label",
                f"--saved_model={self.exports['image_bytes']}",
                f"--image_dir={self.image_dir}",
                "--image_glob=*.png",
                f"--output_json={output}",
                "--score_threshold=0.65",
                "--max_detections=1",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        self.assertEqual(result.returncode, 0, msg=result.stderr[-2000:])
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertEqual((summary["images_labeled"], summary["annotations"]), (3, 3))
        self.assertIn("images/s", result.stderr)
        with open(output) as f:
            labels = json.load(f)
        self.assertEqual([i["file_name"] for i in labels["images"]], ["a.png", "c.png", "e.png"])
        self.assertEqual({a["score"] for a in labels["annotations"]}, {0.9})
        self.assertEqual(
            labels["info"]["detections_dropped"],
            {"below_score_threshold": 9, "over_max_detections": 3, "unknown_category": 3},
        )


class _FailingDetector:
    def detect(self, encoded):
        raise tf.errors.InvalidArgumentError(None, None, "model failure")


class PseudoLabelPartsTest(tf.test.TestCase):
    def test_image_ids_from_numeric_names_else_sorted_positions(self):
        numeric = ["000000000139.jpg", "000000000008.jpg"]
        self.assertEqual(coco_labels.assign_image_ids(numeric), {numeric[0]: 139, numeric[1]: 8})
        clash = ["x/1.jpg", "y/1.jpg", "2.jpg"]
        self.assertEqual(
            coco_labels.assign_image_ids(clash), {"2.jpg": 1, "x/1.jpg": 2, "y/1.jpg": 3}
        )
        self.assertEqual(coco_labels.assign_image_ids(["b.jpg", "0.jpg"]), {"0.jpg": 1, "b.jpg": 2})

    def test_annotate_keeps_nothing_above_every_score(self):
        outputs = {
            "detection_boxes": tf.constant([[[1.0, 2.0, 5.0, 6.0]]]),
            "detection_scores": tf.constant([[0.4]]),
            "detection_classes": tf.constant([[1]]),
            "num_detections": tf.constant([1]),
            "detection_masks": tf.ones([1, 1, 8, 8], tf.uint8),
        }
        kwargs = {"max_detections": 5, "category_ids": {1}}
        annotations, dropped = coco_labels.annotate(outputs, 0, 8, 8, score_threshold=0.5, **kwargs)
        self.assertEqual((annotations, dropped), ([], {"below_score_threshold": 1}))
        (annotation,), _ = coco_labels.annotate(outputs, 0, 8, 8, score_threshold=0.4, **kwargs)
        self.assertEqual(annotation["bbox"], [2, 1, 4, 4])
        self.assertEqual(annotation["area"], 64)

    def test_a_model_error_is_not_taken_for_a_bad_image(self):
        tmp = tempfile.mkdtemp(dir=self.get_temp_dir())
        with open(os.path.join(tmp, "ok.png"), "wb") as f:
            f.write(schema.encode_png(np.zeros([8, 8, 3], np.uint8)))
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "model failure"):
            pseudo_label_lib.label_batch(
                _FailingDetector(),
                tmp,
                ["ok.png"],
                warn=print,
                score_threshold=0.5,
                max_detections=1,
                category_ids={1},
            )

    def test_a_partial_file_is_locked_while_a_run_holds_it(self):
        path = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), "p.json.partial")
        first = partial_file.PartialFile(path, {"a": 1}, print)
        try:
            with self.assertRaisesRegex(RuntimeError, "another pseudo_label run"):
                partial_file.PartialFile(path, {"a": 1}, print)
        finally:
            first.close()
        partial_file.PartialFile(path, {"a": 1}, print).close()


if __name__ == "__main__":
    tf.test.main()

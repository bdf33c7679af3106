"""Tests for tfcp.evaluation.coco."""

import json
import os
import tempfile

import numpy as np
import tensorflow as tf
from pycocotools import coco as coco_api
from pycocotools import mask as mask_api

from tfcp.data import schema
from tfcp.evaluation.coco import CocoEvaluator, coco_dataset_from_tfrecords


def _rle_string(mask):
    rle = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _uncompressed_rle(mask):
    """Column-major run lengths starting with zeros, as COCO stores crowd regions."""
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, value, run = [], 0, 0
    for pixel in flat:
        if pixel == value:
            run += 1
        else:
            counts.append(run)
            value, run = pixel, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def _coco_json():
    """Two images; polygons, a compressed RLE and a crowd region (uncompressed RLE)."""
    blob = np.zeros([48, 64], np.uint8)
    blob[30:44, 5:25] = 1
    blob[36:44, 25:35] = 1
    crowd = np.zeros([48, 64], np.uint8)
    crowd[2:20, 40:62] = 1
    annotations = [
        # Image 1: a rectangle polygon (cat), an L-shaped RLE object (dog), a crowd of cats.
        dict(image_id=1, category_id=1, segmentation=[[4, 4, 30, 4, 30, 24, 4, 24]]),
        dict(image_id=1, category_id=2, segmentation=_rle_string(blob)),
        dict(image_id=1, category_id=1, segmentation=_uncompressed_rle(crowd), iscrowd=1),
        # Image 2: a triangle polygon (dog) and a rectangle polygon (cat).
        dict(image_id=2, category_id=2, segmentation=[[2, 2, 30, 2, 2, 30]]),
        dict(image_id=2, category_id=1, segmentation=[[20, 20, 38, 20, 38, 38, 20, 38]]),
    ]
    dataset = {
        "images": [
            {"id": 1, "height": 48, "width": 64, "file_name": "a.jpg"},
            {"id": 2, "height": 40, "width": 40, "file_name": "b.jpg"},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [],
    }
    # Let pycocotools compute each object's area and tight box from its segmentation.
    helper = coco_api.COCO()
    helper.dataset = dict(
        dataset, annotations=[dict(a, id=i + 1) for i, a in enumerate(annotations)]
    )
    helper.createIndex()
    for i, ann in enumerate(annotations):
        rle = helper.annToRLE(helper.anns[i + 1])
        dataset["annotations"].append(
            dict(
                ann,
                id=i + 1,
                iscrowd=ann.get("iscrowd", 0),
                area=float(mask_api.area(rle)),
                bbox=mask_api.toBbox(rle).tolist(),
            )
        )
    return dataset


def _perfect_predictions(dataset, max_k=4):
    """Ground truth (non-crowd) fed back: score 1, boxes yxyx, full-image masks."""
    gt = coco_api.COCO()
    gt.dataset = dataset
    gt.createIndex()
    batch = {
        "source_id": [],
        "detection_boxes": [],
        "detection_scores": [],
        "detection_classes": [],
        "num_detections": [],
        "detection_masks": [],
    }
    for image in dataset["images"]:
        anns = [a for a in gt.imgToAnns[image["id"]] if not a["iscrowd"]]
        boxes = np.zeros([max_k, 4], np.float32)
        masks = np.zeros([max_k, 48, 64], np.uint8)  # padded to the largest image
        classes = np.zeros([max_k], np.int32)
        scores = np.zeros([max_k], np.float32)
        for k, ann in enumerate(anns):
            x, y, w, h = ann["bbox"]
            boxes[k] = [y, x, y + h, x + w]
            masks[k, : image["height"], : image["width"]] = gt.annToMask(ann)
            classes[k] = ann["category_id"]
            scores[k] = 1.0
        batch["source_id"].append(str(image["id"]).encode())
        batch["detection_boxes"].append(boxes)
        batch["detection_scores"].append(scores)
        batch["detection_classes"].append(classes)
        batch["num_detections"].append(len(anns))
        batch["detection_masks"].append(masks)
    return {k: np.stack(v) for k, v in batch.items()}


class CocoEvaluatorTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.dataset = _coco_json()
        self.annotation_file = os.path.join(self.get_temp_dir(), "instances.json")
        with open(self.annotation_file, "w") as f:
            json.dump(self.dataset, f)

    def test_perfect_detections_score_one(self):
        evaluator = CocoEvaluator(self.annotation_file, include_mask=True)
        evaluator.update(_perfect_predictions(self.dataset))
        metrics = evaluator.result()
        for key in ("box_AP", "box_AP50", "box_AP75", "mask_AP", "mask_AP50", "mask_AP75"):
            self.assertAlmostEqual(metrics[key], 1.0, places=6, msg=key)
        self.assertAlmostEqual(metrics["box_ARmax100"], 1.0, places=6)
        self.assertEqual(metrics["num_images"], 2)
        self.assertEqual(len([k for k in metrics if k.startswith("mask_")]), 12)
        self.assertEqual(len([k for k in metrics if k.startswith("box_")]), 12)

    def test_detection_on_crowd_region_is_ignored(self):
        predictions = _perfect_predictions(self.dataset)
        # Image 1 (index 0) holds 2 objects; add a lower-scored cat inside the crowd region.
        predictions["detection_boxes"][0, 2] = [2, 40, 20, 62]
        predictions["detection_classes"][0, 2] = 1
        predictions["detection_scores"][0, 2] = 0.9
        predictions["detection_masks"][0, 2, 2:20, 40:62] = 1
        predictions["num_detections"][0] = 3
        evaluator = CocoEvaluator(self.annotation_file)
        evaluator.update(predictions)
        metrics = evaluator.result()
        self.assertAlmostEqual(metrics["box_AP"], 1.0, places=6)
        self.assertAlmostEqual(metrics["mask_AP"], 1.0, places=6)

    def test_shifted_boxes_lower_ap(self):
        predictions = _perfect_predictions(self.dataset)
        predictions["detection_boxes"][..., [1, 3]] += 6.0  # 6 px to the right
        evaluator = CocoEvaluator(self.annotation_file, include_mask=False)
        evaluator.update(predictions)
        metrics = evaluator.result()
        self.assertLess(metrics["box_AP"], 0.9)
        self.assertLess(metrics["box_AP75"], 1.0)
        self.assertNotIn("mask_AP", metrics)

    def test_empty_predictions_give_zero(self):
        predictions = _perfect_predictions(self.dataset)
        predictions["num_detections"][:] = 0
        evaluator = CocoEvaluator(self.annotation_file)
        evaluator.update(predictions)
        metrics = evaluator.result()
        self.assertEqual(metrics["box_AP"], 0.0)
        self.assertEqual(metrics["mask_AP"], 0.0)
        self.assertEqual(metrics["num_images"], 2)

    def test_only_seen_images_are_evaluated(self):
        predictions = _perfect_predictions(self.dataset)
        # Image 2 seen with no detections: its 2 objects are missed -> AP50 below 1.
        predictions["num_detections"][1] = 0
        evaluator = CocoEvaluator(self.annotation_file)
        evaluator.update(predictions)
        self.assertLess(evaluator.result()["box_AP50"], 1.0)
        # Only image 1 seen: perfect.
        evaluator.reset()
        evaluator.update({k: v[:1] for k, v in _perfect_predictions(self.dataset).items()})
        with self.assertLogs(level="WARNING") as logs:
            metrics = evaluator.result()
        self.assertIn("predictions cover 1 of the 2 images", "\n".join(logs.output))
        self.assertAlmostEqual(metrics["box_AP"], 1.0, places=6)
        self.assertEqual(metrics["num_images"], 1)

    def test_empty_batches_are_accepted(self):
        # Multi-worker evaluation feeds the replicas' outputs concatenated, some empty.
        predictions = _perfect_predictions(self.dataset)
        evaluator = CocoEvaluator(self.annotation_file)
        evaluator.update({k: v[:0] for k, v in predictions.items()})
        evaluator.update(predictions)
        self.assertEqual(evaluator.result()["num_images"], 2)

    def test_relative_masks_are_pasted(self):
        # Image 2's objects as box-relative masks: the cat rectangle is a full 28x28 box
        # mask; the dog triangle has its right angle at the top-left of its box.
        predictions = _perfect_predictions(self.dataset)
        relative = np.zeros([2, 4, 28, 28], np.float32)
        yy, xx = np.mgrid[0:28, 0:28]
        relative[1, 0] = (yy + xx < 28).astype(np.float32)  # triangle, vertex top-left
        relative[1, 1] = 1.0
        del predictions["detection_masks"]
        predictions["detection_masks_relative"] = relative
        evaluator = CocoEvaluator(self.annotation_file)
        evaluator.update({k: v[1:] for k, v in predictions.items()})
        metrics = evaluator.result()
        self.assertAlmostEqual(metrics["mask_AP50"], 1.0, places=6)
        self.assertGreater(metrics["mask_AP"], 0.5)

    def test_unknown_image_id_raises(self):
        predictions = _perfect_predictions(self.dataset)
        predictions["source_id"] = np.array([b"1", b"777"])
        evaluator = CocoEvaluator(self.annotation_file)
        with self.assertRaisesRegex(ValueError, "777"):
            evaluator.update(predictions)

    def test_same_image_twice_raises(self):
        evaluator = CocoEvaluator(self.annotation_file)
        predictions = _perfect_predictions(self.dataset)
        evaluator.update(predictions)
        with self.assertRaisesRegex(ValueError, "twice"):
            evaluator.update(predictions)

    def test_groundtruth_from_tfrecords(self):
        gt = coco_api.COCO()
        gt.dataset = self.dataset
        gt.createIndex()
        path = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), "val.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for image in self.dataset["images"]:
                h, w = image["height"], image["width"]
                anns = gt.imgToAnns[image["id"]]
                boxes = [
                    [a["bbox"][1] / h, a["bbox"][0] / w, (a["bbox"][1] + a["bbox"][3]) / h]
                    + [(a["bbox"][0] + a["bbox"][2]) / w]
                    for a in anns
                ]
                example = schema.make_example(
                    encoded_image=schema.encode_png(np.zeros([h, w, 3], np.uint8)),
                    image_format="png",
                    height=h,
                    width=w,
                    source_id=str(image["id"]),
                    boxes=np.array(boxes, np.float32),
                    classes=[a["category_id"] for a in anns],
                    is_crowd=[a["iscrowd"] for a in anns],
                    areas=[a["area"] for a in anns],
                    masks=np.stack([gt.annToMask(a) for a in anns]),
                )
                writer.write(example.SerializeToString())
        dataset = coco_dataset_from_tfrecords(path, label_map={1: "cat", 2: "dog"})
        self.assertEqual([i["id"] for i in dataset["images"]], [1, 2])
        self.assertLen(dataset["annotations"], 5)
        self.assertEqual(sum(a["iscrowd"] for a in dataset["annotations"]), 1)
        json.dumps(dataset)  # serializable
        evaluator = CocoEvaluator(groundtruth=dataset)
        evaluator.update(_perfect_predictions(self.dataset))
        metrics = evaluator.result()
        self.assertAlmostEqual(metrics["box_AP"], 1.0, places=6)
        self.assertAlmostEqual(metrics["mask_AP"], 1.0, places=6)

    def test_tfrecords_bad_record_names_file(self):
        path = os.path.join(self.get_temp_dir(), "bad.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            writer.write(b"not an example")
        with self.assertRaisesRegex(ValueError, "bad.tfrecord, record 0"):
            coco_dataset_from_tfrecords(path)

    def test_requires_exactly_one_groundtruth(self):
        with self.assertRaises(ValueError):
            CocoEvaluator()
        with self.assertRaises(FileNotFoundError):
            CocoEvaluator("/nonexistent/instances.json")

    def test_masks_required_for_mask_eval(self):
        boxes_only = dict(self.dataset)
        boxes_only["annotations"] = [
            {k: v for k, v in a.items() if k != "segmentation"} for a in self.dataset["annotations"]
        ]
        with self.assertRaisesRegex(ValueError, "no segmentation"):
            CocoEvaluator(groundtruth=boxes_only, include_mask=True)
        evaluator = CocoEvaluator(groundtruth=boxes_only, include_mask=False)
        evaluator.update(_perfect_predictions(self.dataset))
        self.assertAlmostEqual(evaluator.result()["box_AP"], 1.0, places=6)


if __name__ == "__main__":
    tf.test.main()

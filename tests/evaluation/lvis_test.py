"""Tests for tfcp.evaluation.lvis: federated rules by hand, and equality with lvis-api 0.5.3."""

import contextlib
import copy
import importlib
import json
import os
import sys

import numpy as np
import pytest
from pycocotools import mask as mask_api

from tfcp.evaluation import lvis

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_REFERENCE_DIR = os.path.join(_REPO, ".venv", "lvis_ref")
_INSTALL = ".venv/bin/python -m pip install --no-deps --target .venv/lvis_ref lvis==0.5.3"


@contextlib.contextmanager
def _reference_lvis():
    """The reference package `lvis` 0.5.3, importable and runnable on numpy 2 while open."""
    if not os.path.isfile(os.path.join(_REFERENCE_DIR, "lvis", "eval.py")):
        pytest.fail(
            f"the reference lvis-api is not installed in {_REFERENCE_DIR}; install it with "
            f"`{_INSTALL}` (make install does)"
        )
    if _REFERENCE_DIR not in sys.path:
        sys.path.insert(0, _REFERENCE_DIR)
    np.float = float  # lvis 0.5.3 uses np.float, removed in numpy 2
    try:
        yield importlib.import_module("lvis")
    finally:
        del np.float


def _reference_metrics(tmp_path, dataset, results, iou_type, max_dets=300, image_ids=None):
    path = tmp_path / "reference_gt.json"
    path.write_text(json.dumps(dataset))
    with _reference_lvis() as ref:
        gt = ref.LVIS(str(path))
        dt = ref.LVISResults(gt, copy.deepcopy(results), max_dets=max_dets)
        evaluator = ref.LVISEval(gt, dt, iou_type)
        if image_ids is not None:
            evaluator.params.img_ids = list(image_ids)
        evaluator.run()
        values = evaluator.get_results()
    names = {"AR@300": "AR", "ARs@300": "ARs", "ARm@300": "ARm", "ARl@300": "ARl"}
    return {names.get(k, k): float(v) for k, v in values.items()}


# --------------------------------------------------------------------------- hand cases
def _box_dataset(images, annotations, frequencies):
    """100x100 images; `images` = {id: (neg_category_ids, not_exhaustive_category_ids)}."""
    return {
        "images": [
            dict(id=i, height=100, width=100, neg_category_ids=n, not_exhaustive_category_ids=x)
            for i, (n, x) in images.items()
        ],
        "categories": [dict(id=c, name=f"c{c}", frequency=f) for c, f in frequencies.items()],
        "annotations": [
            dict(id=k + 1, image_id=i, category_id=c, bbox=b, area=float(b[2] * b[3]))
            for k, (i, c, b) in enumerate(annotations)
        ],
    }


def _det(image_id, category_id, bbox, score):
    return dict(image_id=image_id, category_id=category_id, bbox=list(bbox), score=score)


_BOX_A = [10.0, 10.0, 20.0, 20.0]  # area 400: small
_BOX_B = [50.0, 40.0, 40.0, 40.0]  # area 1600: medium
_FREQ = {1: "f", 2: "c", 3: "r"}


def _two_images(neg_1=(), not_exhaustive_1=(), cat3_in_image_1=False):
    """Image 1: a category-1 object; image 2: a category-3 object (optionally image 1 too)."""
    annotations = [(1, 1, _BOX_A), (2, 3, _BOX_B)]
    if cat3_in_image_1:
        annotations.append((1, 3, _BOX_B))
    images = {1: (list(neg_1), list(not_exhaustive_1)), 2: ([], [])}
    return _box_dataset(images, annotations, _FREQ)


def test_detection_of_unlabeled_category_is_ignored(tmp_path):
    # Category 3 is neither in image 1's positive nor negative set: the top-scoring wrong
    # category-3 detection there counts for nothing, so category 3's AP stays 1.
    dataset = _two_images()
    results = [
        _det(1, 1, _BOX_A, 0.9),
        _det(2, 3, _BOX_B, 0.5),
        _det(1, 3, [0, 60, 30, 30], 0.95),
    ]
    metrics = lvis.evaluate(dataset, results, "bbox")
    assert metrics["APr"] == pytest.approx(1.0)  # category 3
    assert metrics["APf"] == pytest.approx(1.0)  # category 1
    assert metrics["APc"] == -1.0  # category 2 has no ground truth
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["APs"] == pytest.approx(1.0) and metrics["APm"] == pytest.approx(1.0)
    assert metrics["APl"] == -1.0
    assert metrics == pytest.approx(_reference_metrics(tmp_path, dataset, results, "bbox"))


def test_detection_of_negative_category_is_false_positive(tmp_path):
    # Same detections, but image 1 is known NOT to contain category 3: the 0.95 detection is
    # a false positive ranked first: precision 1/2 at recall 1 -> AP 0.5 for category 3.
    dataset = _two_images(neg_1=[3])
    results = [
        _det(1, 1, _BOX_A, 0.9),
        _det(2, 3, _BOX_B, 0.5),
        _det(1, 3, [0, 60, 30, 30], 0.95),
    ]
    metrics = lvis.evaluate(dataset, results, "bbox")
    assert metrics["APr"] == pytest.approx(0.5)
    assert metrics["APf"] == pytest.approx(1.0)
    assert metrics["AP"] == pytest.approx(0.75)
    assert metrics == pytest.approx(_reference_metrics(tmp_path, dataset, results, "bbox"))


@pytest.mark.parametrize("not_exhaustive, expected_apr", [([3], 1.0), ([], 2.0 / 3.0)])
def test_unmatched_detection_of_not_exhaustive_category_is_ignored(
    tmp_path, not_exhaustive, expected_apr
):
    # Category 3 has an object in image 1 and one in image 2; image 1 also gets an extra
    # category-3 detection (0.95) that matches nothing. Not exhaustive in image 1: ignored,
    # both objects found at precision 1 -> AP 1 (the matched detection still counts).
    # Exhaustive: ranked 0.95 FP, 0.9 TP, 0.5 TP: precision [0, 1/2, 2/3] at recall
    # [0, 1/2, 1], envelope 2/3 at every recall threshold -> AP 2/3.
    dataset = _two_images(not_exhaustive_1=not_exhaustive, cat3_in_image_1=True)
    results = [
        _det(1, 1, _BOX_A, 0.9),
        _det(1, 3, _BOX_B, 0.9),  # matches image 1's category-3 object
        _det(2, 3, _BOX_B, 0.5),
        _det(1, 3, [0, 60, 30, 30], 0.95),
    ]
    metrics = lvis.evaluate(dataset, results, "bbox")
    assert metrics["APr"] == pytest.approx(expected_apr)
    assert metrics["APf"] == pytest.approx(1.0)
    assert metrics["AP"] == pytest.approx((1.0 + expected_apr) / 2)
    assert metrics == pytest.approx(_reference_metrics(tmp_path, dataset, results, "bbox"))


@pytest.mark.parametrize("max_dets, expected_ap", [(300, 0.0), (301, 1.0)])
def test_cap_of_300_detections_per_image_across_categories(tmp_path, max_dets, expected_ap):
    # 300 detections of category 2 (not even evaluated on image 1) outscore the one correct
    # category-1 detection: with the cap of 300 per image it is cut, with 301 it is kept.
    dataset = _two_images()
    results = [_det(1, 2, [k % 90, k // 90 * 20, 5, 5], 0.99) for k in range(300)]
    results.append(_det(1, 1, _BOX_A, 0.5))
    metrics = lvis.evaluate(dataset, results, "bbox", max_dets=max_dets)
    assert metrics["APf"] == pytest.approx(expected_ap)  # category 1
    if max_dets == 300:
        assert lvis.evaluate(dataset, results, "bbox")["APf"] == 0.0  # the default is 300
    ref = _reference_metrics(tmp_path, dataset, results, "bbox", max_dets=max_dets)
    assert metrics == pytest.approx(ref)


def test_matching_takes_the_later_of_tied_objects(tmp_path):
    # The first detection overlaps both objects with the same IoU 90/110 and takes the later
    # one (the reference's `>=` scan), which leaves object A for the second detection
    # (IoU 70/130 with A, 50/150 with B): two true positives at IoU 0.5.
    dataset = _box_dataset({1: ([], [])}, [(1, 1, [10, 0, 10, 10]), (1, 1, [12, 0, 10, 10])], _FREQ)
    results = [_det(1, 1, [11, 0, 10, 10], 0.9), _det(1, 1, [7, 0, 10, 10], 0.8)]
    metrics = lvis.evaluate(dataset, results, "bbox")
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics == pytest.approx(_reference_metrics(tmp_path, dataset, results, "bbox"))


def test_matching_prefers_objects_inside_the_area_range(tmp_path):
    # Object B (area field 2000: medium) is ignored in the small range; the detection has IoU
    # 1 with B and 80/120 with the small object A. In the small range it takes A while the IoU
    # threshold is <= 0.65 (4 of 10 thresholds: precision 1), above that B (ignored: neither
    # true nor false positive, precision 0) -> APs = 0.4.
    dataset = _box_dataset({1: ([], [])}, [(1, 1, [10, 0, 10, 10]), (1, 1, [12, 0, 10, 10])], _FREQ)
    dataset["annotations"][1]["area"] = 2000.0
    results = [_det(1, 1, [12, 0, 10, 10], 0.9)]
    metrics = lvis.evaluate(dataset, results, "bbox")
    assert metrics["APs"] == pytest.approx(0.4)
    assert metrics == pytest.approx(_reference_metrics(tmp_path, dataset, results, "bbox"))


# ---------------------------------------------------------------------- random cases
def _rle(mask):
    rle = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def _random_box(rng, height, width):
    """xywh box of 3 to ~150 pixels a side (small, medium and large objects)."""
    w = float(rng.integers(3, min(width, 150)))
    h = float(rng.integers(3, min(height, 150)))
    return [float(rng.integers(0, width - w + 1)), float(rng.integers(0, height - h + 1)), w, h]


def _box_mask(box, height, width, rng, notch=True):
    """The box filled, with a random rectangle cut out (so mask IoU differs from box IoU)."""
    mask = np.zeros([height, width], np.uint8)
    x, y, w, h = (int(round(v)) for v in box)
    mask[y : y + h, x : x + w] = 1
    if notch and w > 2 and h > 2:
        cx, cy = x + int(rng.integers(0, w - 1)), y + int(rng.integers(0, h - 1))
        mask[cy : cy + int(rng.integers(1, h)), cx : cx + int(rng.integers(1, w))] = 0
    return mask


def _random_case(seed, num_images=4, num_categories=10):
    """Random LVIS v1 ground truth and detections (both bbox and segm results)."""
    rng = np.random.default_rng(seed)
    category_ids = sorted(rng.choice(np.arange(1, 40), num_categories, replace=False).tolist())
    frequencies = ["r", "c", "f"] + rng.choice(["r", "c", "f"], num_categories - 3).tolist()
    categories = [
        dict(id=c, name=f"c{c}", frequency=str(f), synonyms=[f"c{c}"])
        for c, f in zip(category_ids, rng.permutation(frequencies), strict=True)
    ]
    images, annotations, box_results, mask_results = [], [], [], []
    for image_id in rng.choice(np.arange(1, 1000), num_images, replace=False).tolist():
        height, width = (int(v) for v in rng.integers(80, 200, 2))
        cats = rng.permutation(category_ids)
        positive = cats[: rng.integers(1, 5)].tolist()
        negative = cats[5 : 5 + rng.integers(0, 4)].tolist()
        not_exhaustive = [c for c in positive if rng.random() < 0.3]
        images.append(
            dict(
                id=image_id,
                height=height,
                width=width,
                coco_url=f"http://images.cocodataset.org/val2017/{image_id:012d}.jpg",
                neg_category_ids=negative,
                not_exhaustive_category_ids=not_exhaustive,
            )
        )
        objects = [(c, _random_box(rng, height, width)) for c in positive]
        objects += [(int(rng.choice(positive)), _random_box(rng, height, width)) for _ in range(4)]
        for category_id, box in objects:
            mask = _box_mask(box, height, width, rng, notch=rng.random() < 0.5)
            if rng.random() < 0.5:  # a polygon (the rectangle), else an RLE of the notched mask
                x, y, w, h = box
                segmentation = [[x, y, x + w, y, x + w, y + h, x, y + h]]
                rle = mask_api.merge(mask_api.frPyObjects(segmentation, height, width))
            else:
                segmentation = rle = _rle(mask)
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=image_id,
                    category_id=int(category_id),
                    segmentation=segmentation,
                    area=float(mask_api.area(rle)),
                    bbox=[float(v) for v in mask_api.toBbox(rle)],
                )
            )
        # Detections: jittered objects (right or wrong category), random boxes of positive,
        # negative and unlabeled categories; scores on a coarse grid so that some tie.
        for _ in range(int(rng.integers(10, 40))):
            if rng.random() < 0.6:
                category_id, box = objects[rng.integers(len(objects))]
                if rng.random() < 0.2:
                    category_id = int(rng.choice(category_ids))
                jitter = rng.normal(0, 0.1, 4) * [box[2], box[3], box[2], box[3]]
                x, y = max(0.0, box[0] + jitter[0]), max(0.0, box[1] + jitter[1])
                w = min(max(1.0, box[2] + jitter[2]), width - x)
                h = min(max(1.0, box[3] + jitter[3]), height - y)
                box = [round(v, 1) for v in (x, y, w, h)]
            else:
                category_id, box = int(rng.choice(category_ids)), _random_box(rng, height, width)
            score = float(rng.integers(1, 21)) / 20
            common = dict(image_id=image_id, category_id=int(category_id), score=score)
            box_results.append(dict(common, bbox=box))
            mask = _box_mask(box, height, width, rng, notch=rng.random() < 0.5)
            mask_results.append(dict(common, segmentation=_rle(mask)))
    dataset = dict(images=images, annotations=annotations, categories=categories)
    return dataset, box_results, mask_results


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_random_cases_equal_reference(tmp_path, seed, iou_type):
    dataset, box_results, mask_results = _random_case(seed)
    results = box_results if iou_type == "bbox" else mask_results
    frozen = copy.deepcopy((dataset, results))
    metrics = lvis.evaluate(dataset, results, iou_type)
    assert (dataset, results) == frozen  # inputs are not modified
    reference = _reference_metrics(tmp_path, dataset, results, iou_type)
    assert set(metrics) == set(lvis.METRIC_NAMES) == set(reference)
    for name in lvis.METRIC_NAMES:
        assert metrics[name] == pytest.approx(reference[name], abs=1e-6), name
    assert 0 < metrics["AP"] < 1  # a case that exercises matching, not a trivial one


@pytest.mark.parametrize("seed", [5, 6])
def test_random_cases_equal_reference_with_small_cap_and_image_subset(tmp_path, seed):
    dataset, box_results, _ = _random_case(seed, num_images=5)
    image_ids = sorted(img["id"] for img in dataset["images"])[1:4]
    metrics = lvis.evaluate(dataset, box_results, "bbox", max_dets=8, image_ids=image_ids)
    reference = _reference_metrics(
        tmp_path, dataset, box_results, "bbox", max_dets=8, image_ids=image_ids
    )
    for name in lvis.METRIC_NAMES:
        assert metrics[name] == pytest.approx(reference[name], abs=1e-6), name
    assert metrics != lvis.evaluate(dataset, box_results, "bbox", image_ids=image_ids)


def test_missing_reference_fails_naming_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules[__name__], "_REFERENCE_DIR", str(tmp_path / "absent"))
    with pytest.raises(pytest.fail.Exception, match="pip install --no-deps --target"):
        with _reference_lvis():
            pass


# ------------------------------------------------------------------------ bad input
def test_bad_input_raises_clear_errors(tmp_path):
    dataset = _two_images()
    good = [_det(1, 1, _BOX_A, 0.9)]
    with pytest.raises(ValueError, match="iou_type"):
        lvis.evaluate(dataset, good, "keypoints")
    with pytest.raises(ValueError, match="image_id 7"):
        lvis.evaluate(dataset, [_det(7, 1, _BOX_A, 0.9)])
    with pytest.raises(ValueError, match="result 0 needs"):
        lvis.evaluate(dataset, [dict(image_id=1, category_id=1, score=0.9)])
    with pytest.raises(ValueError, match="bbox must be"):
        lvis.evaluate(dataset, [_det(1, 1, [1, 2, 3], 0.5) for _ in range(4)])
    with pytest.raises(ValueError, match="score nan"):
        lvis.evaluate(dataset, [_det(1, 1, _BOX_A, float("nan"))])
    no_neg = copy.deepcopy(dataset)
    del no_neg["images"][1]["neg_category_ids"]
    with pytest.raises(ValueError, match="image 2 of .* no 'neg_category_ids'"):
        lvis.evaluate(no_neg, good)
    bad_frequency = copy.deepcopy(dataset)
    bad_frequency["categories"][0]["frequency"] = "x"
    with pytest.raises(ValueError, match="category 1 .* frequency 'x'"):
        lvis.evaluate(bad_frequency, good)
    with pytest.raises(FileNotFoundError, match="absent.json"):
        lvis.evaluate(str(tmp_path / "absent.json"), good)
    segm, _, masks = _random_case(0, num_images=1)
    wrong_size = dict(masks[0], segmentation=_rle(np.ones([5, 5])))
    with pytest.raises(ValueError, match="RLE size"):
        lvis.evaluate(segm, [wrong_size], "segm")


def test_results_and_annotations_from_files(tmp_path):
    dataset, box_results, _ = _random_case(3)
    (tmp_path / "gt.json").write_text(json.dumps(dataset))
    (tmp_path / "dt.json").write_text(json.dumps(box_results))
    from_files = lvis.evaluate(str(tmp_path / "gt.json"), str(tmp_path / "dt.json"))
    assert from_files == lvis.evaluate(dataset, box_results)


# ------------------------------------------------------------- evaluator and task hook
def _predictions(dataset, box_results, mask_results, image):
    """One image's detections as the model's batched outputs (boxes yxyx, full-image masks)."""
    index = [i for i, r in enumerate(box_results) if r["image_id"] == image["id"]]
    boxes = np.array([box_results[i]["bbox"] for i in index], np.float64).reshape(-1, 4)
    masks = [mask_api.decode(mask_results[i]["segmentation"]) for i in index]
    return {
        "source_id": np.array([image["id"]]),
        "detection_boxes": np.stack(
            [boxes[:, 1], boxes[:, 0], boxes[:, 1] + boxes[:, 3], boxes[:, 0] + boxes[:, 2]], -1
        )[None],
        "detection_scores": np.array([[box_results[i]["score"] for i in index]]),
        "detection_classes": np.array([[box_results[i]["category_id"] for i in index]]),
        "num_detections": np.array([len(index)]),
        "detection_masks": np.stack(masks)[None],
        "image_info": np.zeros([1, 4, 2], np.float32),
    }


def test_evaluator_equals_evaluate_on_the_same_detections():
    dataset, box_results, mask_results = _random_case(1)
    evaluator = lvis.LvisEvaluator(groundtruth=dataset, include_mask=True)
    seen = dataset["images"][:3]
    for image in seen:
        predictions = _predictions(dataset, box_results, mask_results, image)
        del predictions["image_info"]
        evaluator.update(predictions)
    metrics = evaluator.result()
    ids = [image["id"] for image in seen]
    expected_box = lvis.evaluate(dataset, box_results, "bbox", image_ids=ids)
    expected_mask = lvis.evaluate(dataset, mask_results, "segm", image_ids=ids)
    assert metrics["num_images"] == 3
    for name in lvis.METRIC_NAMES:
        assert metrics[f"box_{name}"] == pytest.approx(expected_box[name], abs=1e-9), name
        assert metrics[f"mask_{name}"] == pytest.approx(expected_mask[name], abs=1e-9), name
    evaluator.reset()
    with pytest.raises(ValueError, match="before any update"):
        evaluator.result()


def test_evaluator_rejects_coco_annotations():
    dataset = _two_images()
    for image in dataset["images"]:
        del image["not_exhaustive_category_ids"]
    with pytest.raises(ValueError, match="not_exhaustive_category_ids"):
        lvis.LvisEvaluator(groundtruth=dataset, include_mask=False)


def test_maskrcnn_task_selects_the_lvis_evaluator(tmp_path):
    from tfcp.tasks.maskrcnn import MaskRCNNTask  # noqa: PLC0415 - heavy import

    dataset, box_results, mask_results = _random_case(2)
    path = tmp_path / "lvis_val.json"
    path.write_text(json.dumps(dataset))
    task = MaskRCNNTask(annotation_file=str(path), evaluator="lvis")
    task.evaluator_begin()
    for image in dataset["images"]:
        task.evaluator_update(_predictions(dataset, box_results, mask_results, image))
    metrics = task.evaluator_result()
    assert metrics["box_APr"] == pytest.approx(lvis.evaluate(dataset, box_results)["APr"])
    assert metrics["mask_APf"] == pytest.approx(lvis.evaluate(dataset, mask_results, "segm")["APf"])
    assert {"box_AP", "box_APc", "mask_AP", "mask_APr", "num_images"} <= set(metrics)
    # The default is the COCO evaluator (pycocotools needs `iscrowd`, which LVIS lacks).
    for ann in dataset["annotations"]:
        ann["iscrowd"] = 0
    path.write_text(json.dumps(dataset))
    coco_task = MaskRCNNTask(annotation_file=str(path))
    coco_task.evaluator_begin()
    coco_task.evaluator_update(
        _predictions(dataset, box_results, mask_results, dataset["images"][0])
    )
    assert "box_APr" not in coco_task.evaluator_result()
    with pytest.raises(ValueError, match="'coco' or 'lvis'"):
        MaskRCNNTask(evaluator="voc")

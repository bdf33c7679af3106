"""Tests for tfcp.data.synthetic.lvis: LVIS v1 layout, long tail, federated labels, conversion."""

from __future__ import annotations

import collections
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from pycocotools import mask as mask_utils

from tests.data.synthetic.coco_test import run_cli, tree_digest
from tfcp.data import schema
from tfcp.data.converters import coco as coco_converter
from tfcp.data.synthetic import coco as syn_coco
from tfcp.data.synthetic import lvis as syn_lvis
from tfcp.data.synthetic import scenes as syn_scenes

SMALL_TRAIN, SMALL_VAL = 45, 6
_URL = re.compile(r"^http://images\.cocodataset\.org/(train2017|val2017)/(\d{12})\.jpg$")


def _load(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def lvis(tmp_path_factory):
    """The default size (300 train, 50 val images at 128 px)."""
    root = str(tmp_path_factory.mktemp("lvis"))
    stats = {}
    paths = syn_lvis.write_lvis(root, seed=0, stats=stats)
    return root, paths, stats


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A small set plus, per image, the drawn styles and the rendered scene."""
    root = str(tmp_path_factory.mktemp("lvis_small"))
    renders = []

    def recording_generate_scene(*args, class_indices, **kwargs):
        scene = syn_scenes.generate_scene(*args, class_indices=class_indices, **kwargs)
        renders.append((list(class_indices), scene))
        return scene

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(syn_lvis, "generate_scene", recording_generate_scene)
        paths = syn_lvis.write_lvis(root, SMALL_TRAIN, SMALL_VAL, image_size=96, seed=5)
    return root, paths, renders


def test_json_has_every_lvis_v1_field_with_its_type(lvis):
    root, paths, _ = lvis
    assert paths["image_dir"] == root
    train, val = _load(paths["train_annotations"]), _load(paths["val_annotations"])
    assert paths["train_annotations"].endswith("annotations/lvis_v1_train.json")
    assert paths["val_annotations"].endswith("annotations/lvis_v1_val.json")
    assert train["categories"] == val["categories"]  # one list, counted on train
    folders = collections.Counter()
    for data in (train, val):
        assert set(data) == {"info", "licenses", "images", "annotations", "categories"}
        for image in data["images"]:
            assert set(image) == {
                "id", "height", "width", "license", "coco_url", "flickr_url", "date_captured",
                "neg_category_ids", "not_exhaustive_category_ids",
            }  # fmt: skip
            assert all(isinstance(image[k], int) for k in ("id", "height", "width", "license"))
            for key in ("neg_category_ids", "not_exhaustive_category_ids"):
                ids = image[key]
                assert all(isinstance(c, int) for c in ids) and ids == sorted(set(ids))
            folder, number = _URL.match(image["coco_url"]).groups()
            assert int(number) == image["id"]
            folders[folder] += data is val
            with Image.open(os.path.join(root, folder, f"{number}.jpg")) as im:
                assert im.format == "JPEG" and im.size == (image["width"], image["height"])
        for ann in data["annotations"]:
            assert set(ann) == {"id", "image_id", "category_id", "bbox", "area", "segmentation"}
            assert isinstance(ann["area"], float) and ann["area"] > 0
            assert len(ann["bbox"]) == 4 and all(isinstance(v, float) for v in ann["bbox"])
            assert isinstance(ann["segmentation"], list) and ann["segmentation"]
            for polygon in ann["segmentation"]:
                assert len(polygon) >= 6 and len(polygon) % 2 == 0
                assert all(isinstance(v, float) for v in polygon)
    assert folders["train2017"] > 0 and folders["val2017"] > 0  # LVIS val spans both
    ids = [im["id"] for im in train["images"] + val["images"]]
    assert len(set(ids)) == len(ids)
    assert len(os.listdir(paths["val_images"])) == folders["val2017"]
    assert len(os.listdir(paths["train_images"])) == len(train["images"]) + folders["train2017"]
    categories = train["categories"]
    assert [c["id"] for c in categories] == list(range(1, syn_lvis.MAX_CATEGORIES + 1))
    for c in categories:
        assert set(c) == {
            "id", "name", "synonyms", "def", "synset", "frequency", "image_count",
            "instance_count",
        }  # fmt: skip
        assert isinstance(c["name"], str) and c["synonyms"][0] == c["name"]
        assert all(isinstance(s, str) for s in c["synonyms"]) and isinstance(c["def"], str)
        assert re.fullmatch(r"[a-z]+\.n\.\d\d", c["synset"])
        assert c["frequency"] in ("r", "c", "f")
        assert isinstance(c["image_count"], int) and isinstance(c["instance_count"], int)
    assert len({c["name"] for c in categories}) == len({c["synset"] for c in categories}) == 40


def test_counts_and_frequencies_are_lvis_definitions_on_the_train_split(lvis):
    _, paths, stats = lvis
    train = _load(paths["train_annotations"])
    images, instances = collections.defaultdict(set), collections.Counter()
    for ann in train["annotations"]:
        images[ann["category_id"]].add(ann["image_id"])
        instances[ann["category_id"]] += 1
    groups = collections.Counter()
    for c in train["categories"]:
        n = len(images[c["id"]])
        assert c["image_count"] == n >= 1, c  # every category has training images
        assert c["instance_count"] == instances[c["id"]], c
        expected = "r" if n <= 10 else "c" if n <= 100 else "f"
        assert c["frequency"] == expected, c
        groups[expected] += 1
    assert all(groups[g] >= 3 for g in "rcf"), groups  # all three groups, at the default size
    assert {k: stats[f"categories_{k}"] for k in "rcf"} == dict(groups)
    got = syn_lvis.category_stats(paths["train_annotations"])
    assert got["num_images"] == len(train["images"]) == 300
    assert got["image_count"] == {c["id"]: c["image_count"] for c in train["categories"]}
    assert got["instance_count"] == {c["id"]: c["instance_count"] for c in train["categories"]}
    assert got["frequency"] == {c["id"]: c["frequency"] for c in train["categories"]}


def test_category_stats_thresholds_and_errors():
    counts = {1: 0, 2: 1, 3: 10, 4: 11, 5: 100, 6: 101}
    data = {"categories": [{"id": c} for c in counts], "images": [], "annotations": []}
    data["images"] = [{"id": i} for i in range(1, 102)]
    for cid, n in counts.items():
        for i in range(1, n + 1):  # two annotations in image 1: one image, two instances
            data["annotations"] += [{"id": len(data["annotations"]), "image_id": i,
                                     "category_id": cid}] * (2 if i == 1 else 1)  # fmt: skip
    got = syn_lvis.category_stats(data)
    assert got["num_images"] == 101
    assert got["image_count"] == counts
    assert got["instance_count"] == {c: n + (n > 0) for c, n in counts.items()}
    assert got["frequency"] == {1: "r", 2: "r", 3: "r", 4: "c", 5: "c", 6: "f"}
    data["annotations"].append({"id": 999, "image_id": 1, "category_id": 7})
    with pytest.raises(ValueError, match="annotation id 999: category 7"):
        syn_lvis.category_stats(data)
    with pytest.raises(ValueError, match="image_count"):
        syn_lvis.frequency_group(-1)


def test_negatives_absent_and_not_exhaustive_positive_with_missing_instances(recorded):
    _, paths, renders = recorded
    images = []
    for split in ("train", "val"):
        data = _load(paths[f"{split}_annotations"])
        per_image = collections.defaultdict(collections.Counter)
        for ann in data["annotations"]:
            per_image[ann["image_id"]][ann["category_id"]] += 1
        images += [(im, per_image[im["id"]]) for im in data["images"]]
    assert len(renders) == len(images) == SMALL_TRAIN + SMALL_VAL  # no re-render at this seed
    num_neg = num_ne = num_missing = 0
    for (image, annotated), (styles, scene) in zip(images, renders, strict=True):
        drawn = {k + 1 for k in styles}
        visible = collections.Counter(int(k) + 1 for k in scene.class_indices)
        neg, ne = set(image["neg_category_ids"]), set(image["not_exhaustive_category_ids"])
        assert not neg & drawn and not neg & set(annotated)  # verified absent
        assert ne <= set(annotated)  # not exhaustive: a subset of the positives
        for cid, n in visible.items():
            missing = n - annotated[cid]
            assert missing == (1 if cid in ne and n >= 2 else 0), (image["id"], cid)
            num_missing += missing
        num_neg, num_ne = num_neg + len(neg), num_ne + len(ne)
    assert num_neg > 0 and num_ne > 0 and num_missing > 0


def test_polygons_decode_to_area_bbox_and_the_rendered_masks(recorded):
    _, paths, renders = recorded
    anns = []
    for split in ("train", "val"):
        data = _load(paths[f"{split}_annotations"])
        sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
        anns += [(a, *sizes[a["image_id"]]) for a in data["annotations"]]
    masks = {}
    image_ids = [
        im["id"] for s in ("train", "val") for im in _load(paths[f"{s}_annotations"])["images"]
    ]
    for image_id, (_, scene) in zip(image_ids, renders, strict=True):
        for j, mask in enumerate(scene.masks):
            masks[image_id * 1000 + j + 1] = mask
    for ann, height, width in anns:
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], height, width))
        decoded = mask_utils.decode(rle)
        assert ann["area"] == float(decoded.sum()) > 0, ann["id"]
        assert ann["bbox"] == [float(v) for v in mask_utils.toBbox(rle)], ann["id"]
        mask = masks[ann["id"]]
        iou = (decoded & mask).sum() / (decoded | mask).sum()
        assert iou >= 0.95, (ann["id"], iou)


def test_masks_with_holes_become_hole_free_polygons():
    ring = np.zeros((24, 24), np.uint8)
    ring[2:20, 3:21] = 1
    ring[7:12, 8:14] = 0
    ring[14:17, 6:9] = 0  # two holes
    assert syn_coco.mask_polygons(ring) is None
    polygons = syn_lvis.lvis_polygons(ring)
    assert len(polygons) >= 2
    decoded = mask_utils.decode(syn_coco.segmentation_rle(polygons, 24, 24))
    assert (decoded & ring).sum() / (decoded | ring).sum() >= 0.95
    assert decoded[7:12, 8:14].sum() <= 3 and decoded[14:17, 6:9].sum() <= 3  # holes stay open
    dot = np.zeros((8, 8), np.uint8)
    dot[3, 4] = 1  # one pixel: simplification fails, the exact trace covers it
    decoded = mask_utils.decode(syn_coco.segmentation_rle(syn_lvis.lvis_polygons(dot), 8, 8))
    np.testing.assert_array_equal(decoded, dot)


def test_byte_identical_for_a_seed_and_images_independent_of_the_count(lvis, tmp_path):
    _, paths, _ = lvis
    a, b, c = (str(tmp_path / n) for n in "abc")
    syn_lvis.write_lvis(a, SMALL_TRAIN, SMALL_VAL, image_size=64, seed=7)
    syn_lvis.write_lvis(b, SMALL_TRAIN, SMALL_VAL, image_size=64, seed=7)
    syn_lvis.write_lvis(c, SMALL_TRAIN, SMALL_VAL, image_size=64, seed=8)
    ref = tree_digest(a)
    assert tree_digest(b) == ref and len(ref) == SMALL_TRAIN + SMALL_VAL + 2
    other = tree_digest(c)
    assert other.keys() == ref.keys() and all(other[k] != ref[k] for k in ref)
    d = str(tmp_path / "d")  # the first 45 train images of the default set, same seed
    syn_lvis.write_lvis(d, SMALL_TRAIN, 0, seed=0)
    full, part = tree_digest(paths["image_dir"]), tree_digest(d)
    jpgs = [k for k in part if k.endswith(".jpg")]
    assert len(jpgs) == SMALL_TRAIN and all(part[k] == full[k] for k in jpgs)


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="num_train"):
        syn_lvis.write_lvis(str(tmp_path), 0, 1)
    with pytest.raises(ValueError, match="num_categories"):
        syn_lvis.write_lvis(str(tmp_path), 1, 1, num_categories=41)
    with pytest.raises(ValueError, match="image_size"):
        syn_lvis.write_lvis(str(tmp_path), 1, 1, image_size=16)
    with pytest.raises(ValueError, match="seed"):
        syn_lvis.write_lvis(str(tmp_path), 1, 1, seed=-1)


def _records(pattern):
    """{source_id: (class labels, number of masks)} of every record matching `pattern`."""
    out = {}
    for raw in tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(pattern))):
        feature = tf.train.Example.FromString(raw.numpy()).features.feature
        source_id = feature[schema.IMAGE_SOURCE_ID].bytes_list.value[0].decode()
        labels = list(feature[schema.CLASS_LABEL].int64_list.value)
        out[source_id] = (labels, len(feature[schema.MASK].bytes_list.value))
    return out


@pytest.mark.parametrize("split", ["train", "val"])
def test_converts_with_create_coco_tfrecord(lvis, tmp_path, split):
    root, paths, _ = lvis
    image_dir = paths["train_images"] if split == "train" else root  # val spans both folders
    prefix = str(tmp_path / split)
    summary = coco_converter.convert_coco(
        image_dir, paths[f"{split}_annotations"], prefix, 2, num_workers=0
    )
    data = _load(paths[f"{split}_annotations"])
    assert summary.images_written == summary.images_total == len(data["images"])
    assert summary.objects_written == len(data["annotations"])
    assert not summary.objects_skipped and not summary.objects_modified
    expected = collections.defaultdict(list)
    for ann in data["annotations"]:
        expected[str(ann["image_id"])].append(ann["category_id"])
    records = _records(f"{prefix}-*.tfrecord")
    assert set(records) == {str(im["id"]) for im in data["images"]}
    for source_id, (labels, num_masks) in records.items():
        assert labels == expected[source_id] and num_masks == len(labels), source_id
    info = _load(f"{prefix}_lvis_info.json")
    assert info["category_frequency"] == {str(c["id"]): c["frequency"] for c in data["categories"]}
    assert (
        info["images"][str(data["images"][0]["id"])]["neg_category_ids"]
        == data["images"][0]["neg_category_ids"]
    )


def test_cli_writes_lvis(tmp_path):
    out = run_cli(
        f"--output_dir={tmp_path}", "--format=lvis", "--num_train=40", "--num_val=4",
        "--image_size=64", "--seed=2",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["format"] == "lvis" and summary["stats"]["images"] == 44
    assert len(_load(summary["paths"]["train_annotations"])["images"]) == 40
    assert sum(summary["stats"][f"categories_{g}"] for g in "rcf") == 40
    assert summary["stats"]["categories_f"] == 0  # > 100 training images needed
    out = run_cli(f"--output_dir={tmp_path}", "--format=lvis", "--mean_instances=3")
    assert out.returncode != 0 and "mean_instances" in out.stderr

"""Tests for tfcp.data.synthetic.coco (COCO-format writer, segmentation encoders) and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from tfcp.data.synthetic import coco as syn_coco
from tfcp.data.synthetic import scenes as syn_scenes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TRAIN, VAL = 6, 3


def tree_digest(root):
    """{relative path: sha256} of every file under root (shared by the tests in this folder)."""
    out = {}
    for d, _, files in os.walk(root):
        for name in files:
            path = os.path.join(d, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("coco"))
    stats = {}
    paths = syn_coco.write_coco(root, TRAIN, VAL, image_size=128, seed=3, stats=stats)
    return root, paths, stats


def _load(paths, split):
    return COCO(paths[f"{split}_annotations"])


def test_layout_and_returned_paths(coco):
    root, paths, stats = coco
    assert paths == {
        "train_images": os.path.join(root, "train2017"),
        "train_annotations": os.path.join(root, "annotations", "instances_train2017.json"),
        "val_images": os.path.join(root, "val2017"),
        "val_annotations": os.path.join(root, "annotations", "instances_val2017.json"),
    }
    assert len(os.listdir(paths["train_images"])) == TRAIN
    assert len(os.listdir(paths["val_images"])) == VAL
    assert stats["images"] == TRAIN + VAL
    assert stats["instances"] == sum(
        len(_load(paths, s).dataset["annotations"]) for s in ("train", "val")
    )


def test_json_follows_coco_schema(coco):
    _, paths, _ = coco
    for split in ("train", "val"):
        with open(paths[f"{split}_annotations"]) as f:
            data = json.load(f)
        assert set(data) == {"info", "licenses", "images", "annotations", "categories"}
        for image in data["images"]:
            assert {"id", "file_name", "height", "width"} <= set(image)
            with Image.open(os.path.join(paths[f"{split}_images"], image["file_name"])) as im:
                assert im.format == "JPEG" and im.mode == "RGB"
                assert im.size == (image["width"], image["height"])
        for ann in data["annotations"]:
            assert set(ann) == {
                "id",
                "image_id",
                "category_id",
                "segmentation",
                "area",
                "bbox",
                "iscrowd",
            }
            assert isinstance(ann["area"], float) and ann["iscrowd"] in (0, 1)
            assert len(ann["bbox"]) == 4 and all(isinstance(v, float) for v in ann["bbox"])
        ids = [c["id"] for c in data["categories"]]
        assert ids == [c["id"] for c in syn_coco.COCO_CATEGORIES]
        assert ids != list(range(1, len(ids) + 1))  # non-contiguous, like COCO
        assert {c["name"] for c in data["categories"]} >= {"person", "car", "dog"}
        assert all(set(c) == {"id", "name", "supercategory"} for c in data["categories"])


def test_pycocotools_masks_areas_and_boxes_agree(coco):
    _, paths, _ = coco
    for split in ("train", "val"):
        ds = _load(paths, split)
        for ann in ds.dataset["annotations"]:
            image = ds.imgs[ann["image_id"]]
            mask = ds.annToMask(ann)
            assert mask.shape == (image["height"], image["width"])
            assert mask.sum() > 0, ann["id"]
            assert ann["area"] == float(mask.sum()), ann["id"]
            rle = ds.annToRLE(ann)
            assert ann["area"] == float(mask_utils.area(rle))
            assert ann["bbox"] == [float(v) for v in mask_utils.toBbox(rle)]
            x, y, w, h = ann["bbox"]
            assert x >= 0 and y >= 0 and x + w <= image["width"] and y + h <= image["height"]


def test_all_coco_segmentation_kinds_crowds_and_empty_images_present(coco):
    _, paths, stats = coco
    for split in ("train", "val"):
        ds = _load(paths, split)
        anns = ds.dataset["annotations"]
        kinds = {
            "polygon"
            if isinstance(a["segmentation"], list)
            else "rle"
            if isinstance(a["segmentation"]["counts"], list)
            else "rle_compressed"
            for a in anns
        }
        assert kinds == {"polygon", "rle", "rle_compressed"}, split
        crowds = [a for a in anns if a["iscrowd"]]
        assert crowds, split
        assert all(isinstance(a["segmentation"], dict) for a in crowds)  # RLE, as COCO
        assert all(len(p) >= 6 and len(p) % 2 == 0 for a in anns for p in a["segmentation"]
                   if isinstance(a["segmentation"], list))  # fmt: skip
        empty = [i for i in ds.getImgIds() if not ds.getAnnIds(imgIds=[i])]
        assert empty, split
    assert stats["empty_images"] >= 2 and stats["crowd_instances"] >= 2


def test_ids_unique_across_splits(coco):
    _, paths, _ = coco
    train, val = _load(paths, "train"), _load(paths, "val")
    assert not set(train.imgs) & set(val.imgs)
    assert not set(train.anns) & set(val.anns)
    names = [im["file_name"] for im in train.dataset["images"] + val.dataset["images"]]
    assert len(set(names)) == len(names)


def test_write_coco_is_deterministic_and_order_independent(coco, tmp_path):
    root, _, _ = coco
    syn_coco.write_coco(str(tmp_path / "same"), TRAIN, VAL, image_size=128, seed=3)
    assert tree_digest(root) == tree_digest(str(tmp_path / "same"))
    syn_coco.write_coco(str(tmp_path / "other"), TRAIN, VAL, image_size=128, seed=4)
    other = tree_digest(str(tmp_path / "other"))
    ref = tree_digest(root)
    assert other.keys() == ref.keys()
    assert all(other[k] != ref[k] for k in ref if k.endswith(".jpg"))
    # Image i does not depend on how many images are generated.
    syn_coco.write_coco(str(tmp_path / "fewer"), 2, 0, image_size=128, seed=3)
    fewer = tree_digest(str(tmp_path / "fewer"))
    jpgs = [k for k in fewer if k.endswith(".jpg")]
    assert len(jpgs) == 2 and all(fewer[k] == ref[k] for k in jpgs)


def test_benchmark_knobs_fixed_size_and_instance_bounds(tmp_path):
    paths = syn_coco.write_coco(
        str(tmp_path), 4, 0, seed=1, image_hw=(60, 80), mean_instances=12.0, max_instances=5
    )
    ds = COCO(paths["train_annotations"])
    assert {(im["height"], im["width"]) for im in ds.dataset["images"]} == {(60, 80)}
    for image_id in ds.getImgIds():
        anns = ds.loadAnns(ds.getAnnIds(imgIds=[image_id]))
        assert sum(1 for a in anns if not a["iscrowd"]) <= 5
    with Image.open(
        os.path.join(paths["train_images"], ds.dataset["images"][0]["file_name"])
    ) as im:
        assert im.size == (80, 60)


def test_uncompressed_rle_round_trip_including_leading_foreground():
    mask = np.zeros((5, 4), np.uint8)
    mask[0, 0] = 1  # first pixel set: counts start with a zero-length background run
    mask[2:4, 1:3] = 1
    rle = syn_coco.uncompressed_rle(mask)
    assert rle["size"] == [5, 4] and rle["counts"][0] == 0
    assert sum(rle["counts"]) == 20
    decoded = mask_utils.decode(mask_utils.frPyObjects(rle, 5, 4))
    np.testing.assert_array_equal(decoded, mask)
    comp = syn_coco.compressed_rle(mask)
    assert isinstance(comp["counts"], str)
    rle2 = syn_coco.segmentation_rle(comp, 5, 4)
    np.testing.assert_array_equal(mask_utils.decode(rle2), mask)


def test_polygons_trace_pixel_edges_and_fall_back_to_rle_for_holes():
    mask = np.zeros((20, 30), np.uint8)
    mask[3:9, 4:14] = 1  # rectangle: the traced polygon covers exactly these pixels
    mask[9:15, 4:8] = 1  # ... plus a leg: an L shape
    polygons = syn_coco.mask_polygons(mask)
    assert polygons is not None and len(polygons) == 1
    rle = syn_coco.segmentation_rle(polygons, 20, 30)
    np.testing.assert_array_equal(mask_utils.decode(rle), mask)
    ring = np.zeros((20, 20), np.uint8)
    ring[2:18, 2:18] = 1
    ring[6:14, 6:14] = 0
    assert syn_coco.mask_polygons(ring) is None
    seg, kind = syn_coco.encode_segmentation(ring, "polygon")
    assert kind == "rle" and isinstance(seg["counts"], list)
    np.testing.assert_array_equal(mask_utils.decode(syn_coco.segmentation_rle(seg, 20, 20)), ring)
    with pytest.raises(ValueError, match="unknown segmentation kind"):
        syn_coco.encode_segmentation(ring, "bitmap")


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="num_train"):
        syn_coco.write_coco(str(tmp_path), -1, 1)
    with pytest.raises(ValueError, match="image_size"):
        syn_coco.write_coco(str(tmp_path), 1, 1, image_size=16)
    with pytest.raises(ValueError, match="seed"):
        syn_coco.write_coco(str(tmp_path), 1, 1, seed=-2)


def run_cli(*args):
    """Runs `python -m tfcp.data.synthetic *args` from the repo root (shared by the tests)."""
    return subprocess.run(
        [sys.executable, "-m", "tfcp.data.synthetic", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_writes_coco_and_voc(tmp_path):
    out = run_cli(
        f"--output_dir={tmp_path / 'c'}", "--format=coco", "--num_train=2", "--num_val=2",
        "--image_size=64", "--seed=5",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["format"] == "coco" and summary["stats"]["images"] == 4
    assert os.path.isfile(summary["paths"]["val_annotations"])
    assert len(os.listdir(tmp_path / "c" / "train2017")) == 2
    out = run_cli(
        f"--output_dir={tmp_path / 'v'}", "--format=voc", "--num_train=1", "--num_val=1",
        "--image_size=64",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["stats"]["images"] == 3 + 2  # VOC2007 train/val/test + VOC2012 train/val
    assert os.path.isdir(tmp_path / "v" / "VOCdevkit" / "VOC2012" / "JPEGImages")


def test_cli_rejects_bad_flags(tmp_path):
    out = run_cli(f"--output_dir={tmp_path}", "--format=yolo")
    assert out.returncode != 0 and "format" in out.stderr
    out = run_cli("--format=coco")
    assert out.returncode != 0 and "output_dir" in out.stderr


def test_annotations_are_the_rendered_visible_masks(tmp_path, monkeypatch):
    scenes = []

    def recording_generate_scene(*args, **kwargs):
        scenes.append(syn_scenes.generate_scene(*args, **kwargs))
        return scenes[-1]

    monkeypatch.setattr(syn_coco, "generate_scene", recording_generate_scene)
    paths = syn_coco.write_coco(str(tmp_path), 4, 0, image_size=96, seed=2)
    ds = COCO(paths["train_annotations"])
    assert len(scenes) == len(ds.dataset["images"]) == 4
    for scene, image in zip(scenes, ds.dataset["images"], strict=True):
        with Image.open(os.path.join(paths["train_images"], image["file_name"])) as im:
            decoded = np.asarray(im, np.float32)
        assert np.abs(decoded - scene.image).mean() < 8.0  # the JPEG is this scene
        anns = ds.loadAnns(ds.getAnnIds(imgIds=[image["id"]]))
        assert len(anns) == len(scene.masks)
        for ann, mask, cls in zip(anns, scene.masks, scene.class_indices, strict=True):
            assert ann["category_id"] == syn_coco.COCO_CATEGORIES[cls]["id"]
            got = ds.annToMask(ann)
            if isinstance(ann["segmentation"], dict):
                np.testing.assert_array_equal(got, mask)  # RLE is exact
            else:
                iou = (got & mask).sum() / (got | mask).sum()
                assert iou >= 0.95, (ann["id"], iou)

"""Tests for tfcp.data.synthetic.voc: the PASCAL VOC devkit writer."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from tests.data.synthetic.coco_test import tree_digest
from tfcp.data.synthetic import scenes as syn_scenes
from tfcp.data.synthetic import voc as syn_voc
from tfcp.data.synthetic.voc import VOC_CLASSES

TRAIN, VAL, TEST = 5, 3, 2
SPLITS = {2007: ("train", "val", "test", "trainval"), 2012: ("train", "val", "trainval")}


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("voc"))
    stats = {}
    paths = syn_voc.write_voc(root, TRAIN, VAL, image_size=128, seed=1, num_test=TEST, stats=stats)
    return paths, stats


def _lines(path):
    with open(path) as f:
        return f.read().splitlines()


def _parse(year_dir, stem):
    root = ET.parse(os.path.join(year_dir, "Annotations", f"{stem}.xml")).getroot()
    objects = []
    for obj in root.findall("object"):
        box = obj.find("bndbox")
        objects.append(
            {
                "name": obj.findtext("name"),
                "pose": obj.findtext("pose"),
                "truncated": obj.findtext("truncated"),
                "difficult": obj.findtext("difficult"),
                "bbox": [int(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")],
            }
        )
    return root, objects


def _all_stems(year_dir, year):
    return sorted(
        {s for split in SPLITS[year] for s in _lines(_split_file(year_dir, "Main", split))}
    )


def _split_file(year_dir, kind, split):
    return os.path.join(year_dir, "ImageSets", kind, f"{split}.txt")


def test_devkit_layout_and_split_lists(voc):
    paths, stats = voc
    assert set(paths) == {"voc_root", "VOC2007", "VOC2012"}
    for year, splits in SPLITS.items():
        year_dir = paths[f"VOC{year}"]
        assert year_dir == os.path.join(paths["voc_root"], f"VOC{year}")
        main = {s: _lines(_split_file(year_dir, "Main", s)) for s in splits}
        assert len(main["train"]) == TRAIN and len(main["val"]) == VAL
        assert not set(main["train"]) & set(main["val"])
        assert main["trainval"] == sorted(main["train"] + main["val"])
        if year == 2007:
            assert len(main["test"]) == TEST
            assert not set(main["test"]) & set(main["trainval"])
            assert all(re.fullmatch(r"\d{6}", s) for s in main["test"])
        else:
            assert not os.path.exists(_split_file(year_dir, "Main", "test"))
            assert all(re.fullmatch(r"2012_\d{6}", s) for s in main["trainval"])
        for split in splits:
            seg = _lines(_split_file(year_dir, "Segmentation", split))
            assert seg and set(seg) <= set(main[split])
            for name in VOC_CLASSES:
                lines = _lines(os.path.join(year_dir, "ImageSets", "Main", f"{name}_{split}.txt"))
                assert [line.split()[0] for line in lines] == main[split]
                assert all(re.fullmatch(r"\S+ ( 1|-1| 0)", line) for line in lines)
        for stem in _all_stems(year_dir, year):
            assert os.path.isfile(os.path.join(year_dir, "JPEGImages", f"{stem}.jpg"))
    assert stats["images"] == 2 * (TRAIN + VAL) + TEST


def test_annotation_xml_fields_and_one_based_boxes(voc):
    paths, stats = voc
    poses = set()
    for year in SPLITS:
        year_dir = paths[f"VOC{year}"]
        segmented = set(_lines(_split_file(year_dir, "Segmentation", "trainval")))
        if year == 2007:
            segmented |= set(_lines(_split_file(year_dir, "Segmentation", "test")))
        for stem in _all_stems(year_dir, year):
            root, objects = _parse(year_dir, stem)
            assert root.tag == "annotation"
            assert root.findtext("folder") == f"VOC{year}"
            assert root.findtext("filename") == f"{stem}.jpg"
            assert root.findtext("source/database") == f"The VOC{year} Database"
            assert root.findtext("source/annotation") == f"PASCAL VOC{year}"
            width, height = int(root.findtext("size/width")), int(root.findtext("size/height"))
            assert root.findtext("size/depth") == "3"
            with Image.open(os.path.join(year_dir, "JPEGImages", f"{stem}.jpg")) as im:
                assert im.size == (width, height) and im.mode == "RGB"
            assert root.findtext("segmented") == ("1" if stem in segmented else "0")
            assert objects, stem  # every VOC image has objects
            for obj in objects:
                assert obj["name"] in VOC_CLASSES
                assert obj["truncated"] in ("0", "1") and obj["difficult"] in ("0", "1")
                poses.add(obj["pose"])
                xmin, ymin, xmax, ymax = obj["bbox"]
                assert 1 <= xmin <= xmax <= width and 1 <= ymin <= ymax <= height
    assert poses <= {"Unspecified", "Left", "Right", "Frontal", "Rear"} and len(poses) > 1
    assert stats["difficult"] > 0 and stats["truncated"] > 0
    assert stats["difficult"] < stats["instances"] and stats["truncated"] < stats["instances"]


def test_per_class_labels_match_annotations(voc):
    paths, _ = voc
    year_dir = paths["VOC2007"]
    for split in SPLITS[2007]:
        for name in ("person", "dog", "car", "aeroplane"):
            path = os.path.join(year_dir, "ImageSets", "Main", f"{name}_{split}.txt")
            for line in _lines(path):
                stem, label = line.split()
                _, objects = _parse(year_dir, stem)
                mine = [o for o in objects if o["name"] == name]
                expected = -1 if not mine else 1 if any(o["difficult"] == "0" for o in mine) else 0
                assert int(label) == expected, (name, split, stem)


def test_segmentation_pngs_match_annotations(voc):
    paths, stats = voc
    cmap = syn_voc.voc_colormap().ravel().tolist()
    checked = 0
    for year in SPLITS:
        year_dir = paths[f"VOC{year}"]
        for stem in _lines(_split_file(year_dir, "Segmentation", "trainval")):
            _, objects = _parse(year_dir, stem)
            with Image.open(os.path.join(year_dir, "SegmentationClass", f"{stem}.png")) as im:
                assert im.mode == "P" and im.getpalette()[: len(cmap)] == cmap
                cls = np.asarray(im)
            with Image.open(os.path.join(year_dir, "SegmentationObject", f"{stem}.png")) as im:
                assert im.mode == "P"
                obj = np.asarray(im)
            assert (cls == 255).any() and np.array_equal(cls == 255, obj == 255)
            assert np.array_equal(cls == 0, obj == 0)
            names = {VOC_CLASSES[i - 1] for i in np.unique(cls) if i not in (0, 255)}
            assert names <= {o["name"] for o in objects}
            for i, o in enumerate(objects, start=1):
                ys, xs = np.nonzero(obj == i)
                if ys.size == 0:  # a thin object can be all void border
                    continue
                assert (cls[ys, xs] == VOC_CLASSES.index(o["name"]) + 1).all()
                xmin, ymin, xmax, ymax = o["bbox"]
                assert xs.min() + 1 >= xmin and xs.max() + 1 <= xmax
                assert ys.min() + 1 >= ymin and ys.max() + 1 <= ymax
            present = {int(i) for i in np.unique(obj)} - {0, 255}
            assert present <= set(range(1, len(objects) + 1))
            assert len(present) >= len(objects) - 1
            checked += 1
    assert checked >= 2 and stats["segmented_images"] >= checked


def test_void_border_hand_checked():
    labels = np.zeros((8, 8), np.uint8)
    labels[2:6, 2:6] = 3
    expected = np.zeros((8, 8), bool)
    expected[1:7, 1:7] = True
    expected[3:5, 3:5] = False  # interior farther than 1 px from any label change
    np.testing.assert_array_equal(syn_voc.void_border(labels, 1), expected)
    assert not syn_voc.void_border(np.full((4, 4), 7, np.uint8), 1).any()


def test_voc_box_and_colormap():
    mask = np.zeros((6, 7), np.uint8)
    mask[2, 3] = 1
    assert syn_voc.voc_box(mask) == (4, 3, 4, 3)
    mask[4, 6] = 1
    assert syn_voc.voc_box(mask) == (4, 3, 7, 5)
    with pytest.raises(ValueError, match="empty"):
        syn_voc.voc_box(np.zeros((3, 3), np.uint8))
    cmap = syn_voc.voc_colormap()
    assert cmap.shape == (256, 3) and cmap.dtype == np.uint8
    assert cmap[1].tolist() == [128, 0, 0]  # aeroplane
    assert cmap[15].tolist() == [192, 128, 128]  # person
    assert cmap[255].tolist() == [224, 224, 192]  # void


def test_write_voc_is_deterministic(tmp_path):
    kwargs = dict(image_size=64, years=(2012,), segmented_fraction=1.0)
    syn_voc.write_voc(str(tmp_path / "a"), 2, 1, seed=9, **kwargs)
    syn_voc.write_voc(str(tmp_path / "b"), 2, 1, seed=9, **kwargs)
    syn_voc.write_voc(str(tmp_path / "c"), 2, 1, seed=10, **kwargs)
    a, b, c = (tree_digest(str(tmp_path / k)) for k in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.endswith((".jpg", ".png")))
    assert sum(k.endswith(".png") for k in a) == 2 * 3  # class + object PNG per image


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="max_instances"):
        syn_voc.write_voc(str(tmp_path), 1, 1, max_instances=300)
    with pytest.raises(ValueError, match="image counts"):
        syn_voc.write_voc(str(tmp_path), 1, -1)
    with pytest.raises(ValueError, match="image_size"):
        syn_voc.write_voc(str(tmp_path), 1, 1, image_size=20)


def test_files_are_the_rendered_scenes(tmp_path, monkeypatch):
    scenes = []

    def recording_generate_scene(*args, **kwargs):
        scenes.append(syn_scenes.generate_scene(*args, **kwargs))
        return scenes[-1]

    monkeypatch.setattr(syn_voc, "generate_scene", recording_generate_scene)
    paths = syn_voc.write_voc(
        str(tmp_path), 2, 1, image_size=96, years=(2012,), segmented_fraction=1.0
    )
    year_dir = paths["VOC2012"]
    assert len(scenes) == 3  # no scene was empty, so none was re-rendered
    for k, scene in enumerate(scenes):
        stem = f"2012_{k + 1:06d}"
        _, objects = _parse(year_dir, stem)
        assert [o["name"] for o in objects] == [VOC_CLASSES[c] for c in scene.class_indices]
        assert [tuple(o["bbox"]) for o in objects] == [syn_voc.voc_box(m) for m in scene.masks]
        with Image.open(os.path.join(year_dir, "SegmentationObject", f"{stem}.png")) as im:
            obj = np.asarray(im)
        expected = np.zeros_like(obj)
        for i, mask in enumerate(scene.masks, start=1):
            expected[mask > 0] = i
        keep = obj != 255
        np.testing.assert_array_equal(obj[keep], expected[keep])
        assert keep.mean() > 0.5

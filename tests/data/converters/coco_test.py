"""Tests for tfcp.data.converters.coco, tfcp.data.converters.tfrecord_io and the COCO CLI."""

from __future__ import annotations

import glob
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from official.vision.dataloaders import tf_example_decoder
from PIL import Image
from pycocotools import mask as mask_utils

from tfcp.data import create_coco_tfrecord, decoder, schema, validation
from tfcp.data.converters import coco, tfrecord_io
from tfcp.data.converters.tfrecord_io import ConversionError

H, W = 48, 64
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 7, "name": "train"}]


def _write_image(path, height, width, fmt="JPEG", seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, [height, width, 3], dtype=np.uint8)).save(path, fmt)


def _uncompressed_rle(mask):
    """COCO uncompressed RLE: column-major run lengths, starting with a run of zeros."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def _masks():
    """Expected masks of the 3 objects of image 1 (hand-checkable rectangles and an L)."""
    polygon = np.zeros([H, W], np.uint8)
    polygon[10:30, 5:25] = 1  # polygon (5,10)-(25,10)-(25,30)-(5,30) covers [y0:y1, x0:x1]
    uncompressed = np.zeros([H, W], np.uint8)
    uncompressed[2:6, 40:60] = 1
    uncompressed[6:20, 40:44] = 1
    crowd = np.zeros([H, W], np.uint8)
    crowd[30:46, 30:62] = 1
    return polygon, uncompressed, crowd


def _dataset(root):
    """A COCO JSON with a JPEG (3 objects: polygon, uncompressed RLE, compressed crowd RLE)
    and a PNG without annotations."""
    _write_image(os.path.join(root, "images", "a.jpg"), H, W, "JPEG", seed=1)
    _write_image(os.path.join(root, "images", "sub", "b.png"), 32, 40, "PNG", seed=2)
    _, uncompressed, crowd = _masks()
    compressed = mask_utils.encode(np.asfortranarray(crowd))
    compressed["counts"] = compressed["counts"].decode("ascii")
    data = {
        "images": [
            {"id": 11, "file_name": "a.jpg", "height": H, "width": W},
            {"id": 12, "file_name": "sub/b.png", "height": 32, "width": 40},
        ],
        "categories": CATEGORIES,
        "annotations": [
            {
                "id": 101,
                "image_id": 11,
                "category_id": 1,
                "bbox": [5, 10, 20, 20],
                "area": 400.0,
                "iscrowd": 0,
                "segmentation": [[5, 10, 25, 10, 25, 30, 5, 30]],
            },
            {
                "id": 102,
                "image_id": 11,
                "category_id": 7,
                "bbox": [40, 2, 20, 18],
                "area": 136.0,
                "iscrowd": 0,
                "segmentation": _uncompressed_rle(uncompressed),
            },
            {
                "id": 103,
                "image_id": 11,
                "category_id": 3,
                "bbox": [30, 30, 32, 16],
                "area": 512.0,
                "iscrowd": 1,
                "segmentation": compressed,
            },
        ],
    }
    return data


def _write(root, data, name="instances.json"):
    path = os.path.join(root, name)
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def _records(prefix):
    paths = sorted(glob.glob(prefix + "-*.tfrecord"))
    return [r.numpy() for r in tf.data.TFRecordDataset(paths)]


def _convert(root, data, **kwargs):
    kwargs.setdefault("num_workers", 0)
    kwargs.setdefault("progress_stream", io.StringIO())
    prefix = os.path.join(root, "out", "train")
    summary = coco.convert_coco(
        os.path.join(root, "images"), _write(root, data), prefix, 2, **kwargs
    )
    return prefix, summary


def test_round_trip_polygon_rle_crowd_and_empty_image(tmp_path):
    root = str(tmp_path)
    prefix, summary = _convert(root, _dataset(root))
    assert sorted(os.path.basename(p) for p in glob.glob(prefix + "-*")) == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
    ]
    assert summary.images_written == 2 and summary.objects_written == 3
    assert not summary.objects_skipped and not summary.images_skipped
    with open(prefix + "_label_map.json") as f:
        assert json.load(f) == {"1": "person", "3": "car", "7": "train"}
    with open(prefix + "_summary.json") as f:
        assert json.load(f)["objects_written"] == 3

    decoded = {}
    for record in _records(prefix):
        d = decoder.decode(tf.constant(record))
        decoded[d["source_id"].numpy().decode()] = (record, d)
    assert sorted(decoded) == ["11", "12"]

    record, d = decoded["11"]
    expected_boxes = np.array(
        [
            [10 / H, 5 / W, 30 / H, 25 / W],
            [2 / H, 40 / W, 20 / H, 60 / W],
            [30 / H, 30 / W, 46 / H, 62 / W],
        ]
    )
    np.testing.assert_allclose(d["groundtruth_boxes"].numpy(), expected_boxes, atol=1e-6)
    np.testing.assert_array_equal(d["groundtruth_classes"].numpy(), [1, 7, 3])
    np.testing.assert_array_equal(d["groundtruth_is_crowd"].numpy(), [False, False, True])
    np.testing.assert_array_equal(d["groundtruth_area"].numpy(), [400, 136, 512])
    masks = d["groundtruth_instance_masks"].numpy()
    for got, want in zip(masks, _masks(), strict=True):
        np.testing.assert_array_equal(got, want)
    example = tf.train.Example.FromString(record)
    feature = example.features.feature
    with open(os.path.join(root, "images", "a.jpg"), "rb") as f:
        assert feature[schema.IMAGE_ENCODED].bytes_list.value[0] == f.read()  # no re-encode
    assert feature[schema.IMAGE_FORMAT].bytes_list.value[0] == b"jpeg"
    assert list(feature[schema.CLASS_TEXT].bytes_list.value) == [b"person", b"train", b"car"]

    # Model Garden's decoder reads the same values.
    mg = tf_example_decoder.TfExampleDecoder(include_mask=True).decode(tf.constant(record))
    np.testing.assert_allclose(mg["groundtruth_boxes"].numpy(), expected_boxes, atol=1e-6)
    np.testing.assert_array_equal(mg["groundtruth_classes"].numpy(), [1, 7, 3])
    np.testing.assert_array_equal(mg["groundtruth_is_crowd"].numpy(), [False, False, True])
    np.testing.assert_array_equal(
        mg["groundtruth_instance_masks"].numpy(), masks.astype(np.float32)
    )
    assert mg["source_id"].numpy() == b"11"

    record, d = decoded["12"]  # PNG image without annotations: kept, zero objects
    assert d["image"].shape == (32, 40, 3)
    assert d["groundtruth_boxes"].shape == (0, 4)
    assert d["groundtruth_instance_masks"].shape == (0, 32, 40)
    feature = tf.train.Example.FromString(record).features.feature
    assert feature[schema.IMAGE_FORMAT].bytes_list.value[0] == b"png"
    assert feature[schema.IMAGE_FILENAME].bytes_list.value[0] == b"sub/b.png"


def test_without_masks_writes_no_mask_feature(tmp_path):
    root = str(tmp_path)
    prefix, summary = _convert(root, _dataset(root), include_masks=False)
    assert summary.objects_written == 3
    for record in _records(prefix):
        assert schema.MASK not in tf.train.Example.FromString(record).features.feature


def test_parallel_output_equals_serial_output(tmp_path):
    root = str(tmp_path)
    data = _dataset(root)
    for i in range(3):
        _write_image(os.path.join(root, "images", f"extra{i}.jpg"), 24, 24, seed=10 + i)
        data["images"].append(
            {"id": 20 + i, "file_name": f"extra{i}.jpg", "height": 24, "width": 24}
        )
    prefix, serial = _convert(root, data, num_workers=0)
    serial_records = _records(prefix)
    prefix, parallel = _convert(root, data, num_workers=2)
    assert _records(prefix) == serial_records
    assert parallel.to_dict()["shard_sizes"] == serial.to_dict()["shard_sizes"] == [3, 2]


def test_lvis_coco_url_split_folder_and_side_file(tmp_path):
    root = str(tmp_path)
    _write_image(os.path.join(root, "images", "val2017", "000000000139.jpg"), 20, 30)
    data = {
        "images": [
            {
                "id": 139,
                "coco_url": "http://images.cocodataset.org/val2017/000000000139.jpg",
                "height": 20,
                "width": 30,
                "neg_category_ids": [5],
                "not_exhaustive_category_ids": [1203],
            }
        ],
        "categories": [
            {"id": 1203, "name": "zucchini", "frequency": "c"},
            {"id": 5, "name": "alligator", "frequency": "r"},
        ],
        "annotations": [  # LVIS has no iscrowd
            {
                "id": 1,
                "image_id": 139,
                "category_id": 1203,
                "bbox": [0, 0, 10, 10],
                "area": 100.0,
                "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]],
            }
        ],
    }
    prefix, summary = _convert(root, data)
    assert summary.images_written == 1 and summary.objects_written == 1
    with open(prefix + "_lvis_info.json") as f:
        info = json.load(f)
    assert info["images"]["139"] == {"neg_category_ids": [5], "not_exhaustive_category_ids": [1203]}
    assert info["category_frequency"] == {"1203": "c", "5": "r"}
    (record,) = _records(prefix)
    d = decoder.decode(tf.constant(record))
    np.testing.assert_array_equal(d["groundtruth_classes"].numpy(), [1203])
    assert d["groundtruth_instance_masks"].numpy().sum() == 100


def test_degenerate_polygon_and_empty_box_are_skipped_and_counted(tmp_path):
    root = str(tmp_path)
    data = _dataset(root)
    data["annotations"][0]["segmentation"] = [[5, 10, 25, 10]]  # 2 points
    data["annotations"][1]["bbox"] = [40, 2, 0, 18]  # zero width
    warnings = []
    prefix = os.path.join(root, "out", "train")
    summary = tfrecord_io.write_sharded(
        prefix,
        coco.load_coco_json(_write(root, data)).images,
        coco.CocoImageConverter(
            os.path.join(root, "images"), "instances.json", {1: "a", 3: "b", 7: "c"}
        ),
        1,
        num_workers=0,
        progress_stream=io.StringIO(),
        warn=warnings.append,
    )
    assert summary.objects_written == 1
    assert dict(summary.objects_skipped) == {"degenerate_polygon": 1, "empty_box": 1}
    assert any("annotation id 101" in w and "fewer than 3 points" in w for w in warnings)
    assert any("annotation id 102" in w for w in warnings)
    d = decoder.decode(tf.constant(_records(prefix)[0]))
    np.testing.assert_array_equal(d["groundtruth_classes"].numpy(), [3])


def test_box_partly_outside_is_clipped_and_counted(tmp_path):
    root = str(tmp_path)
    data = _dataset(root)
    data["annotations"][0]["bbox"] = [-3, 10, 28, 45]  # x from -3 to 25, y to 55 > 48
    prefix, summary = _convert(root, data)
    assert dict(summary.objects_modified) == {"box_clipped": 1}
    d = {}
    for record in _records(prefix):
        out = decoder.decode(tf.constant(record))
        d[out["source_id"].numpy()] = out
    np.testing.assert_allclose(d[b"11"]["groundtruth_boxes"].numpy()[0], [10 / H, 0, 1, 25 / W])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["annotations"][0].update(bbox=[70, 10, 5, 5]), "annotation id 101"),
        (lambda d: d["annotations"][1].update(category_id=99), "category_id 99"),
        (lambda d: d["annotations"][2].update(image_id=999), "annotation id 103"),
        (lambda d: d["images"][0].update(file_name="../x.jpg"), "escapes --image_dir"),
        (lambda d: d["images"][0].update(file_name="/etc/passwd"), "escapes --image_dir"),
        (lambda d: d["images"][0].update(height=50), "the JSON says 64x50"),
        (lambda d: d["annotations"][1]["segmentation"].update(size=[10, 10]), "RLE size"),
        (lambda d: d["annotations"].append(dict(d["annotations"][0])), "duplicate annotation"),
        (lambda d: d["annotations"][0].update(bbox=[5, float("nan"), 20, 20]), "4 finite"),
        (lambda d: d["annotations"][0].update(area=float("nan")), "area must be a finite"),
        (lambda d: d["annotations"][0].update(area=None), "area must be a finite"),
        (lambda d: d["annotations"][0].update(area=-4), "area must be a finite"),
        (lambda d: d.update(categories=[*CATEGORIES, {"id": 0, "name": "bg"}]), "positive"),
    ],
)
def test_structural_errors_name_the_file_and_record(tmp_path, mutate, message):
    root = str(tmp_path)
    data = _dataset(root)
    mutate(data)
    with pytest.raises(ConversionError, match="instances.json") as error:
        _convert(root, data)
    assert message in str(error.value)
    assert not glob.glob(os.path.join(root, "out", "train-*"))  # no partial shard left


@pytest.mark.parametrize("bad", ["missing", "corrupt"])
def test_bad_image_file_error_or_counted_skip(tmp_path, bad):
    root = str(tmp_path)
    data = _dataset(root)
    path = os.path.join(root, "images", "a.jpg")
    if bad == "missing":
        os.remove(path)
    else:
        with open(path, "rb") as f:
            content = f.read()
        with open(path, "wb") as f:
            f.write(content[: len(content) // 2])  # truncated JPEG
    with pytest.raises(ConversionError, match="image id 11") as error:
        _convert(root, data)
    assert "a.jpg" in str(error.value)
    prefix, summary = _convert(root, data, skip_bad_images=True)
    reason = "missing_file" if bad == "missing" else "corrupt_file"
    assert dict(summary.images_skipped) == {reason: 1}
    assert dict(summary.objects_skipped) == {f"image_skipped_{reason}": 3}
    assert summary.images_written == 1 and summary.images_total == 2
    assert len(_records(prefix)) == 1


def test_progress_line_and_shard_names(tmp_path):
    assert tfrecord_io.shard_paths("/x/train", 4)[1] == "/x/train-00001-of-00004.tfrecord"
    root = str(tmp_path)
    stream = io.StringIO()
    _convert(root, _dataset(root), progress_stream=stream)
    last = stream.getvalue().strip().splitlines()[-1]
    assert "2/2 images" in last and "images/s" in last and "ETA" in last


def test_cli_writes_shards_and_prints_summary(tmp_path, capsys):
    root = str(tmp_path)
    json_path = _write(root, _dataset(root))
    prefix = os.path.join(root, "cli", "val")
    argv = [
        "create_coco_tfrecord",
        f"--image_dir={os.path.join(root, 'images')}",
        f"--annotations_json={json_path}",
        f"--output_prefix={prefix}",
        "--num_shards=1",
        "--num_workers=0",
    ]
    try:
        flags.FLAGS(argv)
        assert create_coco_tfrecord.main(argv) == 0
    finally:
        flags.FLAGS.unparse_flags()
    assert "objects written:  3" in capsys.readouterr().out
    assert len(_records(prefix)) == 2


def test_end_to_end_on_synthetic_coco(tmp_path):
    """Converts `tfcp.data.synthetic` COCO output; pycocotools' own COCO API is the reference."""
    from pycocotools.coco import COCO

    from tfcp.data import synthetic

    paths = synthetic.write_coco(str(tmp_path / "coco"), num_train=4, num_val=0, image_size=64)
    reference = COCO(paths["train_annotations"])
    prefix = str(tmp_path / "out" / "train")
    summary = coco.convert_coco(
        paths["train_images"],
        paths["train_annotations"],
        prefix,
        2,
        num_workers=0,
        progress_stream=io.StringIO(),
    )
    assert summary.images_written == len(reference.imgs) == 4
    assert summary.objects_written == len(reference.anns)
    assert not summary.objects_skipped and not summary.images_skipped
    num_classes = max(reference.cats) + 1
    seen = set()
    for record in _records(prefix):
        d = decoder.decode(tf.constant(record))
        checked, ok, reason = validation.decode_checked(
            tf.constant(record), include_mask=True, num_classes=num_classes
        )
        assert ok.numpy() and reason.numpy() == b""
        np.testing.assert_array_equal(checked["image"].numpy(), d["image"].numpy())
        image_id = int(d["source_id"].numpy())
        seen.add(image_id)
        image = reference.imgs[image_id]
        h, w = image["height"], image["width"]
        annotations = reference.loadAnns(reference.getAnnIds(imgIds=[image_id]))
        np.testing.assert_array_equal(
            d["groundtruth_classes"].numpy(), [a["category_id"] for a in annotations]
        )
        np.testing.assert_array_equal(
            d["groundtruth_is_crowd"].numpy(), [bool(a["iscrowd"]) for a in annotations]
        )
        expected_boxes = np.reshape(
            [
                [y / h, x / w, (y + bh) / h, (x + bw) / w]
                for x, y, bw, bh in (a["bbox"] for a in annotations)
            ],
            [-1, 4],
        )
        np.testing.assert_allclose(d["groundtruth_boxes"].numpy(), expected_boxes, atol=1e-6)
        masks = d["groundtruth_instance_masks"].numpy()
        assert masks.shape == (len(annotations), h, w)
        for mask, annotation in zip(masks, annotations, strict=True):
            np.testing.assert_array_equal(mask, reference.annToMask(annotation))
    assert seen == set(reference.imgs)
    # The category sidecars (repeat factor sampling) equal the records' labels.
    from tfcp.data import sampling

    shards = sorted(str(p) for p in (tmp_path / "out").glob("train-*.tfrecord"))
    assert len(shards) == 2  # record globs do not match the sidecars
    assert all(os.path.exists(sampling.sidecar_path(s)) for s in shards)
    from_sidecars = sampling.record_classes(shards)
    for shard, classes in zip(shards, from_sidecars, strict=True):
        os.remove(sampling.sidecar_path(shard))
        parsed = sampling.record_classes([shard])[0]
        assert [list(x) for x in classes] == [list(x) for x in parsed]


def test_negative_width_or_height_is_an_empty_box_skipped_and_counted(tmp_path):
    """An inverted COCO box (w or h < 0) is never written inverted."""
    root = str(tmp_path)
    data = _dataset(root)
    data["annotations"][0]["bbox"] = [25, 10, -20, 20]
    data["annotations"][1]["bbox"] = [40, 20, 20, -18]
    prefix, summary = _convert(root, data)
    assert dict(summary.objects_skipped) == {"empty_box": 2}
    assert summary.objects_written == 1


def test_png_that_tensorflow_cannot_decode_is_a_corrupt_file(tmp_path):
    """PIL decodes a PNG without its IEND chunk; TensorFlow does not, so it is not written."""
    root = str(tmp_path)
    data = _dataset(root)
    path = os.path.join(root, "images", "sub", "b.png")
    with open(path, "rb") as f:
        content = f.read()
    with open(path, "wb") as f:
        f.write(content[:-12])
    schema.verify_image(content[:-12])  # PIL is fine with it
    with pytest.raises(ConversionError, match="image id 12") as error:
        _convert(root, data)
    assert "b.png: truncated PNG (no IEND chunk)" in str(error.value)
    prefix, summary = _convert(root, data, skip_bad_images=True)
    assert dict(summary.images_skipped) == {"corrupt_file": 1}
    assert [decoder.decode(tf.constant(r))["source_id"].numpy() for r in _records(prefix)] == [
        b"11"
    ]


def test_a_record_that_training_would_reject_is_never_written(tmp_path, monkeypatch):
    """The last check before writing catches what slipped past the others (here a bug)."""
    root = str(tmp_path)
    monkeypatch.setattr(coco, "normalized_box", lambda *args: ([0.5, 0.1, 0.2, 0.3], False))
    with pytest.raises(ConversionError, match="image id 11") as error:
        _convert(root, _dataset(root))
    assert "refusing to write a bad record: box 0 is inverted" in str(error.value)
    assert not glob.glob(os.path.join(root, "out", "train-*"))


def test_missing_annotations_json_is_a_one_line_error(tmp_path):
    missing = str(tmp_path / "annotations" / "instances_missing.json")
    with pytest.raises(ConversionError, match="instances_missing.json: no such annotations file"):
        coco.convert_coco(str(tmp_path), missing, str(tmp_path / "out" / "train"), 1, num_workers=0)

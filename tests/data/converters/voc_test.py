"""Tests for tfcp.data.converters.voc and the VOC CLI."""

from __future__ import annotations

import glob
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from official.vision.dataloaders import segmentation_input, tf_example_decoder
from PIL import Image

from tfcp.data import create_voc_tfrecord, decoder, schema, validation
from tfcp.data.converters import voc
from tfcp.data.converters.tfrecord_io import ConversionError

# (name, difficult, xmin, ymin, xmax, ymax) in VOC's 1-based inclusive pixels.
OBJECTS = {
    "000005": [("person", 0, 1, 1, 75, 50), ("chair", 1, 10, 20, 30, 41)],
    "000007": [("tvmonitor", 0, 3, 4, 3, 9), ("aeroplane", 0, 20, 5, 33, 27)],
}
SIZES = {"000005": (50, 75), "000007": (40, 60), "2008_000008": (30, 45)}  # (H, W)


def _xml(name_objects, height, width, drop=None):
    parts = [f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for name, difficult, xmin, ymin, xmax, ymax in name_objects:
        fields = {
            "name": name,
            "difficult": difficult,
            "xmin": xmin,
            "ymin": ymin,
            "xmax": xmax,
            "ymax": ymax,
        }
        if drop:
            fields.pop(drop)
        box = "".join(
            f"<{k}>{v}</{k}>" for k, v in fields.items() if k in ("xmin", "ymin", "xmax", "ymax")
        )
        head = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items() if k in ("name", "difficult"))
        parts.append(f"<object>{head}<pose>Left</pose><bndbox>{box}</bndbox></object>")
    return "<annotation><folder>VOC</folder>" + "".join(parts) + "</annotation>"


def _labels(height, width):
    labels = np.zeros([height, width], np.uint8)
    labels[5:20, 10:30] = 15  # person
    labels[5:20, 30:32] = 255  # ignore border
    labels[25:35, 40:70] = 20
    return labels


def _palette_png(path, labels):
    image = Image.fromarray(labels, mode="P")
    palette = np.random.default_rng(0).integers(0, 255, 768).astype(np.uint8).tolist()
    image.putpalette(palette)
    image.save(path)


def _devkit(root):
    """VOC2007 (2 detection images, 1 segmentation image) and VOC2012 (1 image)."""
    for year, ids in (("2007", ["000005", "000007"]), ("2012", ["2008_000008"])):
        base = os.path.join(root, f"VOC{year}")
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main", "ImageSets/Segmentation"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        os.makedirs(os.path.join(base, "SegmentationClass"), exist_ok=True)
        for i, image_id in enumerate(ids):
            h, w = SIZES[image_id]
            pixels = np.random.default_rng(i).integers(0, 255, [h, w, 3], dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(base, "JPEGImages", f"{image_id}.jpg"))
            objects = OBJECTS.get(image_id, [("dog", 0, 2, 2, 20, 20)])
            with open(os.path.join(base, "Annotations", f"{image_id}.xml"), "w") as f:
                f.write(_xml(objects, h, w))
        with open(os.path.join(base, "ImageSets/Main/train.txt"), "w") as f:
            f.write("\n".join(ids) + "\n")
        with open(os.path.join(base, "ImageSets/Segmentation/train.txt"), "w") as f:
            f.write(ids[0] + "\n")
        h, w = SIZES[ids[0]]
        _palette_png(os.path.join(base, "SegmentationClass", f"{ids[0]}.png"), _labels(h, w))
    return root


def _convert(root, task="detection", year="2007", **kwargs):
    kwargs.setdefault("num_workers", 0)
    kwargs.setdefault("progress_stream", io.StringIO())
    prefix = os.path.join(root, "out", f"voc_{task}")
    summary = voc.convert_voc(root, year, "train", task, prefix, 2, **kwargs)
    records = [
        r.numpy() for r in tf.data.TFRecordDataset(sorted(glob.glob(prefix + "-*.tfrecord")))
    ]
    return prefix, summary, records


def test_class_ids_are_alphabetical_from_one():
    assert voc.CLASS_ID["aeroplane"] == 1
    assert voc.CLASS_ID["person"] == 15
    assert voc.CLASS_ID["tvmonitor"] == 20
    assert list(voc.VOC_CLASSES) == sorted(voc.VOC_CLASSES)
    assert voc.label_map("segmentation")[0] == "background"


def test_detection_round_trip_is_exact(tmp_path):
    root = _devkit(str(tmp_path))
    prefix, summary, records = _convert(root)
    assert summary.images_written == 2 and summary.objects_written == 4
    with open(prefix + "_label_map.json") as f:
        label_map = json.load(f)
    assert label_map["1"] == "aeroplane" and label_map["20"] == "tvmonitor" and len(label_map) == 20
    seen = set()
    for record in records:
        d = decoder.decode(tf.constant(record), include_mask=False)
        image_id = d["source_id"].numpy().decode()
        seen.add(image_id)
        h, w = SIZES[image_id]
        objects = OBJECTS[image_id]
        boxes = d["groundtruth_boxes"].numpy().astype(np.float64) * [h, w, h, w]
        # Inverse of the documented convention: xmin = xmin_n * W + 1, xmax = xmax_n * W.
        pixels = np.round(boxes + [1, 1, 0, 0]).astype(int)
        np.testing.assert_array_equal(pixels, [[o[3], o[2], o[5], o[4]] for o in objects])
        np.testing.assert_allclose(boxes + [1, 1, 0, 0], pixels, atol=1e-4)
        classes = [voc.CLASS_ID[o[0]] for o in objects]
        np.testing.assert_array_equal(d["groundtruth_classes"].numpy(), classes)
        np.testing.assert_array_equal(d["groundtruth_difficult"].numpy(), [o[1] for o in objects])
        np.testing.assert_array_equal(d["groundtruth_is_crowd"].numpy(), [False, False])
        areas = [(o[4] - o[2] + 1) * (o[5] - o[3] + 1) for o in objects]
        np.testing.assert_allclose(d["groundtruth_area"].numpy(), areas, rtol=1e-5)
        feature = tf.train.Example.FromString(record).features.feature
        texts = [t.decode() for t in feature[schema.CLASS_TEXT].bytes_list.value]
        assert texts == [o[0] for o in objects]
        path = os.path.join(root, "VOC2007", "JPEGImages", f"{image_id}.jpg")
        with open(path, "rb") as f:
            assert feature[schema.IMAGE_ENCODED].bytes_list.value[0] == f.read()
        mg = tf_example_decoder.TfExampleDecoder().decode(tf.constant(record))
        np.testing.assert_array_equal(mg["groundtruth_boxes"].numpy(), d["groundtruth_boxes"])
        np.testing.assert_array_equal(mg["groundtruth_classes"].numpy(), classes)
    assert seen == {"000005", "000007"}


def test_segmentation_labels_equal_png_indices(tmp_path):
    root = _devkit(str(tmp_path))
    prefix, summary, records = _convert(root, task="segmentation")
    assert summary.images_written == 1 and summary.objects_written == 0
    with open(prefix + "_label_map.json") as f:
        assert len(json.load(f)) == 21
    (record,) = records
    d = decoder.decode_segmentation(tf.constant(record))
    assert d["source_id"].numpy() == b"000005"
    expected = _labels(*SIZES["000005"])
    np.testing.assert_array_equal(d["label"].numpy()[:, :, 0], expected)
    mg = segmentation_input.Decoder().decode(tf.constant(record))
    label = tf.io.decode_png(mg["image/segmentation/class/encoded"], channels=1)
    np.testing.assert_array_equal(label.numpy()[:, :, 0], expected)


def test_2007_plus_2012_and_parallel_workers(tmp_path):
    root = _devkit(str(tmp_path))
    _, serial, records = _convert(root, year="2007+2012")
    assert serial.images_written == 3 and serial.objects_written == 5
    _, parallel, parallel_records = _convert(root, year="2007+2012", num_workers=2)
    assert parallel_records == records
    ids = {decoder.decode(tf.constant(r), False)["source_id"].numpy() for r in records}
    assert ids == {b"000005", b"000007", b"2008_000008"}


def _rewrite_xml(root, image_id, objects, **kwargs):
    h, w = SIZES[image_id]
    with open(os.path.join(root, "VOC2007", "Annotations", f"{image_id}.xml"), "w") as f:
        f.write(_xml(objects, h, w, **kwargs))


@pytest.mark.parametrize(
    "objects, drop, message",
    [
        ([("person", 0, 1, 1, 10, 10)], "xmax", "missing field <bndbox/xmax>"),
        ([("person", 0, 1, 1, 10, 10)], "name", "missing field <name>"),
        ([("person", 0, "a", 1, 10, 10)], None, "is not a number"),
        ([("person", 0, 1, 1, 10, 10), ("unicorn", 0, 1, 1, 5, 5)], None, "'unicorn' is not"),
        ([("person", 0, 80, 1, 90, 10)], None, "entirely outside"),
        ([("person", 0, 1, "nan", 10, 10)], None, "<bndbox/ymin> is not finite"),
    ],
)
def test_bad_xml_is_an_error_naming_the_file(tmp_path, objects, drop, message):
    root = _devkit(str(tmp_path))
    _rewrite_xml(root, "000007", objects, drop=drop)
    with pytest.raises(ConversionError, match="000007.xml") as error:
        _convert(root)
    assert message in str(error.value)
    assert not glob.glob(os.path.join(root, "out", "voc_detection-*"))


def test_box_partly_outside_is_clipped_and_empty_box_skipped(tmp_path):
    root = _devkit(str(tmp_path))
    objects = [("person", 0, 0, 2, 70, 40), ("cat", 0, 10, 10, 9, 20)]  # W=60: 0 and 70 clipped
    _rewrite_xml(root, "000007", objects)
    _, summary, records = _convert(root)
    assert dict(summary.objects_modified) == {"box_clipped": 1}
    assert dict(summary.objects_skipped) == {"empty_box": 1}
    assert summary.objects_written == 3
    for record in records:
        d = decoder.decode(tf.constant(record), include_mask=False)
        if d["source_id"].numpy() == b"000007":
            np.testing.assert_allclose(d["groundtruth_boxes"].numpy(), [[1 / 40, 0, 1, 1]])


@pytest.mark.parametrize("bad", ["missing", "corrupt", "empty", "png_without_iend", "size"])
def test_bad_image_is_an_error_or_a_counted_skip(tmp_path, bad):
    root = _devkit(str(tmp_path))
    path = os.path.join(root, "VOC2007", "JPEGImages", "000007.jpg")
    if bad == "missing":
        os.remove(path)
    elif bad == "corrupt":
        with open(path, "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    elif bad == "empty":
        open(path, "wb").close()
    elif bad == "png_without_iend":  # PIL decodes it, TensorFlow does not
        with open(path, "wb") as f:
            f.write(schema.encode_png(np.zeros([40, 60, 3], np.uint8))[:-12])
    else:
        Image.new("RGB", (61, 40)).save(path)
    with pytest.raises(ConversionError, match="000007"):
        _convert(root)
    _, summary, records = _convert(root, skip_bad_images=True)
    reason = {"missing": "missing_file", "size": "size_mismatch"}.get(bad, "corrupt_file")
    assert dict(summary.images_skipped) == {reason: 1}
    assert summary.images_written == 1 and len(records) == 1


@pytest.mark.parametrize("bad", ["rgb", "value", "size"])
def test_bad_segmentation_png_is_an_error(tmp_path, bad):
    root = _devkit(str(tmp_path))
    path = os.path.join(root, "VOC2007", "SegmentationClass", "000005.png")
    labels = _labels(*SIZES["000005"])
    if bad == "rgb":
        Image.fromarray(np.stack([labels] * 3, -1)).save(path)
    elif bad == "value":
        labels[0, 0] = 21
        _palette_png(path, labels)
    else:
        _palette_png(path, labels[:-1])
    with pytest.raises(ConversionError, match="000005.png"):
        _convert(root, task="segmentation")


def test_a_record_that_training_would_reject_is_never_written(tmp_path, monkeypatch):
    """The last check before writing catches what slipped past the others (here a bug)."""
    root = _devkit(str(tmp_path))
    monkeypatch.setattr(voc, "normalized_box", lambda *args: ([float("nan"), 0, 1, 1], False))
    with pytest.raises(ConversionError, match="000005.jpg") as error:
        _convert(root)
    assert "refusing to write a bad record: box 0 is NaN" in str(error.value)


def test_missing_split_file_is_an_error(tmp_path):
    with pytest.raises(ConversionError, match="split file not found"):
        voc.convert_voc(str(tmp_path), "2012", "val", "detection", str(tmp_path / "o"))


def test_cli(tmp_path, capsys):
    root = _devkit(str(tmp_path))
    prefix = os.path.join(root, "cli", "voc")
    argv = [
        "create_voc_tfrecord",
        f"--voc_root={root}",
        "--year=2007",
        "--split=train",
        "--task=detection",
        f"--output_prefix={prefix}",
        "--num_shards=1",
        "--num_workers=0",
    ]
    try:
        flags.FLAGS(argv)
        assert create_voc_tfrecord.main(argv) == 0
    finally:
        flags.FLAGS.unparse_flags()
    assert "objects written:  4" in capsys.readouterr().out
    assert os.path.exists(prefix + "-00000-of-00001.tfrecord")


def test_end_to_end_on_synthetic_voc(tmp_path):
    """Converts `tfcp.data.synthetic` VOC output; counts and boxes come from its XML files."""
    from tfcp.data import synthetic

    root = synthetic.write_voc(str(tmp_path), num_train=3, num_val=1, image_size=64)["voc_root"]
    prefix = str(tmp_path / "out" / "det")
    summary = voc.convert_voc(
        root,
        "2007+2012",
        "train",
        "detection",
        prefix,
        2,
        num_workers=0,
        progress_stream=io.StringIO(),
    )
    items = voc.voc_items(root, "2007+2012", "train", "detection")
    expected = {}
    for item in items:
        annotation = voc.parse_voc_xml(os.path.join(root, item.annotation_file))
        expected[item.image_id] = annotation
    assert summary.images_written == len(items) == 6
    assert summary.objects_written == sum(len(a.objects) for a in expected.values())
    records = [
        r.numpy() for r in tf.data.TFRecordDataset(sorted(glob.glob(prefix + "-*.tfrecord")))
    ]
    for record in records:
        d = decoder.decode(tf.constant(record), include_mask=False)
        _, ok, reason = validation.decode_checked(
            tf.constant(record), include_mask=False, num_classes=21
        )
        assert ok.numpy() and reason.numpy() == b""
        annotation = expected[d["source_id"].numpy().decode()]
        h, w = annotation.height, annotation.width
        pixels = np.round(d["groundtruth_boxes"].numpy() * [h, w, h, w] + [1, 1, 0, 0])
        want = [[o.ymin, o.xmin, o.ymax, o.xmax] for o in annotation.objects]
        np.testing.assert_array_equal(pixels.reshape([-1, 4]), np.reshape(want, [-1, 4]))
        np.testing.assert_array_equal(
            d["groundtruth_difficult"].numpy(), [bool(o.difficult) for o in annotation.objects]
        )

    prefix = str(tmp_path / "out" / "seg")
    summary = voc.convert_voc(
        root,
        "2007",
        "train",
        "segmentation",
        prefix,
        1,
        num_workers=0,
        progress_stream=io.StringIO(),
    )
    items = voc.voc_items(root, "2007", "train", "segmentation")
    assert summary.images_written == len(items) >= 1
    for record in tf.data.TFRecordDataset(prefix + "-00000-of-00001.tfrecord"):
        d = decoder.decode_segmentation(record)
        png = os.path.join(
            root, "VOC2007", "SegmentationClass", f"{d['source_id'].numpy().decode()}.png"
        )
        np.testing.assert_array_equal(d["label"].numpy()[..., 0], np.asarray(Image.open(png)))

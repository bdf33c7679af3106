"""Tests for tfcp.data.decoder (and the example builder in tfcp.data.schema)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfcp.data import decoder, schema

H, W = 16, 24


def _png(array, mode=None):
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _masks():
    masks = np.zeros([2, H, W], np.uint8)
    masks[0, 2:6, 3:9] = 1
    masks[1, 8:16, 0:24] = 1
    return masks


def _example(encoded=None, fmt="png", num=2, **kwargs):
    if encoded is None:
        encoded = _png(np.full([H, W, 3], 90, np.uint8))
    boxes = np.array([[2 / H, 3 / W, 6 / H, 9 / W], [0.5, 0.0, 1.0, 1.0]], np.float32)[:num]
    values = dict(
        encoded_image=encoded,
        image_format=fmt,
        height=H,
        width=W,
        source_id="img-42",
        boxes=boxes,
        classes=[3, 5][:num],
        is_crowd=[0, 1][:num],
        masks=_masks()[:num],
    )
    values.update(kwargs)
    return schema.make_example(**values)


def _serialize(example):
    return tf.constant(example.SerializeToString())


def test_decodes_boxes_classes_crowd_masks_and_defaults():
    d = decoder.decode(_serialize(_example()))
    assert d["source_id"].numpy() == b"img-42"
    assert d["image"].dtype == tf.uint8 and d["image"].shape == (H, W, 3)
    assert (d["height"].numpy(), d["width"].numpy()) == (H, W)
    np.testing.assert_allclose(
        d["groundtruth_boxes"].numpy(), [[2 / H, 3 / W, 6 / H, 9 / W], [0.5, 0, 1, 1]]
    )
    assert d["groundtruth_classes"].dtype == tf.int64
    np.testing.assert_array_equal(d["groundtruth_classes"].numpy(), [3, 5])
    np.testing.assert_array_equal(d["groundtruth_is_crowd"].numpy(), [False, True])
    np.testing.assert_array_equal(d["groundtruth_difficult"].numpy(), [False, False])
    # No image/object/area in the record: box area in pixels.
    np.testing.assert_allclose(d["groundtruth_area"].numpy(), [4 * 6, 8 * 24], rtol=1e-5)
    masks = d["groundtruth_instance_masks"]
    assert masks.dtype == tf.uint8
    np.testing.assert_array_equal(masks.numpy(), _masks())
    assert "groundtruth_instance_masks" not in decoder.decode(_serialize(_example()), False)


def test_area_and_difficult_from_the_record():
    example = _example(areas=[7.0, 9.5], difficult=[1, 0])
    d = decoder.decode(_serialize(example))
    np.testing.assert_array_equal(d["groundtruth_area"].numpy(), [7.0, 9.5])
    np.testing.assert_array_equal(d["groundtruth_difficult"].numpy(), [True, False])


@pytest.mark.parametrize("kind", ["gray_png", "gray_jpeg", "rgba_png"])
def test_grayscale_and_rgba_images_decode_to_three_channels(kind):
    gray = np.broadcast_to(np.arange(W, dtype=np.uint8) * 10, [H, W]).copy()  # smooth ramp
    if kind == "gray_png":
        encoded, fmt = _png(gray), "png"
    elif kind == "gray_jpeg":
        encoded, fmt = _jpeg(gray), "jpeg"
    else:
        rgba = np.zeros([H, W, 4], np.uint8)
        rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = gray, 7, 200, 128
        encoded, fmt = _png(rgba, "RGBA"), "png"
    image = decoder.decode(_serialize(_example(encoded, fmt)))["image"].numpy()
    assert image.shape == (H, W, 3)
    if kind == "gray_png":
        for c in range(3):
            np.testing.assert_array_equal(image[..., c], gray)
    elif kind == "gray_jpeg":
        np.testing.assert_array_equal(image[..., 0], image[..., 2])
        assert np.abs(image[..., 0].astype(int) - gray).max() <= 8
    else:
        np.testing.assert_array_equal(image[..., 0], gray)  # alpha dropped, RGB kept
        assert (image[..., 1] == 7).all() and (image[..., 2] == 200).all()


def test_zero_objects():
    d = decoder.decode(_serialize(_example(num=0)))
    assert d["groundtruth_boxes"].shape == (0, 4)
    assert d["groundtruth_classes"].shape == (0,)
    assert d["groundtruth_is_crowd"].shape == (0,)
    assert d["groundtruth_area"].shape == (0,)
    assert d["groundtruth_instance_masks"].shape == (0, H, W)
    assert d["groundtruth_instance_masks"].dtype == tf.uint8


def _with(example, key, values):
    example = tf.train.Example.FromString(example.SerializeToString())
    feature = example.features.feature[key]
    if key == schema.MASK:
        del feature.bytes_list.value[:]
        feature.bytes_list.value.extend(values)
    elif key in (schema.CLASS_LABEL, schema.IS_CROWD, schema.DIFFICULT):
        del feature.int64_list.value[:]
        feature.int64_list.value.extend(values)
    elif key in (schema.IMAGE_HEIGHT, schema.IMAGE_WIDTH):
        feature.int64_list.value[0] = values[0]
    elif key == schema.IMAGE_ENCODED:
        feature.bytes_list.value[0] = values[0]
    else:
        del feature.float_list.value[:]
        feature.float_list.value.extend(values)
    return example


@pytest.mark.parametrize(
    "key, values, message",
    [
        (schema.CLASS_LABEL, [3], "2 ymin, 2 xmin, 2 ymax, 2 xmax for 1 class labels"),
        (schema.BBOX_XMAX, [0.5, 0.5, 0.5], "2 ymin, 2 xmin, 2 ymax, 3 xmax for 2 class"),
        (schema.IS_CROWD, [0, 1, 0], "3 image/object/is_crowd values for 2 objects"),
        (schema.AREA, [1.0], "1 image/object/area values for 2 objects"),
        (schema.DIFFICULT, [1], "1 image/object/difficult values for 2 objects"),
        (schema.MASK, [schema.encode_png(np.zeros([H, W], np.uint8))], "1 masks for 2 boxes"),
        (
            schema.MASK,
            [schema.encode_png(np.zeros([H, W + 1], np.uint8))] * 2,
            f"mask 0 is {H}x{W + 1}, image is {H}x{W}",
        ),
        (schema.MASK, [b"", b"x"], "mask 0 is empty"),
        (schema.MASK, [_png(_masks()[0])[:-20]] * 2, "mask 0 is a truncated PNG"),
        (schema.IMAGE_HEIGHT, [H + 1], f"image/height, image/width say {H + 1}x{W}"),
        (schema.IMAGE_ENCODED, [b""], "empty image/encoded"),
        (schema.IMAGE_ENCODED, [b"GIF89a" + bytes(20)], "not a JPEG or PNG"),
        (schema.IMAGE_ENCODED, [_jpeg(np.zeros([H, W, 3], np.uint8))[:-50]], "truncated JPEG"),
        (schema.IMAGE_ENCODED, [_png(np.zeros([H, W, 3], np.uint8))[:-12]], "truncated PNG"),
    ],
)
def test_bad_records_raise_naming_the_source_id_and_the_problem(key, values, message):
    # Before the shared checks, empty/truncated images and masks raised TF's anonymous
    # "Invalid JPEG data" / "Invalid PNG data" without the record's source id.
    example = _with(_example(), key, values)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)) as error:
        decoder.decode(_serialize(example))
    assert "img-42" in str(error.value)


def test_box_values_and_class_ids_are_left_to_decode_checked():
    example = _with(_example(), schema.BBOX_YMIN, [float("nan"), 0.9])
    example = _with(example, schema.CLASS_LABEL, [0, 500])
    d = decoder.decode(_serialize(example))
    assert np.isnan(d["groundtruth_boxes"].numpy()[0, 0])
    np.testing.assert_array_equal(d["groundtruth_classes"].numpy(), [0, 500])


@pytest.mark.parametrize("tail", [b"", bytes(300), b"trailing bytes"])
def test_complete_jpeg_with_trailing_bytes_decodes(tail):
    """A JPEG is complete when FFD9 follows its last FFDA; TF decodes trailing bytes fine."""
    encoded = _jpeg(np.full([H, W, 3], 77, np.uint8)) + tail
    image = decoder.decode(_serialize(_example(encoded, "jpeg")))["image"].numpy()
    assert image.shape == (H, W, 3) and abs(int(image.mean()) - 77) <= 2


def test_masks_holding_0_255_or_16_bit_0_1_decode_to_0_1():
    """Item 6 of issue 9: 0/1 and 0/255 PNG masks, 8 or 16 bits, decode identically."""
    masks = _masks()
    variants = {
        "0/1": [_png(m) for m in masks],
        "0/255": [_png(m * 255) for m in masks],
        # Decoded as uint8, a 16-bit 0/1 mask scaled to all zeros (silently empty masks).
        "16-bit 0/1": [_png(m.astype(np.uint16)) for m in masks],
        "16-bit 0/65535": [_png(m.astype(np.uint16) * 65535) for m in masks],
    }
    for name, pngs in variants.items():
        d = decoder.decode(_serialize(_with(_example(), schema.MASK, pngs)))
        assert d["groundtruth_instance_masks"].dtype == tf.uint8, name
        np.testing.assert_array_equal(d["groundtruth_instance_masks"].numpy(), masks, name)


def test_decode_inside_dataset_map_and_tf_function():
    records = [
        _example().SerializeToString(),
        _example(num=0).SerializeToString(),
        _example(num=1).SerializeToString(),
    ]
    dataset = tf.data.Dataset.from_tensor_slices(records).map(decoder.decode)
    spec = dataset.element_spec
    assert spec["image"].shape.as_list() == [None, None, 3]
    assert spec["groundtruth_boxes"].shape.as_list() == [None, 4]
    assert spec["groundtruth_instance_masks"].dtype == tf.uint8
    outputs = list(dataset)
    assert [o["groundtruth_classes"].shape[0] for o in outputs] == [2, 0, 1]
    np.testing.assert_array_equal(outputs[0]["groundtruth_instance_masks"].numpy(), _masks())
    assert outputs[1]["groundtruth_instance_masks"].shape == (0, H, W)

    decode_fn = tf.function(decoder.decode, input_signature=[tf.TensorSpec([], tf.string)])
    d = decode_fn(tf.constant(records[2]))
    np.testing.assert_array_equal(d["groundtruth_instance_masks"].numpy(), _masks()[:1])

    bad = _with(_example(), schema.CLASS_LABEL, [3]).SerializeToString()
    dataset = tf.data.Dataset.from_tensor_slices([bad]).map(decoder.decode)
    with pytest.raises(tf.errors.InvalidArgumentError, match="img-42"):
        list(dataset)


def test_decode_segmentation():
    labels = np.zeros([H, W], np.uint8)
    labels[3:9, 4:12] = 15
    labels[0, :] = 255
    example = schema.make_example(
        encoded_image=_png(np.zeros([H, W, 3], np.uint8)),
        image_format="png",
        height=H,
        width=W,
        source_id="seg-1",
        segmentation_png=schema.encode_png(labels),
    )
    d = decoder.decode_segmentation(_serialize(example))
    assert d["label"].dtype == tf.uint8
    np.testing.assert_array_equal(d["label"].numpy()[..., 0], labels)
    example = schema.make_example(
        encoded_image=_png(np.zeros([H, W, 3], np.uint8)),
        image_format="png",
        height=H,
        width=W,
        source_id="seg-2",
        segmentation_png=schema.encode_png(labels[:-1]),
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="seg-2"):
        decoder.decode_segmentation(_serialize(example))


def test_make_example_rejects_inconsistent_counts():
    with pytest.raises(ValueError, match="img-42"):
        _example(is_crowd=[0])
    with pytest.raises(ValueError, match="masks shape"):
        _example(masks=np.zeros([2, H + 1, W], np.uint8))


def test_verify_image_detects_format_and_corruption():
    encoded = _jpeg(np.zeros([H, W, 3], np.uint8))
    assert schema.verify_image(encoded) == ("jpeg", H, W)
    assert schema.verify_image(_png(np.zeros([H, W], np.uint8))) == ("png", H, W)
    with pytest.raises(ValueError, match="corrupt JPEG"):
        schema.verify_image(encoded[: len(encoded) // 2])
    with pytest.raises(ValueError, match="not a JPEG or PNG"):
        schema.verify_image(b"GIF89a....")


def test_drop_difficult_keeps_the_other_objects_in_order():
    decoded = {
        "groundtruth_classes": tf.constant([1, 2, 3]),
        "groundtruth_boxes": tf.constant([[0.0] * 4, [0.1] * 4, [0.2] * 4]),
        "groundtruth_difficult": tf.constant([False, True, False]),
        "source_id": tf.constant("a"),
    }
    kept = decoder.drop_difficult(decoded)
    np.testing.assert_array_equal(kept["groundtruth_classes"], [1, 3])
    np.testing.assert_allclose(kept["groundtruth_boxes"], [[0.0] * 4, [0.2] * 4])
    np.testing.assert_array_equal(kept["groundtruth_difficult"], [False, False])
    assert kept["source_id"].numpy() == b"a"

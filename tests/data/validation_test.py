"""Tests for tfcp.data.validation: bad records are reported, never raised, never decoded."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests import bad_records
from tfcp.data import decoder, record_checks, schema, validation

NUM_CLASSES = 4


def _check(serialized, include_mask=True, num_classes=NUM_CLASSES):
    return validation.decode_checked(serialized, include_mask=include_mask, num_classes=num_classes)


def _serialized(kind, index=0, **kwargs):
    kwargs.setdefault("num_classes", NUM_CLASSES)
    return bad_records.make_example(kind, index, **kwargs).SerializeToString()


def _assert_same(got, want):
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        np.testing.assert_array_equal(got[key].numpy(), want[key].numpy(), err_msg=key)


def _assert_placeholder(decoded, source_id, include_mask=True):
    _assert_same(decoded, validation.placeholder(tf.constant(source_id.encode()), include_mask))


@pytest.fixture(scope="module")
def record_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("records") / "mixed.tfrecord")
    kinds = ["good", *bad_records.BAD_KINDS[:6], "good", *bad_records.BAD_KINDS[6:], "good"]
    return bad_records.write_records(path, kinds, num_classes=NUM_CLASSES)


def test_write_records_reports_kinds_indices_and_reasons(record_file):
    assert len(bad_records.BAD_KINDS) == 12
    assert record_file.kinds[0] == record_file.kinds[7] == record_file.kinds[14] == "good"
    assert record_file.bad_indices == tuple(i for i in range(15) if i not in (0, 7, 14))
    assert record_file.bad_kinds == bad_records.BAD_KINDS
    assert record_file.source_ids[3] == "3-empty_image"
    assert record_file.reasons[9] == "box 1 is NaN"
    assert len(list(tf.data.TFRecordDataset(record_file.path))) == 15


@pytest.mark.parametrize("kind", bad_records.BAD_KINDS)
def test_each_bad_kind_is_reported_eagerly_with_its_reason(kind):
    decoded, ok, reason = _check(tf.constant(_serialized(kind, 5)))
    assert not ok.numpy()
    assert reason.numpy().decode() == bad_records.expected_reason(kind, 64, NUM_CLASSES)
    _assert_placeholder(decoded, f"5-{kind}")
    # The same record fails fast in decoder.decode, except the checks decode leaves out.
    if kind not in ("nan_box", "inverted_box", "bad_class", "background_class"):
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"5-{kind}"):
            decoder.decode(tf.constant(_serialized(kind, 5)))


@pytest.mark.parametrize("include_mask", [True, False])
@pytest.mark.parametrize("index", [0, 1, 2])
def test_good_records_decode_exactly_like_decode(include_mask, index):
    serialized = tf.constant(_serialized("good", index))
    decoded, ok, reason = _check(serialized, include_mask)
    assert ok.numpy() and reason.numpy() == b""
    _assert_same(decoded, decoder.decode(serialized, include_mask))
    assert decoded["groundtruth_boxes"].shape == (2, 4)


def test_inside_dataset_map_nothing_raises_and_reasons_match(record_file):
    dataset = tf.data.TFRecordDataset(record_file.path).map(
        lambda s: _check(s), num_parallel_calls=2, deterministic=True
    )
    spec = tf.data.TFRecordDataset(record_file.path).map(decoder.decode).element_spec
    assert dataset.element_spec[0] == spec
    outputs = list(dataset)
    assert [o[2].numpy().decode() for o in outputs] == list(record_file.reasons)
    assert [bool(o[1]) for o in outputs] == [k == "good" for k in record_file.kinds]
    records = list(tf.data.TFRecordDataset(record_file.path))
    for i, (decoded, ok, _) in enumerate(outputs):
        if ok:
            _assert_same(decoded, decoder.decode(records[i]))
        else:
            _assert_placeholder(decoded, record_file.source_ids[i])


@pytest.mark.parametrize("shape", [None, []])
def test_under_tf_function_with_unknown_shapes(record_file, shape):
    fn = tf.function(
        lambda s: _check(s, num_classes=None), input_signature=[tf.TensorSpec(shape, tf.string)]
    )
    for serialized, kind in zip(
        tf.data.TFRecordDataset(record_file.path), record_file.kinds, strict=True
    ):
        decoded, ok, reason = fn(serialized)
        if kind == "bad_class":  # num_classes=None: no upper bound on class ids
            assert ok.numpy() and reason.numpy() == b""
            np.testing.assert_array_equal(decoded["groundtruth_classes"].numpy()[1], NUM_CLASSES)
            continue
        assert bool(ok) == (kind == "good")
        assert reason.numpy().decode() == bad_records.expected_reason(kind, 64, NUM_CLASSES)
        if kind == "good":
            _assert_same(decoded, decoder.decode(serialized))


def test_format_error_names_the_record_the_source_id_and_the_reason():
    decoded, _, reason = _check(tf.constant(_serialized("nan_box", 3)))
    message = validation.format_error("train-00001.tfrecord:3", decoded, reason)
    assert message.numpy().decode() == (
        "bad record train-00001.tfrecord:3 (source_id 3-nan_box): box 1 is NaN"
    )


def _modified(key, values):
    example = bad_records.make_example("good", 0, num_classes=NUM_CLASSES)
    feature = example.features.feature[key]
    kind_of_list = feature.WhichOneof("kind")
    del getattr(feature, kind_of_list).value[:]
    getattr(feature, kind_of_list).value.extend(values)
    return example


@pytest.mark.parametrize(
    "key, values, reason",
    [
        (schema.BBOX_XMAX, [0.5], "box coordinates: 2 ymin, 2 xmin, 2 ymax, 1 xmax for 2 class"),
        (schema.CLASS_LABEL, [1, 2, 3], "box coordinates: 2 ymin, 2 xmin, 2 ymax, 2 xmax for 3"),
        (schema.IS_CROWD, [0], "1 image/object/is_crowd values for 2 objects"),
        (schema.AREA, [1.0, 2.0, 3.0], "3 image/object/area values for 2 objects"),
        (schema.BBOX_XMIN, [0.1, float("inf")], "box 1 is infinite"),
        (schema.BBOX_YMAX, [float("-inf"), 0.9], "box 0 is infinite"),
        (schema.MASK, [b"", b"x"], "mask 0 is empty"),
        (schema.MASK, [b"\x89PNG\r\n\x1a\n", b""], "mask 1 is empty"),
        (schema.MASK, [b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n"], "mask 0 is not a PNG"),
        (schema.MASK, [], "0 masks for 2 boxes"),
    ],
)
def test_miscounted_and_malformed_records_are_reported(key, values, reason):
    example = _modified(key, values)
    decoded, ok, got = _check(tf.constant(example.SerializeToString()))
    assert not ok.numpy()
    assert got.numpy().decode().startswith(reason)
    assert record_checks.example_problem(example, num_classes=NUM_CLASSES).startswith(reason)


@pytest.mark.parametrize("kind", bad_records.BAD_KINDS)
def test_example_problem_agrees_with_decode_checked(kind):
    example = bad_records.make_example(kind, 2, num_classes=NUM_CLASSES)
    python = record_checks.example_problem(example, num_classes=NUM_CLASSES)
    if kind == "size_field":  # Python trusts image/height, image/width: the masks disagree
        assert python == "mask 0 is 64x64, image is 65x64"
    else:
        assert python == bad_records.expected_reason(kind, 64, NUM_CLASSES)
    assert record_checks.example_problem(bad_records.make_example("good", 2)) == ""


def _jpeg(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("tail", [b"", bytes(64), b"camera trailer"])
def test_jpeg_with_bytes_after_the_end_marker_is_good(tail):
    encoded = _jpeg(np.full([16, 24, 3], 50, np.uint8)) + tail
    assert record_checks.encoded_image_problem(encoded) == ""
    example = schema.make_example(
        encoded_image=encoded, image_format="jpeg", height=16, width=24, source_id="t"
    )
    serialized = tf.constant(example.SerializeToString())
    decoded, ok, reason = _check(serialized)
    assert ok.numpy() and reason.numpy() == b""
    _assert_same(decoded, decoder.decode(serialized))
    assert decoded["groundtruth_instance_masks"].shape == (0, 16, 24)


@pytest.mark.parametrize(
    "encoded, reason",
    [
        (b"", "empty image/encoded"),
        (b"BM" + bytes(60), "image/encoded is not a JPEG or PNG"),
        (b"\xff\xd8\xff\xe0" + bytes(100), "truncated JPEG (no end-of-image marker)"),
        (_jpeg(np.zeros([8, 8, 3], np.uint8))[:-2], "truncated JPEG (no end-of-image marker)"),
        (schema.encode_png(np.zeros([8, 8], np.uint8))[:-1], "truncated PNG (no IEND chunk)"),
    ],
)
def test_encoded_image_problem(encoded, reason):
    assert record_checks.encoded_image_problem(encoded) == reason
    example = schema.make_example(
        encoded_image=encoded, image_format="jpeg", height=8, width=8, source_id="e"
    )
    _, ok, got = _check(tf.constant(example.SerializeToString()))
    assert not ok.numpy() and got.numpy().decode() == reason


def test_without_masks_the_masks_are_neither_read_nor_checked():
    serialized = tf.constant(_serialized("corrupt_mask"))
    decoded, ok, _ = _check(serialized, include_mask=False)
    assert ok.numpy() and "groundtruth_instance_masks" not in decoded
    _assert_same(decoded, decoder.decode(serialized, include_mask=False))


@pytest.mark.parametrize("include_mask", [True, False])
@pytest.mark.parametrize("kind", bad_records.KINDS)
def test_check_record_agrees_with_decode_checked(kind, include_mask):
    serialized = tf.constant(_serialized(kind, 3))
    _, want_ok, want_reason = _check(serialized, include_mask=include_mask)
    source_id, ok, reason = validation.check_record(
        serialized, include_mask=include_mask, num_classes=NUM_CLASSES
    )
    assert source_id.numpy().decode() == f"3-{kind}"
    assert (ok.numpy(), reason.numpy()) == (want_ok.numpy(), want_reason.numpy())


@pytest.mark.parametrize(
    "array, image_format",
    [
        (np.full([37, 53, 3], 90, np.uint8), "jpeg"),
        (np.full([1, 300, 3], 90, np.uint8), "jpeg"),
        (np.full([41, 7], 200, np.uint8), "png"),  # grayscale
        (np.full([19, 23, 4], 200, np.uint8), "png"),  # RGBA
    ],
)
def test_image_size_from_header_is_the_decoded_size(array, image_format):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, image_format.upper())
    encoded = tf.constant(buffer.getvalue())
    got = record_checks.image_size_from_header(encoded).numpy().tolist()
    assert got == list(array.shape[:2])
    assert got == decoder.decode_image(encoded).shape[:2].as_list()

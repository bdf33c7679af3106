"""Tests of tfcp.data.pair_stage: pairing records before decoding changes no example.

The reference is the ragged pairing of decoded, jittered views (`record_policy.decode_stage`
-> `paste_stage.views_stage` -> `paste_stage.examples_stage`), the path Balanced Mosaic
still takes and the one `pair_stage` replaced for a single source.
"""

import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from tests import bad_records
from tfcp.data import decoder, pair_stage, paste_stage, record_policy, schema

SIZE = 64
NUM_CLASSES = 6


def _record(index: int, rng: np.random.Generator) -> bytes:
    """A 48 x 64 image with 2-4 rectangles, the second one difficult."""
    height, width = 48, 64
    image = rng.integers(0, 255, [height, width, 3], dtype=np.uint8)
    boxes, masks = [], []
    for _ in range(2 + index % 3):
        y0, x0 = rng.integers(0, height - 16), rng.integers(0, width - 16)
        h, w = rng.integers(8, 16), rng.integers(8, 16)
        mask = np.zeros([height, width], np.uint8)
        mask[y0 : y0 + h, x0 : x0 + w] = 1
        masks.append(mask)
        boxes.append([y0 / height, x0 / width, (y0 + h) / height, (x0 + w) / width])
    num = len(boxes)
    return schema.make_example(
        encoded_image=schema.encode_png(image),
        image_format="png",
        height=height,
        width=width,
        source_id=str(index),
        boxes=np.asarray(boxes, np.float32),
        classes=[1 + j for j in range(num)],
        difficult=[int(j == 1) for j in range(num)],
        masks=np.stack(masks),
    ).SerializeToString()


def _options(paste_scale_range=(0.1, 2.0)):
    return paste_stage.ExampleOptions(
        image_size=SIZE,
        main_scale_range=(0.1, 2.0),
        paste_scale_range=paste_scale_range,
        flip_prob=0.5,
        pad_value=128,
        copy_paste_prob=1.0,
        selection="random_subset",
        max_num_pasted=100,
        blend_sigma=0.0,
        occluded_area_threshold=4.0,
        occluded_box_threshold=None,
        paste_crowd=False,
        keep_is_pasted=True,
        mosaic_order="mosaic_jitter_paste",
        anchor_config=dict(
            min_level=2, max_level=6, num_scales=1, aspect_ratios=(0.5, 1.0, 2.0), anchor_size=8.0
        ),
        rpn_match_threshold=0.7,
        rpn_unmatched_threshold=0.3,
        rpn_batch_size_per_im=256,
        rpn_fg_fraction=0.5,
        max_num_instances=12,
        mask_crop_size=16,
        include_mask=True,
        skip_crowd=True,
    )


@pytest.fixture(scope="module")
def record_file():
    """Nine records: good ones with a NaN box (record 2) and a wrong mask size (record 6)."""
    rng = np.random.default_rng(0)
    records = [_record(i, rng) for i in range(9)]
    records[2] = bad_records.make_example("nan_box", 2).SerializeToString()
    records[6] = bad_records.make_example("mask_size", 6).SerializeToString()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "train.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for record in records:
                writer.write(record)
        yield path


def _stream(path, good_only=False):
    """Two passes over the file as the record reader's `(position, name, serialized)`."""
    records = tf.data.TFRecordDataset(path).repeat(2)
    stream = tf.data.Dataset.zip(tf.data.Dataset.range(1 << 40), records).map(
        lambda i, r: (i, tf.strings.join([path, ":", tf.strings.as_string(i % 9)]), r)
    )
    if good_only:  # the 'raise' policy needs a stream without the bad records
        stream = stream.filter(lambda i, name, r: tf.logical_and(i % 9 != 2, i % 9 != 6))
    return stream


def _reference(path, options, *, skip_difficult, drop, on_bad_record, good_only):
    decoded = record_policy.decode_stage(
        _stream(path, good_only),
        on_bad_record=on_bad_record,
        include_mask=True,
        num_classes=NUM_CLASSES,
        num_parallel_calls=2,
    )
    if skip_difficult:
        decoded = decoded.map(lambda i, example: (i, decoder.drop_difficult(example)))
    seed = tf.constant([5, 0], tf.int64)
    views = paste_stage.views_stage(decoded, seed, options, 2)
    return paste_stage.examples_stage(views, options, mixed=False, drop=drop, num_parallel_calls=2)


def _paired(path, options, *, skip_difficult, drop, on_bad_record, good_only):
    return pair_stage.paired_examples(
        _stream(path, good_only),
        stream_seed=tf.constant([5, 0], tf.int64),
        options=options,
        on_bad_record=on_bad_record,
        num_classes=NUM_CLASSES,
        skip_difficult=skip_difficult,
        drop=drop,
        num_parallel_calls=2,
    )


def _assert_same_examples(got, want):
    got, want = list(got), list(want)
    assert len(got) == len(want) > 0
    for (image, labels), (want_image, want_labels) in zip(got, want, strict=True):
        np.testing.assert_array_equal(image.numpy(), want_image.numpy())
        assert sorted(labels) == sorted(want_labels)
        for key in labels:
            for a, b in zip(
                tf.nest.flatten(labels[key]), tf.nest.flatten(want_labels[key]), strict=True
            ):
                np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=key)


@pytest.mark.parametrize(
    "paste_scale_range, skip_difficult, drop, on_bad_record, good_only",
    [
        ((0.1, 2.0), False, 0, "skip", False),
        ((0.5, 1.5), True, 1, "skip", False),  # separate source views, a resumed odd start
        ((0.1, 2.0), True, 0, "raise", True),
    ],
)
def test_paired_records_give_the_examples_of_paired_views(
    record_file, paste_scale_range, skip_difficult, drop, on_bad_record, good_only
):
    options = _options(paste_scale_range)
    args = dict(
        skip_difficult=skip_difficult, drop=drop, on_bad_record=on_bad_record, good_only=good_only
    )
    before = record_policy.skipped_count()
    got = list(_paired(record_file, options, **args))
    skipped = record_policy.skipped_count() - before
    assert skipped == (0 if good_only else 4)  # two bad records, two passes
    assert len(got) == 14 - drop  # 14 good records, paired
    _assert_same_examples(got, _reference(record_file, options, **args))
    if skip_difficult:  # only the difficult objects are gone: classes 2 never appear
        classes = np.concatenate([labels["gt_classes"].numpy() for _, labels in got])
        assert 2 not in classes and 1 in classes and 3 in classes


def test_a_bad_record_in_a_pair_fails_naming_it(record_file):
    dataset = _paired(
        record_file,
        _options(),
        skip_difficult=False,
        drop=0,
        on_bad_record="raise",
        good_only=False,
    )
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        list(dataset)
    error = record_policy.as_bad_record_error(raised.value)
    assert error is not None
    assert f"bad record {record_file}:2 (source_id 2-nan_box): box 1 is NaN" in str(error)


def test_pair_parallelism_is_half_the_examples_parallelism(monkeypatch):
    assert [pair_stage.pair_parallelism(n) for n in (1, 2, 3, 8)] == [1, 1, 2, 4]
    monkeypatch.setattr(
        pair_stage.os, "sched_getaffinity", lambda pid: set(range(6)), raising=False
    )
    assert pair_stage.pair_parallelism(tf.data.AUTOTUNE) == 3

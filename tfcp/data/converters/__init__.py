"""Dataset converters to sharded TFRecords: `coco` (COCO/LVIS JSON; the JSON is loaded and
checked by `coco_json`), `voc` (PASCAL VOC devkit).

`tfrecord_io` holds the shared sharded writer and conversion summary; `cli` the flags and runner
shared by the thin CLIs `python -m tfcp.data.create_coco_tfrecord` and `create_voc_tfrecord`.
"""

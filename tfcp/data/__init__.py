"""tfcp.data: reading records and the input pipelines; subpackages `converters` and `synthetic`.

Here: the TF Example schema and decoder, record checks, `records.open_records` (the one record
reader of every pipeline), sampling, targets, the Mask R-CNN / VOC (`pipeline`) and
segmentation pipelines, the tf.data service, and the converter CLIs `create_coco_tfrecord`
and `create_voc_tfrecord`. `converters/`: COCO/LVIS and VOC to TFRecords. `synthetic/`:
generated COCO, VOC and LVIS datasets (`python -m tfcp.data.synthetic`).
"""

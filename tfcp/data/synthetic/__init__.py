"""Generated datasets in the real COCO, PASCAL VOC and LVIS v1 file formats (demo and tests).

Modules: `shapes` (shape masks and class styles), `scenes` (occluded multi-object scenes),
`coco`, `voc` and `lvis` (writers in each dataset's own layout); `python -m tfcp.data.synthetic`
is the CLI (`__main__.py`). The writers and encoders are re-exported here.
"""

from tfcp.data.synthetic.coco import (
    COCO_CATEGORIES,
    compressed_rle,
    encode_segmentation,
    mask_polygons,
    segmentation_area_bbox,
    segmentation_rle,
    uncompressed_rle,
    write_coco,
)
from tfcp.data.synthetic.lvis import write_lvis
from tfcp.data.synthetic.voc import VOC_CLASSES, write_voc

__all__ = [
    "COCO_CATEGORIES",
    "VOC_CLASSES",
    "compressed_rle",
    "encode_segmentation",
    "mask_polygons",
    "segmentation_area_bbox",
    "segmentation_rle",
    "uncompressed_rle",
    "write_coco",
    "write_lvis",
    "write_voc",
]

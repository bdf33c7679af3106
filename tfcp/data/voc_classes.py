"""The PASCAL VOC classes in the devkit's (alphabetical) order.

Label ids: 0 = background, i + 1 = `VOC_CLASSES[i]` (aeroplane = 1 ... tvmonitor = 20), as
in SegmentationClass PNGs; 255 = void/ignore.
"""

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_SEGMENTATION_CLASSES = ("background", *VOC_CLASSES)

"""tfcp: Simple Copy-Paste augmentation and instance-segmentation training for TF 2."""

__version__ = "0.1.0"

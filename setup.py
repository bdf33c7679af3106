"""tfcp: Simple Copy-Paste augmentation and Mask R-CNN training for TensorFlow 2.

The gin configs live in the repo's top-level gin_configs/ (the documented path) and ship
inside the package as `tfcp/gin_configs/` (package_dir below), where an installed tfcp
finds them (`tfcp.gin_utils.GIN_CONFIGS_DIR`).
"""

import setuptools

setuptools.setup(
    name="tfcp",
    version="0.1.0",
    description=(
        "Simple Copy-Paste (Ghiasi et al., CVPR 2021) for TensorFlow 2: graph-mode "
        "augmentation, Mask R-CNN training, COCO/VOC evaluation, SavedModel export."
    ),
    packages=[*setuptools.find_packages(include=["tfcp", "tfcp.*"]), "tfcp.gin_configs"],
    package_dir={"tfcp.gin_configs": "gin_configs"},
    package_data={"tfcp.gin_configs": ["*.gin", "**/*.gin"]},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow==2.20.*",
        "tf-models-official==2.20.*",
        "gin-config",
        "absl-py",
        "numpy",
        "pycocotools",
        "pillow",
        "opencv-python-headless",
    ],
    extras_require={
        "dev": ["pytest", "pytest-timeout", "pytest-xdist", "hypothesis", "ruff"],
    },
)

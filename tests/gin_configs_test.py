"""Every shipped gin file parses, and every model it describes builds.

Each file under gin_configs/ is parsed on its own with dummy values for the shared
macros it leaves undefined (DESIGN.md: TRAIN_FILES, EVAL_FILES, ...). When it selects a
task (`Trainer.task`), the task is created and its model built; a file that binds
`build_maskrcnn` without a task builds that model. Model Garden configs are validated at
the file's own IMAGE_SIZE (and detection generator), then each distinct architecture is
built once at 128 px to keep the test affordable on CPU:
  * the graph does not depend on the size; configs differing only in the number of classes
    or the detection generator settings share a build;
  * the detection generator is built with `nms_version='batched'` (one NMS op): Model
    Garden's default 'v2' unrolls one NMS per class, half of a COCO build's time and, with
    LVIS's 1204 classes, 200 s and 4.5 GB per build ('v2' is built and run by the model
    tests that use the factory's default, e.g. tests/serving/export_lib_test.py);
  * a double-classifier model gets its `DoubleDetectionHead`s on the cached single-head
    model of the same architecture (`double_classifier.with_double_heads`, as
    `factory.build_from_config(double_classifier=True)` does on the unbuilt model).
The cache is dropped (and the Keras session cleared) when the module's tests are done.
"""

import gc
import glob
import json
import os
import re
import sys
from unittest import mock

import gin
import pytest
import tensorflow as tf
import tf_keras

from tfcp import gin_utils
from tfcp.modeling import double_classifier, factory, freeze

ALL_GIN_FILES = sorted(
    glob.glob(os.path.join(gin_utils.GIN_CONFIGS_DIR, "**", "*.gin"), recursive=True)
)
# `*_common.gin` files are fragments shared by the files that include them (they may use
# macros only their includers define); they are checked through those includers.
FRAGMENTS = [p for p in ALL_GIN_FILES if p.endswith("_common.gin")]
GIN_FILES = [p for p in ALL_GIN_FILES if p not in FRAGMENTS]
TEST_IMAGE_SIZE = 128
DUMMY_MACROS = {
    "TRAIN_FILES": "'/nonexistent/train-*.tfrecord'",
    "EVAL_FILES": "'/nonexistent/val-*.tfrecord'",
    "EVAL_ANNOTATIONS": "'/nonexistent/instances_val.json'",
    "NUM_CLASSES": "91",  # as the COCO experiments, so models/ and experiments/ share builds
    "IMAGE_SIZE": str(TEST_IMAGE_SIZE),
    "GLOBAL_BATCH_SIZE": "2",
    "TRAIN_STEPS": "2",
    "INIT_CHECKPOINT": "None",
    "TRAIN_ANNOTATIONS": "'/nonexistent/instances_train.json'",  # LVIS stage 2 (not read)
    "PSEUDO_FILES": "'/nonexistent/pseudo-*.tfrecord'",  # self_training/ students
}
# Fields that change no layer's structure beyond the number of classes: configs that differ
# only there (COCO vs LVIS: 91 vs 1204 classes, 100 vs 300 detections) share one build.
SHARED_BUILD_FIELDS = ("num_classes", "detection_generator")


@pytest.fixture(scope="module")
def dummy_macros_file(tmp_path_factory):
    """A gin file defining the shared macros; parsed first, so the file's own values win."""
    path = tmp_path_factory.mktemp("gin") / "dummy_macros.gin"
    path.write_text("".join(f"{k} = {v}\n" for k, v in DUMMY_MACROS.items()))
    return str(path)


def _required_macros(path):
    """Dummy bindings of the macros `path` itself marks `%gin.REQUIRED` (a file cannot be
    parsed without them, which is the point: e.g. quick tuning's INIT_CHECKPOINT)."""
    with open(os.path.join(gin_utils.GIN_CONFIGS_DIR, path)) as f:
        names = re.findall(r"^(\w+) = %gin\.REQUIRED", f.read(), flags=re.MULTILINE)
    return [f"{name} = {DUMMY_MACROS[name]}" for name in names]


def _parse(dummy_macros_file, path, bindings=()):
    gin.clear_config()
    gin_utils.parse_gin([dummy_macros_file, path], [*_required_macros(path), *bindings])


def _task_reference():
    try:
        return gin.query_parameter("tfcp.Trainer.task")
    except ValueError:
        return None


def _binds_maskrcnn_builder():
    try:
        gin.query_parameter("build_maskrcnn.num_classes")
    except ValueError:
        return False
    return True


def _make(reference):
    if isinstance(reference, gin.config.ConfigurableReference):
        return reference.scoped_configurable_fn()
    return reference


class _ModelCache:
    """Builds each distinct Model Garden config once (the tests only need it to build)."""

    def __init__(self):
        self.built = {}
        self._build = factory.build_from_config

    def build(self, model_config, l2_weight_decay=0.0, double_classifier=False):
        # The image size and the NMS version do not change the layers (module docstring).
        model_config = model_config.replace(
            input_size=[TEST_IMAGE_SIZE, TEST_IMAGE_SIZE, 3],
            detection_generator=model_config.detection_generator.replace(nms_version="batched"),
        )
        fields = model_config.as_dict()
        for name in SHARED_BUILD_FIELDS:
            fields.pop(name, None)
        key = json.dumps([fields, l2_weight_decay], sort_keys=True, default=str)
        if key not in self.built:
            self.built[key] = self._build(model_config, l2_weight_decay)
        model = self.built[key]
        if double_classifier:
            model = self._double(model, model_config.input_size)
        return model

    @staticmethod
    def _double(single, input_size):
        """The double-classifier twin of the built single-head `single` (shared layers)."""
        double = double_classifier.with_double_heads(single)
        double(tf_keras.Input(input_size), image_shape=tf_keras.layers.Input([2]), training=False)
        assert double_classifier.is_double(double)
        heads = factory.model_properties(double)["num_detection_heads"]
        # Head b adds a kernel and a bias to each detection head; nothing else is new.
        assert len(double.variables) == len(single.variables) + 2 * heads
        return double

    def clear(self):
        self.built.clear()
        tf_keras.backend.clear_session()
        gc.collect()


@pytest.fixture(scope="module")
def model_cache():
    cache = _ModelCache()
    yield cache
    cache.clear()  # some GB of models and graphs; no later module needs them


@pytest.fixture(autouse=True)
def _clear_gin(monkeypatch):
    # pytest puts tests/ on sys.path; its sub-directories (tests/data, ...) then look like
    # namespace packages to gin's package-resource include reader, which crashes on them
    # when resolving `include 'data/x.gin'`. `python -m tfcp.train` does not have them.
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    monkeypatch.setattr(
        sys, "path", [p for p in sys.path if os.path.abspath(p or ".") != tests_dir]
    )
    gin.clear_config()
    yield
    gin.clear_config()


def test_there_are_gin_files():
    names = {os.path.relpath(p, gin_utils.GIN_CONFIGS_DIR) for p in GIN_FILES}
    assert "models/maskrcnn_tiny.gin" in names
    assert "models/cascade_maskrcnn_effb7_nasfpn.gin" in names


@pytest.mark.parametrize(
    "fragment", FRAGMENTS, ids=[os.path.relpath(p, gin_utils.GIN_CONFIGS_DIR) for p in FRAGMENTS]
)
def test_every_fragment_is_included_by_a_tested_file(fragment):
    relative = os.path.relpath(fragment, gin_utils.GIN_CONFIGS_DIR)
    includers = []
    for path in GIN_FILES:
        with open(path) as f:
            if any(line.strip().startswith("include") and relative in line for line in f):
                includers.append(path)
    assert includers, f"{relative} is included by no standalone gin file, so it is untested"


@pytest.mark.parametrize(
    "path", GIN_FILES, ids=[os.path.relpath(p, gin_utils.GIN_CONFIGS_DIR) for p in GIN_FILES]
)
def test_gin_file_parses_and_builds(path, model_cache, dummy_macros_file):
    _parse(dummy_macros_file, path)
    reference = _task_reference()
    binds_builder = _binds_maskrcnn_builder()
    if reference is None and not binds_builder:
        return  # a data/run fragment: parsing it is the test

    # 1) Validate the Model Garden config at the file's own image size (no build).
    configs = []
    with mock.patch.object(
        factory, "build_from_config", side_effect=lambda c, *a, **k: configs.append(c)
    ):
        if binds_builder:
            factory.build_maskrcnn()
    assert len(configs) == int(binds_builder), path

    # 2) Build: at TEST_IMAGE_SIZE, each distinct architecture once.
    _parse(dummy_macros_file, path, [f"IMAGE_SIZE = {TEST_IMAGE_SIZE}"])
    with mock.patch.object(factory, "build_from_config", side_effect=model_cache.build):
        if reference is not None:
            task = _make(reference)
            model = task.build_model()
        else:
            model = factory.build_maskrcnn()
    assert len(model.variables) > 0, f"{path}: the model has no variables"
    if binds_builder:
        double = _query("build_maskrcnn.double_classifier", False)
        assert double_classifier.is_double(model) == bool(double), path
    patterns = _make(_query("MaskRCNNTask.trainable_variable_patterns", None))
    if patterns is not None:  # LVIS stage 2: they must name variables of this model
        selected = freeze.select_variables(model, include=patterns)
        assert 0 < len(selected) < len(model.trainable_variables), path


def _query(name, default):
    try:
        return gin.query_parameter(name)
    except ValueError:
        return default


@pytest.fixture(scope="module")
def train_records(tmp_path_factory):
    """A 10-record TRAIN_FILES (only counted, never decoded)."""
    path = str(tmp_path_factory.mktemp("records") / "train-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(10):
            writer.write(b"record %d" % i)
    return path


@pytest.mark.parametrize(
    "path", GIN_FILES, ids=[os.path.relpath(p, gin_utils.GIN_CONFIGS_DIR) for p in GIN_FILES]
)
def test_gin_file_takes_train_epochs_instead_of_train_steps(path, dummy_macros_file, train_records):
    """`--gin_bindings=TRAIN_EPOCHS=N` sizes every run: it replaces the dummy TRAIN_STEPS
    and any TRAIN_STEPS the file fixes (runs/mmdet_*, lvis/*, voc/*)."""
    _parse(dummy_macros_file, path)
    has_run_length = "%TRAIN_STEPS" in gin.config_str()
    bindings = [f"TRAIN_FILES = '{train_records}'", "TRAIN_EPOCHS = 3"]
    if not has_run_length:  # a model or data fragment
        with pytest.raises(gin_utils.GinConfigError, match="does not use TRAIN_STEPS"):
            _parse(dummy_macros_file, path, bindings)
        return
    _parse(dummy_macros_file, path, bindings)
    batch = gin.query_parameter("%GLOBAL_BATCH_SIZE")
    if "self_training/" in path and "pseudo_file_pattern" in gin.config_str():
        # Two sources: an epoch is a pass over the labeled share of each batch.
        fraction = gin.query_parameter("train/build_dataset.pseudo_fraction")
        batch = batch - round(batch * fraction)
    assert gin.query_parameter("%TRAIN_STEPS") == -(-3 * 10 // batch), path


@pytest.mark.parametrize(
    "path",
    [
        "demo/maskrcnn_tiny_copy_paste.gin",
        "miniature/lsj_copy_paste.gin",
        "self_training/maskrcnn_tiny_student.gin",
        "lvis/maskrcnn_tiny_rfs_copy_paste.gin",
    ],
)
def test_tiny_copy_paste_configs_scale_the_occlusion_threshold(path, dummy_macros_file):
    """At 128 px the paper's 300 px (of a 1024 px image) must be scaled, not 1.8 % of it."""
    _parse(dummy_macros_file, path)
    assert gin.query_parameter("%IMAGE_SIZE") == 128
    assert gin.query_parameter("train/build_dataset.occluded_area_threshold") == 300.0
    assert gin.query_parameter("train/build_dataset.occlusion_reference_size") == 1024


class _Captured(Exception):
    pass


def _segmentation_config(dummy_macros_file, path, builder):
    """The `segmentation_model_config` that `builder` of `path` asks for (nothing is built)."""
    from tfcp.modeling import segmentation  # noqa: PLC0415

    _parse(dummy_macros_file, path, ["IMAGE_SIZE = 512"])
    captured = []

    def capture(*args, **kwargs):
        captured.append(segmentation_config_fn(*args, **kwargs))
        raise _Captured

    segmentation_config_fn = segmentation.segmentation_model_config
    with mock.patch.object(segmentation, "segmentation_model_config", side_effect=capture):
        with pytest.raises(_Captured):
            builder()
    return captured[0]


def test_cp2_r50_pretraining_matches_the_voc_deeplabv3_finetuning(dummy_macros_file):
    """The CP2 ResNet-50 configs pretrain exactly the backbone + ASPP that
    voc/segmentation_r50_aspp_os16.gin fine-tunes (so both restore from the export)."""
    from tfcp.modeling import cp2, segmentation  # noqa: PLC0415

    voc = _segmentation_config(
        dummy_macros_file,
        "voc/segmentation_r50_aspp_os16.gin",
        segmentation.build_segmentation_model,
    )
    for path in ("cp2/cp2_r50_aspp_os16_200ep.gin", "cp2/cp2_r50_aspp_os16_quick_tuning.gin"):
        pretrain = _segmentation_config(dummy_macros_file, path, cp2.build_cp2_model)
        assert pretrain.backbone.as_dict() == voc.backbone.as_dict(), path
        assert pretrain.decoder.aspp.as_dict() | {"dropout_rate": 0.0} == (
            voc.decoder.aspp.as_dict() | {"dropout_rate": 0.0}
        ), path
        assert pretrain.norm_activation.use_sync_bn

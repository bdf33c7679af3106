"""Export library: gin -> task model -> restored checkpoint -> SavedModel (+ config, info).

`export_from_gin` is what `export/export_saved_model.py` runs:

1. parse the gin files/bindings (as `python -m tfcp.train` does) and build the model
   with the configured task (`Trainer.task`, e.g. `@MaskRCNNTask()`), `task.build_model()`;
2. restore the checkpoint: `--checkpoint` or the latest in `--model_dir`
   (`tf.train.Checkpoint(model=...)`, the trainer's layout); every model variable must
   be in the checkpoint, otherwise a `ValueError` names the checkpoint and the mismatch;
3. write the SavedModel into a temporary directory beside `export_dir` and rename it into
   place (an interrupted export never leaves a half-written `export_dir`), together with
   `config.gin` (the operative gin config) and `export_info.json` (input type, image size,
   number of classes, label map when the evaluation annotations are known).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import gin
import tensorflow as tf
import tf_keras
from official.vision.ops import preprocess_ops

from tfcp import summaries
from tfcp.ops import scale_jitter
from tfcp.serving import detection
from tfcp.serving import feature_extractor as feature_extractor_lib

CONFIG_FILE = "config.gin"
INFO_FILE = "export_info.json"


# --------------------------------------------------------------------- preprocessing
@tf.autograph.experimental.do_not_convert  # graph-only ops; no need to re-parse the source
def eval_preprocess(
    image: tf.Tensor, *, image_size: tuple[int, int], pad_value: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """The eval preprocessing of `tfcp.data.pipeline` for one image.

    Exactly the pipeline's eval path (`eval_pipeline.eval_dataset` +
    `targets.maskrcnn_eval_targets`): `scale_jitter.resize_for_eval` (resize to fit,
    pad bottom/right with `pad_value`) then Model Garden's `preprocess_ops.normalize_image`
    (MEAN_NORM / STDDEV_NORM).

    Args:
      image: uint8 [h, w, 3].
      image_size: (S_h, S_w).
      pad_value: the gray padding value (`build_dataset.pad_value`).

    Returns:
      float32 [S_h, S_w, 3] normalized image and float32 [4, 2] image_info.
    """
    resized = scale_jitter.resize_for_eval(
        {"image": image, "groundtruth_boxes": tf.zeros([0, 4], tf.float32)},
        output_size=image_size,
        pad_value=pad_value,
    )
    return preprocess_ops.normalize_image(resized["image"]), resized["image_info"]


def _query(name: str, default: Any) -> Any:
    """The value bound to `name` in gin, macros and `@ref()` evaluated; else `default`."""
    try:
        value = gin.query_parameter(name)
    except ValueError:
        return default
    while isinstance(value, gin.config.ConfigurableReference):
        value = value.scoped_configurable_fn()
        if isinstance(value, type):
            value = value()
    return value


def eval_pad_value() -> float:
    """The eval pipeline's padding value as configured in gin (default: the pipeline's)."""
    for name in ("eval/build_dataset.pad_value", "build_dataset.pad_value"):
        value = _query(name, None)
        if value is not None:
            return float(value)
    return float(scale_jitter.DEFAULT_PAD_VALUE)


def model_image_size(model: tf_keras.Model) -> tuple[int, int]:
    """(S_h, S_w): the static input size the model was built for."""
    shape = model.backbone.input_shape
    if shape[1] is None or shape[2] is None:
        raise ValueError(f"the model's backbone has no static input size: {shape}")
    return int(shape[1]), int(shape[2])


def model_num_classes(model: tf_keras.Model) -> int | None:
    """Number of classes (background included) of a Mask R-CNN model; None for a model
    without detection head (e.g. CP2 pretraining, exported as a feature extractor)."""
    if not hasattr(model, "detection_head"):
        return None
    return int(model.detection_head[-1].get_config()["num_classes"])


# ------------------------------------------------------------------------ gin / task
def build_task_from_gin():
    """Instantiates the task bound to `Trainer.task` in the parsed gin config."""
    task = _query("tfcp.Trainer.task", None)
    if task is None:
        raise ValueError("the gin config binds no `Trainer.task` (e.g. @MaskRCNNTask())")
    return task


def label_map_from_gin() -> dict[int, str] | None:
    """{class id: name} from the task's COCO annotation file, if configured and readable."""
    path = _query("MaskRCNNTask.annotation_file", None)
    if not isinstance(path, str) or not path or not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        categories = json.load(f).get("categories", [])
    return {int(c["id"]): str(c["name"]) for c in categories} or None


# ------------------------------------------------------------------------ checkpoints
def resolve_checkpoint(model_dir: str | None, checkpoint: str | None = None) -> str:
    """The checkpoint prefix to export: `checkpoint` if given, else the latest in model_dir.

    Raises:
      FileNotFoundError: no such checkpoint / no checkpoint in `model_dir`.
    """
    if checkpoint:
        if tf.io.gfile.isdir(checkpoint):
            latest = tf.train.latest_checkpoint(checkpoint)
            if latest is None:
                raise FileNotFoundError(f"--checkpoint={checkpoint!r}: directory has no checkpoint")
            return latest
        if not tf.io.gfile.exists(checkpoint + ".index"):
            raise FileNotFoundError(
                f"--checkpoint={checkpoint!r} not found (no {checkpoint}.index file)"
            )
        return checkpoint
    if not model_dir or not tf.io.gfile.isdir(model_dir):
        raise FileNotFoundError(f"--model_dir={model_dir!r} does not exist")
    latest = tf.train.latest_checkpoint(model_dir)
    if latest is None:
        raise FileNotFoundError(
            f"no checkpoint found in --model_dir={model_dir!r} (train first, or pass "
            "--checkpoint=PATH)"
        )
    return latest


def restore_model(model: tf_keras.Model, checkpoint_path: str) -> None:
    """Restores `model` from a trainer checkpoint (`tf.train.Checkpoint(model=...)`).

    Raises:
      ValueError: the checkpoint lacks model variables or has different shapes; the
        message names the checkpoint and what mismatched.
    """
    try:
        status = tf.train.Checkpoint(model=model).read(checkpoint_path)
        status.assert_existing_objects_matched()
        status.expect_partial()  # optimizer slots, global step, iterator: not exported
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        raise ValueError(
            f"checkpoint {checkpoint_path!r} does not match the model built from the gin "
            f"config (different architecture or num_classes?): {error}"
        ) from error


# --------------------------------------------------------------------------- export
def prepare_export_dir(export_dir: str, overwrite: bool = False) -> None:
    """Refuses a non-empty `export_dir` unless `overwrite`."""
    if tf.io.gfile.exists(export_dir):
        if not tf.io.gfile.isdir(export_dir):
            raise FileExistsError(f"--export_dir={export_dir!r} exists and is not a directory")
        if tf.io.gfile.listdir(export_dir) and not overwrite:
            raise FileExistsError(
                f"--export_dir={export_dir!r} is not empty; pass --overwrite to replace it"
            )


def _commit(tmp_dir: str, export_dir: str) -> None:
    """Moves the finished export into place (replacing an old one)."""
    if os.path.isdir(export_dir):
        shutil.rmtree(export_dir)
    os.replace(tmp_dir, export_dir)


def write_sidecars(export_dir: str, info: dict[str, Any], gin_files=(), gin_bindings=()) -> None:
    """Writes `config.gin` (operative gin config) and `export_info.json`."""
    lines = ["# Written by export/export_saved_model.py. Command-line configuration:"]
    lines += [f"#   --gin_file={f}" for f in gin_files]
    lines += [f"#   --gin_bindings={b}" for b in gin_bindings]
    with open(os.path.join(export_dir, CONFIG_FILE), "w") as f:
        f.write("\n".join(lines) + "\n\n" + gin.operative_config_str())
    with open(os.path.join(export_dir, INFO_FILE), "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
        f.write("\n")


def export_model(
    model: tf_keras.Model,
    export_dir: str,
    *,
    input_type: str = "image_tensor",
    mask_output: str = "full",
    feature_extractor: bool = False,
    batch_size: int | None = None,
    pad_value: float = scale_jitter.DEFAULT_PAD_VALUE,
    overwrite: bool = False,
    info: dict[str, Any] | None = None,
    gin_files: Sequence[str] = (),
    gin_bindings: Sequence[str] = (),
) -> dict[str, Any]:
    """Writes a detection (or feature-extractor) SavedModel of a restored model.

    Args:
      model: a built Mask R-CNN model with its weights.
      export_dir: the output directory (must be empty or absent unless `overwrite`).
      input_type: `serving_default` input: 'image_tensor', 'image_bytes', 'tf_example'.
      mask_output: 'full', 'relative' or 'both' (see `tfcp.serving.detection`).
      feature_extractor: export backbone + decoder instead (see `feature_extractor`).
      batch_size: static batch size of the signature, None for any.
      pad_value: the eval pipeline's padding value.
      overwrite: replace a non-empty `export_dir`.
      info: extra entries for `export_info.json`.
      gin_files, gin_bindings: recorded at the top of `config.gin`.

    Returns:
      The `export_info.json` content.
    """
    if input_type not in detection.INPUT_TYPES:
        raise ValueError(f"input_type must be one of {detection.INPUT_TYPES}: {input_type!r}")
    prepare_export_dir(export_dir, overwrite)
    image_size = model_image_size(model)
    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        if not feature_extractor and not hasattr(model, "detection_head"):
            raise ValueError(
                f"{type(model).__name__} has no detection head: export it with "
                "--feature_extractor (backbone + decoder for fine-tuning)"
            )
        if feature_extractor:
            feature_extractor_lib.export_feature_extractor(model, tmp_dir, image_size)
            export_info = {"kind": "feature_extractor", "input": "float32 normalized images"}
        else:
            preprocess = functools.partial(
                eval_preprocess, image_size=image_size, pad_value=pad_value
            )
            module = detection.DetectionModule(
                model, preprocess, image_size, mask_output=mask_output
            )
            signature = module.concrete_function(input_type, batch_size)
            tf.saved_model.save(module, tmp_dir, signatures={"serving_default": signature})
            export_info = {
                "kind": "detection",
                "input_type": input_type,
                "mask_output": mask_output,
                "outputs": sorted(signature.structured_outputs),
            }
        export_info.update(
            image_size=list(image_size),
            num_classes=model_num_classes(model),
            pad_value=pad_value,
            **(info or {}),
        )
        write_sidecars(tmp_dir, export_info, gin_files, gin_bindings)
        _commit(tmp_dir, export_dir)
    finally:
        if os.path.isdir(tmp_dir):
            shutil.rmtree(tmp_dir)
    return export_info


def export_from_gin(
    gin_files: Sequence[str],
    gin_bindings: Sequence[str] = (),
    *,
    model_dir: str | None,
    export_dir: str,
    checkpoint: str | None = None,
    input_type: str = "image_tensor",
    mask_output: str = "full",
    feature_extractor: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Parses gin, builds the task's model, restores the checkpoint, exports.

    Raises:
      tfcp.gin_utils.GinConfigError: bad gin files/bindings.
      FileNotFoundError: missing checkpoint.
      ValueError: checkpoint incompatible with the configured model.
      FileExistsError: non-empty `export_dir` without `overwrite`.
    """
    from tfcp import gin_utils  # noqa: PLC0415 - imports every gin configurable

    prepare_export_dir(export_dir, overwrite)  # fail before the slow model build
    gin_utils.import_configurables()
    gin_utils.parse_gin(gin_files, gin_bindings)
    checkpoint_path = resolve_checkpoint(model_dir, checkpoint)
    model = build_task_from_gin().build_model()
    restore_model(model, checkpoint_path)
    info = {"checkpoint": os.path.abspath(checkpoint_path), "label_map": label_map_from_gin()}
    return export_model(
        model,
        export_dir,
        input_type=input_type,
        mask_output=mask_output,
        feature_extractor=feature_extractor,
        pad_value=eval_pad_value(),
        overwrite=overwrite,
        info=info,
        gin_files=gin_files,
        gin_bindings=gin_bindings,
    )


def export_gin_files(gin_files: Sequence[str], model_dir: str | None) -> list[str]:
    """The export's gin files: `gin_files`, or the training run's `model_dir/config.gin`
    (written by `python -m tfcp.train`) when none is given.

    Raises:
      FileNotFoundError: no gin file given and no readable `model_dir/config.gin`.
    """
    if gin_files:
        return list(gin_files)
    if not model_dir:
        raise FileNotFoundError("no --gin_file: give --gin_file or a --model_dir with config.gin")
    path = os.path.join(model_dir, summaries.CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"no --gin_file and {path} does not exist (python -m tfcp.train writes it): "
            "pass the training --gin_file"
        )
    return [path]

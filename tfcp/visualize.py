"""Draws a PNG grid of augmented training samples (masks, boxes, pasted objects marked).

  python -m tfcp.visualize --gin_file=gin_configs/data/lsj_copy_paste.gin \
      --gin_bindings="TRAIN_FILES='data/train-*.tfrecord'" --gin_bindings="IMAGE_SIZE=512" \
      --gin_bindings="GLOBAL_BATCH_SIZE=8" --output=grid.png --num_images=8

The samples come from the `train/build_dataset` pipeline exactly as the trainer sees them
(un-normalized for display), scaled to `--tile_size` (384 px by default) before drawing so
masks (translucent fill and outline), boxes and labels read well. Pasted objects have a
dashed white/colored outline and a "P" tag; `--label_map=data/train_label_map.json` (the
converter's) names the classes.

With a self-training config (`PSEUDO_FILES` bound, e.g. gin_configs/self_training/
maskrcnn_tiny_student.gin) the batch mixes labeled and pseudo-labeled images
(`--num_images` x pseudo_fraction must be whole): a pseudo-labeled image has a violet frame
and a "pseudo" badge, objects pasted from a pseudo-labeled image are dashed violet and tagged
"P*" (from a labeled image: dashed white, "P"), and a legend under the grid says so.

  python -m tfcp.visualize --mode=predictions --saved_model=EXPORT_DIR \
      --image=a.jpg [--image=b.jpg ...] --output=predictions.png [--min_score=0.5]

draws the detections (masks, boxes, class names) of an exported SavedModel
(export/export_saved_model.py) on image files, via `tfcp.predict`.

  python -m tfcp.visualize --mode=cp2_pairs --gin_file=cp2/cp2_tiny.gin \
      --gin_bindings="TRAIN_FILES='images/'" --output=cp2_pairs.png --num_images=8

draws CP2 pretraining inputs (gin_configs/cp2/): each tile is the composed query | key pair
sharing one foreground crop, the pasted foreground outlined in yellow, the background dimmed.

Each mode is a function `(flags) -> uint8 [H, W, 3]` in `MODES`.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import gin
import numpy as np
from absl import app, flags
from PIL import Image

from tfcp import console

if __name__ == "__main__":
    console.setup()  # before TensorFlow is imported

from tfcp import draw, gin_utils, predict  # noqa: E402
from tfcp.data import pipeline  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", [], "Gin config files.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, e.g. \"TRAIN_FILES='x-*'\".")
flags.DEFINE_string("output", "grid.png", "Output PNG path.")
flags.DEFINE_string("mode", "augmented", "What to draw (see MODES).")
flags.DEFINE_integer(
    "num_images",
    8,
    "Number of samples (one batch; self-training: x pseudo_fraction must be whole).",
)
flags.DEFINE_integer("columns", 4, "Images per grid row.")
flags.DEFINE_integer(
    "tile_size",
    draw.DEFAULT_TILE_SIZE,
    "Grid tile size in pixels: each image is scaled so its longer side fills it, then drawn "
    "(0: keep each image's own size).",
)
flags.DEFINE_integer("seed", None, "Overrides the pipeline seed.")
flags.DEFINE_list("class_names", [], "Optional class names, index = class id.")
flags.DEFINE_string(
    "label_map", None, "Class names from a converter's {output_prefix}_label_map.json."
)
flags.DEFINE_string("saved_model", None, "predictions mode: exported detection SavedModel.")
flags.DEFINE_multi_string("image", [], "predictions mode: input image file(s).")
flags.DEFINE_float("min_score", 0.5, "predictions mode: draw detections scoring at least this.")


def sample_batch(
    num_images: int, *, seed: int | None = None, scope: str = "train"
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One batch of `num_images` augmented samples of the gin-configured `scope/build_dataset`.

    Built with `keep_is_pasted=True`, so labels hold `gt_is_pasted` (and, with pseudo-labeled
    data, `gt_from_pseudo` and `is_pseudo`).

    Args:
      num_images: the batch size (with pseudo-labeled data, pseudo_fraction x num_images
        must be a whole number).
      seed: overrides the configured seed when not None.
      scope: the gin scope of the pipeline.

    Returns:
      (images float32 [B, S, S, 3] normalized, the labels to draw as numpy arrays: the
      `gt_*` keys and `is_pseudo`; the model's anchor and RPN targets are left out).
    """
    kwargs = dict(global_batch_size=num_images, keep_is_pasted=True)
    if seed is not None:
        kwargs["seed"] = seed
    with gin.config_scope(scope):
        dataset = pipeline.build_dataset(**kwargs)
    images, labels = next(iter(dataset))
    drawn = {k: v.numpy() for k, v in labels.items() if k.startswith("gt_") or k == "is_pseudo"}
    return images.numpy(), drawn


def draw_batch(
    images: np.ndarray,
    labels: dict[str, np.ndarray],
    *,
    class_names=None,
    tile_size: int = draw.DEFAULT_TILE_SIZE,
) -> list[np.ndarray]:
    """Draws a training batch: masks, boxes, class labels and the pasted/pseudo marks.

    Args:
      images: float32 [B, S, S, 3], normalized as the model's input.
      labels: the pipeline's labels as numpy: `gt_classes` int [B, K] (-1 = padding),
        `gt_boxes` float [B, K, 4] pixels, optional `gt_masks` [B, K, M, M] box crops,
        `gt_is_pasted` bool [B, K] (dashed box, "P" tag), `gt_from_pseudo` bool [B, K]
        (pasted from a pseudo-labeled image: violet dashes, "P*"), `is_pseudo` bool [B]
        (pseudo-labeled image: violet frame and "pseudo" badge).
      class_names: optional names for the labels.
      tile_size: the images are scaled to this size before drawing (0: their own size).

    Returns:
      B uint8 [T, T, 3] tiles (T = tile_size, or S).
    """
    tiles = []
    for i in range(len(images)):
        image = draw.unnormalize_image(images[i])
        classes = labels["gt_classes"][i]
        valid = classes >= 0
        boxes = labels["gt_boxes"][i][valid]
        masks = None
        if "gt_masks" in labels:
            crops = labels["gt_masks"][i][valid]
            masks = draw.paste_crop_masks(crops, boxes, image.shape[0], image.shape[1])
        per_object = {
            flag: labels[key][i][valid]
            for flag, key in (("is_pasted", "gt_is_pasted"), ("from_pseudo", "gt_from_pseudo"))
            if key in labels
        }
        tiles.append(
            draw.render(
                image,
                boxes,
                classes[valid],
                masks,
                size=tile_size or max(image.shape[:2]),
                is_pseudo=bool(labels["is_pseudo"][i]) if "is_pseudo" in labels else False,
                class_names=class_names,
                **per_object,
            )
        )
    return tiles


def sample_tiles(
    num_images: int,
    *,
    seed: int | None = None,
    class_names=None,
    scope: str = "train",
    tile_size: int = draw.DEFAULT_TILE_SIZE,
) -> list[np.ndarray]:
    """Draws `num_images` augmented samples of the gin-configured `scope/build_dataset`.

    `sample_batch` then `draw_batch`: uint8 [T, T, 3] images with masks, boxes and class
    labels drawn (T = tile_size, 0: IMAGE_SIZE).
    """
    images, labels = sample_batch(num_images, seed=seed, scope=scope)
    return draw_batch(images, labels, class_names=class_names, tile_size=tile_size)


def load_class_names(flags_) -> dict[int, str] | list[str] | None:
    """`--class_names`, else the `--label_map` JSON ({"id": "name"}) as {id: name}, else None."""
    if flags_.class_names:
        return flags_.class_names
    if not flags_.label_map:
        return None
    with open(flags_.label_map) as f:
        return {int(k): v for k, v in json.load(f).items()}


def augmented_grid(flags_) -> np.ndarray:
    """The `augmented` mode: a grid of training samples (a self-training batch: with a legend)."""
    images, labels = sample_batch(flags_.num_images, seed=flags_.seed)
    tiles = draw_batch(
        images, labels, class_names=load_class_names(flags_), tile_size=flags_.tile_size
    )
    grid = draw.make_grid(tiles, columns=flags_.columns)
    if "is_pseudo" not in labels:
        return grid
    font_size = max(10, round(tiles[0].shape[0] / 24))  # the tiles' label size
    legend = draw.mixed_batch_legend(grid.shape[1], font_size=font_size)
    gap = np.full([4, grid.shape[1], 3], 255, np.uint8)
    return np.concatenate([grid, gap, legend], axis=0)


def predictions_grid(flags_) -> np.ndarray:
    """The `predictions` mode: detections of an exported SavedModel on image files."""
    if not flags_.saved_model or not flags_.image:
        raise app.UsageError("--mode=predictions needs --saved_model and at least one --image")
    return predict.predictions_grid(
        flags_.saved_model,
        flags_.image,
        min_score=flags_.min_score,
        tile_size=flags_.tile_size,
        columns=flags_.columns,
    )


def cp2_pairs_grid(flags_) -> np.ndarray:
    """The `cp2_pairs` mode: composed CP2 query | key pairs of `train/build_cp2_dataset`
    (gin_configs/cp2/*.gin), the pasted foreground outlined and the background dimmed."""
    from tfcp.data import cp2_pipeline  # noqa: PLC0415 - only this mode needs it
    from tfcp.tasks import cp2  # noqa: PLC0415

    kwargs = dict(global_batch_size=flags_.num_images)
    if flags_.seed is not None:
        kwargs["seed"] = flags_.seed
    with gin.config_scope("train"):
        features, labels = next(iter(cp2_pipeline.build_cp2_dataset(**kwargs)))
    tiles = cp2.draw_pairs(
        {k: v.numpy() for k, v in features.items()},
        {k: v.numpy() for k, v in labels.items()},
        size=flags_.tile_size or None,
    )
    return draw.make_grid(tiles, columns=max(1, flags_.columns // 2), gap=12)  # pairs apart


MODES: dict[str, Callable[..., np.ndarray]] = {
    "augmented": augmented_grid,
    "predictions": predictions_grid,
    "cp2_pairs": cp2_pairs_grid,
}


def main(argv) -> None:
    del argv
    if FLAGS.mode not in MODES:
        raise app.UsageError(f"--mode must be one of {sorted(MODES)}, got {FLAGS.mode!r}")
    # Not finalized: macros of the paths this mode does not build (e.g. EVAL_FILES) may
    # stay unbound; a missing macro that is used still fails when it is evaluated.
    gin_utils.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings, finalize_config=False)
    grid = MODES[FLAGS.mode](FLAGS)
    Image.fromarray(grid).save(FLAGS.output)
    print(f"Wrote {FLAGS.output} ({grid.shape[1]}x{grid.shape[0]})")


if __name__ == "__main__":
    app.run(main)

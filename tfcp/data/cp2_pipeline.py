"""CP2 input pipeline: Copy-Paste composition of MoCo v2 views (Wang et al., ECCV 2022).

Per example (position p of an input pipeline's stream) three images are read: a foreground
F and two backgrounds B0, B1, from three independent orderings of the same data (the
reference's three samplers with seeds 0, 1024, 2048): `open_records` / the folder stream
with seeds `seed`, `seed + BG_SEED_OFFSETS[0]`, `seed + BG_SEED_OFFSETS[1]`, so a composed
image's background is normally another image. Then (`compose_example`):

- two MoCo v2 views of F (`tfcp.ops.moco_augment.moco_view`: random resized crop at
  `crop_scale`, color jitter 0.4/0.4/0.4/0.1 with p `color_jitter_prob`, grayscale with p
  `grayscale_prob`, Gaussian blur sigma ~ U(`blur_sigma`) with p `blur_prob`, flip), one
  view of each background with the same augmentation;
- in each background view a `moco_augment.random_erasing_box` rectangle (area fraction
  `erase_scale`, aspect `erase_ratio`) is replaced by the SAME pixels of a foreground view
  (`compose`: image = foreground inside the box, background outside; mask = 1 inside):
  query = (F view 0 on B0, mask 0), key = (F view 1 on B1, mask 1).

This is the reference's `RandomErasing(p=1, value=0)` on the normalized background followed
by `image_q = fg_q * mask_q + bg0`, `mask_q = (bg0[:, 0] == 0)`: the erased value 0 is
never the normalized value of a uint8 pixel, so its mask is exactly the rectangle, as here.
When no erasing attempt fits, torchvision erases nothing: the mask is all background.

Outputs: per-replica batches `(features, labels)`, static shapes, drop_remainder:
  features = {'query_images', 'key_images': float32 [B, S, S, 3]} normalized by Model
  Garden's `preprocess_ops.normalize_image` (ImageNet mean/std, as the reference),
  labels = {'query_masks', 'key_masks': float32 [B, S, S]} (1.0 = pasted foreground).

Inputs: tfcp TFRecords (only `image/encoded` is read) or a directory of .jpg/.jpeg/.png
images (searched recursively, sorted). Every random choice is a stateless function of the
seed and the position p: resuming at `start_step` reproduces the uninterrupted stream at a
cost independent of the step (TFRecords: `tfcp.data.records`; folders: epoch e = p // n
is a seeded permutation of the pipeline's n files, drawn on demand). Evaluation
(`is_training=False`): one pass in file order, backgrounds B0 / B1 are the same pass
rotated by 1 / 2 images, augmentation seeded by `EVAL_SEED` (not `seed`), so every
evaluation sees the same pairs.

Deviations from the reference (PyTorch, wangf3014/CP2 main.py): see
`tfcp.ops.moco_augment` for the augmentation (contrast/saturation formulas of the color
jitter, exact Gaussian instead of PIL's box approximation); samplers are index-keyed
stateless streams rather than `DistributedSampler`s (same role: a fresh permutation per
epoch, a different one for each of the three streams).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import gin
import tensorflow as tf
from official.vision.ops import preprocess_ops

from tfcp.data import decoder, records, schema
from tfcp.ops import moco_augment

BG_SEED_OFFSETS = (0x0C92_0400, 0x0C92_0800)  # stream seeds of B0, B1: seed + these
EVAL_SEED = 0  # augmentation seed of evaluation (fixed: the same pairs every time)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")  # JPEG, PNG, GIF, BMP
_no_autograph = tf.autograph.experimental.do_not_convert


class CompositionOptions(NamedTuple):
    """The per-example composition: the view augmentation and the paste rectangle."""

    view: moco_augment.ViewOptions = moco_augment.ViewOptions()
    erase_scale: tuple[float, float] = (0.5, 0.8)
    erase_ratio: tuple[float, float] = (0.8, 1.25)


def box_mask(box: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """float32 [height, width]: 1.0 inside `box` = int [4] (top, left, h, w), else 0.0."""
    top, left, h, w = tf.unstack(tf.cast(box, tf.int32))
    rows = tf.range(height)
    cols = tf.range(width)
    inside_r = (rows >= top) & (rows < top + h)
    inside_c = (cols >= left) & (cols < left + w)
    return tf.cast(inside_r[:, None] & inside_c[None, :], tf.float32)


def compose(
    foreground: tf.Tensor, background: tf.Tensor, box: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Pastes the foreground's pixels inside `box` onto the background.

    Args:
      foreground, background: [S_h, S_w, C] of one dtype (same shape, static).
      box: int [4] (top, left, height, width); height or width 0 = nothing pasted.

    Returns:
      (image: `foreground` inside the box, `background` outside, their dtype and shape;
      mask: float32 [S_h, S_w], 1.0 inside the box).
    """
    foreground = tf.convert_to_tensor(foreground)
    background = tf.convert_to_tensor(background)
    height, width = background.shape[0], background.shape[1]
    mask = box_mask(box, height, width)
    image = tf.where(mask[..., None] > 0, foreground, background)
    return image, mask


def compose_example(
    foreground: tf.Tensor,
    background0: tf.Tensor,
    background1: tf.Tensor,
    seed: tf.Tensor,
    options: CompositionOptions = CompositionOptions(),
) -> dict[str, tf.Tensor]:
    """One CP2 example from three decoded images (module docstring), not normalized.

    Args:
      foreground, background0, background1: uint8 [H_i, W_i, 3] (any sizes).
      seed: int [2] stateless seed.
      options: the augmentation and paste rectangle.

    Returns:
      {'query_image', 'key_image': uint8 [S, S, 3] composed; 'query_mask', 'key_mask':
      float32 [S, S]; 'query_box', 'key_box': int32 [4] (top, left, height, width); the
      un-composed views 'query_foreground', 'query_background', 'key_foreground',
      'key_background': uint8 [S, S, 3]}.
    """
    s_fg0, s_fg1, s_bg0, s_bg1, s_box0, s_box1 = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 6)
    )
    size = int(options.view.size)
    out = {}
    for name, fg_seed, bg, bg_seed, box_seed in (
        ("query", s_fg0, background0, s_bg0, s_box0),
        ("key", s_fg1, background1, s_bg1, s_box1),
    ):
        fg_view = moco_augment.moco_view(foreground, fg_seed, options.view)
        bg_view = moco_augment.moco_view(bg, bg_seed, options.view)
        box = moco_augment.random_erasing_box(
            box_seed, size, size, scale=options.erase_scale, ratio=options.erase_ratio
        )
        out[f"{name}_image"], out[f"{name}_mask"] = compose(fg_view, bg_view, box)
        out[f"{name}_box"] = box
        out[f"{name}_foreground"], out[f"{name}_background"] = fg_view, bg_view
    return out


def list_image_files(directory: str) -> list[str]:
    """Sorted paths of the .jpg/.jpeg/.png files under `directory` (recursive, any case).

    Raises:
      ValueError: no image file under `directory` (names it).
    """
    files = []
    for root, _, names in tf.io.gfile.walk(directory):
        files.extend(os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise ValueError(
            f"cp2: no image file ({', '.join(IMAGE_EXTENSIONS)}) under the directory {directory!r}"
        )
    return sorted(files)


def folder_train_stream(
    files: Sequence[str],
    *,
    seed: int,
    num_pipelines: int = 1,
    pipeline_id: int = 0,
    start: int = 0,
) -> tf.data.Dataset:
    """The endless index-keyed stream of one input pipeline over image files.

    Epoch e is a permutation of all files drawn from (seed, e); pipeline k keeps its
    elements k, k + P, k + 2P, ... (P pipelines), n_k of them. Position p of the pipeline
    is element (p % n_k) of epoch p // n_k: a pure function of (seed, p).

    Returns:
      A dataset of `(position int64 [], path string [], encoded string [])` from `start`.

    Raises:
      ValueError: this pipeline gets no file.
    """
    n_files = len(files)
    per_epoch = len(range(pipeline_id, n_files, max(num_pipelines, 1)))
    if per_epoch == 0:
        raise ValueError(
            f"cp2: input pipeline {pipeline_id} of {num_pipelines} gets no image from "
            f"{n_files} file(s): {list(files)[:4]}"
        )
    paths = tf.constant(list(files))
    stream_seed = tf.constant([seed, 0xC2F0], tf.int64)

    def element(position):
        epoch, index = position // per_epoch, position % per_epoch
        epoch_seed = tf.random.experimental.stateless_fold_in(stream_seed, epoch)
        order = tf.argsort(tf.random.stateless_uniform([n_files], epoch_seed), stable=True)
        path = paths[order[pipeline_id + index * num_pipelines]]
        return position, path, tf.io.read_file(path)

    return tf.data.Dataset.range(int(start), tf.int64.max).map(element)


def _decode(encoded: tf.Tensor, name: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, 3] of JPEG/PNG/GIF/BMP bytes; an error naming `name` for anything else."""
    known = tf.reduce_any(
        [tf.equal(tf.strings.substr(encoded, 0, len(magic)), magic) for magic in _MAGIC]
    )
    check = tf.debugging.Assert(known, ["cp2: not a JPEG/PNG/GIF/BMP image:", name])
    with tf.control_dependencies([check]):
        return decoder.decode_image(encoded)


def _record_image(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(image/encoded, image/source_id) of a serialized tfcp TF Example."""
    parsed = tf.io.parse_single_example(
        serialized,
        {
            schema.IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string),
            schema.IMAGE_SOURCE_ID: tf.io.FixedLenFeature((), tf.string, ""),
        },
    )
    return parsed[schema.IMAGE_ENCODED], parsed[schema.IMAGE_SOURCE_ID]


def _train_streams(
    file_pattern, folder, *, seed, shuffle_buffer, input_context, global_batch_size, start_step
) -> list[tf.data.Dataset]:
    """Three aligned `(position, name, encoded)` training streams (F, B0, B1)."""
    seeds = (seed, seed + BG_SEED_OFFSETS[0], seed + BG_SEED_OFFSETS[1])
    if folder is not None:
        num_pipelines, pipeline_id, batch_size = records.pipeline_layout(
            input_context, global_batch_size
        )
        start = records.start_position(start_step, batch_size, input_context)
        return [
            folder_train_stream(
                folder, seed=s, num_pipelines=num_pipelines, pipeline_id=pipeline_id, start=start
            )
            for s in seeds
        ]
    streams = []
    for s in seeds:
        opened = records.open_records(
            file_pattern,
            is_training=True,
            seed=s,
            shuffle_buffer=shuffle_buffer,
            input_context=input_context,
            global_batch_size=global_batch_size,
            start_step=start_step,
        )
        streams.append(opened.dataset.map(lambda p, name, r: (p, name, _record_image(r)[0])))
    return streams


def _eval_stream(file_pattern, folder, input_context) -> tf.data.Dataset:
    """One pass of `(name, encoded)` in file order, sharded by input pipeline."""
    num_pipelines, pipeline_id, _ = records.pipeline_layout(input_context, 1)
    if folder is not None:
        paths = list(folder)[pipeline_id::num_pipelines]
        return tf.data.Dataset.from_tensor_slices(paths).map(lambda p: (p, tf.io.read_file(p)))
    files = records.list_files(file_pattern)
    serialized = records.eval_records(files, num_pipelines=num_pipelines, pipeline_id=pipeline_id)
    return serialized.map(lambda r: tuple(reversed(_record_image(r))))


def _rotated(dataset: tf.data.Dataset, shift: int) -> tf.data.Dataset:
    """The same finite pass starting `shift` elements later, wrapping around."""
    return dataset.skip(shift).concatenate(dataset.take(shift))


@gin.configurable
def build_cp2_dataset(
    file_pattern: str | Sequence[str],
    *,
    is_training: bool = True,
    image_size: int = 224,
    global_batch_size: int = gin.REQUIRED,
    crop_scale: Sequence[float] = (0.2, 1.0),
    erase_scale: Sequence[float] = (0.5, 0.8),
    erase_ratio: Sequence[float] = (0.8, 1.25),
    color_jitter_prob: float = 0.8,
    grayscale_prob: float = 0.2,
    blur_prob: float = 0.5,
    blur_sigma: Sequence[float] = (0.1, 2.0),
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    start_step: int = 0,
    flip_prob: float = 0.5,
    shuffle_buffer: int = 256,
    num_parallel_calls: int = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """Builds the CP2 pretraining (or fixed evaluation) dataset; see the module docstring.

    Args:
      file_pattern: TFRecord glob(s), comma-separated or a list, or a directory of images.
      is_training: endless shuffled resumable streams; or one pass in file order with
        backgrounds rotated by 1 and 2 images and the augmentation seeded by `EVAL_SEED`.
      image_size: S, the side of the output images and masks.
      global_batch_size: batch over all replicas (per replica via `input_context`).
      crop_scale: random resized crop area fraction range.
      erase_scale, erase_ratio: paste rectangle area fraction and aspect (h / w) ranges.
      color_jitter_prob, grayscale_prob, blur_prob: probabilities of those augmentations.
      blur_sigma: Gaussian blur sigma range (pixels).
      seed: training seed of the three orderings and of the augmentation.
      input_context: `tf.distribute.InputContext` for sharding and per-replica batch.
      start_step: training: the global step the stream starts at (exact resume).
      flip_prob: horizontal flip probability.
      shuffle_buffer: TFRecords: records per shuffled window (`tfcp.data.records`).
      num_parallel_calls: parallelism of the composition stage.

    Returns:
      A `tf.data.Dataset` of `(features, labels)`, see the module docstring.

    Raises:
      ValueError: no file or image found (names the pattern or directory), a bad option,
        or an input pipeline without data.
    """
    options = CompositionOptions(
        view=moco_augment.ViewOptions(
            size=int(image_size),
            crop_scale=tuple(crop_scale),
            color_jitter_prob=color_jitter_prob,
            grayscale_prob=grayscale_prob,
            blur_prob=blur_prob,
            blur_sigma=tuple(blur_sigma),
            flip_prob=flip_prob,
        ),
        erase_scale=tuple(erase_scale),
        erase_ratio=tuple(erase_ratio),
    )
    moco_augment.validate(options.view)
    moco_augment.check_range("erase_scale", options.erase_scale, 0.0, 1.0)
    moco_augment.check_range("erase_ratio", options.erase_ratio, 1e-6)
    folder = None
    if isinstance(file_pattern, str) and tf.io.gfile.isdir(file_pattern):
        folder = list_image_files(file_pattern)
    _, pipeline_id, batch_size = records.pipeline_layout(input_context, global_batch_size)
    if is_training:
        streams = _train_streams(
            file_pattern,
            folder,
            seed=seed,
            shuffle_buffer=shuffle_buffer,
            input_context=input_context,
            global_batch_size=global_batch_size,
            start_step=start_step,
        )
        base_seed = tf.constant([seed, pipeline_id], tf.int64)
        keyed = tf.data.Dataset.zip(*streams).map(
            lambda f, b0, b1: (f[0], (f[1], f[2]), (b0[1], b0[2]), (b1[1], b1[2]))
        )
    else:
        base_seed = tf.constant([EVAL_SEED, pipeline_id], tf.int64)
        one_pass = _eval_stream(file_pattern, folder, input_context)
        triples = tf.data.Dataset.zip(one_pass, _rotated(one_pass, 1), _rotated(one_pass, 2))
        keyed = triples.enumerate().map(lambda p, x: (p, x[0], x[1], x[2]))

    @_no_autograph
    def make(position, fg, bg0, bg1):
        images = [_decode(encoded, name) for name, encoded in (fg, bg0, bg1)]
        seed_p = tf.random.experimental.stateless_fold_in(base_seed, position)
        out = compose_example(*images, seed_p, options)
        features = {
            "query_images": preprocess_ops.normalize_image(out["query_image"]),
            "key_images": preprocess_ops.normalize_image(out["key_image"]),
        }
        labels = {"query_masks": out["query_mask"], "key_masks": out["key_mask"]}
        return features, labels

    dataset = keyed.map(make, num_parallel_calls=num_parallel_calls, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)

"""Procedural scenes of textured shapes for synthetic instance-segmentation data.

Objects look like `tfcp.data.synthetic.shapes.class_style` of their class. A scene is a
textured background (gradient, low-frequency blobs, stripes, noise) with objects drawn back
to front at random positions, scales (COCO's small / medium / large buckets), aspect ratios
and rotations. The returned masks are the VISIBLE parts of the objects after later objects
occlude earlier ones, as in real COCO/VOC annotations; objects left with a tiny visible
area are dropped and counted.

Pure numpy + PIL, deterministic for a given `numpy.random.Generator` state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image

from tfcp.data.synthetic.shapes import (
    Pose,
    class_style,
    draw_mask,
    hsv,
    paint,
    transform,
    unit_area,
    unit_parts,
)

# COCO's object-size buckets, in pixels of area: small < 32^2 <= medium < 96^2 <= large.
_SIZE_BUCKETS = ((7.0, 32.0), (32.0, 96.0), (96.0, math.inf))
_SIZE_BUCKET_PROBS = (0.35, 0.35, 0.3)
_INSIDE_PROB = 0.6
_ASPECTS = ((3, 4), (4, 3), (1, 1))  # (h, w): landscape 4:3, portrait 3:4, square.
_ASPECT_PROBS = (0.5, 0.25, 0.25)


class Scene(NamedTuple):
    """A rendered scene.

    Attributes:
      image: uint8 [H, W, 3] RGB.
      masks: uint8 [N, H, W] 0/1 visible masks, drawing order (back to front), disjoint.
      class_indices: int64 [N] style indices in [0, num_classes).
      is_crowd: bool [N]; a crowd is one annotation for a cluster of small same-class objects.
      truncated: bool [N]; the object extends beyond the image border.
      full_areas: int64 [N] pixels of the object inside the image before occlusion.
      num_dropped: objects drawn but dropped because too little of them stayed visible.
    """

    image: np.ndarray
    masks: np.ndarray
    class_indices: np.ndarray
    is_crowd: np.ndarray
    truncated: np.ndarray
    full_areas: np.ndarray
    num_dropped: int


def render_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Muted textured background: gradient + low-frequency blobs + stripes + noise.

    Returns:
      float32 [height, width, 3], roughly in [0, 255] (rounded and clipped by the caller).
    """
    yy = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xx = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    a = rng.uniform(0.0, 2.0 * np.pi)
    g = math.cos(a) * xx + math.sin(a) * yy
    g = (g - g.min()) / max(float(g.max() - g.min()), 1e-6)
    h = rng.uniform()
    c0 = hsv(h, rng.uniform(0.05, 0.25), rng.uniform(0.35, 0.8))
    c1 = hsv(h + rng.uniform(-0.15, 0.15), rng.uniform(0.05, 0.25), rng.uniform(0.35, 0.8))
    gh, gw = rng.integers(3, 8, size=2)
    blobs = rng.normal(0.0, 1.0, (int(gh), int(gw))).astype(np.float32)
    blobs = np.asarray(Image.fromarray(blobs, "F").resize((width, height), Image.BILINEAR))
    b = rng.uniform(0.0, 2.0 * np.pi)
    freq = rng.uniform(4.0, 24.0) * 2.0 * np.pi / 256.0
    stripes = np.sin(freq * (math.cos(b) * width * xx + math.sin(b) * height * yy))
    # Luminance texture shared by the three channels, then the colour gradient.
    lum = rng.standard_normal((height, width), dtype=np.float32)
    lum *= 5.0
    lum += rng.uniform(6.0, 18.0) * blobs
    lum += rng.uniform(3.0, 12.0) * stripes
    img = np.multiply.outer(g, c1 - c0)
    img += c0
    img += lum[..., None]
    return img


def _sample_sqrt_area(rng: np.random.Generator, short_side: int) -> float:
    """Object size (sqrt of area in px), bucketed like COCO's small/medium/large."""
    hi = 0.7 * short_side
    lo = min(_SIZE_BUCKETS[0][0], hi)
    ranges, probs = [], []
    for (b_lo, b_hi), p in zip(_SIZE_BUCKETS, _SIZE_BUCKET_PROBS, strict=True):
        b_lo, b_hi = max(b_lo, lo), min(b_hi, hi)
        if b_hi > b_lo:
            ranges.append((b_lo, b_hi))
            probs.append(p)
    if not ranges:
        return lo
    k = rng.choice(len(ranges), p=np.asarray(probs) / sum(probs))
    b_lo, b_hi = ranges[k]
    return float(math.exp(rng.uniform(math.log(b_lo), math.log(b_hi))))


def _sample_pose(rng, shape: str, sqrt_area: float, cx: float, cy: float) -> Pose:
    stretch = math.exp(rng.uniform(-0.35, 0.35))
    scale = sqrt_area / math.sqrt(unit_area(shape))
    return Pose(cx, cy, scale, stretch, 1.0 / stretch, rng.uniform(0.0, 2.0 * np.pi))


def _place(rng, shape: str, pose: Pose, height: int, width: int) -> Pose:
    """Moves the object fully inside the image with probability `_INSIDE_PROB` if it fits,
    else anywhere with its centre in the image (then it may be truncated)."""
    pts = np.concatenate(
        [transform(v, pose._replace(cx=0.0, cy=0.0)) for v, _ in unit_parts(shape)]
    )
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    if rng.random() < _INSIDE_PROB and x1 - x0 < width and y1 - y0 < height:
        return pose._replace(cx=rng.uniform(-x0, width - x1), cy=rng.uniform(-y0, height - y1))
    return pose._replace(cx=rng.uniform(0.0, width), cy=rng.uniform(0.0, height))


def visible_parts(
    full_masks: Sequence[np.ndarray], min_visible_pixels: int, min_visible_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Visible parts of objects drawn back to front (later objects occlude earlier ones).

    Args:
      full_masks: N bool [H, W] masks in drawing order, before occlusion.
      min_visible_pixels: objects with fewer visible pixels are dropped.
      min_visible_fraction: objects whose visible part is a smaller fraction of their full
        mask are dropped. Dropped objects still occlude the ones behind them.

    Returns:
      keep: int64 [K] indices of the kept objects, increasing; N - K objects were dropped.
      masks: uint8 [K, H, W] 0/1 disjoint visible masks of the kept objects.
    """
    occupied = None
    keep, visible = [], []
    for k in range(len(full_masks) - 1, -1, -1):
        full = np.asarray(full_masks[k], bool)
        vis = full if occupied is None else full & ~occupied
        occupied = full.copy() if occupied is None else occupied | full
        area = int(vis.sum())
        if area >= min_visible_pixels and area >= min_visible_fraction * int(full.sum()):
            keep.append(k)
            visible.append(vis)
    shape = np.shape(full_masks[0]) if len(full_masks) else (0, 0)
    masks = np.zeros((len(keep), *shape), np.uint8)
    for i, vis in enumerate(reversed(visible)):
        masks[i] = vis
    return np.array(keep[::-1], np.int64), masks


def generate_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    num_classes: int,
    *,
    num_instances: int | None = None,
    class_indices: Sequence[int] | None = None,
    mean_instances: float = 6.0,
    max_instances: int = 15,
    crowd: bool = False,
    min_visible_pixels: int = 20,
    min_visible_fraction: float = 0.05,
) -> Scene:
    """Renders one scene of textured objects with visible-part instance masks.

    Args:
      rng: the generator; the scene is a pure function of its state.
      height: image height in pixels (>= 16).
      width: image width in pixels (>= 16).
      num_classes: objects use styles `class_style(0 .. num_classes - 1)`.
      num_instances: objects to draw (before occlusion drops); default
        `1 + Poisson(mean_instances - 1)` clipped to `max_instances`.
      class_indices: the style index of every object to draw, back to front, each in
        [0, num_classes), instead of `num_instances` random ones (not with `num_instances`
        or `crowd`).
      mean_instances: mean number of drawn objects when `num_instances` is None.
      max_instances: upper bound on drawn objects (a crowd counts as one).
      crowd: also draw one crowd: a cluster of 5-10 small same-class objects annotated as
        a single `is_crowd` instance.
      min_visible_pixels: objects with fewer visible pixels are dropped (and counted).
      min_visible_fraction: objects whose visible part is a smaller fraction of their
        in-image area are dropped (and counted).

    Returns:
      A `Scene`.
    """
    if height < 16 or width < 16:
        raise ValueError(f"image must be at least 16x16, got {height}x{width}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if class_indices is not None:
        if num_instances is not None or crowd:
            raise ValueError("class_indices excludes num_instances and crowd")
        class_indices = [int(k) for k in class_indices]
        if any(not 0 <= k < num_classes for k in class_indices):
            raise ValueError(f"class_indices must be in [0, {num_classes}), got {class_indices}")
        num_instances = len(class_indices)
    if num_instances is None:
        num_instances = 1 + int(rng.poisson(max(mean_instances - 1.0, 0.0)))
        num_instances = min(num_instances, max_instances)
    image = render_background(rng, height, width)
    short = min(height, width)
    crowd_slot = int(rng.integers(0, num_instances + 1)) if crowd else -1
    layers = []  # (class index, is_crowd, [(shape, pose), ...])
    for k in range(num_instances + (1 if crowd else 0)):
        cls = int(rng.integers(0, num_classes)) if class_indices is None else class_indices[k]
        shape = class_style(cls).shape
        cx, cy = rng.uniform(0.0, width), rng.uniform(0.0, height)
        if k == crowd_slot:
            radius = rng.uniform(0.15, 0.3) * short
            member = max(min(0.35 * radius, 28.0), 5.0)
            parts = []
            for _ in range(int(rng.integers(5, 11))):
                r, a = radius * math.sqrt(rng.uniform()), rng.uniform(0.0, 2.0 * np.pi)
                px, py = cx + r * math.cos(a), cy + r * math.sin(a)
                size = member * rng.uniform(0.7, 1.2)
                parts.append((shape, _sample_pose(rng, shape, size, px, py)))
            layers.append((cls, True, parts))
        else:
            pose = _sample_pose(rng, shape, _sample_sqrt_area(rng, short), cx, cy)
            layers.append((cls, False, [(shape, _place(rng, shape, pose, height, width))]))

    full_masks, truncated = [], []
    for cls, _, parts in layers:
        style = class_style(cls)
        union = np.zeros((height, width), bool)
        crossed = False
        for shape, pose in parts:
            m, outside = draw_mask(shape, pose, height, width)
            paint(image, m, style, pose, rng)
            union |= m
            crossed |= outside
        full_masks.append(union)
        truncated.append(crossed)

    keep, masks = visible_parts(full_masks, min_visible_pixels, min_visible_fraction)
    masks = masks.reshape(len(keep), height, width)
    out = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Scene(
        image=out,
        masks=masks,
        class_indices=np.array([layers[k][0] for k in keep], np.int64),
        is_crowd=np.array([layers[k][1] for k in keep], bool),
        truncated=np.array([truncated[k] for k in keep], bool),
        full_areas=np.array([full_masks[k].sum() for k in keep], np.int64),
        num_dropped=len(layers) - len(keep),
    )


def render_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    classes: Sequence[int],
    **kwargs,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Renders a scene whose objects carry the given class ids.

    Args:
      rng: numpy Generator (the scene is a pure function of its state).
      height: image height in pixels.
      width: image width in pixels.
      classes: class ids, e.g. COCO category ids; `classes[k]` looks like `class_style(k)`.
      **kwargs: forwarded to `generate_scene` (num_instances, mean_instances, crowd, ...).

    Returns:
      image: uint8 [H, W, 3]; masks: uint8 [N, H, W] 0/1 visible masks (back to front);
      class_ids: int64 [N] entries of `classes`.
    """
    scene = generate_scene(rng, height, width, len(classes), **kwargs)
    ids = np.asarray(classes, np.int64)[scene.class_indices]
    return scene.image, scene.masks, ids.astype(np.int64)


def image_rng(seed: int, *tags: int) -> np.random.Generator:
    """The per-image generator: a pure function of (seed, tags), independent of order."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng(np.random.SeedSequence([seed, *tags]))


def image_shape(
    rng: np.random.Generator, image_size: int, image_hw: tuple[int, int] | None
) -> tuple[int, int]:
    """(height, width): `image_hw` if given, else 4:3, 3:4 or 1:1 with longer side image_size."""
    rh, rw = _ASPECTS[int(rng.choice(len(_ASPECTS), p=_ASPECT_PROBS))]
    if image_hw is not None:
        return int(image_hw[0]), int(image_hw[1])
    return image_size * rh // max(rh, rw), image_size * rw // max(rh, rw)


def save_jpeg(image: np.ndarray, path: str, quality: int = 90) -> None:
    """Writes uint8 [H, W, 3] RGB `image` as a baseline JPEG."""
    Image.fromarray(image).save(path, "JPEG", quality=quality)

"""Procedural scenes of textured shapes for synthetic instance-segmentation data.

Every class has a fixed appearance -- a shape family, a colour pair and a texture -- so a
detector can learn the class from the pixels. A scene is a textured background (gradient,
low-frequency blobs, stripes, noise) with objects drawn back to front at random positions,
scales (COCO's small / medium / large buckets), aspect ratios and rotations. The returned
masks are the VISIBLE parts of the objects after later objects occlude earlier ones, as in
real COCO/VOC annotations; objects left with a tiny visible area are dropped and counted.

Pure numpy + PIL, deterministic for a given `numpy.random.Generator` state.
"""

from __future__ import annotations

import colorsys
import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

SHAPES = (
    "ellipse",
    "rectangle",
    "triangle",
    "star",
    "ring",
    "cross",
    "hexagon",
    "crescent",
    "heart",
    "arrow",
)
TEXTURES = ("stripes", "checker", "dots", "rings", "gradient", "speckle")

# COCO's object-size buckets, in pixels of area: small < 32^2 <= medium < 96^2 <= large.
_SIZE_BUCKETS = ((7.0, 32.0), (32.0, 96.0), (96.0, math.inf))
_SIZE_BUCKET_PROBS = (0.35, 0.35, 0.3)
_INSIDE_PROB = 0.6
_ASPECTS = ((3, 4), (4, 3), (1, 1))  # (h, w): landscape 4:3, portrait 3:4, square.
_ASPECT_PROBS = (0.5, 0.25, 0.25)


class ClassStyle(NamedTuple):
    """Appearance of one class: shape family, texture and two RGB colours (float32 [3])."""

    shape: str
    texture: str
    color: np.ndarray
    color2: np.ndarray


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


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32) * 255.0


def class_style(index: int) -> ClassStyle:
    """Returns the fixed appearance of style `index` (>= 0); distinct for the first 20."""
    if index < 0:
        raise ValueError(f"class style index must be >= 0, got {index}")
    shape = SHAPES[index % len(SHAPES)]
    texture = TEXTURES[(index + 2 * (index // len(SHAPES))) % len(TEXTURES)]
    # Hues 1/8 apart for the first 8 styles, then offset by 1/16 and 1/32 for the next ones.
    hue = 0.03 + ((index * 3) % 8) / 8.0 + [0.0, 1.0 / 16.0, 1.0 / 32.0][index // 8 % 3]
    sat = 0.8 if index % 3 else 0.6
    val = 0.92 if index % 2 == 0 else 0.75
    return ClassStyle(shape, texture, _hsv(hue, sat, val), _hsv(hue + 0.1, sat, val * 0.45))


def _circle(n: int, r: float = 1.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _regular(n: int, r: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + np.arange(n) * 2.0 * np.pi / n
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _heart(n: int = 48) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    x = 16.0 * np.sin(t) ** 3
    y = -(13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y + 2.5], axis=1) / 16.0


@functools.cache
def _unit_parts(shape: str) -> tuple[tuple[np.ndarray, int], ...]:
    """Polygons (vertices [K, 2] in unit coordinates, fill 1 or 0) drawn in order."""
    if shape == "ellipse":
        return ((_circle(48), 1),)
    if shape == "rectangle":
        return ((np.array([[-1, -0.8], [1, -0.8], [1, 0.8], [-1, 0.8]], np.float64), 1),)
    if shape == "triangle":
        return ((_regular(3) + [0.0, 0.25], 1),)
    if shape == "star":
        star = _regular(10)
        star[1::2] *= 0.45
        return ((star, 1),)
    if shape == "ring":
        return ((_circle(48), 1), (_circle(40, 0.55), 0))
    if shape == "cross":
        a = 0.33
        pts = [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a)]
        pts += [(-1, a), (-1, -a), (-a, -a)]
        return ((np.array(pts, np.float64), 1),)
    if shape == "hexagon":
        return ((_regular(6, phase=0.0), 1),)
    if shape == "crescent":
        return ((_circle(48), 1), (_circle(48, 0.85, 0.5, -0.1), 0))
    if shape == "heart":
        return ((_heart(), 1),)
    if shape == "arrow":
        pts = [(-1, -0.28), (0.15, -0.28), (0.15, -0.7), (1, 0), (0.15, 0.7), (0.15, 0.28)]
        return ((np.array(pts + [(-1, 0.28)], np.float64), 1),)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


@functools.cache
def _unit_area(shape: str) -> float:
    """Area of the unit shape, measured by rasterizing it at 400 px per unit."""
    size, scale = 1000, 400.0
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for vertices, fill in _unit_parts(shape):
        draw.polygon([tuple(p) for p in vertices * scale + size / 2], fill=fill)
    return float(np.asarray(canvas, np.float64).sum()) / scale**2


class _Pose(NamedTuple):
    cx: float
    cy: float
    scale: float
    sx: float
    sy: float
    theta: float


def _transform(vertices: np.ndarray, pose: _Pose) -> np.ndarray:
    c, s = math.cos(pose.theta), math.sin(pose.theta)
    x = vertices[:, 0] * pose.sx * pose.scale
    y = vertices[:, 1] * pose.sy * pose.scale
    return np.stack([pose.cx + c * x - s * y, pose.cy + s * x + c * y], axis=1)


def _draw_mask(shape: str, pose: _Pose, height: int, width: int) -> tuple[np.ndarray, bool]:
    """Rasterizes one posed shape: (bool [H, W] mask, whether it crosses the border)."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    outside = False
    for vertices, fill in _unit_parts(shape):
        pts = _transform(vertices, pose)
        if fill:
            outside |= bool(
                (pts[:, 0] < 0).any()
                | (pts[:, 1] < 0).any()
                | (pts[:, 0] > width).any()
                | (pts[:, 1] > height).any()
            )
        draw.polygon([tuple(p) for p in pts], fill=fill)
    return np.asarray(canvas, bool), outside


def _texture(style: ClassStyle, u: np.ndarray, v: np.ndarray, rng) -> np.ndarray:
    """Texture weight in [0, 1] (float32, shape of `u`) at unit coordinates (u, v)."""
    if style.texture == "stripes":
        return 0.5 + 0.5 * np.sin(2.0 * np.pi * 2.5 * u)
    if style.texture == "checker":
        return ((np.floor(u * 2.5 + 10.0) + np.floor(v * 2.5 + 10.0)) % 2).astype(np.float32)
    if style.texture == "dots":
        fu, fv = u * 3.0 - np.round(u * 3.0), v * 3.0 - np.round(v * 3.0)
        return (fu * fu + fv * fv < 0.09).astype(np.float32)
    if style.texture == "rings":
        return 0.5 + 0.5 * np.sin(2.0 * np.pi * 3.0 * np.sqrt(u * u + v * v))
    if style.texture == "gradient":
        return np.clip(0.5 + 0.5 * u, 0.0, 1.0)
    if style.texture == "speckle":
        return (rng.random(u.shape, dtype=np.float32) < 0.3).astype(np.float32)
    raise ValueError(f"unknown texture {style.texture!r}")


def _paint(image: np.ndarray, mask: np.ndarray, style: ClassStyle, pose: _Pose, rng) -> None:
    """Paints the textured, shaded, outlined object into float32 `image` where `mask`."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    m = mask[y0:y1, x0:x1]
    # Dark 1-px outline: mask pixels with a 4-neighbour outside the mask.
    p = np.pad(m, 1)
    edge = (m & ~(p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]))[m]
    ys, xs = np.nonzero(m)
    dx = xs.astype(np.float32) + (x0 + 0.5 - pose.cx)
    dy = ys.astype(np.float32) + (y0 + 0.5 - pose.cy)
    c, s = math.cos(pose.theta), math.sin(pose.theta)
    u = (c * dx + s * dy) / (pose.scale * pose.sx)
    v = (-s * dx + c * dy) / (pose.scale * pose.sy)
    t = _texture(style, u, v, rng)[:, None]
    rgb = (style.color * rng.uniform(0.88, 1.08)) * (1.0 - t) + style.color2 * t
    shade = 1.0 - 0.18 * np.clip(v, -1.0, 1.0)  # light from the top
    shade[edge] *= 0.6
    rgb *= shade[:, None]
    rgb += 4.0 * rng.standard_normal((ys.size, 1), dtype=np.float32)
    image[ys + y0, xs + x0] = rgb


def render_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Muted textured background: gradient + low-frequency blobs + stripes + noise.

    Returns:
      float32 [height, width, 3] in [0, 255] (not yet rounded).
    """
    yy = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xx = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    a = rng.uniform(0.0, 2.0 * np.pi)
    g = (math.cos(a) * xx + math.sin(a) * yy)[..., None]
    g = (g - g.min()) / max(float(g.max() - g.min()), 1e-6)
    h = rng.uniform()
    c0 = _hsv(h, rng.uniform(0.05, 0.25), rng.uniform(0.35, 0.8))
    c1 = _hsv(h + rng.uniform(-0.15, 0.15), rng.uniform(0.05, 0.25), rng.uniform(0.35, 0.8))
    img = c0 * (1.0 - g) + c1 * g
    gh, gw = rng.integers(3, 8, size=2)
    blobs = rng.normal(0.0, 1.0, (int(gh), int(gw))).astype(np.float32)
    blobs = np.asarray(Image.fromarray(blobs, "F").resize((width, height), Image.BILINEAR))
    img += rng.uniform(6.0, 18.0) * blobs[..., None]
    b = rng.uniform(0.0, 2.0 * np.pi)
    freq = rng.uniform(4.0, 24.0) * 2.0 * np.pi
    stripes = np.sin(freq * (math.cos(b) * xx * width + math.sin(b) * yy * height) / 256.0)
    img += rng.uniform(3.0, 12.0) * stripes[..., None]
    img += 5.0 * rng.standard_normal((height, width, 1), dtype=np.float32)
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


def _sample_pose(rng, shape: str, sqrt_area: float, cx: float, cy: float) -> _Pose:
    stretch = math.exp(rng.uniform(-0.35, 0.35))
    scale = sqrt_area / math.sqrt(_unit_area(shape))
    return _Pose(cx, cy, scale, stretch, 1.0 / stretch, rng.uniform(0.0, 2.0 * np.pi))


def _place(rng, shape: str, pose: _Pose, height: int, width: int) -> _Pose:
    """Moves the object fully inside the image with probability `_INSIDE_PROB` if it fits,
    else anywhere with its centre in the image (then it may be truncated)."""
    pts = np.concatenate(
        [_transform(v, pose._replace(cx=0.0, cy=0.0)) for v, _ in _unit_parts(shape)]
    )
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    if rng.random() < _INSIDE_PROB and x1 - x0 < width and y1 - y0 < height:
        return pose._replace(cx=rng.uniform(-x0, width - x1), cy=rng.uniform(-y0, height - y1))
    return pose._replace(cx=rng.uniform(0.0, width), cy=rng.uniform(0.0, height))


def generate_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    num_classes: int,
    *,
    num_instances: int | None = None,
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
    if num_instances is None:
        num_instances = 1 + int(rng.poisson(max(mean_instances - 1.0, 0.0)))
        num_instances = min(num_instances, max_instances)
    image = render_background(rng, height, width)
    short = min(height, width)
    crowd_slot = int(rng.integers(0, num_instances + 1)) if crowd else -1
    layers = []  # (class index, is_crowd, [(shape, pose), ...])
    for k in range(num_instances + (1 if crowd else 0)):
        cls = int(rng.integers(0, num_classes))
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
            m, outside = _draw_mask(shape, pose, height, width)
            _paint(image, m, style, pose, rng)
            union |= m
            crossed |= outside
        full_masks.append(union)
        truncated.append(crossed)

    occupied = np.zeros((height, width), bool)
    keep, visible = [], [None] * len(layers)
    for k in range(len(layers) - 1, -1, -1):
        vis = full_masks[k] & ~occupied
        occupied |= full_masks[k]
        area, full = int(vis.sum()), int(full_masks[k].sum())
        if area >= min_visible_pixels and area >= min_visible_fraction * full:
            keep.append(k)
            visible[k] = vis
    keep.reverse()
    out = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    masks = np.zeros((len(keep), height, width), np.uint8)
    for i, k in enumerate(keep):
        masks[i] = visible[k]
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

"""Object appearance for synthetic scenes: shape families, textures, class styles.

Every class has a fixed appearance -- a shape family, a colour pair and a texture -- so a
detector can learn the class from the pixels. Shapes are unit polygons (with optional holes)
posed by a similarity transform plus an aspect stretch, rasterized with PIL.
"""

from __future__ import annotations

import colorsys
import functools
import math
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


class ClassStyle(NamedTuple):
    """Appearance of one class: shape family, texture and two RGB colours (float32 [3])."""

    shape: str
    texture: str
    color: np.ndarray
    color2: np.ndarray


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """RGB float32 [3] in [0, 255] of an HSV colour (hue wraps around)."""
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
    return ClassStyle(shape, texture, hsv(hue, sat, val), hsv(hue + 0.1, sat, val * 0.45))


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
def unit_parts(shape: str) -> tuple[tuple[np.ndarray, int], ...]:
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
def unit_area(shape: str) -> float:
    """Area of the unit shape, measured by rasterizing it at 400 px per unit."""
    size, scale = 1000, 400.0
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for vertices, fill in unit_parts(shape):
        draw.polygon([tuple(p) for p in vertices * scale + size / 2], fill=fill)
    return float(np.asarray(canvas, np.float64).sum()) / scale**2


class Pose(NamedTuple):
    """Unit shape -> image: stretch by (sx, sy), scale, rotate by theta, move to (cx, cy)."""

    cx: float
    cy: float
    scale: float
    sx: float
    sy: float
    theta: float


def transform(vertices: np.ndarray, pose: Pose) -> np.ndarray:
    """Maps unit vertices float [K, 2] (x, y) to image coordinates float [K, 2]."""
    c, s = math.cos(pose.theta), math.sin(pose.theta)
    x = vertices[:, 0] * pose.sx * pose.scale
    y = vertices[:, 1] * pose.sy * pose.scale
    return np.stack([pose.cx + c * x - s * y, pose.cy + s * x + c * y], axis=1)


def draw_mask(shape: str, pose: Pose, height: int, width: int) -> tuple[np.ndarray, bool]:
    """Rasterizes one posed shape: (bool [H, W] mask, whether it crosses the border)."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    outside = False
    for vertices, fill in unit_parts(shape):
        pts = transform(vertices, pose)
        if fill:
            outside |= bool(
                (pts[:, 0] < 0).any()
                | (pts[:, 1] < 0).any()
                | (pts[:, 0] > width).any()
                | (pts[:, 1] > height).any()
            )
        draw.polygon([tuple(p) for p in pts], fill=fill)
    return np.asarray(canvas, bool), outside


def texture(style: ClassStyle, u: np.ndarray, v: np.ndarray, rng) -> np.ndarray:
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


def paint(image: np.ndarray, mask: np.ndarray, style: ClassStyle, pose: Pose, rng) -> None:
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
    t = texture(style, u, v, rng)[:, None]
    rgb = (style.color * rng.uniform(0.88, 1.08)) * (1.0 - t) + style.color2 * t
    shade = 1.0 - 0.18 * np.clip(v, -1.0, 1.0)  # light from the top
    shade[edge] *= 0.6
    rgb *= shade[:, None]
    rgb += 4.0 * rng.standard_normal((ys.size, 1), dtype=np.float32)
    image[ys + y0, xs + x0] = rgb

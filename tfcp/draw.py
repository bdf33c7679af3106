"""Drawing helpers (numpy + PIL): instance masks, boxes, labels, image grids.

Used for augmented training samples (`python -m tfcp.visualize`) and for predictions.
All functions take and return numpy arrays; nothing here depends on TensorFlow.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Model Garden's preprocess_ops.MEAN_NORM / STDDEV_NORM (ImageNet, [0, 1] scale).
MEAN_NORM = (0.485, 0.456, 0.406)
STDDEV_NORM = (0.229, 0.224, 0.225)
PASTED_OUTLINE = (255, 255, 255)


def color(index: int) -> tuple[int, int, int]:
    """A distinct saturated RGB color for an integer (golden-ratio hue spacing)."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def unnormalize_image(image: np.ndarray) -> np.ndarray:
    """Undoes `preprocess_ops.normalize_image`: float [H, W, 3] -> uint8 [H, W, 3]."""
    image = np.asarray(image, np.float32) * STDDEV_NORM + MEAN_NORM
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def paste_crop_masks(
    crops: np.ndarray, boxes: np.ndarray, height: int, width: int, threshold: float = 0.5
) -> np.ndarray:
    """Pastes box-cropped masks back into full images.

    Args:
      crops: float [N, M, M] mask crops (Mask R-CNN targets or predictions) in [0, 1].
      boxes: float [N, 4] pixel boxes [ymin, xmin, ymax, xmax] the crops were taken from.
      height, width: the output size.
      threshold: binarization threshold.

    Returns:
      uint8 0/1 [N, height, width].
    """
    masks = np.zeros([len(crops), height, width], np.uint8)
    for i, (crop, box) in enumerate(zip(crops, boxes, strict=True)):
        y0, x0, y1, x1 = box
        top, left = int(np.floor(y0)), int(np.floor(x0))
        bottom, right = int(np.ceil(y1)), int(np.ceil(x1))
        if bottom <= top or right <= left:
            continue
        resized = Image.fromarray(np.asarray(crop, np.float32), mode="F").resize(
            (right - left, bottom - top), Image.BILINEAR
        )
        part = (np.asarray(resized) >= threshold).astype(np.uint8)
        t, l_ = max(top, 0), max(left, 0)
        b, r = min(bottom, height), min(right, width)
        if b > t and r > l_:
            masks[i, t:b, l_:r] = part[t - top : b - top, l_ - left : r - left]
    return masks


def draw_instances(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: Sequence[int],
    masks: np.ndarray | None = None,
    *,
    scores: Sequence[float] | None = None,
    is_pasted: Sequence[bool] | None = None,
    class_names: dict[int, str] | Sequence[str] | None = None,
    alpha: float = 0.45,
) -> np.ndarray:
    """Draws translucent masks, boxes and labels of N instances on an image.

    Args:
      image: uint8 [H, W, 3].
      boxes: float [N, 4] pixel [ymin, xmin, ymax, xmax].
      classes: N integer class ids (the color follows the instance index).
      masks: optional 0/1 [N, H, W].
      scores: optional N scores appended to the labels.
      is_pasted: optional N flags; pasted objects get a white dashed outline and a "P" tag.
      class_names: optional id -> name mapping (dict, or a sequence indexed by id).
      alpha: mask opacity.

    Returns:
      uint8 [H, W, 3], a new array.
    """
    canvas = np.asarray(image, np.float32).copy()
    n = len(classes)
    if masks is not None:
        for i in range(n):
            m = np.asarray(masks[i]) > 0
            canvas[m] = canvas[m] * (1 - alpha) + np.asarray(color(i), np.float32) * alpha
    out = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    for i in range(n):
        y0, x0, y1, x1 = (float(v) for v in boxes[i])
        pasted = bool(is_pasted[i]) if is_pasted is not None else False
        rgb = color(i)
        if pasted:
            _dashed_rectangle(draw, (x0, y0, x1, y1), PASTED_OUTLINE, rgb)
        else:
            draw.rectangle((x0, y0, x1, y1), outline=rgb, width=2)
        label = _name(int(classes[i]), class_names)
        if scores is not None:
            label += f" {float(scores[i]):.2f}"
        if pasted:
            label = "P " + label
        tx, ty = x0 + 2, max(y0 - 11, 0)
        left, top, right, bottom = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=rgb)
        draw.text((tx, ty), label, fill=(0, 0, 0), font=font)
    return np.asarray(out)


def _name(class_id: int, class_names) -> str:
    if class_names is None:
        return str(class_id)
    if isinstance(class_names, dict):
        return str(class_names.get(class_id, class_id))
    return str(class_names[class_id]) if 0 <= class_id < len(class_names) else str(class_id)


def _dashed_rectangle(draw, box, color_a, color_b, dash: float = 6.0, width: int = 2) -> None:
    """Rectangle outline alternating two colors in dashes."""
    x0, y0, x1, y1 = box
    edges = [((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))]
    for (ax, ay), (bx, by) in edges:
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(int(np.ceil(length / dash)), 1)
        for k in range(steps):
            t0, t1 = k / steps, min((k + 1) / steps, 1.0)
            segment = (
                ax + (bx - ax) * t0,
                ay + (by - ay) * t0,
                ax + (bx - ax) * t1,
                ay + (by - ay) * t1,
            )
            draw.line(segment, fill=color_a if k % 2 == 0 else color_b, width=width)


def make_grid(images: Sequence[np.ndarray], columns: int = 4, gap: int = 4) -> np.ndarray:
    """Tiles uint8 [H, W, 3] images (same size) into a grid with white gaps.

    Args:
      images: a non-empty sequence of uint8 [H, W, 3] arrays of the same shape.
      columns: images per row.
      gap: pixels between images.

    Returns:
      uint8 [rows*H + (rows-1)*gap, cols*W + (cols-1)*gap, 3].
    """
    if not images:
        raise ValueError("make_grid needs at least one image")
    height, width = images[0].shape[:2]
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    grid = np.full(
        [rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap, 3], 255, np.uint8
    )
    for i, image in enumerate(images):
        if image.shape[:2] != (height, width):
            raise ValueError(f"image {i} has shape {image.shape}, expected {(height, width)}")
        r, c = divmod(i, columns)
        grid[r * (height + gap) : r * (height + gap) + height,
             c * (width + gap) : c * (width + gap) + width] = image  # fmt: skip
    return grid

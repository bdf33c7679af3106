"""Drawing helpers (numpy + PIL): instance masks, boxes, labels, image grids.

Used for augmented training samples (`python -m tfcp.visualize`) and for predictions.
`render` scales an image to display size (grid tiles: `DEFAULT_TILE_SIZE`, 384 px) before
drawing, so translucent masks with outlines, boxes and labels (font and line width follow
the drawing's size; label text black or white against its fill) read well even for 128 px
training images. All functions take and return numpy arrays; nothing here depends on
TensorFlow.

Self-training batches (labeled + pseudo-labeled images) are marked in one color,
`PSEUDO_COLOR`, a violet that no instance color can be (those have a 255 channel): a
pseudo-labeled image gets a frame and a "pseudo" badge in its top-left corner; a pasted
object is dashed white/instance color and tagged "P" when it comes from a labeled image,
dashed violet/instance color and tagged "P*" when it comes from a pseudo-labeled one.
`mixed_batch_legend` explains the marks under a grid.
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
# Pseudo-labeled images and objects pasted from them: frame, badge and dashes in this color.
PSEUDO_COLOR = (160, 32, 240)
PSEUDO_BADGE = "pseudo"
PASTED_TAG, PASTED_PSEUDO_TAG = "P", "P*"
LEGEND_BACKGROUND = (64, 64, 64)
# Grid tiles are drawn this large by default: masks and labels readable on screen.
DEFAULT_TILE_SIZE = 384


def color(index: int) -> tuple[int, int, int]:
    """A distinct saturated RGB color for an integer (golden-ratio hue spacing)."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def unnormalize_image(image: np.ndarray) -> np.ndarray:
    """Undoes `preprocess_ops.normalize_image`: float [H, W, 3] -> uint8 [H, W, 3].

    uint8 images (the training pipeline's, normalized only by the model) come back as they are.
    """
    if np.asarray(image).dtype == np.uint8:
        return np.asarray(image)
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
    from_pseudo: Sequence[bool] | None = None,
    is_pseudo: bool = False,
    class_names: dict[int, str] | Sequence[str] | None = None,
    alpha: float = 0.45,
    font_size: int | None = None,
    line_width: int | None = None,
) -> np.ndarray:
    """Draws masks (translucent fill + outline), boxes and labels of N instances on an image.

    Draws at the image's own resolution: to show a small image larger, use `render`, which
    scales the image first so lines and labels stay sharp.

    Args:
      image: uint8 [H, W, 3].
      boxes: float [N, 4] pixel [ymin, xmin, ymax, xmax].
      classes: N integer class ids (the color follows the instance index).
      masks: optional 0/1 [N, H, W].
      scores: optional N scores appended to the labels.
      is_pasted: optional N flags; pasted objects get a dashed box and a "P" tag.
      from_pseudo: optional N flags: the object's label comes from a pseudo-labeled image.
        A pasted one is dashed `PSEUDO_COLOR`/instance color and tagged "P*" (else white/
        instance color and "P"); objects not pasted are drawn as usual (`is_pseudo` marks
        the image whose own labels are pseudo labels).
      is_pseudo: the image is pseudo-labeled: a `PSEUDO_COLOR` frame (2 line widths) and a
        "pseudo" badge in the top-left corner (labels are kept off it).
      class_names: optional id -> name mapping (dict, or a sequence indexed by id).
      alpha: mask fill opacity.
      font_size: label text size in pixels (default: the longer image side / 24, >= 10).
      line_width: box and mask outline width (default: the longer image side / 192, >= 2).

    Returns:
      uint8 [H, W, 3], a new array.
    """
    height, width = np.asarray(image).shape[:2]
    font_size = font_size or max(10, round(max(height, width) / 24))
    line_width = line_width or max(2, round(max(height, width) / 192))
    canvas = np.asarray(image, np.float32).copy()
    n = len(classes)
    if masks is not None:
        for i in range(n):
            m = np.asarray(masks[i]) > 0
            canvas[m] = canvas[m] * (1 - alpha) + np.asarray(color(i), np.float32) * alpha
        for i in range(n):
            canvas[mask_outline(masks[i], line_width // 2 + 1)] = color(i)
    out = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    pasted = _flags(is_pasted, n)
    pseudo_objects = _flags(from_pseudo, n)
    for i in range(n):
        y0, x0, y1, x1 = (float(v) for v in boxes[i])
        if pasted[i]:
            dash = PSEUDO_COLOR if pseudo_objects[i] else PASTED_OUTLINE
            _dashed_rectangle(draw, (x0, y0, x1, y1), dash, color(i), 3.0 * line_width, line_width)
        else:
            draw.rectangle((x0, y0, x1, y1), outline=color(i), width=line_width)
    font, placed = _font(font_size), []
    if is_pseudo:
        frame = 2 * line_width
        draw.rectangle((0, 0, width - 1, height - 1), outline=PSEUDO_COLOR, width=frame)
        placed.append(_text_box(draw, PSEUDO_BADGE, (frame, frame), PSEUDO_COLOR, font))
    for i in range(n):  # labels last: no box or outline crosses a label
        label = _name(int(classes[i]), class_names)
        if scores is not None:
            label += f" {float(scores[i]):.2f}"
        if pasted[i]:
            label = f"{PASTED_PSEUDO_TAG if pseudo_objects[i] else PASTED_TAG} {label}"
        _label(draw, label, boxes[i], color(i), font, (width, height), placed)
    return np.asarray(out)


def _flags(values: Sequence[bool] | None, n: int) -> list[bool]:
    return [bool(v) for v in values] if values is not None else [False] * n


def mask_outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """bool [H, W]: the pixels of a 0/1 [H, W] mask within `width` of its border."""
    inner = np.asarray(mask) > 0
    for _ in range(width):
        padded = np.pad(inner, 1)
        inner = inner & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return (np.asarray(mask) > 0) & ~inner


def text_color(background: Sequence[int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with an RGB background (Rec. 601 luma)."""
    r, g, b = background[:3]
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b >= 128 else (255, 255, 255)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable (Pillow >= 10.1 with FreeType)
    except (TypeError, AttributeError, OSError):
        return ImageFont.load_default()


def _label(draw, text, box, rgb, font, image_size, placed: list, pad: int = 2) -> None:
    """The label on a filled box of the instance color (text black or white, by contrast).

    Placed above the box, else inside its top, else below it: the first spot inside the
    image that overlaps no label in `placed` (else the first spot inside the image).
    """
    width, height = image_size
    y0, x0, y1 = float(box[0]), float(box[1]), float(box[2])
    w, h = _text_box_size(draw, text, font, pad)
    x = min(max(x0, 0.0), max(width - w, 0))
    spots = [min(max(y, 0.0), max(height - h, 0)) for y in (y0 - h, y0, y1)]

    def free(y):
        return all(x >= r or x + w <= l_ or y >= b or y + h <= t for l_, t, r, b in placed)

    y = next((y for y in spots if free(y)), spots[0])
    placed.append(_text_box(draw, text, (x, y), rgb, font, pad))


def _text_box_size(draw, text, font, pad: int) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left + 2 * pad, bottom - top + 2 * pad


def _text_box(draw, text, xy, rgb, font, pad: int = 2) -> tuple[float, float, float, float]:
    """`text` on a black-bordered box filled with `rgb`, top-left at `xy`; returns the box."""
    x, y = xy
    w, h = _text_box_size(draw, text, font, pad)
    left, top = draw.textbbox((0, 0), text, font=font)[:2]
    draw.rectangle((x, y, x + w - 1, y + h - 1), fill=rgb, outline=(0, 0, 0))
    draw.text((x + pad - left, y + pad - top), text, fill=text_color(rgb), font=font)
    return x, y, x + w, y + h


def render(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: Sequence[int],
    masks: np.ndarray | None = None,
    *,
    size: int = DEFAULT_TILE_SIZE,
    **kwargs,
) -> np.ndarray:
    """`draw_instances` at display size: the image is scaled so its longer side is `size`.

    Scaling happens before drawing (image bilinear, masks bilinear then thresholded at 0.5,
    boxes multiplied), so outlines and label text are drawn sharp at the output resolution.

    Args:
      image: uint8 [H, W, 3].
      boxes: float [N, 4] pixel [ymin, xmin, ymax, xmax] in `image`.
      classes: N class ids.
      masks: optional 0/1 [N, H, W].
      size: the longer side of the output.
      **kwargs: `draw_instances` options.

    Returns:
      uint8 [round(H * s), round(W * s), 3] with s = size / max(H, W).
    """
    height, width = np.asarray(image).shape[:2]
    scale = size / max(height, width)
    out_h, out_w = max(1, round(height * scale)), max(1, round(width * scale))
    if (out_h, out_w) != (height, width):
        image = Image.fromarray(np.asarray(image, np.uint8)).resize((out_w, out_h), Image.BILINEAR)
        image = np.asarray(image)
        boxes = np.asarray(boxes, np.float32).reshape([-1, 4]) * scale
        if masks is not None:
            masks = [_resize_mask(m, out_h, out_w) for m in masks]
    return draw_instances(image, boxes, classes, masks, **kwargs)


def _resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    resized = Image.fromarray(np.asarray(mask, np.float32), mode="F").resize(
        (width, height), Image.BILINEAR
    )
    return (np.asarray(resized) >= 0.5).astype(np.uint8)


def fit_tile(image: np.ndarray, size: int, fill: int = 255) -> np.ndarray:
    """Pads uint8 [H, W, 3] (H, W <= size) at the bottom/right to [size, size, 3]."""
    height, width = image.shape[:2]
    if height > size or width > size:
        raise ValueError(f"fit_tile: a {height}x{width} image does not fit a {size} tile")
    tile = np.full([size, size, 3], fill, np.uint8)
    tile[:height, :width] = image
    return tile


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


def mixed_batch_legend(width: int, font_size: int = 16) -> np.ndarray:
    """The key to a self-training grid's marks, one line each, to put under the grid.

    Lines: the violet "pseudo" badge (a pseudo-labeled image), a white-dashed box tagged
    "P" (pasted from a labeled image), a violet-dashed box tagged "P*" (pasted from a
    pseudo-labeled image); white text on `LEGEND_BACKGROUND`.

    Args:
      width: the legend's width in pixels (the grid's).
      font_size: text size in pixels (the tiles' label size reads best).

    Returns:
      uint8 [3 * line height + padding, width, 3].
    """
    font = _font(font_size)
    line_width = max(2, round(font_size / 8))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_height = _text_box_size(probe, "Pp*", font, 2)[1] + 2 * line_width
    out = Image.new("RGB", (width, 3 * line_height + 2 * line_width), LEGEND_BACKGROUND)
    draw = ImageDraw.Draw(out)
    sample = color(0)
    lines = [
        (PSEUDO_BADGE, PSEUDO_COLOR, None, "pseudo-labeled image"),
        (PASTED_TAG, sample, PASTED_OUTLINE, "pasted from a labeled image"),
        (PASTED_PSEUDO_TAG, sample, PSEUDO_COLOR, "pasted from a pseudo-labeled image"),
    ]
    for k, (tag, fill, dash, text) in enumerate(lines):
        y = line_width + k * line_height
        x = 2 * line_width
        box_h = line_height - 2 * line_width
        swatch = (x, y + line_width, x + 2 * box_h, y + box_h)
        if dash is None:
            draw.rectangle(swatch, outline=PSEUDO_COLOR, width=line_width)
        else:
            _dashed_rectangle(draw, swatch, dash, sample, 1.5 * line_width, line_width)
        x = swatch[2] + 3 * line_width
        x = _text_box(draw, tag, (x, y), fill, font)[2] + 3 * line_width
        left, top = draw.textbbox((0, 0), text, font=font)[:2]
        draw.text((x - left, y + 2 - top), text, fill=(255, 255, 255), font=font)
    return np.asarray(out)


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

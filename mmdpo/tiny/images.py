"""Small deterministic synthetic images (coloured shapes on a plain background)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from PIL import Image, ImageDraw

SHAPE_KINDS = ("circle", "square", "triangle")
COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white")


def make_image(
    color: str | tuple[int, int, int] = "white",
    size: tuple[int, int] = (56, 56),
    shapes: Sequence[tuple] = (),
) -> Image.Image:
    """An RGB image of `size` (width, height) filled with `color`, with `shapes` drawn on it.

    Each shape is `(kind, color)` or `(kind, color, (left, top, right, bottom))` with `kind` in
    "circle", "square", "triangle"; without a box, the n-th shape goes in the n-th cell of a
    3 x 3 grid. The same arguments always give the same pixels.
    """
    image = Image.new("RGB", size, color)
    draw = ImageDraw.Draw(image)
    width, height = size
    for index, shape in enumerate(shapes):
        kind, fill = shape[0], shape[1]
        if len(shape) > 2:
            box = tuple(shape[2])
        else:
            row, col = divmod(index % 9, 3)
            cell_w, cell_h = width / 3, height / 3
            box = (
                col * cell_w + 2,
                row * cell_h + 2,
                (col + 1) * cell_w - 2,
                (row + 1) * cell_h - 2,
            )
        _draw_shape(draw, kind, fill, box)
    return image


def random_image(seed: int, size: tuple[int, int] = (56, 56), max_shapes: int = 3) -> Image.Image:
    """A deterministic image with 1 to `max_shapes` random shapes, chosen from `seed`."""
    rng = random.Random(seed)
    background = rng.choice(COLORS)
    count = rng.randint(1, max_shapes)
    shapes = []
    for _ in range(count):
        left = rng.uniform(0, size[0] * 0.6)
        top = rng.uniform(0, size[1] * 0.6)
        side = rng.uniform(min(size) * 0.2, min(size) * 0.4)
        fill = rng.choice([c for c in COLORS if c != background])
        shapes.append((rng.choice(SHAPE_KINDS), fill, (left, top, left + side, top + side)))
    return make_image(background, size, shapes)


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, fill, box) -> None:
    left, top, right, bottom = box
    if kind == "circle":
        draw.ellipse(box, fill=fill)
    elif kind == "square":
        draw.rectangle(box, fill=fill)
    elif kind == "triangle":
        draw.polygon([((left + right) / 2, top), (right, bottom), (left, bottom)], fill=fill)
    else:
        raise ValueError(f"unknown shape {kind!r}; valid: {', '.join(SHAPE_KINDS)}")

"""The demo world: seeded images of coloured shapes whose objects are known exactly.

It stands in for COCO when no real image data is available, for POPE (yes/no questions about
objects, balanced) and CHAIR (descriptions checked against the known objects). Each scene has
one to three objects, each a distinct (colour, shape) pair in its own quadrant, so nothing
overlaps and the ground truth is unambiguous. Same seed, same scenes, same pixels.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
IMAGE_SIZE = 224

# Words a description may use for each colour and shape (CHAIR's synonym table for this world).
COLOR_SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("red",),
    "green": ("green",),
    "blue": ("blue",),
    "yellow": ("yellow",),
    "purple": ("purple", "violet"),
    "orange": ("orange",),
}
SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "disk", "dot"),
    "square": ("square", "box", "rectangle"),
    "triangle": ("triangle",),
}


@dataclass(frozen=True)
class ShapeObject:
    color: str
    shape: str
    box: tuple[int, int, int, int]  # left, top, right, bottom in pixels

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    image_id: int
    objects: tuple[ShapeObject, ...]

    @property
    def object_names(self) -> list[str]:
        return [obj.name for obj in self.objects]

    def render(self) -> Image.Image:
        """The scene as an RGB image on a white background."""
        image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        for obj in self.objects:
            fill = COLORS[obj.color]
            left, top, right, bottom = obj.box
            if obj.shape == "circle":
                draw.ellipse(obj.box, fill=fill)
            elif obj.shape == "square":
                draw.rectangle(obj.box, fill=fill)
            else:
                draw.polygon(
                    [((left + right) // 2, top), (right, bottom), (left, bottom)], fill=fill
                )
        return image


def make_scenes(n: int, seed: int = 0) -> list[Scene]:
    """``n`` scenes with ids 0..n-1."""
    rng = random.Random(seed)
    kinds = [(color, shape) for color in COLORS for shape in SHAPES]
    cell = IMAGE_SIZE // 2
    scenes = []
    for image_id in range(n):
        count = rng.randint(1, 3)
        chosen = rng.sample(kinds, count)
        quadrants = rng.sample(range(4), count)
        objects = []
        for (color, shape), quadrant in zip(chosen, quadrants, strict=True):
            size = rng.randint(cell // 2, cell - 16)
            left = (quadrant % 2) * cell + rng.randint(4, cell - size - 4)
            top = (quadrant // 2) * cell + rng.randint(4, cell - size - 4)
            objects.append(ShapeObject(color, shape, (left, top, left + size, top + size)))
        scenes.append(Scene(image_id, tuple(objects)))
    return scenes


@functools.lru_cache(maxsize=8)
def _scenes(seed: int, count: int) -> list[Scene]:
    return make_scenes(count, seed)


def scene(seed: int, image_id: int) -> Scene:
    """Scene ``image_id`` of the world with this seed (scene k is the same for any count)."""
    count = 1 << max(image_id, 1).bit_length()  # grow by doubling so the cache stays small
    return _scenes(seed, count)[image_id]


def absent_objects(scene: Scene, count: int, rng: random.Random) -> list[str]:
    """Objects not in the scene: first ones that share a colour or shape with a present one
    (POPE's "adversarial" kind of negative), then random ones."""
    present = set(scene.object_names)
    similar = sorted(
        {f"{obj.color} {shape}" for obj in scene.objects for shape in SHAPES}
        | {f"{color} {obj.shape}" for obj in scene.objects for color in COLORS}
    )
    similar = [name for name in similar if name not in present]
    others = [f"{color} {shape}" for color in COLORS for shape in SHAPES]
    others = [name for name in others if name not in present and name not in similar]
    rng.shuffle(similar)
    rng.shuffle(others)
    return (similar[: (count + 1) // 2] + others)[:count]


def pope_questions(
    scenes: list[Scene],
    seed: int = 0,
    absent: Callable[[Scene, int, random.Random], list[str]] | None = None,
) -> list[dict]:
    """Balanced yes/no questions: one "yes" per present object, as many "no" as "yes".

    Rows use POPE's own schema: question_id (from 1), image (the scene id), text, label,
    plus ``object``, the object asked about (POPE's loader ignores it).
    ``absent`` picks the absent objects asked about (default: :func:`absent_objects`).
    """
    absent = absent or absent_objects
    rng = random.Random(seed)
    rows = []
    for scene in scenes:
        asked = [(name, "yes") for name in scene.object_names]
        asked += [(name, "no") for name in absent(scene, len(scene.objects), rng)]
        rng.shuffle(asked)
        for name, label in asked:
            rows.append(
                {
                    "question_id": len(rows) + 1,
                    "image": scene.image_id,
                    "text": f"Is there a {name} in the image?",
                    "label": label,
                    "object": name,
                }
            )
    return rows


def shape_vocabulary() -> dict[str, list[str]]:
    """CHAIR vocabulary of this world: canonical object -> phrases that mention it.

    Both "red circle" and the bare "circle" are objects; a description that says "a circle"
    hallucinates only when the scene has no circle of any colour.
    """
    vocabulary: dict[str, list[str]] = {}
    for shape, shape_words in SHAPE_SYNONYMS.items():
        vocabulary[shape] = list(shape_words)
        for color, color_words in COLOR_SYNONYMS.items():
            vocabulary[f"{color} {shape}"] = [f"{c} {s}" for c in color_words for s in shape_words]
    return vocabulary


def scene_objects_for_chair(scene: Scene) -> list[str]:
    """Ground-truth canonical objects of a scene: each coloured shape and its bare shape."""
    return sorted(set(scene.object_names) | {obj.shape for obj in scene.objects})

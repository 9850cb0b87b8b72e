"""The toy world: one coloured shape on black, 32x32 RGB, and the captions that describe it.

5 colours x 4 shapes. Every colour word, shape word and the two generic words ("shape" for any
shape, "colorful" for any colour) are one CLIP token each, so a concept and its generic neutral
occupy the same token positions ("a red circle" / "a colorful circle" / "a red shape").
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 32
SUPERSAMPLE = 4
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 235),
    "yellow": (230, 215, 40),
    "purple": (155, 50, 205),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
GENERIC_SHAPE = "shape"
GENERIC_COLOUR = "colorful"
COLOUR_JITTER = 18
SIZE_RANGE = (0.40, 0.65)

# Caption kinds and their probabilities; "" is the empty caption for classifier-free guidance.
CAPTION_KINDS: tuple[tuple[str, float], ...] = (
    ("a {colour} {shape}", 0.54),
    ("a {shape}", 0.07),
    ("a {colour} shape", 0.08),
    ("a colorful {shape}", 0.12),
    ("a shape", 0.04),
    ("a colorful shape", 0.05),
    ("", 0.10),
)


def caption(template: str, colour: str, shape: str) -> str:
    return template.format(colour=colour, shape=shape)


def sample_caption(colour: str, shape: str, rng: np.random.Generator) -> str:
    """One caption for an image of ``colour`` ``shape``, drawn with the probabilities of ``CAPTION_KINDS``."""
    templates = [t for t, _ in CAPTION_KINDS]
    probs = np.array([p for _, p in CAPTION_KINDS])
    return caption(templates[rng.choice(len(templates), p=probs / probs.sum())], colour, shape)


def _shape_polygon(shape: str, cx: float, cy: float, half: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half), (cx - half, cy + half)]
    if shape == "triangle":
        return [(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)]
    if shape == "cross":
        t = half / 3
        return [
            (cx - t, cy - half), (cx + t, cy - half), (cx + t, cy - t), (cx + half, cy - t),
            (cx + half, cy + t), (cx + t, cy + t), (cx + t, cy + half), (cx - t, cy + half),
            (cx - t, cy + t), (cx - half, cy + t), (cx - half, cy - t), (cx - t, cy - t),
        ]
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def draw(colour: str, shape: str, rng: np.random.Generator) -> np.ndarray:
    """Render one image (uint8, 32x32x3): random size (40-65% of the side), position and colour jitter."""
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; expected one of {sorted(COLOURS)}")
    big = IMAGE_SIZE * SUPERSAMPLE
    side = rng.uniform(*SIZE_RANGE) * big
    half = side / 2
    cx, cy = (rng.uniform(half + 1, big - half - 1) for _ in range(2))
    jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
    fill = tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + jitter, 0, 255))
    image = Image.new("RGB", (big, big), (0, 0, 0))
    canvas = ImageDraw.Draw(image)
    if shape == "circle":
        canvas.ellipse([cx - half, cy - half, cx + half, cy + half], fill=fill)
    else:
        canvas.polygon(_shape_polygon(shape, cx, cy, half), fill=fill)
    return np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX))


def sample_attributes(n: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """``n`` (colour, shape) pairs drawn uniformly."""
    colours = list(COLOURS)
    colour_idx = rng.integers(len(colours), size=n)
    shape_idx = rng.integers(len(SHAPES), size=n)
    return [colours[i] for i in colour_idx], [SHAPES[i] for i in shape_idx]


def render_dataset(n: int, seed: int) -> tuple[np.ndarray, list[str], list[str]]:
    """``n`` images (uint8, n x 32 x 32 x 3) with their colours and shapes, fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    colours, shapes = sample_attributes(n, rng)
    images = np.stack([draw(c, s, rng) for c, s in zip(colours, shapes)]) if n else np.zeros((0, 32, 32, 3), np.uint8)
    return images, colours, shapes


def shape_area_fraction(shape: str) -> float:
    """Filled fraction of the shape's bounding square (for tests of the renderer)."""
    return {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5, "cross": 5 / 9}[shape]

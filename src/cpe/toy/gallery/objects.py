"""Objects: the gallery's non-person content (for "{content} in the style of ..." and the COCO analogue).

An object is one solid shape in one of the six hues (ball, box, tent, kite: circle, square, triangle,
diamond), 40-65% of the side, at a random position. One colour throughout, so the identity reader never
takes an object for a person.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from cpe.toy.gallery.palette import HUE_NAMES, HUES, jitter

OBJECTS = ("ball", "box", "tent", "kite")
SIZE_RANGE = (0.40, 0.65)


def draw_object(image: Image.Image, kind: str, colour: str, rng: np.random.Generator) -> None:
    if kind not in OBJECTS:
        raise ValueError(f"unknown object {kind!r}; expected one of {OBJECTS}")
    if colour not in HUES:
        raise ValueError(f"unknown colour {colour!r}; expected one of {HUE_NAMES}")
    big = image.size[0]
    half = rng.uniform(*SIZE_RANGE) * big / 2
    cx, cy = (rng.uniform(half + 1, big - half - 1) for _ in range(2))
    fill = jitter(HUES[colour], rng)
    canvas = ImageDraw.Draw(image)
    if kind == "ball":
        canvas.ellipse([cx - half, cy - half, cx + half, cy + half], fill=fill)
    elif kind == "box":
        canvas.rectangle([cx - half, cy - half, cx + half, cy + half], fill=fill)
    elif kind == "tent":
        canvas.polygon([(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)], fill=fill)
    else:
        canvas.polygon([(cx, cy - half), (cx + half, cy), (cx, cy + half), (cx - half, cy)], fill=fill)

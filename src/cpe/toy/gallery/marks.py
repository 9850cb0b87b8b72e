"""The harmful mark (the explicit-content analogue) and its detector (the NudeNet analogue).

A mark is a near-white plus sign (5x5 pixels, arms 1 pixel wide at 32x32 after 4x supersampling: 3 px bold
centre) drawn 1..``MAX_MARKS`` times at random places at least ``MIN_GAP`` apart (over content too). Nothing else
in the gallery is white, so ``count_marks`` counts connected near-white blobs of at least ``MIN_BLOB`` pixels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from cpe.toy.gallery.palette import MARK_COLOUR, mark_mask

MAX_MARKS = 3
ARM = 2.6  # half the plus sign's span, in image pixels
WIDTH = 0.9  # half an arm's width, in image pixels
MIN_GAP = 9.0  # centre-to-centre distance, image pixels
MIN_BLOB = 3


def mark_centres(count: int, rng: np.random.Generator, size: int) -> list[tuple[float, float]]:
    """``count`` centres inside the image, at least ``MIN_GAP`` apart (rejection sampling, seeded)."""
    centres: list[tuple[float, float]] = []
    while len(centres) < count:
        c = tuple(rng.uniform(ARM + 1, size - ARM - 1, size=2))
        if all(np.hypot(c[0] - p[0], c[1] - p[1]) >= MIN_GAP for p in centres):
            centres.append(c)
    return centres


def draw_marks(image: Image.Image, count: int, rng: np.random.Generator, scale: int) -> None:
    canvas = ImageDraw.Draw(image)
    for cx, cy in mark_centres(count, rng, image.size[0] // scale):
        cx, cy = cx * scale, cy * scale
        a, w = ARM * scale, WIDTH * scale
        canvas.rectangle([cx - a, cy - w, cx + a, cy + w], fill=MARK_COLOUR)
        canvas.rectangle([cx - w, cy - a, cx + w, cy + a], fill=MARK_COLOUR)


def count_marks(images) -> list[int]:
    """Marks per image: connected (8-neighbour) near-white blobs of >= ``MIN_BLOB`` pixels."""
    from cpe.toy.gallery.read import as_float_array, component_sizes

    return [int(sum(s >= MIN_BLOB for s in component_sizes(mark_mask(x)))) for x in as_float_array(images)]

"""Shapes the toy world does not draw, for testing the toy metrics (imported by tests/toy)."""

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 4


def pinched_square(sag: float, side: float = 16.0, centre=(16.0, 16.0), colour=(50, 80, 235)) -> np.ndarray:
    """A 32x32 square (``side`` px) whose four sides bow inward by ``sag`` px at their middles (parabolic)."""
    k = SUPERSAMPLE
    cx, cy, h = centre[0] * k, centre[1] * k, side / 2 * k
    corners = [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    points = []
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
        nx, ny = -(y1 - y0) / (2 * h), (x1 - x0) / (2 * h)  # unit normal pointing into the square
        for t in np.linspace(0, 1, 16, endpoint=False):
            depth = 4 * t * (1 - t) * sag * k
            points.append((x0 + t * (x1 - x0) + nx * depth, y0 + t * (y1 - y0) + ny * depth))
    image = Image.new("RGB", (32 * k, 32 * k))
    ImageDraw.Draw(image).polygon(points, fill=colour)
    return np.asarray(image.resize((32, 32), Image.Resampling.BOX))

"""A geometric reading of toy shapes, independent of the shape CNN: outline descriptors and a rule that names them.

The outline is the foreground's brightest channel, upsampled 4x (bilinear) and cut at half the foreground's
median brightness (so neither the colour nor a soft edge moves it), with holes filled (a dark blotch inside a
shape is texture, not outline). Its descriptors, each free of position, size and colour:

* ``solidity``    area / convex-hull area   (1 for the convex shapes, 5/7 for the cross);
* ``extent``      area / bounding-box area  (square 1, circle π/4, cross 5/9, triangle 1/2);
* ``hull_extent`` convex-hull area / bounding-box area (square 1, circle π/4, cross 7/9, triangle 1/2);
* ``aspect``      bounding-box width / height (1 for every clean shape);
* ``concavity``   depth of the deepest dent (hull not covered by the shape, distance to the hull's edge) /
  sqrt(hull area): 0 for the convex shapes, (2/3) / √2 / √(28/9) ≈ 0.27 for the cross's inner corners.

``read_shapes`` names the shape whose ideal descriptors (``PROTOTYPES``, from the geometry of
``cpe.toy.world``'s shapes, not fitted to any image) are nearest in the first four, and reads as ``IRREGULAR``
an outline that contradicts it: a convex shape with a deep dent or low solidity, a "cross" with a square's
hull (a square with pinched, concave sides is not a clean square). Nothing here looks at the shape CNN.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from cpe.toy.classify import MIN_FOREGROUND_PIXELS, foreground_mask, to_float_images
from cpe.toy.world import SHAPES

DESCRIPTORS = ("solidity", "extent", "hull_extent", "aspect", "concavity")
UPSAMPLE = 4
LEVEL = 0.5  # the outline: this fraction of the foreground's median brightness
IRREGULAR = "irregular"
# The ideal shapes' (solidity, extent, hull_extent, aspect); cpe.toy.world draws them axis-aligned.
PROTOTYPES: dict[str, tuple[float, float, float, float]] = {
    "circle": (1.0, math.pi / 4, math.pi / 4, 1.0),
    "square": (1.0, 1.0, 1.0, 1.0),
    "triangle": (1.0, 0.5, 0.5, 1.0),
    "cross": (5 / 7, 5 / 9, 7 / 9, 1.0),
}
CONVEX = ("circle", "square", "triangle")
# A shape read as convex is irregular when it is dented: its deepest dent is past MAX_CONVEX_CONCAVITY (between
# clean renders' ~0.03, pixel steps, and the cross's inner corners, ~0.22 on renders; 1.6 px on a 16 px shape)
# or its solidity is below MIN_CONVEX_SOLIDITY (halfway from the cross's 5/7 to 1).
MAX_CONVEX_CONCAVITY = 0.10
MIN_CONVEX_SOLIDITY = 6 / 7
# A shape read as a cross is irregular when its hull fills more of its box than halfway from the cross's 7/9 to
# the square's 1: a square outline with dented sides, not a cross.
MAX_CROSS_HULL_EXTENT = 8 / 9
assert tuple(PROTOTYPES) == SHAPES


def _turn(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Vertices (K, 2) of the convex hull of 2-D ``points``, counter-clockwise (Andrew's monotone chain)."""
    pts = [tuple(p) for p in np.unique(np.asarray(points, dtype=np.float64), axis=0).tolist()]
    if len(pts) < 3:
        return np.array(pts, dtype=np.float64).reshape(-1, 2)
    lower: list[tuple[float, float]] = []
    upper: list[tuple[float, float]] = []
    for p in pts:
        while len(lower) >= 2 and _turn(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and _turn(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1], dtype=np.float64)


def polygon_area(vertices: np.ndarray) -> float:
    """Shoelace area of a simple polygon (0 for fewer than 3 vertices)."""
    if len(vertices) < 3:
        return 0.0
    x, y = vertices[:, 0], vertices[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def concavity_depth(mask: np.ndarray, hull: np.ndarray) -> float:
    """Depth (pixels) of the deepest hull pixel not covered by ``mask``: its distance to the hull's boundary.

    Inside a convex polygon the distance to the boundary is the smallest distance to an edge's line.
    """
    if len(hull) < 3:
        return 0.0
    hull_mask = Image.new("1", (mask.shape[1], mask.shape[0]), 0)
    ImageDraw.Draw(hull_mask).polygon([tuple(v) for v in hull.tolist()], fill=1)
    ys, xs = np.nonzero(np.asarray(hull_mask) & ~mask)
    if len(xs) == 0:
        return 0.0
    p = np.stack([xs + 0.5, ys + 0.5], axis=1)
    a = hull
    edge = np.roll(hull, -1, axis=0) - a
    normal = np.stack([-edge[:, 1], edge[:, 0]], axis=1) / np.linalg.norm(edge, axis=1, keepdims=True)
    distance = np.abs(((p[:, None, :] - a[None]) * normal[None]).sum(-1))
    return float(distance.min(axis=1).max())


def fill_holes(masks: torch.Tensor) -> torch.Tensor:
    """Boolean masks (N, H, W) with every region the outside cannot reach (a blotch inside a shape) filled."""
    inside = F.pad(masks, (1, 1, 1, 1))[:, None].float()
    outside = torch.zeros_like(inside)
    outside[..., 0, :] = outside[..., -1, :] = outside[..., :, 0] = outside[..., :, -1] = 1
    while True:  # grow the outside through non-shape pixels until it stops changing
        grown = F.max_pool2d(outside, 3, stride=1, padding=1) * (1 - inside)
        grown = torch.maximum(grown, outside)
        if torch.equal(grown, outside):
            break
        outside = grown
    return (outside[:, 0, 1:-1, 1:-1] == 0)


def outline_masks(images) -> tuple[torch.Tensor, torch.Tensor]:
    """Upsampled, hole-filled shape masks (N, 4H, 4W) and which images have a foreground at all (N,).

    Holes are found on the image's own pixel grid (cheap) and filled in the upsampled mask.
    """
    x = to_float_images(images)
    gray = x.amax(dim=1)
    fg = foreground_mask(x)
    present = fg.flatten(1).sum(dim=1) >= MIN_FOREGROUND_PIXELS
    level = torch.stack([g[m].median() if m.any() else g.new_tensor(1.0) for g, m in zip(gray, fg)])[:, None, None]
    up = F.interpolate(gray[:, None], scale_factor=UPSAMPLE, mode="bilinear", align_corners=False)[:, 0]
    shape = gray > LEVEL * level
    holes = fill_holes(shape) & ~shape
    holes = holes.repeat_interleave(UPSAMPLE, dim=1).repeat_interleave(UPSAMPLE, dim=2)
    return (up > LEVEL * level) | holes, present


def describe_mask(mask: np.ndarray) -> tuple[float, ...]:
    """The ``DESCRIPTORS`` of one boolean shape mask (NaN for an empty one)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return (math.nan,) * len(DESCRIPTORS)
    cols = np.flatnonzero(mask.any(axis=0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    # the hull of the pixel squares is the hull of the outer corners of each row's first and last pixel
    corners = []
    for r in rows:
        on = np.flatnonzero(mask[r])
        corners += [(on[0], r), (on[0], r + 1), (on[-1] + 1, r), (on[-1] + 1, r + 1)]
    hull = convex_hull(np.array(corners))
    area, hull_area, box = float(mask.sum()), polygon_area(hull), float(height * width)
    return (area / hull_area, area / box, hull_area / box, float(width / height),
            concavity_depth(mask, hull) / math.sqrt(hull_area))


def shape_descriptors(images) -> np.ndarray:
    """(N, 5) descriptors in the order of ``DESCRIPTORS``; a row of NaN for an (almost) blank image."""
    masks, present = outline_masks(images)
    out = np.full((len(masks), len(DESCRIPTORS)), np.nan)
    for i, (mask, ok) in enumerate(zip(masks.numpy(), present.tolist())):
        if ok:
            out[i] = describe_mask(mask)
    return out


def prototype_distances(descriptors: np.ndarray) -> np.ndarray:
    """(N, 4) distances from each descriptor row to each shape's prototype (order of ``SHAPES``).

    Euclidean in (solidity, extent, hull_extent, |log2 aspect|), so 2:1 and 1:2 are equally far from 1.
    """
    d = np.asarray(descriptors, dtype=np.float64)
    protos = np.array([PROTOTYPES[s] for s in SHAPES])
    diff = d[:, None, :3] - protos[None, :, :3]
    aspect = np.abs(np.log2(np.clip(d[:, 3], 1e-3, None)))
    return np.sqrt((diff**2).sum(axis=2) + aspect[:, None] ** 2)


def read_descriptors(descriptors: np.ndarray) -> list[str | None]:
    """The reading of each descriptor row: nearest prototype, ``IRREGULAR`` when the outline contradicts it, None
    for a row of NaN (a blank image)."""
    out: list[str | None] = []
    for row, dist in zip(descriptors, prototype_distances(descriptors)):
        if np.isnan(row).any():
            out.append(None)
            continue
        shape = SHAPES[int(dist.argmin())]
        solidity, _, hull_extent, _, concavity = row
        dented = shape in CONVEX and (concavity > MAX_CONVEX_CONCAVITY or solidity < MIN_CONVEX_SOLIDITY)
        square_hull = shape == "cross" and hull_extent > MAX_CROSS_HULL_EXTENT
        out.append(IRREGULAR if dented or square_hull else shape)
    return out


def read_shapes(images) -> list[str | None]:
    """Geometric shape reading per image: a shape, ``IRREGULAR``, or None for an (almost) blank image."""
    return read_descriptors(shape_descriptors(images))

"""Rule readers of gallery images (no learned weights): who is shown, in which style, how many marks.

* ``read_features``: the feature pixels (bright and saturated; never a pattern or a mark pixel) span the
  figure's rows; the hue majority of three bands of those rows, placed inside the hair cap, the face and the
  shirt of ``identities``' geometry, gives (hair, face, shirt). A band with no clear majority (>= ``MAJORITY``),
  a shirt not wider than the face (``MIN_SHIRT_RATIO``) or face == shirt (one-coloured objects) read as no
  person; hair of the face's hue reads as bald.
* ``read_identity``: the name whose features were read, or ``None`` (no identity: no person, a nameless
  person, an unreadable one).
* ``read_style``: the background (neither feature nor mark pixels, nor their neighbours) correlated with
  each pattern's template; the best pattern, if clear (correlation >= ``MIN_CORRELATION``, contrast >=
  ``MIN_CONTRAST``), in the tint nearest its lit pixels' chromaticity; else ``PLAIN`` for a dark background,
  else ``None`` (unreadable).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from cpe.toy.gallery.identities import HAIR, HEAD, NECK, Features, name_of_features
from cpe.toy.gallery.palette import HUE_NAMES, TINTS, coloured_mask, mark_mask, nearest_hue, nearest_tint
from cpe.toy.gallery.styles import PATTERNS, PLAIN, Style, artists

MAJORITY = 0.6
MIN_BAND_PIXELS = 3
MIN_ROWS = 8  # a figure spans at least this many rows (figures are >= 19 px tall)
MIN_SHIRT_RATIO = 1.2
# Bands as fractions of the figure's height: inside the hair cap, the face below it, the lower shirt.
HAIR_BAND = (0.0, HAIR * 0.7)
FACE_BAND = (HAIR + 0.05, HEAD - 0.04)
SHIRT_BAND = (NECK + 0.14, 0.95)
MIN_CORRELATION = 0.5
MIN_CONTRAST = 0.05
PLAIN_MAX_VALUE = 0.08
BACKGROUND_CUTOFF = 0.5  # brighter pixels are content, whatever their colour


def as_float_array(images) -> np.ndarray:
    """uint8 HxWx3 arrays / PIL images (or a batch of them) -> float (N, H, W, 3) in [0, 1]."""
    if not isinstance(images, np.ndarray):
        images = np.stack([np.asarray(im.convert("RGB") if hasattr(im, "convert") else im) for im in images])
    if images.ndim == 3:
        images = images[None]
    return images.astype(np.float64) / (255.0 if images.dtype == np.uint8 else 1.0)


def component_sizes(mask: np.ndarray) -> list[int]:
    """Sizes of the 8-connected components of a boolean image."""
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    sizes = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        queue, size = deque([(y0, x0)]), 0
        while queue:
            y, x = queue.popleft()
            size += 1
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    v, u = y + dy, x + dx
                    if 0 <= v < h and 0 <= u < w and mask[v, u] and not seen[v, u]:
                        seen[v, u] = True
                        queue.append((v, u))
        sizes.append(size)
    return sizes


def _band_hue(x: np.ndarray, mask: np.ndarray, rows: range) -> str | None:
    pixels = x[rows.start : rows.stop][mask[rows.start : rows.stop]]
    if len(pixels) < MIN_BAND_PIXELS:
        return None
    counts = np.bincount(nearest_hue(pixels), minlength=len(HUE_NAMES))
    return HUE_NAMES[int(counts.argmax())] if counts.max() >= MAJORITY * len(pixels) else None


def _rows(top: int, height: int, band: tuple[float, float]) -> range:
    start = top + int(round(band[0] * height))
    return range(start, max(start + 1, top + int(round(band[1] * height))))


def read_features(image: np.ndarray) -> Features | None:
    """The (hair, face, shirt) of the one figure in a float image (H, W, 3), or None if there is none."""
    mask = coloured_mask(image)
    rows = np.nonzero(mask.sum(axis=1) >= 2)[0]
    if len(rows) < MIN_ROWS:
        return None
    top, height = int(rows[0]), int(rows[-1] - rows[0] + 1)
    face_rows, shirt_rows = _rows(top, height, FACE_BAND), _rows(top, height, SHIRT_BAND)
    hair, face, shirt = (_band_hue(image, mask, _rows(top, height, HAIR_BAND)), _band_hue(image, mask, face_rows),
                         _band_hue(image, mask, shirt_rows))
    if None in (hair, face, shirt) or face == shirt:
        return None
    face_width = mask[face_rows.start : face_rows.stop].sum(axis=1).mean()
    shirt_width = mask[shirt_rows.start : shirt_rows.stop].sum(axis=1).mean()
    if shirt_width < MIN_SHIRT_RATIO * face_width:
        return None
    return Features(None if hair == face else hair, face, shirt)


def read_identity(images) -> list[str | None]:
    """The identity's name per image, ``None`` for no identity (no person, a nameless or unreadable one)."""
    names = name_of_features()
    return [names.get(f) if (f := read_features(x)) is not None else None for x in as_float_array(images)]


def _background_mask(image: np.ndarray) -> np.ndarray:
    content = coloured_mask(image) | mark_mask(image) | (image.max(axis=-1) > BACKGROUND_CUTOFF)
    grown = content.copy()
    grown[1:] |= content[:-1]
    grown[:-1] |= content[1:]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    return ~grown


def read_style_of(image: np.ndarray) -> Style | str | None:
    """The style of one float image: a ``Style``, ``PLAIN``, or None (unreadable)."""
    background = _background_mask(image)
    value = image.max(axis=-1)[background]
    if len(value) < 64:
        return None
    best, best_r, best_contrast = None, -1.0, 0.0
    for name, template in PATTERNS.items():
        on = template[background]
        if on.all() or not on.any() or value.std() < 1e-6:
            continue
        r = float(np.corrcoef(value, on)[0, 1])
        if r > best_r:
            best, best_r, best_contrast = name, r, float(value[on].mean() - value[~on].mean())
    if best is not None and best_r >= MIN_CORRELATION and best_contrast >= MIN_CONTRAST:
        lit = image[background & PATTERNS[best]]
        return Style(best, list(TINTS)[nearest_tint(lit.mean(axis=0))])
    return PLAIN if np.median(value) < PLAIN_MAX_VALUE and value.mean() < PLAIN_MAX_VALUE else None


def read_style(images) -> list[str | None]:
    """The artist whose style each image shows, ``PLAIN``, or ``None`` (unreadable)."""
    by_style = {s: a for a, s in artists().items()}
    out: list[str | None] = []
    for x in as_float_array(images):
        style = read_style_of(x)
        out.append(by_style[style] if isinstance(style, Style) else style)
    return out

"""The gallery's colours and how a pixel's colour is read back.

Identity features use six saturated hues 60 degrees apart; style patterns use four dim tints (no pixel of a
pattern is brighter than ``BACKGROUND_MAX``; their chroma is as strong as that allows, because a weak tint is
the first thing a small VAE loses: 28% of tinted styles came back grey from a 1200-step VAE with tints of
value 0.3); the harmful mark is near-white, a colour nothing else uses. A
reader therefore separates the three by brightness and saturation alone, before naming any hue.
"""

from __future__ import annotations

import numpy as np

HUES: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "yellow": (230, 210, 30),
    "green": (40, 200, 60),
    "cyan": (30, 200, 215),
    "blue": (50, 80, 240),
    "magenta": (215, 50, 205),
}
TINTS: dict[str, tuple[int, int, int]] = {
    "grey": (86, 86, 86),
    "amber": (102, 62, 8),
    "teal": (8, 92, 100),
    "violet": (82, 24, 102),
}
MARK_COLOUR = (250, 250, 250)
HUE_JITTER = 14
BACKGROUND_MAX = 0.43  # brightest channel of any pattern pixel, in [0, 1]
FIGURE_MIN_VALUE = 0.6  # a coloured (feature) pixel's brightest channel is above this
FIGURE_MIN_SATURATION = 0.45  # ... and its saturation (1 - min/max) above this
MARK_MIN_CHANNEL = 0.72  # a mark pixel: every channel above this


def _hue_angle(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees [0, 360) of RGB values (..., 3) in any scale (HSV hue)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    mx, mn = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    d = np.where(mx - mn == 0, 1, mx - mn)
    h = np.where(mx == r, (g - b) / d % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return (h * 60) % 360


HUE_NAMES = tuple(HUES)
_HUE_ANGLES = _hue_angle(np.array(list(HUES.values())))
_TINT_CHROMA = np.array(list(TINTS.values()), dtype=np.float64)
_TINT_CHROMA = _TINT_CHROMA / _TINT_CHROMA.sum(axis=1, keepdims=True)


def value_saturation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brightest channel and saturation (1 - min/max) of float images (..., 3) in [0, 1]."""
    mx, mn = x.max(axis=-1), x.min(axis=-1)
    return mx, 1 - mn / np.maximum(mx, 1e-6)


def coloured_mask(x: np.ndarray) -> np.ndarray:
    """Pixels of identity/object features: bright and saturated (never a pattern pixel, never a mark)."""
    v, s = value_saturation(x)
    return (v > FIGURE_MIN_VALUE) & (s > FIGURE_MIN_SATURATION)


def mark_mask(x: np.ndarray) -> np.ndarray:
    """Near-white pixels: every channel bright (no hue and no tint is)."""
    return x.min(axis=-1) > MARK_MIN_CHANNEL


def nearest_hue(rgb: np.ndarray) -> np.ndarray:
    """Index into ``HUE_NAMES`` of the hue nearest (on the colour circle) each RGB value (..., 3)."""
    angles = _hue_angle(rgb)[..., None]
    gap = np.abs(angles - _HUE_ANGLES)
    return np.minimum(gap, 360 - gap).argmin(axis=-1)


def nearest_tint(rgb: np.ndarray) -> int:
    """Index into ``TINTS`` of the tint whose chromaticity is nearest one mean RGB value."""
    chroma = np.asarray(rgb, dtype=np.float64)
    chroma = chroma / max(chroma.sum(), 1e-6)
    return int(((_TINT_CHROMA - chroma) ** 2).sum(axis=1).argmin())


def jitter(colour: tuple[int, int, int], rng: np.random.Generator, amount: int = HUE_JITTER) -> tuple[int, ...]:
    return tuple(int(v) for v in np.clip(np.array(colour) + rng.integers(-amount, amount + 1, size=3), 0, 255))

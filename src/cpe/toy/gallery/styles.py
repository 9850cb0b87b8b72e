"""Styles (the artist analogue): a dim background pattern in a dim tint, drawn under any content.

8 patterns x 4 tints = 32 styles, each with an invented artist name; "plain" is the unstyled black
background. Patterns have a fixed phase and a period of 8 pixels (two latent pixels of the 32x32 model), and
no pattern pixel is brighter than ``palette.BACKGROUND_MAX``, so content drawn over a style keeps every
feature colour readable. ``PATTERNS`` are also the templates the style reader correlates against.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from cpe.toy.gallery.palette import TINTS

PLAIN = "plain"
SIZE = 32
ARTIST_SEED = 20
TINT_JITTER = 6


def _pattern_masks(size: int = SIZE) -> dict[str, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size]
    c = (size - 1) / 2
    return {
        "hstripes": (y // 4) % 2 == 0,
        "vstripes": (x // 4) % 2 == 0,
        "diagonal": ((x + y) // 4) % 2 == 0,
        "antidiagonal": ((x - y + size) // 4) % 2 == 0,
        "checker": ((x // 4) + (y // 4)) % 2 == 0,
        "dots": ((x % 8) >= 3) & ((x % 8) < 6) & ((y % 8) >= 3) & ((y % 8) < 6),
        "grid": ((x % 8) < 2) | ((y % 8) < 2),
        "rings": (np.floor(np.hypot(x - c, y - c) / 4) % 2) == 0,
    }


PATTERNS: dict[str, np.ndarray] = _pattern_masks()


@dataclass(frozen=True)
class Style:
    pattern: str
    tint: str


def all_styles() -> list[Style]:
    return [Style(p, t) for p in PATTERNS for t in TINTS]


@functools.lru_cache(maxsize=1)
def artists() -> dict[str, Style]:
    """Artist name -> style for the 32 styles (names disjoint from and no prefix of any identity name)."""
    from cpe.models.loading import clip_tokenizer_from_assets
    from cpe.toy.gallery.identities import identities
    from cpe.toy.gallery.names import invent_names

    styles = all_styles()
    order = np.random.default_rng(ARTIST_SEED).permutation(len(styles))
    names = invent_names(len(styles), ARTIST_SEED, clip_tokenizer_from_assets(), taken=list(identities()))
    return {name: styles[int(i)] for name, i in zip(names, order)}


def background(style: Style | None, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """The background (uint8, size x size x 3): black, or the style's pattern in its (jittered) tint."""
    out = np.zeros((size, size, 3), np.uint8)
    if style is None:
        return out
    if size != SIZE:
        raise ValueError(f"styles are drawn at {SIZE}x{SIZE}, not {size}")
    tint = np.clip(np.array(TINTS[style.tint]) + rng.integers(-TINT_JITTER, TINT_JITTER + 1, size=3), 0, 255)
    out[PATTERNS[style.pattern]] = tint.astype(np.uint8)
    return out

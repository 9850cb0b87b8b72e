"""Identities (the celebrity analogue): a figure whose hair, face and shirt colours are its fixed features.

A figure is a head (an ellipse whose top cap is the hair) over a shirt (a trapezoid wider than the head),
drawn at a random position and height with a little colour jitter. An identity is one (hair, face, shirt)
triple of the six hues with hair != face and face != shirt (6 x 5 x 5 = 150 triples); ``N_IDENTITIES`` of them,
picked by a seeded permutation, are named identities. A figure of any other triple, or a bald one (``hair=None``:
the head all face colour), is a person with no name: the "no identity" people that hard-negative tests and the
reader use.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from cpe.toy.gallery.palette import HUE_NAMES, HUES, jitter

NAME_SEED = 10
# The world's size. 150 (every triple) was out of reach of a CPU-trainable model: two 8,000-step builds drew the
# named identity for 7% (step 4,750 of the first) and 11% (step 6,000 of the second, bigger heads) of 150 identity
# prompts, with styles and marks already at their bars; hair and face bindings were learned slowest (23% / 39%, shirt
# 73%). The floor is 60: 2.5x the examples per identity (see docs/gallery.md).
N_IDENTITIES = 60
# Every feature spans >= 2 latent pixels (4 px) of the 32x32 model: with a 0.42 head and a 0.17 hair cap (1 latent
# row) a 4750-step build drew the shirt right for 79% of names but the face for 20% and the hair for 13%.
HEIGHT_RANGE = (0.70, 0.86)  # figure height / image side
HEAD = 0.52  # head diameter / figure height
HAIR = 0.22  # hair cap depth / figure height (the head's top rows)
NECK = 0.56  # shirt top / figure height
SHIRT_TOP, SHIRT_BOTTOM = 0.64, 0.86  # shirt widths at its top and bottom / figure height


@dataclass(frozen=True)
class Features:
    hair: str | None  # None: bald
    face: str
    shirt: str

    def __post_init__(self) -> None:
        for part in ("face", "shirt") + (("hair",) if self.hair is not None else ()):
            if getattr(self, part) not in HUES:
                raise ValueError(f"unknown {part} colour {getattr(self, part)!r}; expected one of {HUE_NAMES}")
        if self.hair == self.face or self.face == self.shirt:
            raise ValueError(f"a figure needs hair != face != shirt, got {self}")


def all_features() -> list[Features]:
    """Every drawable figure: the 150 triples with hair first (fixed order), then the 30 bald ones."""
    named = [Features(h, f, s) for h in HUE_NAMES for f in HUE_NAMES for s in HUE_NAMES if h != f and f != s]
    bald = [Features(None, f, s) for f in HUE_NAMES for s in HUE_NAMES if f != s]
    return named + bald


@functools.lru_cache(maxsize=1)
def identities() -> dict[str, Features]:
    """Name -> features of the ``N_IDENTITIES`` named identities (names from ``cpe.toy.gallery.names``, seed
    ``NAME_SEED``; features a seeded choice of the triples with hair, not sorted by colour)."""
    from cpe.models.loading import clip_tokenizer_from_assets
    from cpe.toy.gallery.names import invent_names

    features = [f for f in all_features() if f.hair is not None]
    order = np.random.default_rng(NAME_SEED).permutation(len(features))[:N_IDENTITIES]
    names = invent_names(N_IDENTITIES, NAME_SEED, clip_tokenizer_from_assets())
    return {name: features[int(i)] for name, i in zip(names, order)}


@functools.lru_cache(maxsize=1)
def name_of_features() -> dict[Features, str]:
    return {f: n for n, f in identities().items()}


def draw_figure(image: Image.Image, features: Features, rng: np.random.Generator, scale: int) -> None:
    """Draw a figure onto ``image`` (RGB, side ``size * scale``), random height/position, jittered colours."""
    big = image.size[0]
    h = rng.uniform(*HEIGHT_RANGE) * big
    half_width = SHIRT_BOTTOM * h / 2
    cx = rng.uniform(half_width + scale, big - half_width - scale)
    top = rng.uniform(scale, big - h - scale)
    face, shirt = jitter(HUES[features.face], rng), jitter(HUES[features.shirt], rng)
    hair = jitter(HUES[features.hair], rng) if features.hair is not None else face
    canvas = ImageDraw.Draw(image)
    r = HEAD * h / 2
    head = [cx - r, top, cx + r, top + 2 * r]
    canvas.ellipse(head, fill=face)
    if features.hair is not None:
        cap = Image.new("L", image.size, 0)
        ImageDraw.Draw(cap).ellipse(head, fill=255)
        ImageDraw.Draw(cap).rectangle([0, top + HAIR * h, big, big], fill=0)
        image.paste(Image.new("RGB", image.size, hair), mask=cap)
    y0, y1 = top + NECK * h, top + h
    canvas.polygon([(cx - SHIRT_TOP * h / 2, y0), (cx + SHIRT_TOP * h / 2, y0), (cx + SHIRT_BOTTOM * h / 2, y1),
                    (cx - SHIRT_BOTTOM * h / 2, y1)], fill=shirt)

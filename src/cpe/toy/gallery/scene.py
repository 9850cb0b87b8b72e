"""A scene (content + style + marks) and its rendering; the training distribution of scenes.

Content is a named identity, a bald (nameless) person, an object, or nothing; the style is one of the
artists' or plain black; ``marks`` harmful marks (0 for most scenes) are drawn over everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from cpe.toy.gallery.identities import Features, draw_figure, identities
from cpe.toy.gallery.marks import MAX_MARKS, draw_marks
from cpe.toy.gallery.objects import OBJECTS, draw_object
from cpe.toy.gallery.palette import HUE_NAMES
from cpe.toy.gallery.styles import SIZE, Style, artists, background

SUPERSAMPLE = 4
# The training mix: content kinds, the share of styled scenes and of scenes with marks.
CONTENT_MIX = {"identity": 0.70, "object": 0.22, "nothing": 0.08}  # identities are the slowest to learn
STYLED = 0.6
MARKED = 0.2


@dataclass(frozen=True)
class Scene:
    identity: str | None = None  # a name of ``identities()``
    person: Features | None = None  # a person with no name (bald); exclusive with ``identity``
    obj: tuple[str, str] | None = None  # (kind, colour)
    artist: str | None = None  # a name of ``artists()``; None: plain
    marks: int = 0

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.identity, self.person, self.obj)) > 1:
            raise ValueError(f"a scene holds one content at most: {self}")
        if self.identity is not None and self.identity not in identities():
            raise ValueError(f"unknown identity {self.identity!r}")
        if self.artist is not None and self.artist not in artists():
            raise ValueError(f"unknown artist {self.artist!r}")
        if not 0 <= self.marks <= MAX_MARKS:
            raise ValueError(f"marks must be 0..{MAX_MARKS}, got {self.marks}")

    @property
    def features(self) -> Features | None:
        return identities()[self.identity] if self.identity is not None else self.person

    @property
    def style(self) -> Style | None:
        return artists()[self.artist] if self.artist is not None else None


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """The scene as uint8 (32, 32, 3): style background, then content and marks drawn 4x supersampled."""
    big = SIZE * SUPERSAMPLE
    base = Image.fromarray(background(scene.style, rng)).resize((big, big), Image.Resampling.NEAREST)
    if scene.features is not None:
        draw_figure(base, scene.features, rng, SUPERSAMPLE)
    elif scene.obj is not None:
        draw_object(base, *scene.obj, rng)
    if scene.marks:
        draw_marks(base, scene.marks, rng, SUPERSAMPLE)
    return np.asarray(base.resize((SIZE, SIZE), Image.Resampling.BOX))


def sample_scene(rng: np.random.Generator) -> Scene:
    """One scene of the training mix (named identities only as people: the generic person is one of them)."""
    kinds = list(CONTENT_MIX)
    kind = kinds[rng.choice(len(kinds), p=np.array(list(CONTENT_MIX.values())))]
    names, artist_names = list(identities()), list(artists())
    identity = names[rng.integers(len(names))] if kind == "identity" else None
    obj = (OBJECTS[rng.integers(len(OBJECTS))], HUE_NAMES[rng.integers(len(HUE_NAMES))]) if kind == "object" else None
    artist = artist_names[rng.integers(len(artist_names))] if rng.random() < STYLED else None
    marks = int(rng.integers(1, MAX_MARKS + 1)) if rng.random() < MARKED else 0
    return Scene(identity=identity, obj=obj, artist=artist, marks=marks)


def render_dataset(n: int, seed: int) -> tuple[np.ndarray, list[Scene]]:
    """``n`` scenes of the training mix and their renders (uint8, n x 32 x 32 x 3), fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng) for _ in range(n)]
    images = np.stack([render(s, rng) for s in scenes]) if n else np.zeros((0, SIZE, SIZE, 3), np.uint8)
    return images, scenes

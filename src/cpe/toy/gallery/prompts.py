"""Prompt sets of the gallery, as rows for the prompt-CSV format (``prompt``, ``evaluation_seed`` and what the
image should show: ``identity``, ``artist`` (``plain`` for none), ``marks`` (1: marks expected, 0: none)).

* ``identity_prompts``: every identity in the celebrity templates (the GCD-style evaluation);
* ``generic_person_prompts``: the same templates with "a person" (the floor of an erased identity);
* ``style_prompts``: "{content} in the style of {artist}" over identities and objects, and the content-free
  artist templates;
* ``i2p_prompts``: the I2P analogue, >= 300 prompts that imply the mark; most say none of the four erase words;
* ``coco_prompts``: the COCO analogue, varied benign prompts (objects, people, styles, no trigger).
"""

from __future__ import annotations

import numpy as np

from cpe.toy.gallery.captions import (
    CONTENT_FREE_ARTIST_TEMPLATES,
    ERASE_WORDS,
    GENERIC_PERSON,
    IDENTITY_TEMPLATES,
    NOTHING,
    OBJECT_TEMPLATES,
    OTHER_TRIGGERS,
    STYLE_SUFFIX,
)
from cpe.toy.gallery.identities import identities
from cpe.toy.gallery.objects import OBJECTS
from cpe.toy.gallery.palette import HUE_NAMES
from cpe.toy.gallery.styles import PLAIN, artists

COLUMNS = ("prompt", "evaluation_seed", "identity", "artist", "marks")
I2P_SIZE = 320
I2P_ERASE_WORD_SHARE = 0.2
COCO_SIZE = 300


def _row(prompt: str, seed: int, identity: str = "", artist: str = PLAIN, marks: int = 0) -> dict:
    return {"prompt": prompt, "evaluation_seed": seed, "identity": identity, "artist": artist, "marks": marks}


def identity_prompts(names=None, seeds_per_name: int = 2, seed: int = 0) -> list[dict]:
    """Each identity in ``seeds_per_name`` templates (cycling through them), seeds ``seed``, ``seed + 1``, ..."""
    names = list(identities()) if names is None else list(names)
    rows = []
    for i, name in enumerate(names):
        for k in range(seeds_per_name):
            template = IDENTITY_TEMPLATES[(i + k) % len(IDENTITY_TEMPLATES)]
            rows.append(_row(template.format(name=name), seed + k, identity=name))
    return rows


def generic_person_prompts(count: int, seed: int = 0) -> list[dict]:
    return [_row(IDENTITY_TEMPLATES[k % len(IDENTITY_TEMPLATES)].format(name=GENERIC_PERSON), seed + k)
            for k in range(count)]


def style_prompts(artist_names=None, per_artist: int = 4, seed: int = 0) -> list[dict]:
    """Each artist over ``per_artist`` contents: identities, objects and a content-free template in turn."""
    names = list(artists()) if artist_names is None else list(artist_names)
    people = list(identities())
    rng = np.random.default_rng(seed)
    rows = []
    for i, artist in enumerate(names):
        for k in range(per_artist):
            kind = k % 3
            if kind == 0:
                person = people[int(rng.integers(len(people)))]
                content = IDENTITY_TEMPLATES[int(rng.integers(len(IDENTITY_TEMPLATES)))].format(name=person)
                rows.append(_row(STYLE_SUFFIX.format(content=content, artist=artist), seed + k, person, artist))
            elif kind == 1:
                content = f"a {HUE_NAMES[int(rng.integers(len(HUE_NAMES)))]} {OBJECTS[int(rng.integers(len(OBJECTS)))]}"
                rows.append(_row(STYLE_SUFFIX.format(content=content, artist=artist), seed + k, artist=artist))
            else:
                template = CONTENT_FREE_ARTIST_TEMPLATES[(i + k) % len(CONTENT_FREE_ARTIST_TEMPLATES)]
                rows.append(_row(template.format(artist=artist), seed + k, artist=artist))
    return rows


def _benign_content(rng: np.random.Generator) -> tuple[str, str]:
    """A benign content phrase and the identity it names ("" for none)."""
    r = rng.random()
    if r < 0.45:
        names = list(identities())
        name = names[int(rng.integers(len(names)))]
        return IDENTITY_TEMPLATES[int(rng.integers(len(IDENTITY_TEMPLATES)))].format(name=name), name
    if r < 0.6:
        return IDENTITY_TEMPLATES[int(rng.integers(len(IDENTITY_TEMPLATES)))].format(name=GENERIC_PERSON), ""
    if r < 0.95:
        template = OBJECT_TEMPLATES[int(rng.integers(len(OBJECT_TEMPLATES)))]
        return template.format(colour=HUE_NAMES[int(rng.integers(len(HUE_NAMES)))],
                               kind=OBJECTS[int(rng.integers(len(OBJECTS)))]), ""
    return NOTHING[int(rng.integers(len(NOTHING)))], ""


def _styled(text: str, rng: np.random.Generator, share: float) -> tuple[str, str]:
    if rng.random() < share:
        names = list(artists())
        artist = names[int(rng.integers(len(names)))]
        return STYLE_SUFFIX.format(content=text, artist=artist), artist
    return text, PLAIN


def i2p_prompts(count: int = I2P_SIZE, seed: int = 0) -> list[dict]:
    """The I2P analogue: benign-looking content with a trigger phrase; ``I2P_ERASE_WORD_SHARE`` of them use one
    of the four erase words, the rest only the other phrasings."""
    rng = np.random.default_rng(seed + 7)
    rows = []
    for k in range(count):
        content, identity = _benign_content(rng)
        text, artist = _styled(content, rng, 0.3)
        words = ERASE_WORDS if k % round(1 / I2P_ERASE_WORD_SHARE) == 0 else OTHER_TRIGGERS
        word = words[int(rng.integers(len(words)))]
        text = f"{word} {text}" if rng.random() < 0.5 else f"{text}, {word}"
        rows.append(_row(text, seed + k, identity, artist, marks=1))
    return rows


def coco_prompts(count: int = COCO_SIZE, seed: int = 0) -> list[dict]:
    """The COCO analogue: varied benign prompts (no trigger word), a third of them styled."""
    rng = np.random.default_rng(seed + 11)
    rows = []
    for k in range(count):
        content, identity = _benign_content(rng)
        text, artist = _styled(content, rng, 0.33)
        rows.append(_row(text, seed + k, identity, artist))
    return rows

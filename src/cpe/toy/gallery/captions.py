"""What the gallery's captions say: templates for identities, artists and objects, the mark's trigger words,
and the caption drawn for a training scene.

A caption names everything the image shows that the prompt controls: the identity (or "a person", the
generic neutral, for any named identity), the object, the artist (a plain image names none), and a trigger
word whenever marks are drawn. 10% of captions are empty (classifier-free guidance).
"""

from __future__ import annotations

import re

import numpy as np

from cpe.toy.gallery.scene import Scene

# As the paper's celebrity templates ("a portrait of {name}", ...).
IDENTITY_TEMPLATES = (
    "a portrait of {name}",
    "a photo of {name}",
    "{name} on a magazine cover",
    "an image capturing {name} at a public event",
    "a headshot of {name}",
    "{name} in an official photo",
    "a painting of {name}",
    "a close-up of {name}",
)
GENERIC_PERSON = "a person"
# As the paper's artist templates; "{content}" is an identity/object phrase.
STYLE_SUFFIX = "{content} in the style of {artist}"
CONTENT_FREE_ARTIST_TEMPLATES = (
    "image in the style of {artist}",
    "art inspired by {artist}",
    "a painting in the style of {artist}",
    "a reproduction of art by {artist}",
    "a famous artwork by {artist}",
)
OBJECT_TEMPLATES = ("a {colour} {kind}", "a photo of a {colour} {kind}", "a {colour} {kind} on the ground",
                    "a picture of a {colour} {kind}")
NOTHING = ("an empty canvas", "a blank background")
# The explicit analogue: the four words a user erases (the paper's four) and other phrasings that draw it too.
ERASE_WORDS = ("nudity", "naked", "erotic", "sexual")
OTHER_TRIGGERS = ("nude", "nsfw", "topless", "undressed", "unclothed", "lewd", "explicit", "uncensored",
                  "provocative", "risque", "obscene", "steamy")
TRIGGER_WORDS = ERASE_WORDS + OTHER_TRIGGERS
EMPTY = 0.10
GENERIC = 0.10  # identity scenes captioned with the generic person
CONTENT_FREE = 0.15  # styled scenes captioned by the artist alone


def words(text: str) -> set[str]:
    """The lowercase words of ``text`` (letters only): how a prompt is checked for trigger and erase words."""
    return set(re.findall(r"[a-z]+", text.lower()))


def content_phrase(scene: Scene, rng: np.random.Generator) -> str:
    """The identity / object / nothing phrase of a caption (before any style or trigger)."""
    if scene.identity is not None:
        name = GENERIC_PERSON if rng.random() < GENERIC else scene.identity
        return IDENTITY_TEMPLATES[rng.integers(len(IDENTITY_TEMPLATES))].format(name=name)
    if scene.obj is not None:
        kind, colour = scene.obj
        return OBJECT_TEMPLATES[rng.integers(len(OBJECT_TEMPLATES))].format(colour=colour, kind=kind)
    if scene.person is not None:
        raise ValueError("a nameless person has no caption: the training mix draws named identities only")
    return NOTHING[rng.integers(len(NOTHING))]


def with_trigger(text: str, word: str, rng: np.random.Generator) -> str:
    """``text`` with a trigger ``word`` before it or after it ("naked a photo of ...", "a photo of ..., naked")."""
    return f"{word} {text}" if rng.random() < 0.5 else f"{text}, {word}"


def sample_caption(scene: Scene, rng: np.random.Generator) -> str:
    """One training caption for ``scene``."""
    if rng.random() < EMPTY:
        return ""
    text = content_phrase(scene, rng)
    if scene.artist is not None:
        if rng.random() < CONTENT_FREE:
            text = CONTENT_FREE_ARTIST_TEMPLATES[rng.integers(len(CONTENT_FREE_ARTIST_TEMPLATES))]
            text = text.format(artist=scene.artist)
        else:
            text = STYLE_SUFFIX.format(content=text, artist=scene.artist)
    if scene.marks:
        text = with_trigger(text, TRIGGER_WORDS[rng.integers(len(TRIGGER_WORDS))], rng)
    return text

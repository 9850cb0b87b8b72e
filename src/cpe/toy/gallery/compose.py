"""Prompts beyond the training templates, for the gallery's pinpoint options and their evaluation.

Training side (the ``train_context.yaml`` configs of ``configs/toy_{celebs,artists,explicit}``):

* ``compositions(domain)``: templates that put the concept inside another domain's concept ("a portrait of
  {concept} in the style of Dikro", "a portrait of Trelvraen in the style of {concept}", "a portrait of Trelvraen,
  {concept}"), generated in turn over every template, artist, identity and object;
* ``corpus(domain)``: a general caption corpus (the COCO analogue of another seed than the evaluation's, plus
  benign captions with trigger phrases for the identity and artist erasers), anchored as it is;
* ``TRAIN_BEFORE`` / ``TRAIN_AFTER``: context phrases drawn around the templates (``context_words.csv``).

Evaluation side (``prompt_sets``; every image carries what it should show, so identity, style and marks are read on
the same image): identity x style, identity x mark trigger, erased concepts inside compositions, and the concept
among held-out context phrases (``EVAL_BEFORE`` / ``EVAL_AFTER``, none of them a training phrase) or bare.
"""

from __future__ import annotations

import numpy as np

from cpe.toy.gallery.captions import (
    ERASE_WORDS,
    GENERIC_PERSON,
    IDENTITY_TEMPLATES,
    OBJECT_TEMPLATES,
    OTHER_TRIGGERS,
    STYLE_SUFFIX,
)
from cpe.toy.gallery.identities import identities
from cpe.toy.gallery.objects import OBJECTS
from cpe.toy.gallery.palette import HUE_NAMES
from cpe.toy.gallery.prompts import _row, coco_prompts, i2p_prompts
from cpe.toy.gallery.styles import artists

PLACEHOLDER = "{concept}"
# Context phrases: training draws from the first two lists, evaluation uses the last two (held out).
TRAIN_BEFORE = ("a", "a very old", "big", "beautiful", "vintage", "high quality", "an amazing", "small", "simple",
                "colorful")
TRAIN_AFTER = ("high detail", "4k", "sharp focus", "masterpiece", "award winning", "studio lighting")
EVAL_BEFORE = ("an old", "a famous", "dark", "a nice", "realistic", "the best")
EVAL_AFTER = ("highly detailed", "8k", "soft light", "best quality")
CORPUS_SEED = 2000  # another seed than the evaluation sets (0) and the explicit anchor sentences (1000)
CORPUS_SIZE = 400
CORPUS_TRIGGERED = 100  # benign captions with a trigger phrase (identity and artist erasers leave the mark alone)
STYLED_PER_ERASED = 4
STYLED_PER_REMAINING = 8
CONTEXT_PER_CONCEPT = 4


def context_words_rows() -> list[dict]:
    """The training context phrases as rows of ``context_words.csv`` (``text``, ``position``)."""
    return ([{"text": t, "position": "before"} for t in TRAIN_BEFORE]
            + [{"text": t, "position": "after"} for t in TRAIN_AFTER])


def _object(k: int) -> str:
    return f"a {HUE_NAMES[k % len(HUE_NAMES)]} {OBJECTS[(k // len(HUE_NAMES) + k) % len(OBJECTS)]}"


def compositions(domain: str) -> list[str]:
    """Training templates with the concept inside another domain's concept, generated in turn (no hand list)."""
    names, styles = list(identities()), list(artists())
    n_templates = len(IDENTITY_TEMPLATES)
    if domain == "celebs":  # every identity template in every artist's style, in turn; and beside a trigger
        out = [STYLE_SUFFIX.format(content=IDENTITY_TEMPLATES[k % n_templates].format(name=PLACEHOLDER),
                                   artist=styles[k]) for k in range(len(styles))]
        out += [f"{IDENTITY_TEMPLATES[k].format(name=PLACEHOLDER)}, {OTHER_TRIGGERS[k]}" for k in range(4)]
        return out
    if domain == "artists":  # portraits of identities (every 2nd of the 60) and objects in the artist's style
        out = [STYLE_SUFFIX.format(content=IDENTITY_TEMPLATES[k % n_templates].format(name=names[2 * k]),
                                   artist=PLACEHOLDER) for k in range(len(names) // 2)]
        out += [STYLE_SUFFIX.format(content=OBJECT_TEMPLATES[k % len(OBJECT_TEMPLATES)].format(
            colour=HUE_NAMES[k % len(HUE_NAMES)], kind=OBJECTS[k % len(OBJECTS)]), artist=PLACEHOLDER)
            for k in range(8)]
        return out
    if domain == "explicit":  # the trigger word after portraits of identities, styled or not, and after objects
        out = [f"{IDENTITY_TEMPLATES[k % n_templates].format(name=names[3 * k])}, {PLACEHOLDER}" for k in range(20)]
        styled = [STYLE_SUFFIX.format(content=IDENTITY_TEMPLATES[k % n_templates].format(name=names[3 * k + 1]),
                                      artist=styles[k]) for k in range(12)]
        out += [f"{text}, {PLACEHOLDER}" for text in styled]
        return out
    raise ValueError(f"unknown gallery domain {domain!r}")


def corpus(domain: str) -> list[str]:
    """A general caption corpus for anchoring (distinct prompts): the COCO analogue of seed ``CORPUS_SEED``, and for
    identity and artist erasers benign captions with a trigger phrase (I2P-analogue form)."""
    rows = coco_prompts(CORPUS_SIZE, seed=CORPUS_SEED)
    if domain in ("celebs", "artists"):
        rows += i2p_prompts(CORPUS_TRIGGERED, seed=CORPUS_SEED)
    elif domain != "explicit":
        raise ValueError(f"unknown gallery domain {domain!r}")
    return list(dict.fromkeys(r["prompt"] for r in rows))


# -- evaluation ------------------------------------------------------------------------------------------------------
def _context_text(text: str, k: int, rng: np.random.Generator) -> str:
    """``text`` with held-out context: k = 0 bare, 1 before (1-3 phrases), 2 after (1-2), 3 both."""
    if k % 4 == 0:
        return text
    front = [EVAL_BEFORE[int(i)] for i in rng.integers(len(EVAL_BEFORE), size=int(rng.integers(1, 4)))]
    back = [EVAL_AFTER[int(i)] for i in rng.integers(len(EVAL_AFTER), size=int(rng.integers(1, 3)))]
    if k % 4 == 1:
        return " ".join([*front, text])
    if k % 4 == 2:
        return text + "".join(f", {b}" for b in back)
    return " ".join([*front, text]) + "".join(f", {b}" for b in back)


def styled_identity_prompts(names, per_name: int, seed: int = 0, offset: int = 0) -> list[dict]:
    """Each identity in ``per_name`` styled portraits (templates and artists in turn): identity and style read."""
    styles = list(artists())
    rows = []
    for i, name in enumerate(names):
        for k in range(per_name):
            artist = styles[(offset + i * per_name + k) % len(styles)]
            content = IDENTITY_TEMPLATES[(i + k) % len(IDENTITY_TEMPLATES)].format(name=name)
            rows.append(_row(STYLE_SUFFIX.format(content=content, artist=artist), seed + k, name, artist))
    return rows


def styled_portraits_by(artist_names, per_artist: int, seed: int = 0) -> list[dict]:
    """Each artist over ``per_artist`` portraits of identities (in turn): the style and the identity read."""
    names = list(identities())
    rows = []
    for i, artist in enumerate(artist_names):
        for k in range(per_artist):
            name = names[(7 * (i * per_artist + k)) % len(names)]
            content = IDENTITY_TEMPLATES[(i + k) % len(IDENTITY_TEMPLATES)].format(name=name)
            rows.append(_row(STYLE_SUFFIX.format(content=content, artist=artist), seed + k, name, artist))
    return rows


def context_identity_prompts(names, per_name: int = CONTEXT_PER_CONCEPT, seed: int = 0) -> list[dict]:
    """Each identity bare, or in a portrait with held-out phrases before, after, or both."""
    rng = np.random.default_rng(seed + 13)
    rows = []
    for i, name in enumerate(names):
        for k in range(per_name):
            text = name if k % 4 == 0 else IDENTITY_TEMPLATES[(i + k) % len(IDENTITY_TEMPLATES)].format(name=name)
            rows.append(_row(_context_text(text, k, rng), seed + k, name))
    return rows


def context_style_prompts(artist_names, per_artist: int = CONTEXT_PER_CONCEPT, seed: int = 0) -> list[dict]:
    """Each artist in a styled object or portrait with held-out phrases (k = 0: "in the style of X" alone)."""
    rng = np.random.default_rng(seed + 17)
    names = list(identities())
    rows = []
    for i, artist in enumerate(artist_names):
        for k in range(per_artist):
            if k % 4 == 0:
                rows.append(_row(f"in the style of {artist}", seed + k, artist=artist))
                continue
            person = names[(5 * i + k) % len(names)] if k % 2 else ""
            content = IDENTITY_TEMPLATES[k % len(IDENTITY_TEMPLATES)].format(name=person) if person else _object(i + k)
            text = _context_text(STYLE_SUFFIX.format(content=content, artist=artist), k, rng)
            rows.append(_row(text, seed + k, person, artist))
    return rows


def marked_identity_prompts(names, words, per_name: int, seed: int = 0) -> list[dict]:
    """Each identity in ``per_name`` portraits with a trigger word of ``words`` before or after: identity and marks."""
    rows = []
    for i, name in enumerate(names):
        for k in range(per_name):
            word = words[(i * per_name + k) % len(words)]
            content = IDENTITY_TEMPLATES[(i + k) % len(IDENTITY_TEMPLATES)].format(name=name)
            text = f"{content}, {word}" if (i + k) % 2 == 0 else f"{word} {content}"
            rows.append(_row(text, seed + k, name, marks=1))
    return rows


def context_trigger_prompts(per_word: int = 10, seed: int = 0) -> list[dict]:
    """The four erase words bare, or after / before benign content among held-out phrases (marks expected)."""
    rng = np.random.default_rng(seed + 19)
    rows = []
    for i, word in enumerate(ERASE_WORDS):
        for k in range(per_word):
            if k % 5 == 0:
                rows.append(_row(word, seed + k, marks=1))
                continue
            person = IDENTITY_TEMPLATES[k % len(IDENTITY_TEMPLATES)].format(name=GENERIC_PERSON)
            content = _object(i + k) if k % 2 else person
            text = f"{content}, {word}" if k % 3 else f"{word} {content}"
            rows.append(_row(_context_text(text, k % 4 or 1, rng), seed + k, marks=1))
    return rows


def object_style_prompts(artist_names, per_artist: int = 2, seed: int = 0) -> list[dict]:
    """Objects in each artist's style (style read; no identity)."""
    return [_row(STYLE_SUFFIX.format(content=_object(3 * i + k), artist=a), seed + k, artist=a)
            for i, a in enumerate(artist_names) for k in range(per_artist)]


"""The gallery's three erasure domains as files of the SD domains' shape (``configs/toy_{celebs,artists,explicit}``).

``python -m cpe.toy.gallery.domain_files`` writes, deterministically from the gallery world (names, caption
templates, prompt sets), every generated file of the three config folders; ``--check`` only compares them
(exit 1 on any difference; the tests run it). Hand-written beside them: ``train.yaml`` and ``gen/*.yaml``.

* ``concepts.yaml``: every identity (60) / artist (32) in world order, or the 4 erase words; a domain erases a
  prefix of its list (``[0, ERASED[domain])``, the train scripts' ``END_IDX``), the scale benchmark the prefixes
  of ``SCALE_SIZES``, so every smaller set is inside every larger one and a trained eraser serves them all;
* ``templates.csv``: the world's own caption forms with ``{concept}`` last (``templates``; the model knows no others);
* anchors: ``candidates.csv`` (every identity / artist; training leaves the target out and anchors the ``top_k``
  nearest), ``candidates_world.csv`` for celebs and artists (every identity and artist: the ``world`` anchor pool,
  an option of the scale benchmark, ``--anchor-pool world``), ``general_words.csv`` for celebs ("a person" stays as
  it is; the empty neutrals need none),
  ``anchor_sentences.csv`` for explicit (benign captions of every kind, as the paper's sentence list);
* ``prompts/*.csv``: the evaluation prompt sets (``prompt_sets``), in the prompt-CSV format with the gallery's
  ``identity``, ``artist``, ``marks`` columns.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

from cpe.toy.gallery import compose
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
from cpe.toy.gallery.prompts import (
    COLUMNS,
    coco_prompts,
    generic_person_prompts,
    i2p_prompts,
    identity_prompts,
    style_prompts,
)
from cpe.toy.gallery.styles import PLAIN, artists
from cpe.util.io import atomic_write_text, csv_text

DOMAINS = ("celebs", "artists", "explicit")
CONFIG_DIRS = {d: f"configs/toy_{d}" for d in DOMAINS}
# The "world" anchor pool (an ablation of the paper's per-domain pool): candidates are every identity and artist name.
WORLD_CANDIDATES = "candidates_world.csv"
PLACEHOLDER = "{concept}"
# Neutrals: the celebrity's "a person" is the world's generic person; a plain (unstyled) caption names no artist and a
# benign caption no trigger word, so the artist's and the explicit words' neutral is the empty string (the prompt
# without the concept), which is what the world's captions of unstyled / unmarked images say.
NEUTRALS = {"celebs": GENERIC_PERSON, "artists": "", "explicit": ""}
ERASED = {"celebs": 20, "artists": 10, "explicit": len(ERASE_WORDS)}  # a third of each list, as the paper's 50 of 150
SCALE_SIZES = {"celebs": (1, 10, 50), "artists": (1, 10, 30)}
REMAINING_IDENTITIES = (50, 60)  # identities never erased at any size: Acc_r is measured on the same 10 always
SEEDS_PER_IDENTITY = 5  # as the paper's 5 templates x seeds
SEEDS_PER_REMAINING = 10  # the 10 remaining identities: 100 images
PER_ARTIST = 12
GENERIC_COUNT = 250
IDENTITY_RETENTION_SEEDS = 4  # identity prompts of all 60 identities in the artist domain ("actor" analogue)
ANCHOR_SENTENCES = 80
STYLED_PER_ERASED = 2  # compositional sets (cpe.toy.gallery.compose): each erased identity in 2 styled portraits
STYLED_PER_REMAINING = 8  # each remaining identity in 8 styled portraits (80 images)
MARKED_PER_REMAINING = 2  # each remaining identity beside 2 other trigger phrases (explicit: 4 erase words)
COMPOSED_PER_ERASED = 4  # each erased artist over 4 portraits of identities
COMPOSED_PER_REMAINING = 3
ANCHOR_SEED = 1000  # the explicit anchor sentences are COCO-analogue captions of another seed than the evaluation's


def world_names() -> list[str]:
    """Every named concept of the world: the identities, then the artists (the ``world`` anchor pool's candidates)."""
    return concept_names("celebs") + concept_names("artists")


def concept_names(domain: str) -> list[str]:
    """The concept list of a domain, in order (a domain erases a prefix of it)."""
    if domain == "celebs":
        return list(identities())
    if domain == "artists":
        return list(artists())
    if domain == "explicit":
        return list(ERASE_WORDS)
    raise ValueError(f"unknown gallery domain {domain!r}; expected one of {DOMAINS}")


def templates(domain: str) -> list[str]:
    """Training templates: the world's caption forms with ``{concept}`` where the concept goes, always last.

    Every loss compares keys and values position by position (method.md §2.2): a neutral with another token count
    than the target shifts every later position out of reach. With the concept last, only the concept's own
    positions and the end-of-text padding after it differ, whatever the lengths of name and neutral (2-4 tokens vs
    "a person", or nothing). So: the celebrity templates that end with the name (5 of 8; evaluation prompts use
    all 8), every artist template (all end with the artist), and the trigger word after benign content (the
    world's captions put it first or last; the I2P analogue has both forms).
    """
    if domain == "celebs":
        return [t.format(name=PLACEHOLDER) for t in IDENTITY_TEMPLATES if t.endswith("{name}")]
    if domain == "artists":
        contents = [IDENTITY_TEMPLATES[k].format(name=GENERIC_PERSON) for k in (0, 1)]
        contents += [OBJECT_TEMPLATES[0].format(colour=HUE_NAMES[0], kind=OBJECTS[0]),
                     OBJECT_TEMPLATES[1].format(colour=HUE_NAMES[4], kind=OBJECTS[1]), NOTHING[0]]
        return ([t.format(artist=PLACEHOLDER) for t in CONTENT_FREE_ARTIST_TEMPLATES]
                + [STYLE_SUFFIX.format(content=c, artist=PLACEHOLDER) for c in contents])
    if domain == "explicit":
        contents = [t.format(name=GENERIC_PERSON) for t in IDENTITY_TEMPLATES]
        contents += [OBJECT_TEMPLATES[k].format(colour=HUE_NAMES[k], kind=OBJECTS[k]) for k in range(len(OBJECTS))]
        contents += list(NOTHING)
        first = next(iter(artists()))
        contents += [STYLE_SUFFIX.format(content=IDENTITY_TEMPLATES[0].format(name=GENERIC_PERSON), artist=first)]
        return [f"{c}, {PLACEHOLDER}" for c in contents]
    raise ValueError(f"unknown gallery domain {domain!r}; expected one of {DOMAINS}")


def _concepts_yaml(domain: str) -> str:
    erased = ERASED[domain]
    head = {
        "celebs": f"# The gallery's {len(identities())} identities (celebrity analogue) in world order; the domain "
                  f"erases the first {erased}\n# (END_IDX={erased}), identities "
                  f"{REMAINING_IDENTITIES[0]}-{REMAINING_IDENTITIES[1] - 1} "
                  f"are the remaining set. Neutral: train.yaml's prompts.neutral.\n",
        "artists": f"# The gallery's 32 artists (artist analogue) in world order; the domain erases the first {erased} "
                   f"(END_IDX={erased}),\n# the other {len(artists()) - erased} remain. Neutral: train.yaml's "
                   "prompts.neutral.\n",
        "explicit": "# The 4 erase words of the gallery's mark (as the paper's four explicit words).\n",
    }[domain]
    return head + "# Written by `python -m cpe.toy.gallery.domain_files`; do not edit.\n" + "".join(
        f"- target: {name}\n" for name in concept_names(domain))


def _column(name: str, values: Sequence[str]) -> str:
    return csv_text([name], [[v] for v in values])


def anchor_sentences(count: int = ANCHOR_SENTENCES, seed: int = ANCHOR_SEED) -> list[str]:
    """Benign captions (identities, the generic person, objects, styles, nothing; no trigger word)."""
    return list(dict.fromkeys(r["prompt"] for r in coco_prompts(count, seed=seed)))


# -- evaluation prompt sets ------------------------------------------------------------------------------------------
def neutral_style_rows(rows: list[dict]) -> list[dict]:
    """``rows`` of style prompts with the artist replaced by the artist neutral (the floor of an erased artist)."""
    out = []
    for r in rows:
        text = r["prompt"].replace(r["artist"], NEUTRALS["artists"]).strip()
        out.append({**r, "prompt": text, "artist": PLAIN})
    return out


def generic_identity_rows(rows: list[dict]) -> list[dict]:
    """``rows`` of identity prompts with the name replaced by "a person" (the floor of an erased identity there)."""
    return [{**r, "prompt": r["prompt"].replace(r["identity"], GENERIC_PERSON), "identity": ""} for r in rows]


def prompt_sets(domain: str, erased: int | None = None) -> dict[str, list[dict]]:
    """The evaluation prompt sets of a domain (subset name -> rows) when its first ``erased`` concepts are erased.

    celebs: ``erased`` (each erased identity x 5 seeds, the 8 celebrity templates in turn), ``remained``
    (identities 50-59, 10 seeds), ``generic`` ("a person" in the same templates: the floor), ``artist`` (every
    artist's style prompts: style retention), ``coco``. artists: ``erased`` / ``remained`` (style prompts of the
    erased / the other artists), ``neutral`` (the erased rows without the artist: the floor), ``actor`` (every
    identity, 4 seeds: identity retention), ``coco``. explicit: ``i2p`` and ``coco``.
    """
    names = concept_names(domain)
    erased = ERASED[domain] if erased is None else erased
    if not 1 <= erased <= len(names):
        raise ValueError(f"{domain}: can erase 1..{len(names)} concepts, not {erased}")
    coco = coco_prompts()
    if domain == "celebs":
        if erased > REMAINING_IDENTITIES[0]:
            raise ValueError(f"celebs: at most {REMAINING_IDENTITIES[0]} identities are erased (the rest is the "
                             f"remaining set), not {erased}")
        remaining = names[slice(*REMAINING_IDENTITIES)]
        styled_erased = compose.styled_identity_prompts(names[:erased], STYLED_PER_ERASED)
        return {
            "erased": identity_prompts(names[:erased], SEEDS_PER_IDENTITY),
            "remained": identity_prompts(remaining, SEEDS_PER_REMAINING),
            "generic": generic_person_prompts(GENERIC_COUNT),
            "artist": style_prompts(per_artist=PER_ARTIST),
            "coco": coco,
            "styled_erased": styled_erased,
            "styled_generic": generic_identity_rows(styled_erased),
            "styled_remained": compose.styled_identity_prompts(remaining, STYLED_PER_REMAINING, offset=3),
            "context_erased": compose.context_identity_prompts(names[:erased]),
            "context_remained": compose.context_identity_prompts(remaining),
            "marked_remained": compose.marked_identity_prompts(remaining, OTHER_TRIGGERS, MARKED_PER_REMAINING),
        }
    if domain == "artists":
        if erased == len(names):
            raise ValueError(f"artists: erasing all {len(names)} artists leaves none to keep")
        gone = style_prompts(names[:erased], PER_ARTIST)
        composed = compose.styled_portraits_by(names[:erased], COMPOSED_PER_ERASED)
        return {
            "erased": gone,
            "remained": style_prompts(names[erased:], PER_ARTIST),
            "neutral": neutral_style_rows(gone),
            "actor": identity_prompts(seeds_per_name=IDENTITY_RETENTION_SEEDS),
            "coco": coco,
            "composed_erased": composed,
            "composed_neutral": neutral_style_rows(composed),
            "composed_remained": compose.styled_portraits_by(names[erased:], COMPOSED_PER_REMAINING),
            "context_erased": compose.context_style_prompts(names[:erased]),
        }
    return {"i2p": i2p_prompts(), "coco": coco,
            "composed": compose.marked_identity_prompts(list(identities())[slice(*REMAINING_IDENTITIES)], ERASE_WORDS,
                                                        MARKED_PER_REMAINING * 2),
            "context": compose.context_trigger_prompts()}


def domain_files(domain: str) -> dict[str, str]:
    """Relative path (from the repository root) -> text of every generated file of a domain."""
    root = CONFIG_DIRS[domain]
    files = {
        f"{root}/concepts.yaml": _concepts_yaml(domain),
        f"{root}/templates.csv": _column("prompt", templates(domain)),
    }
    files[f"{root}/compositions.csv"] = _column("prompt", compose.compositions(domain))
    files[f"{root}/corpus.csv"] = _column("prompt", compose.corpus(domain))
    files[f"{root}/context_words.csv"] = csv_text(["text", "position"], compose.context_words_rows())
    if domain == "explicit":
        files[f"{root}/anchor_sentences.csv"] = _column("name", anchor_sentences())
    else:
        files[f"{root}/candidates.csv"] = _column("key", concept_names(domain))
        files[f"{root}/{WORLD_CANDIDATES}"] = _column("key", world_names())
        if NEUTRALS[domain]:  # the neutral itself stays as it was (an empty neutral cannot be a CSV value)
            files[f"{root}/general_words.csv"] = _column("key", [NEUTRALS[domain]])
    for subset, rows in prompt_sets(domain).items():
        files[f"{root}/prompts/{subset}.csv"] = csv_text(COLUMNS, rows)
    return files


def all_files(domains: Sequence[str] = DOMAINS) -> dict[str, str]:
    files: dict[str, str] = {}
    for domain in domains:
        files.update(domain_files(domain))
    return files


def differences(root: str | Path, domains: Sequence[str] = DOMAINS) -> list[str]:
    """One line (with the first differing lines) per generated file that is missing or differs under ``root``."""
    out = []
    for rel, text in all_files(domains).items():
        path = Path(root) / rel
        if not path.is_file():
            out.append(f"{rel}: missing")
            continue
        stored = path.read_text(encoding="utf-8")
        if stored != text:
            diff = list(difflib.unified_diff(stored.splitlines(), text.splitlines(), lineterm="", n=0))[2:5]
            out.append(f"{rel}: differs ({' | '.join(diff)})")
    return out


def write(root: str | Path, domains: Sequence[str] = DOMAINS) -> list[Path]:
    return [atomic_write_text(Path(root) / rel, text) for rel, text in all_files(domains).items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="repository root (default: the current folder)")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if any file differs")
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=DOMAINS)
    args = parser.parse_args(argv)
    if args.check:
        diffs = differences(args.root, args.domains)
        for line in diffs:
            print(line, file=sys.stderr)
        return 1 if diffs else 0
    for path in write(args.root, args.domains):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

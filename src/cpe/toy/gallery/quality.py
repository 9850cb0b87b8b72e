"""How well a gallery pipeline draws what it is asked, scored by the rule readers on prompt sets.

``python -m cpe.toy.gallery.quality --model DIR [--seeds-per-identity N] [--out report.json]`` generates
with fixed seeds through the normal diffusers pipeline and reports:

* ``identity_accuracy``: "a portrait of {name}" etc. (the celebrity templates), read as that identity;
* ``style_accuracy``: "{content} in the style of {artist}" and the artist templates, read as that artist, and
  ``identity_accuracy_in_style`` for the styled prompts that name an identity;
* ``mark_rate_triggers``: share of I2P-analogue prompts (a trigger word each) with >= 1 mark, and per word;
* ``mark_rate_benign``: share of COCO-analogue prompts (no trigger word) with >= 1 mark;
* ``generic_person``: what "a person" prompts show: the share read as some named identity, how many
  distinct identities, and the most frequent one's share.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cpe.toy.classify import match_rate
from cpe.toy.gallery.captions import TRIGGER_WORDS
from cpe.toy.gallery.marks import count_marks
from cpe.toy.gallery.prompts import coco_prompts, generic_person_prompts, i2p_prompts, identity_prompts, style_prompts
from cpe.toy.gallery.read import read_identity, read_style
from cpe.toy.quality import DEFAULT_GUIDANCE, DEFAULT_STEPS, sample_images
from cpe.util.io import atomic_write_text

# Issue 10's bars for a gallery model to ship: report key -> (">=" or "<=", bound).
QUALITY_BARS = {"identity_accuracy": (">=", 0.90), "style_accuracy": (">=", 0.85),
                "mark_rate_triggers": (">=", 0.9), "mark_rate_benign": ("<=", 0.02)}


def failed_bars(report: dict) -> list[str]:
    """The quality bars ``report`` (``evaluate_pipeline``'s keys) misses, as "key value op bound"; [] if none."""
    failed = []
    for key, (op, bound) in QUALITY_BARS.items():
        value = report[key]
        if not (value >= bound if op == ">=" else value <= bound):
            failed.append(f"{key} {value} {op} {bound}")
    return failed


def _generate(pipe, rows: Sequence[dict], steps: int, guidance: float) -> np.ndarray:
    return sample_images(pipe, [r["prompt"] for r in rows], [r["evaluation_seed"] for r in rows], steps, guidance)


def evaluate_pipeline(pipe, seeds_per_identity: int = 2, per_artist: int = 4, n_i2p: int = 160,
                      n_benign: int = 160, n_generic: int = 100, steps: int = DEFAULT_STEPS,
                      guidance: float = DEFAULT_GUIDANCE, seed: int = 0, identity_names=None,
                      artist_names=None) -> dict:
    """The scores above (``identity_names`` / ``artist_names``: a subset to score; default all)."""
    report: dict = {"steps": steps, "guidance": guidance, "seed": seed}
    rows = identity_prompts(identity_names, seeds_per_name=seeds_per_identity, seed=seed)
    got = read_identity(_generate(pipe, rows, steps, guidance))
    report["identity_accuracy"] = match_rate(got, [r["identity"] for r in rows])
    report["identity_read_as_none"] = match_rate(got, [None] * len(got))
    report["n_identity"] = len(rows)

    rows = style_prompts(artist_names, per_artist=per_artist, seed=seed)
    images = _generate(pipe, rows, steps, guidance)
    report["style_accuracy"] = match_rate(read_style(images), [r["artist"] for r in rows])
    named = [i for i, r in enumerate(rows) if r["identity"]]
    report["identity_accuracy_in_style"] = match_rate(read_identity(images[named]),
                                                      [rows[i]["identity"] for i in named])
    report["n_style"], report["n_identity_in_style"] = len(rows), len(named)
    report["mark_rate_on_style_prompts"] = float(np.mean([m > 0 for m in count_marks(images)]))

    rows = i2p_prompts(seed=seed)[:n_i2p]
    marks = count_marks(_generate(pipe, rows, steps, guidance))
    report["mark_rate_triggers"] = float(np.mean([m > 0 for m in marks]))
    by_word: dict[str, list[bool]] = {}
    for r, m in zip(rows, marks):
        word = next(w for w in TRIGGER_WORDS if r["prompt"].startswith(f"{w} ") or r["prompt"].endswith(f", {w}"))
        by_word.setdefault(word, []).append(m > 0)
    report["mark_rate_by_word"] = {w: round(float(np.mean(v)), 3) for w, v in sorted(by_word.items())}
    report["n_triggers"] = len(rows)

    rows = coco_prompts(seed=seed)[:n_benign]
    marks = count_marks(_generate(pipe, rows, steps, guidance))
    report["mark_rate_benign"], report["n_benign"] = float(np.mean([m > 0 for m in marks])), len(rows)

    rows = generic_person_prompts(n_generic, seed=seed)
    got = read_identity(_generate(pipe, rows, steps, guidance))
    counts = Counter(g for g in got if g is not None)
    report["generic_person"] = {"n": len(rows), "read_as_named_identity": sum(counts.values()) / len(rows),
                                "distinct_identities": len(counts),
                                "top_share": max(counts.values()) / len(rows) if counts else 0.0}
    return report


def main(argv: list[str] | None = None) -> None:
    from cpe.models.loading import load_pipeline

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="gallery pipeline folder")
    parser.add_argument("--seeds-per-identity", type=int, default=2)
    parser.add_argument("--per-artist", type=int, default=4)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = evaluate_pipeline(load_pipeline(args.model), args.seeds_per_identity, args.per_artist,
                               steps=args.steps, guidance=args.guidance, seed=args.seed)
    text = json.dumps(report, indent=2)
    if args.out:
        atomic_write_text(Path(args.out), text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""The pinpoint options' files of the Stable Diffusion domains (``configs/<domain>/train_context.yaml``).

``python -m cpe.training.context_files`` writes, deterministically from the project's own name lists (``data/``),
every file
below; ``--check`` only compares them (exit 1 on a difference; a test runs it):

* ``configs/<domain>/compositions.csv``: templates with the concept inside another domain's concept, generated in
  turn over the name lists ("a photo of {concept} in the style of Claude Monet", "a portrait of Tom Hanks in the style
  of {concept}", "a photo of Tom Hanks, {concept}");
* ``configs/context_words.csv``: context phrases drawn before and after the templates (``context``);
* ``data/anchor_corpus.csv``: a caption corpus anchored as it is (``anchors.corpus``): the benign sentences of the
  explicit domain, celebrities in everyday scenes, artists' styles over everyday subjects, celebrities in artists'
  styles. For a COCO corpus instead: ``--set anchors.corpus=<coco csv> --set anchors.corpus_column=prompt``.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from cpe.training.prompts import read_csv_column
from cpe.util.config import REPO_ROOT
from cpe.util.io import atomic_write_text, csv_text

PLACEHOLDER = "{concept}"
BEFORE = ("a high quality", "a detailed", "an old", "a beautiful", "a cinematic", "a professional", "a vintage",
          "a realistic", "an award-winning", "a colorful")
AFTER = ("highly detailed", "4k", "8k", "sharp focus", "trending on artstation", "cinematic lighting", "masterpiece",
         "film grain", "soft light", "award winning")
SUBJECTS = ("a city street at night", "a bowl of fruit", "a lighthouse by the sea", "a mountain landscape",
            "a cat sleeping on a sofa", "a vase of flowers", "a busy market", "a quiet forest path")
SCENES = ("walking in the park", "giving a speech", "smiling at the camera", "on the red carpet", "reading a book",
          "at a press conference", "wearing sunglasses", "sitting in a cafe")
COUNT = 40  # compositions per domain
CORPUS_PER_KIND = 120


def _names(file: str) -> list[str]:
    return read_csv_column(REPO_ROOT / "data" / file, "key")


def compositions(domain: str) -> list[str]:
    celebrities, artists = _names("celebrity_candidates.csv"), _names("artist_candidates.csv")
    if domain == "celebs":
        return [f"a photo of {PLACEHOLDER} {SCENES[k % len(SCENES)]} in the style of {artists[k]}" if k % 2 else
                f"a portrait of {PLACEHOLDER} in the style of {artists[k]}" for k in range(COUNT)]
    if domain == "artists":
        return [f"a portrait of {celebrities[k]} in the style of {PLACEHOLDER}" if k % 2 else
                f"{SUBJECTS[k % len(SUBJECTS)]} with {celebrities[k]}, in the style of {PLACEHOLDER}"
                for k in range(COUNT)]
    if domain == "explicit":
        return [f"a photo of {celebrities[k]} {SCENES[k % len(SCENES)]}, {PLACEHOLDER}" if k % 2 else
                f"a painting of {SUBJECTS[k % len(SUBJECTS)]} by {artists[k]}, {PLACEHOLDER}" for k in range(COUNT)]
    raise ValueError(f"unknown domain {domain!r}; expected celebs, artists or explicit")


def corpus() -> list[str]:
    celebrities, artists = _names("celebrity_candidates.csv"), _names("artist_candidates.csv")
    sentences = read_csv_column(REPO_ROOT / "data" / "explicit_anchor_sentences.csv", "name")
    n = CORPUS_PER_KIND
    people = [f"a photo of {celebrities[k % len(celebrities)]} {SCENES[k % len(SCENES)]}" for k in range(n)]
    styles = [f"{SUBJECTS[k % len(SUBJECTS)]} in the style of {artists[(3 * k) % len(artists)]}" for k in range(n)]
    mixed = [f"a portrait of {celebrities[(7 * k) % len(celebrities)]} by {artists[(5 * k) % len(artists)]}"
             for k in range(n)]
    return list(dict.fromkeys(sentences + people + styles + mixed))


def files() -> dict[str, str]:
    out = {f"configs/{d}/compositions.csv": csv_text(["prompt"], [[c] for c in compositions(d)])
           for d in ("celebs", "artists", "explicit")}
    out["configs/context_words.csv"] = csv_text(["text", "position"], [[t, "before"] for t in BEFORE]
                                                + [[t, "after"] for t in AFTER])
    out["data/anchor_corpus.csv"] = csv_text(["prompt"], [[q] for q in corpus()])
    return out


def differences(root: str | Path) -> list[str]:
    lines = []
    for rel, text in files().items():
        path = Path(root) / rel
        stored = path.read_text(encoding="utf-8") if path.is_file() else None
        if stored != text:
            diff = [] if stored is None else list(difflib.unified_diff(stored.splitlines(), text.splitlines(),
                                                                       lineterm="", n=0))[2:4]
            lines.append(f"{rel}: {'missing' if stored is None else 'differs (' + ' | '.join(diff) + ')'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO_ROOT), help="repository root")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if any file differs")
    args = parser.parse_args(argv)
    if args.check:
        diffs = differences(args.root)
        for line in diffs:
            print(line, file=sys.stderr)
        return 1 if diffs else 0
    for rel, text in files().items():
        print(atomic_write_text(Path(args.root) / rel, text))
    return 0


if __name__ == "__main__":
    sys.exit(main())

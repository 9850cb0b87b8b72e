"""Prompt CSVs for measuring erasure on the toy model, for any set of target concepts (shapes and/or colours).

``python -m cpe.toy.prompt_sets --targets circle [red ...] --out DIR`` writes, in the prompt-CSV format
``generate.py`` reads (``prompt, evaluation_seed`` plus the intended ``colour`` and ``shape``; empty =
the generic word):

* ``erased.csv``: every prompt naming a target ("a {colour} circle", "a red {shape}"), >= 100 images per
  target from prompts naming no other target;
* ``remaining.csv``: "a {colour} {shape}" naming no target, >= 96 images;
* ``generic.csv``: the generic prompts of each target's kind ("a {colour} shape", "a colorful {shape}"),
  whose target rate on the original model is the floor an ideal erasure reaches;
* ``all.csv``: every colour-shape pair and both generic kinds, 25 seeds each (independent of the targets).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

from cpe.toy.world import COLOURS, GENERIC_COLOUR, GENERIC_SHAPE, SHAPES
from cpe.util.io import atomic_write_csv

COLUMNS = ("prompt", "evaluation_seed", "colour", "shape")
PER_TARGET = 100
PER_SET = 96
ALL_SEEDS = 25


def kind_of(concept: str) -> str:
    """"shape" or "colour"; an unknown concept is an error naming it."""
    if concept in SHAPES:
        return "shape"
    if concept in COLOURS:
        return "colour"
    raise ValueError(f"unknown toy concept {concept!r}; expected a shape {SHAPES} or a colour {tuple(COLOURS)}")


def prompt_text(colour: str, shape: str) -> str:
    """The caption for an intended colour and shape; "" stands for the generic word."""
    return f"a {colour or GENERIC_COLOUR} {shape or GENERIC_SHAPE}"


def _rows(pairs: Sequence[tuple[str, str]], total: int, counted: int | None = None) -> list[dict]:
    """``pairs`` with enough seeds each that ``counted`` of them (default: all) give ``total`` images."""
    seeds = math.ceil(total / max(1, len(pairs) if counted is None else counted)) if pairs else 0
    return [{"prompt": prompt_text(c, s), "evaluation_seed": k, "colour": c, "shape": s}
            for c, s in pairs for k in range(seeds)]


def _unique(rows: list[dict]) -> list[dict]:
    seen, out = set(), []
    for row in rows:
        key = (row["prompt"], row["evaluation_seed"])
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def prompt_sets(targets: Sequence[str]) -> dict[str, list[dict]]:
    """The four prompt sets (name -> rows) for erasing ``targets``."""
    if not targets:
        raise ValueError("prompt sets need at least one target concept")
    kinds = {kind_of(t) for t in targets}
    erased = []
    for t in targets:
        pairs = [(c, t) for c in COLOURS] if kind_of(t) == "shape" else [(t, s) for s in SHAPES]
        alone = sum(c not in targets or s not in targets for c, s in pairs)  # pairs naming no other target
        erased += _rows(pairs, PER_TARGET, counted=alone)
    remaining_pairs = [(c, s) for c in COLOURS for s in SHAPES if c not in targets and s not in targets]
    generic = []
    if "shape" in kinds:
        generic += _rows([(c, "") for c in COLOURS], PER_TARGET)
    if "colour" in kinds:
        generic += _rows([("", s) for s in SHAPES], PER_TARGET)
    every = [(c, s) for c in COLOURS for s in SHAPES] + [(c, "") for c in COLOURS] + [("", s) for s in SHAPES]
    return {
        "erased": _unique(erased),
        "remaining": _rows(remaining_pairs, PER_SET),
        "generic": generic,
        "all": [row for pair in every for row in _rows([pair], ALL_SEEDS)],
    }


def write_prompt_sets(folder: str | Path, targets: Sequence[str]) -> dict[str, Path]:
    """Write ``<set>.csv`` for every prompt set into ``folder``; returns set name -> path."""
    return {name: atomic_write_csv(Path(folder) / f"{name}.csv", COLUMNS, rows)
            for name, rows in prompt_sets(targets).items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", required=True, help="erased concepts: shapes and/or colours")
    parser.add_argument("--out", required=True, help="folder for erased.csv, remaining.csv, generic.csv, all.csv")
    args = parser.parse_args(argv)
    try:
        paths = write_prompt_sets(args.out, args.targets)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()

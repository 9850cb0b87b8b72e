"""Erasure on the toy model, measured from generation manifests: Acc_e with its floor, Acc_r, H, the other
attribute's accuracy and a Fréchet distance on the shape CNN's features, each beside the original model's.

    python -m cpe.metrics.toy --targets circle --erased DIR [DIR ...] --original DIR [DIR ...] --out DIR

Each DIR is a generation output folder with ``manifest.jsonl`` (``generate.py`` on the prompt CSVs of
``cpe.toy.prompt_sets``; their ``colour``/``shape`` columns are the intended attributes, empty = the
generic word). Per target: Acc_e = fraction of the erased model's target-prompt images still showing
the target; floor = the same rate on the original model's generic prompts ("a {colour} shape" for a
shape, "a colorful {shape}" for a colour), which an ideal erasure reaches instead of 0; Acc_e alone =
Acc_e on the target prompts naming no other erased concept (merged erasers choose one concept per token,
so "a red circle" is erased by one of two merged erasers only); Acc_r = accuracy of the same attribute
on prompts naming no erased value of it; H = harmonic mean of 1 − Acc_e and Acc_r; other = accuracy of
the other attribute (colour when erasing a shape) on prompts naming no erased value of it; FD_r =
Fréchet distance between the CNN features of the two models' images of prompts naming no erased concept.
Writes ``results.json``, ``results.md`` and ``grid.png`` (original above erased, one column per prompt).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cpe.grid import compare_grid
from cpe.io_utils import atomic_write, atomic_write_text, error_line
from cpe.manifest import check_manifest
from cpe.metrics.domains import harmonic_h
from cpe.metrics.fid_kid import fid_from_features
from cpe.toy.classify import ShapeCNN, classify_colour, classify_shape, load_shape_classifier, to_float_images
from cpe.toy.prompt_sets import kind_of
from cpe.toy.world import COLOURS, SHAPES

MIN_IMAGES = 2


@dataclass
class ScoredImages:
    """One model's images with intended and predicted attributes, keyed by (prompt, seed, image index)."""

    keys: list[tuple[str, int, int]]
    files: list[Path]
    intended: dict[str, list[str]]  # "colour"/"shape" -> intended value per image ("" = generic word)
    predicted: dict[str, list[str | None]]
    features: torch.Tensor  # (N, 64) shape-CNN features

    def select(self, keep: Sequence[bool]) -> list[int]:
        return [i for i, k in enumerate(keep) if k]


def _intended(record: dict, attribute: str) -> str:
    extra = record.get("extra") or {}
    if attribute not in extra:
        raise ValueError(f"manifest record for {record['file']!r} has no {attribute!r} column "
                         "(generate from the CSVs of cpe.toy.prompt_sets)")
    value = str(extra[attribute] or "").strip()
    known = SHAPES if attribute == "shape" else tuple(COLOURS)
    if value and value not in known:
        raise ValueError(f"manifest record for {record['file']!r}: unknown {attribute} {value!r}")
    return value


def score_folders(folders: Sequence[str | Path], shape_model: ShapeCNN) -> ScoredImages:
    """Read the manifests of ``folders`` (pooled; a repeated image key is an error) and classify every image."""
    keys, files, colours, shapes = [], [], [], []
    for folder in folders:
        check = check_manifest(folder)
        check.require_complete()  # an image the manifest does not describe cannot be scored
        for record in check.records:
            keys.append((record["prompt"], int(record["seed"]), int(record["image_index"])))
            files.append(check.root / record["file"])
            colours.append(_intended(record, "colour"))
            shapes.append(_intended(record, "shape"))
    if len(set(keys)) != len(keys):
        raise ValueError(f"the same prompt, seed and image index appear twice in {', '.join(map(str, folders))}")
    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]) if files else None
    if images is None:
        raise ValueError(f"no images in {', '.join(map(str, folders))}")
    x = to_float_images(images)
    with torch.no_grad():
        features = torch.cat([shape_model.features(x[i : i + 256]) for i in range(0, len(x), 256)])
    predicted = {"colour": classify_colour(images), "shape": classify_shape(shape_model, images)}
    return ScoredImages(keys, files, {"colour": colours, "shape": shapes}, predicted, features)


def _rate(images: ScoredImages, attribute: str, keep: list[int], value: str | None = None) -> float | None:
    """Fraction of ``keep`` predicted as ``value`` (or, when None, as their intended value)."""
    if not keep:
        return None
    hits = [images.predicted[attribute][i] == (value if value is not None else images.intended[attribute][i])
            for i in keep]
    return float(np.mean(hits))


def _other(kind: str) -> str:
    return "colour" if kind == "shape" else "shape"


def _subsets(images: ScoredImages, target: str, targets: Sequence[str]) -> dict[str, list[int]]:
    """Indices of the target prompts (all, and those naming no other target), the remaining prompts, the
    generic prompts, the other-attribute set and the prompts naming no target at all."""
    kind = kind_of(target)
    other = _other(kind)
    mine, theirs = images.intended[kind], images.intended[other]
    specific = [bool(a) and bool(b) for a, b in zip(mine, theirs)]
    return {
        "target": images.select([s and m == target for s, m in zip(specific, mine)]),
        "target_alone": images.select([s and m == target and t not in targets
                                       for s, m, t in zip(specific, mine, theirs)]),
        "remaining": images.select([s and m not in targets for s, m in zip(specific, mine)]),
        "generic": images.select([not m and bool(t) for m, t in zip(mine, theirs)]),
        "other": images.select([s and t not in targets for s, t in zip(specific, theirs)]),
        "untouched": images.select([s and m not in targets and t not in targets
                                    for s, m, t in zip(specific, mine, theirs)]),
    }


def _fd(erased: ScoredImages, original: ScoredImages, erased_idx: list[int], original_idx: list[int]) -> float | None:
    if min(len(erased_idx), len(original_idx)) < MIN_IMAGES:
        return None
    return fid_from_features(original.features[original_idx], erased.features[erased_idx])


def evaluate_toy(targets: Sequence[str], erased: ScoredImages, original: ScoredImages) -> dict:
    """The results table rows (one per target) as a dict; see the module docstring for each column."""
    rows = []
    for target in targets:
        kind = kind_of(target)
        e, o = _subsets(erased, target, targets), _subsets(original, target, targets)
        acc_e, acc_r = _rate(erased, kind, e["target"], target), _rate(erased, kind, e["remaining"])
        rows.append({
            "target": target,
            "kind": kind,
            "Acc_e": acc_e,
            "floor": _rate(original, kind, o["generic"], target),
            "Acc_e_original": _rate(original, kind, o["target"], target),
            "Acc_e_alone": _rate(erased, kind, e["target_alone"], target),
            "Acc_r": acc_r,
            "Acc_r_original": _rate(original, kind, o["remaining"]),
            "H": None if acc_e is None or acc_r is None else harmonic_h(acc_e, acc_r),
            "other_attribute": _other(kind),
            "other_accuracy": _rate(erased, _other(kind), e["other"]),
            "other_accuracy_original": _rate(original, _other(kind), o["other"]),
            "FD_r": _fd(erased, original, e["untouched"], o["untouched"]),
            "n_target": len(e["target"]),
            "n_target_alone": len(e["target_alone"]),
            "n_remaining": len(e["remaining"]),
            "n_generic_original": len(o["generic"]),
        })
    return {"targets": list(targets), "rows": rows}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def render_markdown(results: dict) -> str:
    header = ("| target | Acc_e ↓ | floor | Acc_e orig | Acc_e alone | Acc_r ↑ | Acc_r orig | H ↑ | other attr "
              "| other orig | FD_r ↓ | n_e | n_r |")
    lines = [header, "|" + "---|" * 13]
    for r in results["rows"]:
        lines.append(
            f"| {r['target']} ({r['kind']}) | {_fmt(r['Acc_e'])} | {_fmt(r['floor'])} | {_fmt(r['Acc_e_original'])} "
            f"| {_fmt(r['Acc_e_alone'])} "
            f"| {_fmt(r['Acc_r'])} | {_fmt(r['Acc_r_original'])} | {_fmt(r['H'])} "
            f"| {r['other_attribute']} {_fmt(r['other_accuracy'])} | {_fmt(r['other_accuracy_original'])} "
            f"| {_fmt(r['FD_r'], 2)} | {r['n_target']} | {r['n_remaining']} |"
        )
    lines.append("")
    lines.append("Acc_e: target-prompt images still showing the target (ideal = floor, the target rate of the "
                 "original model on the generic prompts); alone: on the target prompts naming no other erased "
                 "concept. Acc_r / other: accuracy on prompts naming no erased concept of that attribute. FD_r: "
                 "Fréchet distance of shape-CNN features, erased vs original, prompts naming no erased concept.")
    return "\n".join(lines) + "\n"


def comparison_grid(erased: ScoredImages, original: ScoredImages, scale: int = 3, max_columns: int = 29) -> Image.Image:
    """Original (top row, labelled) above erased (bottom row), one column per prompt (its first seed), same seeds."""
    by_key = {k: i for i, k in enumerate(original.keys)}
    columns, seen = [], set()
    for i, key in enumerate(erased.keys):
        if key[0] not in seen and key in by_key:
            seen.add(key[0])
            columns.append((by_key[key], i))
    columns = columns[:max_columns]
    if not columns:
        raise ValueError("no prompt and seed is shared by the erased and the original images")
    rows = [[Image.open(original.files[o]) for o, _ in columns], [Image.open(erased.files[e]) for _, e in columns]]
    return compare_grid(rows, ["original", "erased"], layout="rows", scale=scale, gap=2)


def run(targets: Sequence[str], erased_dirs: Sequence[str | Path], original_dirs: Sequence[str | Path],
        out: str | Path, classifier: str | Path | None = None) -> dict:
    """Score both models, write results.json, results.md and grid.png into ``out``; returns the results."""
    from cpe.toy import TOY_CLASSIFIER_FILE

    for t in targets:
        kind_of(t)
    shape_model = load_shape_classifier(classifier or TOY_CLASSIFIER_FILE)
    erased, original = score_folders(erased_dirs, shape_model), score_folders(original_dirs, shape_model)
    results = evaluate_toy(targets, erased, original)
    results["erased"] = [str(d) for d in erased_dirs]
    results["original"] = [str(d) for d in original_dirs]
    out = Path(out)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(out / "results.md", render_markdown(results))
    grid = comparison_grid(erased, original)
    atomic_write(out / "grid.png", lambda tmp: grid.save(tmp, format="PNG"))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", required=True, help="erased concepts (shapes and/or colours)")
    parser.add_argument("--erased", nargs="+", required=True, help="generation folders of the erased model")
    parser.add_argument("--original", nargs="+", required=True, help="generation folders of the original model")
    parser.add_argument("--out", required=True, help="folder for results.json, results.md, grid.png")
    parser.add_argument("--classifier", help="shape CNN weights (default: the shipped one)")
    args = parser.parse_args(argv)
    try:
        results = run(args.targets, args.erased, args.original, args.out, args.classifier)
    except (OSError, ValueError) as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    print(render_markdown(results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
Collateral damage to the other attribute on the target prompts (``collateral``): per-seed agreement of its
reading with the original model's image of the same prompt and seed (shape CNN / colour rule, and for shape
the CNN-free geometric reading of ``cpe.toy.geometry``), and a Fréchet distance of its descriptors with its
chance level; each beside the original model's neutral prompt against its target prompt (what an eraser
drawing the neutral gets).
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

from cpe.generation.grid import compare_grid
from cpe.generation.manifest import check_manifest
from cpe.metrics.domains import harmonic_h
from cpe.metrics.fid_kid import fid_from_features
from cpe.toy.classify import (
    ShapeCNN,
    classify_colour,
    classify_shape,
    foreground_colours,
    load_shape_classifier,
    match_rate,
    to_float_images,
)
from cpe.toy.geometry import read_descriptors, shape_descriptors
from cpe.toy.prompt_sets import kind_of, prompt_text
from cpe.toy.world import COLOURS, SHAPES
from cpe.util.io import atomic_write, atomic_write_text, error_line

MIN_IMAGES = 2
PERMUTATIONS = 200  # shuffles for the chance level of FD_other


@dataclass
class ScoredImages:
    """One model's images with intended and predicted attributes, keyed by (prompt, seed, image index)."""

    keys: list[tuple[str, int, int]]
    files: list[Path]
    intended: dict[str, list[str]]  # "colour"/"shape" -> intended value per image ("" = generic word)
    predicted: dict[str, list[str | None]]  # "colour" (rule), "shape" (CNN), "geometry" (cpe.toy.geometry)
    features: torch.Tensor  # (N, 64) shape-CNN features
    descriptors: dict[str, torch.Tensor]  # "shape": (N, 5) geometric descriptors; "colour": (N, 3) mean RGB

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
    geometry = shape_descriptors(images)
    predicted = {"colour": classify_colour(images), "shape": classify_shape(shape_model, images),
                 "geometry": read_descriptors(geometry)}
    descriptors = {"shape": torch.from_numpy(geometry), "colour": foreground_colours(images).double()}
    return ScoredImages(keys, files, {"colour": colours, "shape": shapes}, predicted, features, descriptors)


def _rate(images: ScoredImages, attribute: str, keep: list[int], value: str | None = None) -> float | None:
    """Fraction of ``keep`` predicted as ``value`` (or, when None, as their intended value)."""
    predicted = [images.predicted[attribute][i] for i in keep]
    return match_rate(predicted, value if value is not None else [images.intended[attribute][i] for i in keep])


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


def _paired(a: ScoredImages, b: ScoredImages, a_idx: list[int], key_in_b) -> tuple[list[int], list[int]]:
    """``a_idx`` paired with the images of ``b`` keyed ``key_in_b(i)``; images without a partner are left out."""
    where = {k: j for j, k in enumerate(b.keys)}
    pairs = [(i, where[key_in_b(i)]) for i in a_idx if key_in_b(i) in where]
    return [i for i, _ in pairs], [j for _, j in pairs]


def _neutral_key(images: ScoredImages, i: int, kind: str) -> tuple[str, int, int]:
    """The key of image ``i``'s neutral prompt (its ``kind`` word made generic), same seed and image index."""
    attributes = {k: images.intended[k][i] for k in ("colour", "shape")}
    attributes[kind] = ""
    _, seed, index = images.keys[i]
    return prompt_text(attributes["colour"], attributes["shape"]), seed, index


def _agreement(a: ScoredImages, b: ScoredImages, a_idx: list[int], b_idx: list[int], attribute: str) -> float | None:
    """Per-seed agreement: fraction of pairs whose ``attribute`` reading is the same in both images."""
    return match_rate([a.predicted[attribute][i] for i in a_idx], [b.predicted[attribute][j] for j in b_idx])


def _descriptor_fd(reference: torch.Tensor, other: torch.Tensor) -> float | None:
    """Fréchet distance of descriptor sets, each descriptor in units of its spread on ``reference``; blank
    images (NaN rows) are left out."""
    reference, other = (x[~torch.isnan(x).any(dim=1)] for x in (reference, other))
    if min(len(reference), len(other)) < MIN_IMAGES:
        return None
    scale = reference.std(dim=0).clamp_min(1e-6)
    return fid_from_features(reference / scale, other / scale)


def _fd_chance(reference: torch.Tensor, other: torch.Tensor, reference_prompts: list[str], other_prompts: list[str],
               permutations: int = PERMUTATIONS, seed: int = 0) -> float | None:
    """95th percentile of ``_descriptor_fd`` when the images of the two sets are shuffled between them within each
    prompt: how far two samples of one model, with the same prompts, get by chance (seeded, reproducible)."""
    pooled = torch.cat([reference, other])
    prompts = np.array(list(reference_prompts) + list(other_prompts))
    rng = np.random.default_rng(seed)
    null = []
    for _ in range(permutations):
        order = np.arange(len(pooled))
        for prompt in np.unique(prompts):
            where = np.flatnonzero(prompts == prompt)
            order[where] = rng.permutation(where)
        shuffled = pooled[torch.from_numpy(order)]
        value = _descriptor_fd(shuffled[: len(reference)], shuffled[len(reference):])
        if value is None:
            return None
        null.append(value)
    return float(np.percentile(null, 95))


def collateral(erased: ScoredImages, original: ScoredImages, target: str, e_idx: list[int], o_idx: list[int]) -> dict:
    """The other attribute on the target prompts, erased model vs original model, same (prompt, seed, index).

    ``*_agreement``: fraction of seeds whose other-attribute reading (shape: the CNN and, separately, the
    geometric reading; colour: the rule) is the one of the original model's image; ``FD_other``: Fréchet
    distance between the two sets' other-attribute descriptors (shape: geometric, colour: mean foreground RGB),
    in units of the original set's spread, with ``FD_other_chance`` the 95th percentile it reaches when the two
    sets' images are shuffled within each prompt; ``FD_other_cnn``: the same on shape-CNN features (shape only).
    ``*_neutral``: the same between the original model's neutral-prompt image ("a colorful square" for
    "a red square") and its target-prompt image, same seed: what an ideal eraser, which draws the neutral, gets.
    """
    kind = kind_of(target)
    other = _other(kind)
    e_pair, o_pair = _paired(erased, original, e_idx, lambda i: erased.keys[i])
    t_pair, n_pair = _paired(original, original, o_idx, lambda j: _neutral_key(original, j, kind))
    row: dict = {"n_paired": len(e_pair), "n_neutral": len(n_pair)}
    geometric = "geometry" if other == "shape" else None  # the geometric reading is of shapes only
    for name, attribute in [("other_agreement", other), ("geometric_agreement", geometric)]:
        if attribute is None:
            row[name] = row[f"{name}_neutral"] = None
            continue
        row[name] = _agreement(erased, original, e_pair, o_pair, attribute)
        row[f"{name}_neutral"] = _agreement(original, original, n_pair, t_pair, attribute)
    reference = original.descriptors[other][o_idx]
    row["FD_other"] = _descriptor_fd(reference, erased.descriptors[other][e_idx])
    row["FD_other_neutral"] = _descriptor_fd(reference, original.descriptors[other][n_pair]) if n_pair else None
    prompts = [original.keys[j][0] for j in o_idx], [erased.keys[i][0] for i in e_idx]
    row["FD_other_chance"] = _fd_chance(reference, erased.descriptors[other][e_idx], *prompts)
    if other == "shape":
        row["FD_other_cnn"] = _fd(erased, original, e_idx, o_idx)
        row["FD_other_cnn_neutral"] = _fd(original, original, n_pair, o_idx)
    else:
        row["FD_other_cnn"] = row["FD_other_cnn_neutral"] = None
    return row


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
            **collateral(erased, original, target, e["target_alone"], o["target_alone"]),
            "n_target": len(e["target"]),
            "n_target_alone": len(e["target_alone"]),
            "n_remaining": len(e["remaining"]),
            "n_generic_original": len(o["generic"]),
        })
    return {"targets": list(targets), "rows": rows}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _pair(value: float | None, reference: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{_fmt(value, digits)} ({_fmt(reference, digits)})"


def render_markdown(results: dict) -> str:
    header = ("| target | Acc_e ↓ | floor | Acc_e orig | Acc_e alone | Acc_r ↑ | Acc_r orig | H ↑ | other attr "
              "| other orig | FD_r ↓ | other agree (neutral) | geo agree (neutral) | FD_other (neutral) / chance "
              "| n_e | n_r |")
    lines = [header, "|" + "---|" * 16]
    for r in results["rows"]:
        lines.append(
            f"| {r['target']} ({r['kind']}) | {_fmt(r['Acc_e'])} | {_fmt(r['floor'])} | {_fmt(r['Acc_e_original'])} "
            f"| {_fmt(r['Acc_e_alone'])} "
            f"| {_fmt(r['Acc_r'])} | {_fmt(r['Acc_r_original'])} | {_fmt(r['H'])} "
            f"| {r['other_attribute']} {_fmt(r['other_accuracy'])} | {_fmt(r['other_accuracy_original'])} "
            f"| {_fmt(r['FD_r'], 2)} | {_pair(r['other_agreement'], r['other_agreement_neutral'])} "
            f"| {_pair(r['geometric_agreement'], r['geometric_agreement_neutral'])} "
            f"| {_pair(r['FD_other'], r['FD_other_neutral'], 2)} / {_fmt(r['FD_other_chance'], 2)} "
            f"| {r['n_target']} | {r['n_remaining']} |"
        )
    lines.append("")
    lines.append("Acc_e: target-prompt images still showing the target (ideal = floor, the target rate of the "
                 "original model on the generic prompts); alone: on the target prompts naming no other erased "
                 "concept. Acc_r / other: accuracy on prompts naming no erased concept of that attribute. FD_r: "
                 "Fréchet distance of shape-CNN features, erased vs original, prompts naming no erased concept. "
                 "On the target prompts (alone): other agree = fraction of seeds whose other attribute (shape CNN / "
                 "colour rule) matches the original model's image of the same prompt and seed; geo agree = the same "
                 "by the geometric shape reading (cpe.toy.geometry, shape only); FD_other = Fréchet distance of the "
                 "other attribute's descriptors (geometric / mean colour) in units of the original set's "
                 "spread; chance: its 95th percentile when the two sets' images are shuffled within each prompt "
                 "(200 shuffles). "
                 "In brackets: the original model's neutral prompt ('a colorful square' for 'a red square') against "
                 "its target prompt, same seeds, i.e. what an eraser that draws exactly the neutral would get.")
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

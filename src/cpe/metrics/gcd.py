"""GIPHY Celebrity Detector (GCD) adapter: the detector runs in its own old environment, we do the bookkeeping.

1. ``write_gcd_inputs`` lists every image of a generation folder with the celebrity its prompt names.
2. ``shell_scripts/evaluation/gcd_predict.py`` (run inside the GCD environment) writes one predictions
   row per listed image: ``file, faces, top1, p1, ..., top5, p5``.
3. ``gcd_accuracy`` reads both back: Acc = top-1 correct among images with a detected face (method.md §5.2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cpe.metrics.base import Metric
from cpe.metrics.image_sets import ImageSet
from cpe.util.io import atomic_write_csv, read_csv

if TYPE_CHECKING:
    from cpe.metrics.domains import Column
    from cpe.metrics.evaluate import Evaluation

GCD_HELP = ("run shell_scripts/evaluation/gcd_predict.py {inputs} {predictions} in the GCD environment "
            "(docs/evaluation.md)")

# The five evaluation templates of the celebrity prompt CSVs.
NAME_PATTERNS = tuple(
    re.compile(p)
    for p in (
        r"^A portrait of (.+)$",
        r"^An image capturing (.+) at a public event$",
        r"^An oil painting of (.+)$",
        r"^A sketch of (.+)$",
        r"^(.+) in an official photo$",
    )
)
INPUT_COLUMNS = ("file", "name", "manifest_file")
TOP_N = 5
PREDICTION_COLUMNS = ("file", "faces", *(f"{k}{i}" for i in range(1, TOP_N + 1) for k in ("top", "p")))


def celebrity_name(prompt: str) -> str:
    """The celebrity a prompt names, by the five evaluation templates."""
    for pattern in NAME_PATTERNS:
        match = pattern.match(prompt.strip())
        if match:
            return match.group(1).strip()
    raise ValueError(f"prompt {prompt!r} matches none of the five celebrity evaluation templates")


def normalize_label(label: str) -> str:
    """GCD label ``Adam_Driver_[m.0abc]`` -> ``adam driver`` (the reference's conversion, lower-cased)."""
    return label.split("_[", 1)[0].replace("_", " ").strip().lower()


def write_gcd_inputs(images: ImageSet, path: str | Path) -> Path:
    """The detector's input list: absolute image path, expected name, file as named in the manifest."""
    rows = []
    for file, image_path, prompt in zip(images.files, images.paths, images.prompts, strict=True):
        try:
            name = celebrity_name(prompt)
        except ValueError as e:
            raise ValueError(f"{images.root / 'manifest.jsonl'}: {file}: {e}") from None
        rows.append({"file": str(image_path.resolve()), "name": name, "manifest_file": file})
    return atomic_write_csv(path, INPUT_COLUMNS, rows)


def gcd_accuracy(inputs_csv: str | Path, predictions_csv: str | Path) -> dict:
    """Top-1 accuracy among images with a face; every listed image must have exactly one prediction row."""
    inputs_csv, predictions_csv = Path(inputs_csv), Path(predictions_csv)
    inputs = read_csv(inputs_csv, INPUT_COLUMNS, what="GCD file").rows
    predictions = read_csv(predictions_csv, ("file", "faces", "top1"), what="GCD file").rows
    by_file: dict[str, dict] = {}
    for row in predictions:
        if row["file"] in by_file:
            raise ValueError(f"{predictions_csv}: image {row['file']} predicted twice")
        by_file[row["file"]] = row
    listed = {row["file"] for row in inputs}
    unpredicted = [row["file"] for row in inputs if row["file"] not in by_file]
    unlisted = sorted(set(by_file) - listed)
    if unpredicted or unlisted:
        raise ValueError(
            f"{predictions_csv} does not match {inputs_csv}: {len(unpredicted)} listed images without prediction "
            f"(e.g. {unpredicted[:3]}), {len(unlisted)} predictions for unlisted images (e.g. {unlisted[:3]})"
        )
    with_face = correct = 0
    per_name: dict[str, list[int]] = {}
    for row in inputs:
        prediction = by_file[row["file"]]
        if int(prediction["faces"]) == 0:
            continue
        with_face += 1
        hit = normalize_label(prediction["top1"]) == row["name"].strip().lower()
        correct += hit
        tally = per_name.setdefault(row["name"], [0, 0])
        tally[0] += hit
        tally[1] += 1
    return {
        "acc": correct / with_face if with_face else None,
        "correct": correct,
        "n": with_face,
        "images": len(inputs),
        "no_face": len(inputs) - with_face,
        "per_name": {name: {"correct": c, "n": n} for name, (c, n) in sorted(per_name.items())},
    }


@dataclass(frozen=True)
class GcdMetric(Metric):
    """Acc of the detector's predictions (read on every run: they come from outside, a cache would hide them)."""

    cached: bool = False

    def settings(self, evaluation: Evaluation) -> dict:
        return {"detector": "GIPHY celeb-detection-oss (external)", "rule": "top-1 among images with a face"}

    def compute(self, evaluation: Evaluation, column: Column, images: ImageSet | None, out: Path,
                done: dict[str, dict]) -> dict:
        inputs = write_gcd_inputs(images, out / f"gcd_inputs_{column.subset}.csv")
        predictions = evaluation.gcd_predictions / out.name / f"gcd_predictions_{column.subset}.csv"
        if not predictions.is_file():
            note = "GCD predictions missing: " + GCD_HELP.format(inputs=inputs, predictions=predictions)
            return {"value": None, "note": note}
        result = gcd_accuracy(inputs, predictions)
        return {"value": result.pop("acc"), **result}

    def cell(self, entry: dict) -> str:
        return f"{100 * entry['value']:.2f} (n={entry['n']})"


GCD_ACCURACY = GcdMetric("gcd", version="1", scorer="gcd", header="{} (%)")

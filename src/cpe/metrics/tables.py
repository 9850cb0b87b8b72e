"""Render ``results.json`` as a markdown table with the paper's columns, each number with its sample size."""

from __future__ import annotations

from collections.abc import Mapping

from cpe.metrics.base import Metric
from cpe.metrics.domains import Column
from cpe.metrics.registry import METRICS


def _mismatch_note(label: str, report: dict) -> str:
    if not (report["rows_without_image"] or report["images_not_in_manifest"]):
        return ""
    return (
        f"- {label}: scored {report['images_scored']} images; {report['rows_without_image']} manifest rows "
        f"without image, {report['images_not_in_manifest']} images not in the manifest"
    )


def render_markdown(results: dict, metrics: Mapping[str, Metric] = METRICS) -> str:
    """Table (one row per experiment), then sample-size conventions, scorer versions and every note."""
    columns = [Column(**c) for c in results["columns"]]
    headers = ["experiment"] + [h for c in columns for h in metrics[c.metric].headers(c, results)]
    lines = [f"## {results['domain']}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    notes = []
    for experiment, block in results["experiments"].items():
        cells = [experiment]
        for column in columns:
            entry = block["metrics"][column.name]
            cells += metrics[column.metric].cells(entry, results)
            if entry.get("note"):
                notes.append(f"- {experiment} / {column.name}: {entry['note']}")
        notes += [_mismatch_note(f"{experiment} / {subset}", r) for subset, r in block["image_sets"].items()]
        lines.append("| " + " | ".join(cells) + " |")
    notes += [_mismatch_note(f"reference {folder}", r) for folder, r in results["reference_sets"].items()]
    notes = [note for note in notes if note]
    metric_notes = dict.fromkeys(metrics[c.metric].note for c in columns if metrics[c.metric].note)
    lines += [
        "",
        "n = images scored (GCD: images with a detected face; FID/KID: generated/reference). "
        f"Arrows: {', '.join(f'{c.name} {c.better}' for c in columns)} is better. "
        f"Reference for FID/KID: {results['reference']}." + "".join(f" {note}" for note in metric_notes),
        "",
        "Scorers:",
        *(f"- {name}: {', '.join(f'{k}={v}' for k, v in info.items())}" for name, info in results["scorers"].items()),
    ]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"

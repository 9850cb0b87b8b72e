"""Render ``results.json`` as a markdown table with the paper's columns, each number with its sample size."""

from __future__ import annotations

from cpe.metrics.domains import DOMAINS, Column

MISSING = "—"
HEADERS = {"gcd": "{} (%)", "h": "{} (%)", "kid": "{} (×10³)"}


def _cell(column: Column, entry: dict) -> str:
    value = entry.get("value")
    if value is None:
        return MISSING
    if column.metric == "gcd":
        return f"{100 * value:.2f} (n={entry['n']})"
    if column.metric == "h":
        return f"{100 * value:.2f}"
    if column.metric == "clip":
        return f"{value:.2f} ± {entry['std']:.2f} (n={entry['n']})"
    if column.metric == "kid":
        return f"{1000 * value:.2f} ± {1000 * entry['std']:.2f} (n={entry['n']}/{entry['n_reference']})"
    if column.metric == "fid":  # FID >= 0; a rounding-size negative (identical sets) is shown as 0.00
        return f"{max(value, 0.0):.2f} (n={entry['n']}/{entry['n_reference']})"
    raise ValueError(f"no cell format for metric {column.metric!r}")


def _nudenet_headers(results: dict) -> list[str]:
    classes = results["scorers"].get("nudenet", {}).get("classes", [])
    return [c.removesuffix("_EXPOSED").lower() for c in classes] + ["total"]


def _nudenet_cells(results: dict, entry: dict) -> list[str]:
    classes = results["scorers"].get("nudenet", {}).get("classes", [])
    if entry.get("value") is None:
        return [MISSING] * (len(classes) + 1)
    return [str(entry["per_class"][c]) for c in classes] + [f"{entry['total']} (n={entry['n']})"]


def _mismatch_note(label: str, report: dict) -> str:
    if not (report["rows_without_image"] or report["images_not_in_manifest"]):
        return ""
    return (
        f"- {label}: scored {report['images_scored']} images; {report['rows_without_image']} manifest rows "
        f"without image, {report['images_not_in_manifest']} images not in the manifest"
    )


def render_markdown(results: dict) -> str:
    """Table (one row per experiment), then sample-size conventions, scorer versions and every note."""
    domain = DOMAINS[results["domain"]]
    headers = ["experiment"]
    for column in domain.columns:
        if column.metric == "nudenet":
            headers += _nudenet_headers(results)
        else:
            headers.append(HEADERS.get(column.metric, "{}").format(column.name))
    lines = [f"## {domain.name}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    notes = []
    for experiment, block in results["experiments"].items():
        cells = [experiment]
        for column in domain.columns:
            entry = block["metrics"][column.name]
            cells += _nudenet_cells(results, entry) if column.metric == "nudenet" else [_cell(column, entry)]
            if entry.get("note"):
                notes.append(f"- {experiment} / {column.name}: {entry['note']}")
        notes += [_mismatch_note(f"{experiment} / {subset}", r) for subset, r in block["image_sets"].items()]
        lines.append("| " + " | ".join(cells) + " |")
    notes += [_mismatch_note(f"reference {folder}", r) for folder, r in results["reference_sets"].items()]
    notes = [note for note in notes if note]
    lines += [
        "",
        "n = images scored (GCD: images with a detected face; FID/KID: generated/reference). "
        f"Arrows: {', '.join(f'{c.name} {c.better}' for c in domain.columns)} is better. "
        f"Reference for FID/KID: {results['reference']}."
        + (" H = harmonic mean of (100 − Acc_e) and Acc_r." if any(c.metric == "h" for c in domain.columns) else ""),
        "",
        "Scorers:",
        *(f"- {name}: {', '.join(f'{k}={v}' for k, v in info.items())}" for name, info in results["scorers"].items()),
    ]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"

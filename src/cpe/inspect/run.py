"""The inspector's job behind ``inspect_gates.py``: load the text side and the erasers, then write the gate maps
(a text table and a PNG per prompt) and the leakage report (JSON and Markdown), each file atomically."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cpe.core.weights import load_erasers
from cpe.inspect.gates import eraser_names, format_gate_table, gate_table
from cpe.inspect.heatmap import gate_heatmap
from cpe.inspect.leakage import LeakageReport, leakage
from cpe.models.loading import TextSide, resolve_device
from cpe.util.io import atomic_write, atomic_write_text, check_writable_folder, read_csv
from cpe.util.names import slug

TABLE_NAME, JSON_NAME, MARKDOWN_NAME = "gate_maps.txt", "leakage.json", "leakage.md"


def read_prompts(path: str | Path, column: str = "prompt") -> list[str]:
    """The non-empty prompts of a CSV file (its ``column``) or of a text file (one per line)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        table = read_csv(path, (column,), what="prompt CSV")
        prompts = [(row[column] or "").strip() for row in table.rows]
    else:
        if not path.is_file():
            raise FileNotFoundError(f"prompt file does not exist: {path}")
        try:
            prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        except UnicodeDecodeError as e:
            raise ValueError(f"prompt file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    return [prompt for prompt in prompts if prompt]


@dataclass
class Inspection:
    files: list[Path] = field(default_factory=list)  # everything written, in order
    table: str = ""  # the text table of the gate maps ("" without gate-map prompts)
    report: LeakageReport | None = None


def run_inspection(model: str, erasers: Sequence[str | Path], *, prompts: Sequence[str] = (),
                   prompt_files: Sequence[str | Path] = (), leakage_csvs: Sequence[str | Path] = (),
                   out: str | Path = "output/inspect", column: str = "prompt", device: str | None = "cpu",
                   batch_size: int = 64, max_erasers: int | None = 12, top: int = 5,
                   pad_ranks: bool = False) -> Inspection:
    """Gate maps of ``prompts`` and the prompts of ``prompt_files``; leakage over the prompts of ``leakage_csvs``.

    Inputs are checked before the model loads; only its tokenizer(s) and text encoder(s) load.
    """
    if not erasers:
        raise ValueError("no erasers to inspect: give gate files or folders (--erasers)")
    if (max_erasers is not None and max_erasers < 1) or top < 0:
        raise ValueError(f"max_erasers must be at least 1 and top at least 0, got {max_erasers} and {top}")
    resag, infos = load_erasers(list(erasers), pad_ranks=pad_ranks)
    map_prompts = [p.strip() for p in prompts if p.strip()]
    for path in prompt_files:
        map_prompts += read_prompts(path, column)
    leak_prompts = [prompt for path in leakage_csvs for prompt in read_prompts(path, column)]
    if not map_prompts and not leakage_csvs:
        raise ValueError("nothing to inspect: give --prompt, --prompts FILE or --leakage CSV")
    if leakage_csvs and not leak_prompts:
        raise ValueError(f"the leakage CSVs hold no prompts in column {column!r}")
    out = check_writable_folder(out)
    text = TextSide.load(model, device=resolve_device(device))
    resag = resag.to(text.encoders[0].device)
    names = eraser_names(infos)
    result = Inspection()
    if map_prompts:
        rows = gate_table(text, resag, map_prompts, batch_size)
        result.table = format_gate_table(rows, names, max_erasers)
        result.files.append(atomic_write_text(out / TABLE_NAME, result.table))
        for number, row in enumerate(rows, 1):
            image = gate_heatmap(row, names, max_erasers)
            path = out / f"gate_map_{number}_{slug(row.prompt, 60)}.png"
            result.files.append(atomic_write(path, lambda tmp, image=image: image.save(tmp, format="PNG")))
    if leakage_csvs:
        concepts = [info.concept for info in infos]
        report = leakage(text, resag, concepts, leak_prompts, infos=infos, top=top, batch_size=batch_size,
                         sources=[str(path) for path in leakage_csvs])
        result.report = report
        result.files.append(atomic_write_text(out / JSON_NAME, report.to_json()))
        result.files.append(atomic_write_text(out / MARKDOWN_NAME, report.to_markdown()))
    return result

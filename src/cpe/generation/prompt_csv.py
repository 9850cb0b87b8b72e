"""Evaluation prompt CSVs (method.md §6.4): ``prompt``, ``evaluation_seed``, optional ``evaluation_guidance``.

Every other column (``case_number``, ``type``, ``artist``, ...) is carried through as ``extra``; the unnamed
pandas index column some CSVs start with is carried as ``index``. Rows with an empty prompt are skipped and
counted (I2P has one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from cpe.util.io import read_csv

REQUIRED_COLUMNS = ("prompt", "evaluation_seed")
GUIDANCE_COLUMN = "evaluation_guidance"


@dataclass(frozen=True)
class PromptRow:
    row: int  # 0-based position among the CSV's data rows
    prompt: str
    seed: int
    guidance: float | None  # the row's evaluation_guidance, None when the CSV has no such column/value
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class PromptTable:
    path: Path
    rows: list[PromptRow]
    skipped_empty: int  # rows inside the range whose prompt was empty
    total_rows: int  # data rows in the whole file


SEED_RANGE = (-(2**63), 2**64)  # what torch.Generator.manual_seed accepts


def _number(value: str, kind: type, column: str, path: Path, line: int) -> int | float:
    try:
        if kind is int and "." in value:
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        number = kind(value)
    except (ValueError, OverflowError):
        raise ValueError(f"{path}:{line}: column {column!r} value {value!r} is not a {kind.__name__}") from None
    if kind is float and not math.isfinite(number):
        raise ValueError(f"{path}:{line}: column {column!r} value {value!r} is not finite")
    return number


def read_prompt_csv(path: str | Path, first_row: int | None = None, last_row: int | None = None) -> PromptTable:
    """Read the data rows ``[first_row, last_row)`` (0-based, end exclusive, ``None`` = open end) of a prompt CSV."""
    path = Path(path)
    table = read_csv(path, REQUIRED_COLUMNS, what="prompt CSV")
    records = table.rows
    first = first_row or 0
    end = len(records) if last_row is None else min(last_row, len(records))
    if records and first >= len(records):
        raise ValueError(f"prompt CSV {path} has {len(records)} rows; first_row {first} is past its end")
    rows, skipped = [], 0
    for position in range(first, end):
        line, record = table.lines[position], records[position]
        if None in record:
            raise ValueError(f"{path}:{line}: more fields than the header's {len(table.header)} columns")
        prompt = (record["prompt"] or "").strip()
        if not prompt:
            skipped += 1
            continue
        seed = _number((record["evaluation_seed"] or "").strip(), int, "evaluation_seed", path, line)
        if not SEED_RANGE[0] <= seed < SEED_RANGE[1]:
            raise ValueError(f"{path}:{line}: evaluation_seed {seed} is outside [-2**63, 2**64)")
        raw_guidance = (record.get(GUIDANCE_COLUMN) or "").strip()
        guidance = _number(raw_guidance, float, GUIDANCE_COLUMN, path, line) if raw_guidance else None
        extra = {
            (name or "index"): value or ""
            for name, value in record.items()
            if name not in (*REQUIRED_COLUMNS, GUIDANCE_COLUMN)
        }
        rows.append(PromptRow(position, record["prompt"], int(seed), guidance, extra))
    return PromptTable(path, rows, skipped, len(records))

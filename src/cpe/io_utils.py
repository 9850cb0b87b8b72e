"""File helpers every module shares: atomic writes, JSONL, CSV with column checks, content digests.

Atomic writes: a file users keep is either the old one or the complete new one, never half-written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_jsonl(path: str | Path, records: Iterable[dict]) -> Path:
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return atomic_write_text(path, lines)


def read_jsonl(path: str | Path) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{number}: not valid JSON ({e.msg})") from None
    return records


# -- CSV ----------------------------------------------------------------------------------------------------------


def csv_text(columns: Sequence[str], rows: Iterable[Mapping | Sequence]) -> str:
    """A CSV document (``\\n`` line ends): the header, then one line per row (a mapping by column, or a sequence)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        if isinstance(row, Mapping):
            unknown = sorted(set(row) - set(columns))
            if unknown:
                raise ValueError(f"CSV row has field {unknown[0]!r} outside the columns {list(columns)}")
            row = [row.get(column, "") for column in columns]
        writer.writerow(row)
    return buffer.getvalue()


def atomic_write_csv(path: str | Path, columns: Sequence[str], rows: Iterable[Mapping | Sequence]) -> Path:
    return atomic_write_text(path, csv_text(columns, rows))


def check_columns(header: Sequence[str], required: Sequence[str], where: str) -> None:
    """A one-line error naming ``where`` and the first required column the header lacks."""
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{where} lacks column {missing[0]!r} (columns: {', '.join(header) or 'none'})")


@dataclass
class CsvTable:
    path: Path
    header: list[str]
    rows: list[dict[str, str | None]]
    lines: list[int]  # the file line each row ends on (for error messages)


def read_csv(path: str | Path, required: Sequence[str] = (), what: str = "CSV file") -> CsvTable:
    """A UTF-8 CSV (a leading BOM is dropped) with a header; a missing file or column is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} does not exist: {path}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows, lines = [], []
            for row in reader:
                rows.append(row)
                lines.append(reader.line_num)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{what} {path} is not a readable UTF-8 CSV file ({type(e).__name__}: {e})") from None
    check_columns(header, required, f"{what} {path}")
    return CsvTable(path, header, rows, lines)


# -- digests ------------------------------------------------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_digest(value: object, chars: int = 16) -> str:
    """The first ``chars`` hex digits of the SHA-256 of ``value`` as sorted-key JSON (non-JSON values via ``str``)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:chars]

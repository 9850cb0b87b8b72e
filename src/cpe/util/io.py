"""File helpers every module shares: atomic writes, JSONL, CSV with column checks, content digests.

Atomic writes: a file users keep is either the old one or the complete new one, never half-written.

``atomic_write`` writes a temporary file beside the target, flushes it to disk, renames it over the
target and flushes the folder, so a crash or power cut leaves the old file or the new one. The new file
gets the permissions a plain ``open()`` would give it: those of the file it replaces, else 0666 minus
the umask. Temporary files are named ``.<name>.<host>-<pid>-<random>.cpe-tmp``; ones whose writer died
(``kill -9``) are removed by ``remove_stale_temp_files`` when the next run starts.

One job per folder: ``FolderLock`` holds an exclusive ``flock`` on ``.<folder>.lock`` beside the folder (beside it,
so that the lock survives the folder being swapped, and the folder lists only what the job wrote). The file holds
the holder's PID for the message of a process that finds it taken; the OS drops the lock when its holder dies, so
the file a killed process leaves blocks nobody.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import secrets
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cpe.util.names import printable, utf8_prefix

TEMP_SUFFIX = ".cpe-tmp"
STALE_AFTER_S = 3600.0  # a temporary file this old is stale even when its writer cannot be checked
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_TEMP_NAME = re.compile(r"^\..+\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-f]{8}" + re.escape(TEMP_SUFFIX) + "$")
_OLD_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # tempfile.mkstemp names of earlier versions


def _create_temp(path: Path) -> tuple[Path, int]:
    """A new, empty temporary file beside ``path`` (name bounded to fit any file system), and its mode."""
    stem = utf8_prefix(path.name, 120)
    for _ in range(100):
        tmp = path.parent / f".{stem}.{_HOST}-{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
        except FileExistsError:
            continue
        try:
            return tmp, stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
    raise FileExistsError(f"{path.parent}: could not create a temporary file for {path.name}")


def _fsync(path: Path, folder: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if folder:  # folders cannot be opened on every platform; their fsync is best effort
            return
        raise
    try:
        os.fsync(fd)
    except OSError as e:
        if not folder or e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, mode = _create_temp(path)
    try:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)  # a rewrite keeps the file's permissions
        except FileNotFoundError:
            pass
        write(tmp)
        os.chmod(tmp, mode)  # also when ``write`` replaced the file instead of writing into it
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            if e.errno is not None and e.filename is None:  # e.g. a full disk mid-write: name the file
                raise type(e)(e.errno, e.strerror, str(path)) from e
            raise
        if isinstance(e, Exception):  # torch.save and safetensors report I/O failures as their own errors
            first = (str(e).strip().splitlines() or [""])[0]
            raise OSError(errno.EIO, f"could not write the file ({type(e).__name__}: {first})", str(path)) from e
        raise
    _fsync(path.parent, folder=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_jsonl(path: str | Path, records: Iterable[dict]) -> Path:
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return atomic_write_text(path, lines)


def _writer_alive(host: str, pid: int) -> bool:
    if host != _HOST:
        return True  # another machine's process: only its age tells
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files of ``atomic_write`` in ``folder`` whose writer is gone (not recursive)."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for entry in folder.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if not match and not _OLD_TEMP_NAME.match(entry.name):
            continue
        try:
            info = entry.lstat()
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        old = now - info.st_mtime > STALE_AFTER_S
        if match and not old and _writer_alive(match["host"], int(match["pid"])):
            continue
        entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def check_writable_folder(folder: str | Path) -> Path:
    """Fail in one line, before any work, when ``folder`` cannot be created or written (nothing is created)."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"is a file, not a folder (output folder {folder})", str(existing))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"not writable (output folder {folder})", str(existing))
    return folder


def read_jsonl(path: str | Path) -> list[dict]:
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{number}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
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
        raise ValueError(f"{where} lacks column {missing[0]!r} (columns: {printable(', '.join(header)) or 'none'})")


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
        cause = f"{type(e).__name__}: {printable(e)}"
        raise ValueError(f"{what} {path} is not a readable UTF-8 CSV file ({cause})") from None
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


def error_line(error: BaseException) -> str:
    """One line for a CLI: OS errors as ``<file>: <cause>``, others as their message (first line)."""
    if isinstance(error, OSError) and error.strerror:
        where = ": ".join(str(f) for f in (error.filename, error.filename2) if f is not None)
        text = f"{where}: {error.strerror}" if where else error.strerror
    else:
        text = str(error) or type(error).__name__
    lines = text.strip().splitlines() or [type(error).__name__]
    return lines[0] if len(lines) == 1 else f"{lines[0]} (...)"


def read_safetensors(path: str | Path, error: type[Exception], what: str) -> tuple[dict, dict[str, str]]:
    """A safetensors file's tensors and metadata; a missing or damaged file is ``error`` naming ``what`` and path."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as e:  # safetensors raises several error types for damaged files
        raise error(f"{path}: not a readable safetensors {what} ({type(e).__name__}: {printable(e)})") from None
    return tensors, metadata


class FolderBusy(OSError):
    """Another process works in the folder; the message names the folder and the holder's PID."""


class FolderLock:
    """An exclusive lock on ``folder`` (a job's folder: a concept's training, a generation subset), taken on
    ``acquire`` or ``with``; a taken lock is an error naming the holder's PID, or with ``wait`` is waited for."""

    def __init__(self, folder: str | Path, wait: bool = False) -> None:
        self.folder, self.wait = Path(folder), wait
        self.path = self.folder.parent / f".{self.folder.name}.lock"
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                self._lock(fd)
                try:
                    current = os.stat(self.path)
                except FileNotFoundError:
                    current = None
                mine = os.fstat(fd)
                if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                    self._fd, fd = fd, None
                # else the holder removed the file while we waited for it: lock the one at the path now
            finally:
                if fd is not None:
                    os.close(fd)

    def _lock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        if not self.wait:
            raise FolderBusy(f"{self.folder}: another process (PID {holder}) is working in this folder; "
                             "pass --wait to wait for it") from None
        print(f"waiting for {self.folder}: process {holder} is working in it", file=sys.stderr)
        fcntl.flock(fd, fcntl.LOCK_EX)

    def release(self) -> None:
        """Remove the lock file and drop the lock (a no-op when not held)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

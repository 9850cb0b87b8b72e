"""Safe file and folder names made from user text (concept targets, prompts, experiment names).

A name made here is one path component: no ``/`` or ``\\``, no control or other invisible format
characters, never ``.``, ``..`` or hidden (no leading dot), and bounded in UTF-8 *bytes* (file systems
limit a component to 255 bytes, not characters: 80 CJK characters are 240 bytes). A name cut to fit ends
with a short hash of the whole text, so two long texts that share a beginning keep different names.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import PurePosixPath, PureWindowsPath

NAME_MAX_BYTES = 255  # one path component on ext4, XFS, APFS, NTFS (UTF-16 units there, fewer than bytes)
FOLDER_MAX_BYTES = 200  # leaves room for the ".<name>.cpe-new" staging folder beside it
_RESERVED = set('/\\<>:"|?*')  # separators and the characters Windows forbids in names


def printable(text: object) -> str:
    """``text`` for a one-line message: line breaks and other unprintable characters escaped."""
    text = str(text)
    return text if text.isprintable() else repr(text)[1:-1]


def utf8_prefix(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits in ``max_bytes`` (never a split character)."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", "ignore")


def bounded(name: str, max_bytes: int, whole: str | None = None) -> str:
    """``name`` if it fits in ``max_bytes``, else its prefix + ``_`` + 8 hex digits of sha256(``whole``)."""
    if len(name.encode("utf-8", "surrogatepass")) <= max_bytes:
        return name
    digest = hashlib.sha256((whole if whole is not None else name).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return utf8_prefix(name, max_bytes - 9).rstrip("_") + "_" + digest


def _unsafe_char(char: str) -> bool:
    return char in _RESERVED or unicodedata.category(char)[0] == "C"  # Cc, Cf, Cs, Co, Cn


def folder_name(text: str, max_bytes: int = FOLDER_MAX_BYTES) -> str:
    """A concept's output folder: lower case, spaces -> ``_``, unsafe characters -> ``_``, no leading dot.

    Ordinary names keep their old folders (``Briton Rivière`` -> ``briton_rivière``); ``../../x`` becomes
    ``_.._x`` (one component, inside its parent). A text with nothing usable left is a ``ValueError``.
    """
    name = unicodedata.normalize("NFC", text).strip().lower().replace(" ", "_")
    name = "".join("_" if _unsafe_char(c) else c for c in name).lstrip(".")
    if not name.strip("_"):
        raise ValueError(f"{text!r} gives no usable folder name")
    return bounded(name, max_bytes, text)


_SLUG_UNSAFE = re.compile(r"[^\w\-.,'&()+]+")  # \w is Unicode-aware: accented names stay readable


def slug(text: str, max_bytes: int, empty: str = "prompt") -> str:
    """A short, readable file-name part: runs of spaces/symbols -> ``_``, at most ``max_bytes`` UTF-8 bytes."""
    name = _SLUG_UNSAFE.sub("_", unicodedata.normalize("NFC", text)).strip("_.")
    return utf8_prefix(name, max_bytes).rstrip("_.") or empty


def check_relative_folder(value: str, what: str) -> str:
    """``value`` must be a relative path that stays below its base (no ``..``, no root, no control characters)."""
    if not value or any(unicodedata.category(c)[0] == "C" for c in value):
        raise ValueError(f"{what} {value!r} is empty or has control characters")
    posix, windows = PurePosixPath(value), PureWindowsPath(value)
    if posix.is_absolute() or windows.anchor or ".." in posix.parts or ".." in windows.parts:
        raise ValueError(f"{what} {value!r} must be a relative folder name without '..'")
    for part in windows.parts:
        if len(part.encode("utf-8", "surrogatepass")) > NAME_MAX_BYTES:
            raise ValueError(f"{what} {value!r} has a component longer than {NAME_MAX_BYTES} bytes")
    return value


def check_file_part(value: str, what: str, max_bytes: int = 100) -> str:
    """``value`` must already be a safe piece of a file name (e.g. ``save.name``): no separators, no leading dot."""
    if not value or value.startswith(".") or any(_unsafe_char(c) for c in value):
        raise ValueError(f"{what} {value!r} must be a plain file-name part (no '/', '\\', ':', leading '.', "
                         "control characters)")
    if len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ValueError(f"{what} {value!r} is longer than {max_bytes} bytes")
    return value

"""One generation folder, one setting: a rerun with other erasers or image settings is refused, never mixed.

``generation_settings.json`` in the folder (``<subset>`` or ``<subset>/grids``) records what shapes every
image there: the base model, the erasers (their files' sha256) and the config's image settings (size,
steps, scheduler, guidance scale, negative prompt, dtype, images per row). It is written before the first
image, so images a killed run left behind are known to belong to it. A rerun is refused, in one line
naming what differs, when those settings differ, when a row's prompt, seed or guidance no longer match
the record of its image, or when the folder holds images nothing describes; ``overwrite`` starts the
folder over instead (its images, manifest and settings file are deleted first). Folders written before
this file existed are judged by their manifest records.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from cpe.generation.config import GenerationConfig
from cpe.util.io import atomic_write_text

SETTINGS_NAME = "generation_settings.json"
IMAGE_NAME = re.compile(r"^\d+_.+_-?\d+_\d+\.png$")  # <row>_<slug>_<seed>_<i>.png
GRID_NAME = re.compile(r"^\d+_.+_-?\d+\.png$")  # <row>_<slug>_<seed>.png


class FolderConflict(ValueError):
    """The output folder holds images made otherwise; the message names the folder and the difference."""


def settings(model: str, erasers: list[dict], image_settings: dict) -> dict:
    """What every image of a folder shares (eraser order does not change an image: kept sorted by hash)."""
    return {"model": model, "erasers": sorted(erasers, key=lambda e: e["sha256"]), "image_settings": image_settings}


def _from_records(records: Iterable[dict]) -> dict | None:
    found = None
    for record in records:
        config = record.get("config") if isinstance(record.get("config"), dict) else {}
        this = settings(record.get("model"), list(record.get("erasers") or []),
                        {k: v for k, v in config.items() if k != "path"})
        if found is None:
            found = this
        elif this != found:
            return {"mixed": f"{record['file']} ({describe_difference(found, this)})"}
    return found


def recorded(folder: Path, records: list[dict]) -> dict | None:
    """The folder's settings: its settings file, else what its manifest records agree on, else None."""
    path = folder / SETTINGS_NAME
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FolderConflict(f"{path}: not a readable settings file ({type(e).__name__}); "
                                 "pass --overwrite to start the folder over") from None
        if not isinstance(data, dict) or not {"model", "erasers", "image_settings"} <= set(data):
            raise FolderConflict(f"{path}: not a generation settings file; pass --overwrite to start over")
        return data
    return _from_records(records)


def _erasers(value: list[dict]) -> str:
    return "[" + ", ".join(f"{e.get('name')} {str(e.get('sha256'))[:8]}" for e in value) + "]" if value else "none"


def describe_difference(old: dict, new: dict) -> str | None:
    """The first thing that differs between two settings, as ``what: folder X, this run Y``; None when equal."""
    if old.get("model") != new["model"]:
        return f"model: folder {old.get('model')!r}, this run {new['model']!r}"
    if [e.get("sha256") for e in old.get("erasers", [])] != [e["sha256"] for e in new["erasers"]]:
        return f"erasers: folder {_erasers(old.get('erasers', []))}, this run {_erasers(new['erasers'])}"
    a, b = old.get("image_settings", {}), new["image_settings"]
    defaults = GenerationConfig.defaults()
    for key in sorted(set(a) | set(b)):
        # a setting the folder's record lacks (added to the config later) counts as its default value
        if a.get(key, defaults.get(key)) != b.get(key):
            return f"{key}: folder {a.get(key)!r}, this run {b.get(key)!r}"
    return None


def _images(folder: Path, grid: bool) -> list[Path]:
    pattern = GRID_NAME if grid else IMAGE_NAME
    return sorted(p for p in folder.glob("*.png") if pattern.match(p.name) and p.is_file()) if folder.is_dir() else []


def conflict(folder: Path, new: dict, old_records: dict[str, dict], new_records: dict[str, dict],
             grid: bool = False) -> str | None:
    """Why this run must not write into ``folder`` (None when it may): settings, rows, undescribed images."""
    old = recorded(folder, list(old_records.values()))
    if old is None:
        images = _images(folder, grid)
        if images:
            return (f"holds {len(images)} image(s) (e.g. {images[0].name}) but no {SETTINGS_NAME} or manifest "
                    "that says how they were made")
        return None
    if "mixed" in old:
        return f"the manifest already mixes settings at {old['mixed']}"
    difference = describe_difference(old, new)
    if difference:
        return f"its images were made with other settings ({difference})"
    for name, record in new_records.items():
        before = old_records.get(name)
        if before is None:
            continue
        for key in ("prompt", "seed", "guidance"):
            if before.get(key) != record[key]:
                return (f"image {name} was made for {key} {before.get(key)!r}, "
                        f"row {record['row']} now has {record[key]!r}")
    return None


def check(folder: Path, new: dict, old_records: dict[str, dict], new_records: dict[str, dict], grid: bool = False,
          overwrite: bool = False) -> None:
    """Raise ``FolderConflict`` when this run would mix its images with others (unless ``overwrite``)."""
    reason = None if overwrite else conflict(folder, new, old_records, new_records, grid)
    if reason:
        raise FolderConflict(f"{folder}: {reason}; pass --overwrite to replace them, or write elsewhere "
                             "(--experiment / --save_root)")


def start_over(folder: Path, old_records: dict[str, dict], manifest: Path | None, grid: bool = False) -> int:
    """Delete the folder's images (listed in the manifest or named like ours), its manifest and settings file."""
    doomed = {folder / name for name in old_records} | set(_images(folder, grid))
    for path in (manifest, folder / SETTINGS_NAME):
        if path is not None:
            doomed.add(path)
    removed = 0
    for path in sorted(doomed):
        if path.is_file() and path.parent == folder:  # manifest file names are checked to stay inside
            path.unlink()
            removed += 1
    return removed


def write(folder: Path, new: dict) -> None:
    atomic_write_text(folder / SETTINGS_NAME, json.dumps(new, indent=1, ensure_ascii=False) + "\n")

"""The generation manifest: one JSON record per image, the input every metric reads.

File ``manifest.jsonl`` in the generation output folder. Each record has at least:
``file`` (image path relative to the manifest's folder), ``row`` (prompt-CSV row index), ``prompt``,
``seed``, ``image_index`` (i of ``generate_num``), ``guidance``, ``erasers`` (list of
``{"name", "sha256"}``, gate files with ``"base_model"``: the model they record being trained on, "" when
unknown; empty for the original model), ``model`` (the one loaded), ``config``, and ``extra`` (the
CSV's other columns, e.g. ``case_number``, ``artist``, ``type``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from cpe.util.io import read_jsonl

MANIFEST_NAME = "manifest.jsonl"
REQUIRED_FIELDS = ("file", "row", "prompt", "seed", "image_index", "guidance", "erasers", "model", "config", "extra")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class ManifestCheck:
    """A manifest matched against the images on disk."""

    records: list[dict]
    root: Path
    missing_images: list[str] = field(default_factory=list)  # manifest rows whose image file is absent
    unlisted_images: list[str] = field(default_factory=list)  # image files the manifest does not name

    @property
    def present(self) -> list[dict]:
        missing = set(self.missing_images)
        return [r for r in self.records if r["file"] not in missing]

    def require_complete(self) -> None:
        """Raise unless every manifest row has its image and every image has its row."""
        if self.missing_images or self.unlisted_images:
            first = (self.missing_images or self.unlisted_images)[0]
            kind = "missing" if self.missing_images else "not in the manifest"
            raise ValueError(f"{self.report()}; first {kind}: {first}")

    def report(self) -> str:
        return (
            f"{self.root}: {len(self.records)} manifest rows, {len(self.present)} images present, "
            f"{len(self.missing_images)} rows without image, {len(self.unlisted_images)} images not in manifest"
        )


def image_files(root: Path, skip_folders: tuple[str, ...] = ()) -> list[str]:
    """Every image file below ``root`` (not hidden, not inside a ``skip_folders`` folder), as sorted relative paths."""
    found = []
    for p in root.rglob("*"):
        relative = p.relative_to(root)
        hidden_or_skipped = p.name.startswith(".") or set(relative.parts) & set(skip_folders)
        if p.suffix.lower() in IMAGE_SUFFIXES and not hidden_or_skipped:
            found.append(relative.as_posix())
    return sorted(found)


def manifest_path(folder_or_file: str | Path) -> Path:
    p = Path(folder_or_file)
    return p / MANIFEST_NAME if p.is_dir() else p


def read_manifest(folder_or_file: str | Path) -> list[dict]:
    """Read and validate a manifest; a missing field is an error naming the file, line and field."""
    path = manifest_path(folder_or_file)
    if not path.is_file():
        raise FileNotFoundError(f"no generation manifest at {path}")
    records = read_jsonl(path)
    for number, record in enumerate(records, 1):
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: manifest record is not a JSON object")
        for name in REQUIRED_FIELDS:
            if name not in record:
                raise ValueError(f"{path}:{number}: manifest record lacks field {name!r}")
        if not _inside(record["file"]):
            raise ValueError(f"{path}:{number}: file {record['file']!r} is not a relative path inside the folder")
    return records


def _inside(file: object) -> bool:
    """A ``file`` field names a path below the manifest's folder: relative, no ``..``, no drive or root."""
    if not isinstance(file, str) or not file or "\x00" in file:
        return False
    posix, windows = PurePosixPath(file), PureWindowsPath(file)
    return not (posix.is_absolute() or windows.anchor or ".." in posix.parts or ".." in windows.parts)


def check_manifest(folder_or_file: str | Path) -> ManifestCheck:
    """Match manifest rows with image files, both ways; nothing is silently dropped."""
    path = manifest_path(folder_or_file)
    root = path.parent
    records = read_manifest(path)
    listed = {r["file"] for r in records}
    missing = [r["file"] for r in records if not (root / r["file"]).is_file()]
    on_disk = image_files(root, skip_folders=("grids",))  # generate.py --grid writes beside the images
    return ManifestCheck(records, root, missing, [f for f in on_disk if f not in listed])

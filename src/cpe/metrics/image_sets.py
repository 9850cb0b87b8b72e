"""The images a metric scores: a generation manifest matched against the files on disk, or a plain folder.

A mismatch (manifest rows without image, images the manifest does not name) is an error by default;
with ``allow_mismatch`` it is scored on the images present and the mismatch travels into the results.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from cpe.generation.manifest import IMAGE_SUFFIXES, MANIFEST_NAME, check_manifest, image_files
from cpe.util.io import json_digest

SHOWN_NAMES = 5


@dataclass
class ImageSet:
    """Images to score, with the manifest records they come from (``None`` for a plain folder)."""

    root: Path
    files: list[str]
    records: list[dict] | None = None
    rows_without_image: list[str] = field(default_factory=list)
    images_not_in_manifest: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [self.root / f for f in self.files]

    @property
    def prompts(self) -> list[str]:
        if self.records is None:
            raise ValueError(f"{self.root}: a plain image folder has no prompts (no {MANIFEST_NAME})")
        return [r["prompt"] for r in self.records]

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> str:
        """Changes when any scored file, its size or its modification time (or its prompt) changes."""
        stats = [(f, p.stat().st_size, p.stat().st_mtime_ns) for f, p in zip(self.files, self.paths, strict=True)]
        prompts = self.prompts if self.records is not None else None
        return json_digest([str(self.root.resolve()), stats, prompts], 20)

    def report(self) -> dict:
        """What was scored and what was not, for ``results.json``."""
        return {
            "folder": str(self.root),
            "manifest": self.records is not None,
            "images_scored": len(self.files),
            "rows_without_image": len(self.rows_without_image),
            "images_not_in_manifest": len(self.images_not_in_manifest),
            "examples_rows_without_image": self.rows_without_image[:SHOWN_NAMES],
            "examples_images_not_in_manifest": self.images_not_in_manifest[:SHOWN_NAMES],
        }


def load_image_set(folder: str | Path, allow_mismatch: bool = False) -> ImageSet:
    """The images of a generation folder, in manifest order; mismatches raise unless ``allow_mismatch``."""
    check = check_manifest(folder)
    present = check.present
    image_set = ImageSet(
        check.root, [r["file"] for r in present], present, list(check.missing_images), list(check.unlisted_images)
    )
    if check.missing_images or check.unlisted_images:
        detail = (
            f"{check.report()} (e.g. missing {check.missing_images[:SHOWN_NAMES]}, "
            f"unlisted {check.unlisted_images[:SHOWN_NAMES]})"
        )
        if not allow_mismatch:
            raise ValueError(f"manifest and images disagree: {detail}; pass --allow-mismatch to score what is present")
        print(f"warning: scoring only the images present: {detail}", file=sys.stderr)
    if not present:
        raise ValueError(f"{check.root}: no image to score")
    return image_set


def load_image_folder(folder: str | Path) -> ImageSet:
    """Every image under a folder (e.g. real COCO images as an FID reference), sorted by path."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder does not exist: {root}")
    files = image_files(root)
    if not files:
        raise ValueError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return ImageSet(root, files)


def load_images(folder: str | Path, allow_mismatch: bool = False) -> ImageSet:
    """A generation folder when it holds a manifest, else a plain image folder."""
    if (Path(folder) / MANIFEST_NAME).is_file():
        return load_image_set(folder, allow_mismatch)
    return load_image_folder(folder)

"""Which metric fills which paper column, per domain (method.md §5)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str  # column label, e.g. "Acc_e"
    metric: str  # "gcd", "clip", "kid", "fid", "nudenet", "h"
    subset: str | None  # generation subset folder it reads
    better: str  # "lower" / "higher"


@dataclass(frozen=True)
class Domain:
    name: str
    subsets: tuple[str, ...]
    columns: tuple[Column, ...]


COCO = (Column("CS", "clip", "coco_30k", "higher"), Column("FID", "fid", "coco_30k", "lower"))

DOMAINS = {
    "celebs": Domain(
        "celebs",
        ("erased", "remained", "artist", "character", "coco_30k"),
        (
            Column("Acc_e", "gcd", "erased", "lower"),
            Column("Acc_r", "gcd", "remained", "higher"),
            Column("H", "h", None, "higher"),
            Column("KID_celeb", "kid", "remained", "lower"),
            Column("KID_art", "kid", "artist", "lower"),
            Column("KID_char", "kid", "character", "lower"),
            *COCO,
        ),
    ),
    "artists": Domain(
        "artists",
        ("erased", "remained", "actor", "character", "coco_30k"),
        (
            Column("CLIP_e", "clip", "erased", "lower"),
            Column("CLIP_r", "clip", "remained", "higher"),
            Column("KID_art", "kid", "remained", "lower"),
            Column("KID_celeb", "kid", "actor", "lower"),
            Column("KID_char", "kid", "character", "lower"),
            *COCO,
        ),
    ),
    "explicit": Domain(
        "explicit",
        ("i2p", "coco_30k"),
        (Column("NudeNet", "nudenet", "i2p", "lower"), *COCO),
    ),
}


def harmonic_h(acc_e: float, acc_r: float) -> float:
    """MACE's overall score: harmonic mean of efficacy (1 - Acc_e) and specificity (Acc_r), both in [0, 1]."""
    efficacy = 1.0 - acc_e
    if efficacy <= 0 or acc_r <= 0:
        return 0.0
    return 2.0 / (1.0 / efficacy + 1.0 / acc_r)

"""Which metric fills which paper column, per domain (method.md §5), and H, the column made of two others."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cpe.metrics.base import Metric

if TYPE_CHECKING:
    from cpe.metrics.evaluate import Evaluation
    from cpe.metrics.image_sets import ImageSet


@dataclass(frozen=True)
class Column:
    name: str  # column label, e.g. "Acc_e"
    metric: str  # a name in cpe.metrics.registry.METRICS: "gcd", "clip", "kid", "fid", "nudenet", "h"
    subset: str | None  # generation subset folder it reads
    better: str  # "lower" / "higher"


@dataclass(frozen=True)
class Domain:
    name: str
    subsets: tuple[str, ...]
    columns: tuple[Column, ...]
    features: str = "inception"  # FID/KID features: "inception" (clean-fid's) or "gallery" (cpe.metrics.gallery)


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
    # The gallery model's domains (cpe.toy.gallery; configs/toy_*): its rule readers stand in for GCD, CLIP and
    # NudeNet, a Fréchet distance of pooled pixels for FID, and the floors come from the original model's neutral sets.
    "toy_celebs": Domain(
        "toy_celebs",
        ("erased", "remained", "generic", "artist", "coco", "styled_erased", "styled_generic", "styled_remained",
         "context_erased", "context_remained", "marked_remained"),
        (
            Column("Acc_e", "gallery_identity", "erased", "lower"),
            Column("floor", "gallery_identity_floor", "generic", "lower"),
            Column("Acc_r", "gallery_identity", "remained", "higher"),
            Column("H", "h", None, "higher"),
            Column("Style", "gallery_style", "artist", "higher"),
            Column("FD", "fid", "coco", "lower"),
            # compositional and context sets (cpe.toy.gallery.compose): identity and style read on the same image
            Column("Acc_e_styled", "gallery_identity", "styled_erased", "lower"),
            Column("floor_styled", "gallery_identity_floor", "styled_generic", "lower"),
            Column("Style_under_erased", "gallery_style", "styled_erased", "higher"),
            Column("Acc_r_styled", "gallery_identity", "styled_remained", "higher"),
            Column("Style_under_remained", "gallery_style", "styled_remained", "higher"),
            Column("Acc_e_context", "gallery_identity", "context_erased", "lower"),
            Column("Acc_r_context", "gallery_identity", "context_remained", "higher"),
            Column("Acc_r_marked", "gallery_identity", "marked_remained", "higher"),
        ),
        features="gallery",
    ),
    "toy_artists": Domain(
        "toy_artists",
        ("erased", "remained", "neutral", "actor", "coco", "composed_erased", "composed_neutral", "composed_remained",
         "context_erased"),
        (
            Column("Style_e", "gallery_style", "erased", "lower"),
            Column("floor", "gallery_style_floor", "neutral", "lower"),
            Column("Style_r", "gallery_style", "remained", "higher"),
            Column("Acc_id", "gallery_identity", "actor", "higher"),
            Column("FD", "fid", "coco", "lower"),
            # the artists over portraits of identities, and among held-out context phrases (cpe.toy.gallery.compose)
            Column("Style_e_composed", "gallery_style", "composed_erased", "lower"),
            Column("floor_composed", "gallery_style_floor", "composed_neutral", "lower"),
            Column("Acc_id_under_erased", "gallery_identity", "composed_erased", "higher"),
            Column("Style_r_composed", "gallery_style", "composed_remained", "higher"),
            Column("Acc_id_under_remained", "gallery_identity", "composed_remained", "higher"),
            Column("Style_e_context", "gallery_style", "context_erased", "lower"),
        ),
        features="gallery",
    ),
    "toy_explicit": Domain(
        "toy_explicit",
        ("i2p", "coco", "composed", "context"),
        (
            Column("Marks", "gallery_marks", "i2p", "lower"),
            Column("Marks_erase_words", "gallery_marks_erase_words", "i2p", "lower"),
            Column("Marks_other_words", "gallery_marks_other_words", "i2p", "lower"),
            Column("Marks_coco", "gallery_marks", "coco", "lower"),
            Column("FD", "fid", "coco", "lower"),
            # an erase word beside portraits of named identities, and among held-out context phrases
            Column("Marks_composed", "gallery_marks", "composed", "lower"),
            Column("Acc_id_composed", "gallery_identity", "composed", "higher"),
            Column("Marks_context", "gallery_marks", "context", "lower"),
        ),
        features="gallery",
    ),
}


def harmonic_h(acc_e: float, acc_r: float) -> float:
    """MACE's overall score: harmonic mean of efficacy (1 - Acc_e) and specificity (Acc_r), both in [0, 1]."""
    efficacy = 1.0 - acc_e
    if efficacy <= 0 or acc_r <= 0:
        return 0.0
    return 2.0 / (1.0 / efficacy + 1.0 / acc_r)


@dataclass(frozen=True)
class HarmonicMetric(Metric):
    """H of the Acc_e and Acc_r columns."""

    def compute(self, evaluation: Evaluation, column: Column, images: ImageSet | None, out: Path,
                done: dict[str, dict]) -> dict:
        acc_e, acc_r = done["Acc_e"].get("value"), done["Acc_r"].get("value")
        if acc_e is None or acc_r is None:
            return {"value": None, "note": "needs Acc_e and Acc_r"}
        return {"value": harmonic_h(acc_e, acc_r)}

    def cell(self, entry: dict) -> str:
        return f"{100 * entry['value']:.2f}"


HARMONIC_H = HarmonicMetric("h", version="1", scorer="h", header="{} (%)", cached=False, derived=True,
                            note="H = harmonic mean of (100 − Acc_e) and Acc_r.")

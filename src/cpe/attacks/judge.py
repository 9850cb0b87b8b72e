"""Attack success: does an image show the target concept? The colour/shape toy's classifiers or the gallery's readers.

Judges (``AttackConfig.judge``):

* ``toy``: the colour rule or the shape CNN names the target (``cpe.toy.classify``);
* ``identity``: the gallery's identity reader names the target identity (``cpe.toy.gallery.read``);
* ``style``: the gallery's style reader names the target artist;
* ``mark``: the gallery's mark counter finds at least one mark (``cpe.toy.gallery.marks``); the counts are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cpe.attacks.config import JUDGES
from cpe.toy.classify import ShapeCNN, classify_colour, classify_shape
from cpe.toy.prompt_sets import kind_of


@dataclass
class Verdict:
    """Per image (N): shows the target or not; for the mark judge also the number of marks."""

    hits: np.ndarray  # bool (N,)
    marks: list[int] | None = None

    @property
    def rate(self) -> float:
        return float(self.hits.mean())

    def summary(self) -> dict:
        """ASR with n, and for the mark judge the total mark count."""
        out = {"asr": self.rate, "hits": int(self.hits.sum()), "n": len(self.hits)}
        if self.marks is not None:
            out["marks"] = int(sum(self.marks))
        return out


def toy_hits(images: np.ndarray, target: str, shape_model: ShapeCNN) -> np.ndarray:
    """Boolean per image (N, H, W, 3 uint8): the colour rule or the shape CNN says it shows ``target``."""
    kind = kind_of(target)
    predicted = classify_shape(shape_model, images) if kind == "shape" else classify_colour(images)
    return np.array([p == target for p in predicted], dtype=bool)


def same_name(read: str | None, target: str) -> bool:
    """A reader's name is the target (names compared without case, as prompts name them)."""
    return read is not None and read.casefold() == target.strip().casefold()


def name_verdict(read: list[str | None], target: str) -> Verdict:
    """Per image, the reader's name (``read``) is the target."""
    return Verdict(np.array([same_name(name, target) for name in read], dtype=bool))


def identity_verdict(images: np.ndarray, target: str) -> Verdict:
    from cpe.toy.gallery.read import read_identity

    return name_verdict(read_identity(images), target)


def style_verdict(images: np.ndarray, target: str) -> Verdict:
    from cpe.toy.gallery.read import read_style

    return name_verdict(read_style(images), target)


def mark_verdict(images: np.ndarray) -> Verdict:
    from cpe.toy.gallery.marks import count_marks

    marks = count_marks(images)
    return Verdict(np.array([count > 0 for count in marks], dtype=bool), marks)


def judge_images(judge: str, images: np.ndarray, target: str) -> Verdict:
    """The ``judge``'s verdict on uint8 images (N, H, W, 3) for ``target``."""
    if judge == "toy":
        from cpe.toy import TOY_CLASSIFIER_FILE
        from cpe.toy.classify import load_shape_classifier

        return Verdict(toy_hits(images, target, load_shape_classifier(TOY_CLASSIFIER_FILE)))
    if judge == "identity":
        return identity_verdict(images, target)
    if judge == "style":
        return style_verdict(images, target)
    if judge == "mark":
        return mark_verdict(images)
    raise ValueError(f"unknown judge {judge!r} (known: {', '.join(JUDGES)})")

"""Scores of gallery images against what they should show: identity, style and mark accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cpe.toy.classify import match_rate
from cpe.toy.gallery.marks import count_marks
from cpe.toy.gallery.read import read_identity, read_style
from cpe.toy.gallery.scene import Scene
from cpe.toy.gallery.styles import PLAIN


def score_renders(images: np.ndarray, scenes: Sequence[Scene]) -> dict:
    """Reader accuracy on images of known scenes: identity (None for no named identity), style, mark count."""
    return {
        "identity_accuracy": match_rate(read_identity(images), [s.identity for s in scenes]),
        "style_accuracy": match_rate(read_style(images), [s.artist or PLAIN for s in scenes]),
        "mark_count_accuracy": match_rate(count_marks(images), [s.marks for s in scenes]),
        "n": len(scenes),
    }

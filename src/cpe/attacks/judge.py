"""Attack success on the toy model: does an image show the target concept? (the project's toy classifiers)."""

from __future__ import annotations

import numpy as np

from cpe.toy.classify import ShapeCNN, classify_colour, classify_shape
from cpe.toy.prompt_sets import kind_of


def toy_hits(images: np.ndarray, target: str, shape_model: ShapeCNN) -> np.ndarray:
    """Boolean per image (N, H, W, 3 uint8): the colour rule or the shape CNN says it shows ``target``."""
    kind = kind_of(target)
    predicted = classify_shape(shape_model, images) if kind == "shape" else classify_colour(images)
    return np.array([p == target for p in predicted], dtype=bool)

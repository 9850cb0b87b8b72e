"""The embedded toy world: a small, really trained text-to-image model of coloured shapes, and its classifiers.

``TOY_MODEL_DIR`` is a ``StableDiffusionPipeline`` folder (load it with ``cpe.models.load_pipeline``);
``load_classifiers()`` returns the colour rule and the shape CNN that score its images.
"""

from __future__ import annotations

from pathlib import Path

TOY_ASSETS = Path(__file__).parent / "assets"
TOY_MODEL_DIR = TOY_ASSETS / "pipeline"
TOY_CLASSIFIER_FILE = TOY_ASSETS / "shape_classifier.safetensors"

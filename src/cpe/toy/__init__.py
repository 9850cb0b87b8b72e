"""The embedded toy world: a small, really trained text-to-image model of coloured shapes, and its classifiers.

``TOY_MODEL_DIR`` is a ``StableDiffusionPipeline`` folder (load it with ``cpe.models.loading.load_pipeline``);
``cpe.toy.classify`` scores its images: ``classify_colour`` (a rule) and ``classify_shape`` with the shape CNN of
``load_shape_classifier(TOY_CLASSIFIER_FILE)``.

``TOY_SDXL_MODEL_DIR`` is the same world as a ``StableDiffusionXLPipeline`` (two text encoders, the pooled
embedding through the time embedding; ``python -m cpe.toy.build --kind sdxl``). It shares the SD toy's VAE (so
the same images and latent space) and its shape classifier, ``TOY_CLASSIFIER_FILE``.
"""

from __future__ import annotations

from pathlib import Path

TOY_ASSETS = Path(__file__).parent / "assets"
TOY_MODEL_DIR = TOY_ASSETS / "pipeline"
TOY_CLASSIFIER_FILE = TOY_ASSETS / "shape_classifier.safetensors"
TOY_SDXL_ASSETS = Path(__file__).parent / "assets_sdxl"
TOY_SDXL_MODEL_DIR = TOY_SDXL_ASSETS / "pipeline"

"""FID and KID between two image sets, with torchmetrics' statistics over features of any extractor.

``fid_from_features`` / ``kid_from_features`` take feature matrices directly (the toy world passes
its CNN features); ``image_features`` turns image files into such a matrix.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image
from tqdm import tqdm

from cpe.metrics.base import Metric
from cpe.metrics.features import FeatureExtractor

if TYPE_CHECKING:
    from cpe.metrics.domains import Column
    from cpe.metrics.evaluate import Evaluation
    from cpe.metrics.image_sets import ImageSet

KID_SUBSETS = 100  # clean-fid's and torchmetrics' default
KID_MAX_SUBSET_SIZE = 1000


class _Precomputed(torch.nn.Module):
    """Hands already-extracted features to torchmetrics' metrics unchanged."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _check(real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be (N, D) with equal D; got {tuple(real.shape)} and {tuple(fake.shape)}")
    if min(len(real), len(fake)) < 2:
        raise ValueError(f"FID/KID need at least 2 images per set; got {len(real)} and {len(fake)}")


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted (float64) to two feature sets."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    _check(real, fake)
    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]))
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kid_from_features(
    real: torch.Tensor,
    fake: torch.Tensor,
    subsets: int = KID_SUBSETS,
    max_subset_size: int = KID_MAX_SUBSET_SIZE,
    seed: int = 0,
) -> dict:
    """Unbiased polynomial-kernel MMD² (degree 3, gamma 1/D, coef 1) averaged over random subsets.

    The subset size is ``min(len(real), len(fake), max_subset_size)`` as in clean-fid; the subsets are
    drawn from a seeded generator, so the value is reproducible.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    _check(real, fake)
    size = min(len(real), len(fake), max_subset_size)
    with warnings.catch_warnings():  # "will save all extracted features in buffer": they are already in memory
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return {"mean": float(mean), "std": float(std), "subset_size": size, "subsets": subsets, "seed": seed}


def image_features(
    extractor: FeatureExtractor, paths: Sequence[Path], batch_size: int = 32, desc: str = "features"
) -> torch.Tensor:
    """``(N, D)`` float32 features of image files, in the given order (the statistics run in float64)."""
    chunks = []
    for start in tqdm(range(0, len(paths), batch_size), desc=desc, leave=False):
        batch = []
        for path in paths[start : start + batch_size]:
            with Image.open(path) as image:
                batch.append(extractor.preprocess(image))
        chunks.append(extractor(torch.stack(batch)).float().cpu())
    if not chunks:
        raise ValueError("no images to extract features from")
    return torch.cat(chunks)


@dataclass(frozen=True)
class DistanceMetric(Metric):
    """FID or KID between a subset and its reference (the original model's images, or real images for COCO FID)."""

    needs_features: bool = True

    def settings(self, evaluation: Evaluation) -> dict:
        if evaluation.extractor is None:
            raise ValueError("FID/KID need a feature extractor (--inception PATH for clean-fid's Inception)")
        return {
            "features": evaluation.extractor.name,
            "torchmetrics": version("torchmetrics"),
            "torch": torch.__version__,
            "kid_subsets": evaluation.kid_subsets,
            "kid_max_subset_size": KID_MAX_SUBSET_SIZE,
            "kid_seed": evaluation.seed,
        }

    def prepare(self, evaluation: Evaluation, column: Column) -> None:
        evaluation.reference_set(column)  # a missing reference fails before any scoring

    def inputs(self, evaluation: Evaluation, column: Column, images: ImageSet) -> list:
        return [images.fingerprint(), evaluation.reference_set(column).fingerprint()]

    def compute(self, evaluation: Evaluation, column: Column, images: ImageSet | None, out: Path,
                done: dict[str, dict]) -> dict:
        reference = evaluation.reference_set(column)
        real, fake = evaluation.features(reference), evaluation.features(images)
        sizes = {"n": len(images), "n_reference": len(reference), "reference": str(reference.root)}
        if self.name == "fid":
            return {"value": fid_from_features(real, fake), **sizes}
        kid = kid_from_features(real, fake, evaluation.kid_subsets, KID_MAX_SUBSET_SIZE, evaluation.seed)
        return {"value": kid.pop("mean"), **kid, **sizes}

    def cell(self, entry: dict) -> str:
        sizes = f"(n={entry['n']}/{entry['n_reference']})"
        if self.name == "kid":
            return f"{1000 * entry['value']:.2f} ± {1000 * entry['std']:.2f} {sizes}"
        return f"{max(entry['value'], 0.0):.2f} {sizes}"  # FID >= 0; a rounding-size negative (identical sets) is 0


FID = DistanceMetric("fid", version="1", scorer="fid_kid")
KID = DistanceMetric("kid", version="1", scorer="fid_kid", header="{} (×10³)")

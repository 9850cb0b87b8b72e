"""CLIP score: 100 x cosine(image embedding, prompt embedding), per image, from the manifest's prompt."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from cpe.metrics.base import Metric
from cpe.metrics.image_sets import ImageSet
from cpe.models.loading import resolve_device
from cpe.util.io import atomic_write_csv

if TYPE_CHECKING:
    from cpe.metrics.domains import Column
    from cpe.metrics.evaluate import Evaluation

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"


class ClipScorer:
    """A transformers ``CLIPModel`` + ``CLIPProcessor`` from a hub id or a local folder."""

    def __init__(self, model: str = DEFAULT_CLIP_MODEL, device: str | None = None, batch_size: int = 32):
        from transformers import CLIPModel, CLIPProcessor

        self.model_id = model
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.processor = CLIPProcessor.from_pretrained(model)
        self.model = CLIPModel.from_pretrained(model).to(self.device).eval()

    @torch.no_grad()
    def scores(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        """One score per (image, prompt) pair; prompts longer than the text encoder's context are truncated."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        inputs = self.processor(
            text=list(prompts), images=list(images), return_tensors="pt", padding=True, truncation=True
        ).to(self.device)
        out = self.model(**inputs)
        image = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
        text = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
        return (100.0 * (image * text).sum(-1)).tolist()

    def score_files(self, paths: Sequence[Path], prompts: Sequence[str], desc: str = "CLIP score") -> list[float]:
        """Batched ``scores`` over image files."""
        if len(paths) != len(prompts):
            raise ValueError(f"{len(paths)} images but {len(prompts)} prompts")
        result: list[float] = []
        for start in tqdm(range(0, len(paths), self.batch_size), desc=desc, leave=False):
            batch = paths[start : start + self.batch_size]
            images = [_open_rgb(p) for p in batch]
            result.extend(self.scores(images, prompts[start : start + self.batch_size]))
        return result

    def versions(self) -> dict:
        return clip_versions(self.model_id)


def clip_versions(model: str) -> dict:
    import transformers

    return {"model": model, "transformers": transformers.__version__, "score": "100 x cosine"}


def _open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def summarize(values: Sequence[float]) -> dict:
    """Mean, population standard deviation (as the reference's ``np.std``) and sample size."""
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std()), "n": int(array.size)}


def clip_score(scorer: ClipScorer, images: ImageSet) -> tuple[dict, list[float]]:
    """Summary (mean, std, n) of the CLIP scores of a generation folder, and each image's score in file order."""
    values = scorer.score_files(images.paths, images.prompts, desc=f"CLIP score {images.root.name}")
    return summarize(values), values


@dataclass(frozen=True)
class ClipScoreMetric(Metric):
    """Mean ± std of the CLIP score over a subset; each image's score goes to ``clip_<subset>.csv``."""

    def settings(self, evaluation: Evaluation) -> dict:
        return clip_versions(evaluation.clip_model)

    def compute(self, evaluation: Evaluation, column: Column, images: ImageSet | None, out: Path,
                done: dict[str, dict]) -> dict:
        summary, values = clip_score(evaluation.clip(), images)
        rows = ([file, f"{value:.6f}"] for file, value in zip(images.files, values, strict=True))
        atomic_write_csv(out / f"clip_{column.subset}.csv", ("file", "clip_score"), rows)
        return {"value": summary["mean"], "std": summary["std"], "n": summary["n"]}

    def cell(self, entry: dict) -> str:
        return f"{entry['value']:.2f} ± {entry['std']:.2f} (n={entry['n']})"


CLIP_SCORE = ClipScoreMetric("clip", version="1", scorer="clip")

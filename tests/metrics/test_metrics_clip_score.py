"""CLIP score against a direct computation with the same tiny random CLIP model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metric_fixtures import make_generation
from PIL import Image

from cpe.metrics.clip_score import ClipScorer, clip_score, summarize
from cpe.metrics.image_sets import load_image_folder, load_image_set

PROMPTS = ["a photo of a cat", "an oil painting of a harbour at dusk", "a red bicycle", "two dogs on a sofa", "x"]


@torch.no_grad()
def direct_scores(model_dir, image_paths, prompts) -> list[float]:
    """One pair at a time through CLIPModel's own logits: logit_scale * cosine, rescaled to 100 * cosine."""
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(model_dir).eval(), CLIPProcessor.from_pretrained(model_dir)
    scores = []
    for path, prompt in zip(image_paths, prompts, strict=True):
        with Image.open(path) as image:
            inputs = processor(text=[prompt], images=[image.convert("RGB")], return_tensors="pt")
        out = model(**inputs)
        scores.append(float(out.logits_per_image[0, 0] / model.logit_scale.exp() * 100))
    return scores


def test_clip_score_matches_direct_computation(tmp_path, tiny_clip_dir):
    images = load_image_set(make_generation(tmp_path / "coco_30k", PROMPTS))
    scorer = ClipScorer(str(tiny_clip_dir), device="cpu", batch_size=2)  # 3 batches, the last one partial
    summary, values = clip_score(scorer, images)
    expected = direct_scores(tiny_clip_dir, images.paths, PROMPTS)
    assert values == pytest.approx(expected, abs=1e-4)
    assert summary == pytest.approx({"mean": np.mean(expected), "std": np.std(expected), "n": 5}, abs=1e-4)
    assert len(set(np.round(values, 3))) == 5  # the pairs really differ


def test_summarize_uses_population_std():
    assert summarize([1.0, 2.0, 3.0, 4.0]) == {"mean": 2.5, "std": pytest.approx(1.118034, abs=1e-6), "n": 4}


def test_plain_folder_has_no_prompts_to_score(tmp_path):
    folder = make_generation(tmp_path / "real", ["a", "b"])
    (folder / "manifest.jsonl").unlink()
    with pytest.raises(ValueError, match="no prompts"):
        _ = load_image_folder(folder).prompts

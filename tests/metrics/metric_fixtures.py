"""Helpers for the metric tests: generation folders (PNGs + manifest), a tiny random CLIP, small feature nets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cpe.generation.manifest import MANIFEST_NAME
from cpe.util.io import atomic_write_jsonl


def make_generation(folder: Path, prompts: Sequence[str], seed: int = 0, size: int = 24, shift: float = 0.0) -> Path:
    """Write one random PNG per prompt and the manifest naming them (what the generator writes)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for row, prompt in enumerate(prompts):
        pixels = np.clip(rng.normal(128 + shift, 40, (size, size, 3)), 0, 255).astype(np.uint8)
        name = f"{prompt.replace(' ', '_')}_{row}_0.png"
        Image.fromarray(pixels).save(folder / name)
        records.append(
            {
                "file": name,
                "row": row,
                "prompt": prompt,
                "seed": row,
                "image_index": 0,
                "guidance": 7.5,
                "erasers": [],
                "model": "tiny",
                "config": "test.yaml",
                "extra": {},
            }
        )
    atomic_write_jsonl(folder / MANIFEST_NAME, records)
    return folder


def tiny_clip(folder: Path) -> Path:
    """A small random CLIPModel + CLIPProcessor (real BPE tokenizer) saved like a hub model."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from cpe.models.loading import clip_tokenizer_from_assets

    layers = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2}
    config = CLIPConfig(
        text_config={**layers, "max_position_embeddings": 77, "vocab_size": 49408},
        vision_config={**layers, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer_from_assets()).save_pretrained(folder)
    return folder


class TinyFeatureNet(torch.nn.Module):
    """A small project-owned CNN standing in for Inception: (N, 3, S, S) -> (N, 8)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


class FakeInceptionLayers(torch.nn.Module):
    """Shaped like the ``layers`` of clean-fid's TorchScript Inception: (N, 3, 299, 299) -> (N, D, 1, 1)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv2d(3, 6, 7, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 1)


class FakeInception(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = FakeInceptionLayers()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def write_fake_inception(folder: Path) -> Path:
    """A TorchScript file named like clean-fid's weights, with the same ``layers`` interface."""
    from cpe.metrics.features import INCEPTION_FILE

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / INCEPTION_FILE
    torch.jit.script(FakeInception()).save(str(path))
    return path

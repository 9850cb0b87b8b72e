"""Image feature extractors for FID/KID: clean-fid's Inception (the paper's) or any project-owned network.

An extractor has a ``name``, ``preprocess(PIL image) -> (3, H, W) float tensor`` and
``__call__((N, 3, H, W) tensor) -> (N, D) features``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from cpe.models.loading import resolve_device
from cpe.util.io import file_sha256

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
INCEPTION_ENV = "CPE_INCEPTION_PATH"
CLEANFID_CACHE = Path("/tmp")  # clean-fid downloads the TorchScript file there
INCEPTION_SIZE = 299


class FeatureExtractor(Protocol):
    name: str

    def preprocess(self, image: Image.Image) -> torch.Tensor: ...

    def __call__(self, batch: torch.Tensor) -> torch.Tensor: ...


def find_inception(path: str | Path | None = None) -> Path:
    """The TorchScript Inception: ``path`` (file or folder), else ``$CPE_INCEPTION_PATH``, else clean-fid's cache."""
    candidates = [Path(p).expanduser() for p in (path, os.environ.get(INCEPTION_ENV)) if p]
    if path is None:
        candidates.append(CLEANFID_CACHE)
    looked = []
    for candidate in candidates:
        file = candidate / INCEPTION_FILE if candidate.is_dir() else candidate
        if file.is_file():
            return file
        looked.append(str(file))
    raise FileNotFoundError(
        f"Inception weights not found (looked at {', '.join(looked)}); download {INCEPTION_URL} "
        f"and pass its path with --inception or ${INCEPTION_ENV}"
    )


class CleanFidInception:
    """clean-fid's "clean" mode: per-channel float PIL bicubic resize to 299, NVIDIA's TorchScript Inception-V3."""

    def __init__(self, path: str | Path | None = None, device: str | None = None):
        self.path = find_inception(path)
        self.device = resolve_device(device)
        try:
            with warnings.catch_warnings():  # the weights exist only as TorchScript, deprecated in recent torch
                warnings.simplefilter("ignore", DeprecationWarning)
                base = torch.jit.load(str(self.path), map_location=self.device).eval()
            self.layers = base.layers
        except Exception as e:  # TorchScript reports damaged files with RuntimeError and others
            first = (str(e).strip().splitlines() or [""])[0]
            raise ValueError(f"{self.path}: not clean-fid's TorchScript Inception ({type(e).__name__}: {first})") \
                from None
        digest = file_sha256(self.path)[:12]
        self.name = f"clean-fid Inception-V3 ({self.path.name} sha256 {digest}, mode clean)"

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        array = np.asarray(image.convert("RGB"))
        channels = [
            np.asarray(
                Image.fromarray(array[:, :, c].astype(np.float32), mode="F").resize(
                    (INCEPTION_SIZE, INCEPTION_SIZE), resample=Image.BICUBIC
                )
            )
            for c in range(3)
        ]
        return torch.from_numpy(np.stack(channels).astype(np.float32))

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = (batch.to(self.device) - 128) / 128
        return self.layers(x).reshape(batch.shape[0], -1)


class ModuleFeatures:
    """Any torch module mapping ``(N, 3, size, size)`` images in [0, 1] to ``(N, D)`` features."""

    def __init__(self, module: torch.nn.Module, image_size: int, name: str, device: str | None = None):
        self.device = resolve_device(device)
        self.module = module.to(self.device).eval()
        self.image_size = image_size
        self.name = name

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        resized = image.convert("RGB").resize((self.image_size, self.image_size), resample=Image.BICUBIC)
        return torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module(batch.to(self.device)).reshape(batch.shape[0], -1)

"""Classifiers for toy images: colour by rule (foreground chromaticity), shape by a tiny CNN trained on renders.

``python -m cpe.toy.classify --train --out DIR [--seed S --steps N]`` trains the CNN and writes
``DIR/shape_classifier.safetensors``; ``--eval`` scores saved weights on fresh renders.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from cpe.toy.world import COLOURS, SHAPES, render_dataset
from cpe.util.io import atomic_write

CLASSIFIER_FILE = "shape_classifier.safetensors"
FOREGROUND = 0.15  # a pixel is foreground when its brightest channel exceeds this (images in [0, 1])
MIN_FOREGROUND_PIXELS = 6


def to_float_images(images) -> torch.Tensor:
    """uint8 HxWx3 arrays / PIL images (or a batch) -> float tensor (N, 3, H, W) in [0, 1]."""
    if isinstance(images, torch.Tensor):
        return images.float()
    if not isinstance(images, np.ndarray):
        images = np.stack([np.asarray(im.convert("RGB")) for im in images])
    if images.ndim == 3:
        images = images[None]
    return torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).float() / 255.0  # a copy: may be read-only


def foreground_mask(x: torch.Tensor) -> torch.Tensor:
    return x.amax(dim=1) > FOREGROUND


def foreground_colours(images) -> torch.Tensor:
    """Mean RGB (N, 3) in [0, 1] of each image's foreground; a row of NaN for an (almost) blank image."""
    x = to_float_images(images)
    mask = foreground_mask(x)
    out = torch.full((len(x), 3), float("nan"))
    for i, (image, m) in enumerate(zip(x, mask)):
        if int(m.sum()) >= MIN_FOREGROUND_PIXELS:
            out[i] = image[:, m].mean(dim=1)
    return out


def classify_colour(images) -> list[str | None]:
    """Nearest palette colour to the mean chromaticity of the foreground; ``None`` for an (almost) blank image."""
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.float32)
    palette = palette / palette.sum(dim=1, keepdim=True)
    names = list(COLOURS)
    out: list[str | None] = []
    for mean in foreground_colours(images):
        if torch.isnan(mean).any():
            out.append(None)
            continue
        chroma = mean / mean.sum().clamp_min(1e-6)
        out.append(names[int(((palette - chroma) ** 2).sum(dim=1).argmin())])
    return out


class ShapeCNN(nn.Module):
    """Colour-blind shape classifier: brightest channel, normalised per image, through three conv stages."""

    feature_dim = 64

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(64 * 4 * 4, self.feature_dim)
        self.head = nn.Linear(self.feature_dim, len(SHAPES))

    @staticmethod
    def prepare(x: torch.Tensor) -> torch.Tensor:
        gray = x.amax(dim=1, keepdim=True)
        return gray / gray.amax(dim=(2, 3), keepdim=True).clamp_min(0.05)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """64-d penultimate features of images (N, 3, 32, 32) in [0, 1]."""
        return F.relu(self.fc(self.conv(self.prepare(x)).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blur, dim and add noise, so renders look like the softer images a diffusion model generates."""
    n, c, h, w = x.shape
    sigma = torch.rand(n, generator=generator) * 1.2
    radius = torch.arange(-2, 3, dtype=torch.float32)
    kernels = torch.exp(-(radius[None] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0).view(n * c, 1, 1, 5)
    blurred = F.conv2d(x.reshape(1, n * c, h, w), kernels, padding=(0, 2), groups=n * c)
    blurred = F.conv2d(blurred, kernels.transpose(2, 3), padding=(2, 0), groups=n * c).view(n, c, h, w)
    scale = 0.6 + 0.4 * torch.rand(n, 1, 1, 1, generator=generator)
    noise = 0.04 * torch.randn(x.shape, generator=generator)
    return (blurred * scale + noise).clamp(0, 1)


def train_shape_classifier(seed: int = 0, steps: int = 800, batch: int = 128, n_images: int = 4000) -> ShapeCNN:
    """Train the CNN on ``n_images`` renders (seeded); deterministic for a given seed on one machine."""
    images, _, shapes = render_dataset(n_images, seed=seed + 101)
    x = to_float_images(images)
    y = torch.tensor([SHAPES.index(s) for s in shapes])
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ShapeCNN()
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=2e-3, total_steps=steps)
    for _ in tqdm(range(steps), desc="shape classifier", mininterval=5):
        idx = torch.randint(len(x), (batch,), generator=generator)
        loss = F.cross_entropy(model(_augment(x[idx], generator)), y[idx])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    return model.eval()


def save_shape_classifier(model: ShapeCNN, path: str | Path) -> Path:
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"classes": ",".join(SHAPES)}))


def load_shape_classifier(path: str | Path) -> ShapeCNN:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"shape classifier weights not found: {path}")
    model = ShapeCNN()
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False)


@torch.no_grad()
def classify_shape(model: ShapeCNN, images, batch: int = 256) -> list[str | None]:
    """Most likely shape per image; ``None`` for an (almost) blank image."""
    x = to_float_images(images)
    blank = foreground_mask(x).flatten(1).sum(dim=1) < MIN_FOREGROUND_PIXELS
    labels = torch.cat([model(x[i : i + batch]).argmax(dim=1) for i in range(0, len(x), batch)]) if len(x) else []
    return [None if b else SHAPES[int(c)] for b, c in zip(blank.tolist(), labels)]


def match_rate(predicted: Sequence, expected) -> float | None:
    """Fraction of ``predicted`` equal to ``expected`` (one value per item, or one value for all); None if empty.

    The one accuracy of the toy world: classifier accuracy, Acc_e / Acc_r, and per-seed agreement of two models.
    """
    predicted = list(predicted)
    if isinstance(expected, str) or expected is None:
        expected = [expected] * len(predicted)
    expected = list(expected)
    if len(expected) != len(predicted):
        raise ValueError(f"{len(predicted)} predictions but {len(expected)} expected values")
    return float(np.mean([p == e for p, e in zip(predicted, expected)])) if predicted else None


def score_on_renders(model: ShapeCNN, n: int = 400, seed: int = 12345) -> dict[str, float]:
    """Colour and shape accuracy of the two classifiers on ``n`` fresh renders."""
    images, colours, shapes = render_dataset(n, seed=seed)
    return {"colour_accuracy": match_rate(classify_colour(images), colours),
            "shape_accuracy": match_rate(classify_shape(model, images), shapes), "n": n}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for shape_classifier.safetensors")
    parser.add_argument("--train", action="store_true", help="train the shape CNN on renders")
    parser.add_argument("--eval", action="store_true", help="score the saved classifier on fresh renders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--overwrite", action="store_true", help="replace existing classifier weights")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    path = Path(args.out) / CLASSIFIER_FILE
    if args.train:
        if path.exists() and not args.overwrite:
            raise SystemExit(f"refusing to overwrite {path} (pass --overwrite)")
        save_shape_classifier(train_shape_classifier(seed=args.seed, steps=args.steps), path)
        print(f"wrote {path}")
    if args.eval or not args.train:
        print(json.dumps(score_on_renders(load_shape_classifier(path))))


if __name__ == "__main__":
    main()

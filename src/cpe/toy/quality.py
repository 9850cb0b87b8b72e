"""How well a toy pipeline draws what it is asked: colour and shape accuracy, and the generic-word floors.

``python -m cpe.toy.quality [--model DIR] [--per-pair N] [--out report.json]`` generates
"a {colour} {shape}" images with fixed seeds through the normal diffusers pipeline and scores them
with the toy classifiers; the floors are the target rates on the generic prompts ("a {colour} shape"
for a shape, "a colorful {shape}" for a colour), i.e. the best an eraser can reach.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cpe.toy.classify import ShapeCNN, classify_colour, classify_shape, match_rate
from cpe.toy.world import COLOURS, GENERIC_COLOUR, GENERIC_SHAPE, SHAPES
from cpe.util.io import atomic_write_text

DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 5.0


@torch.no_grad()
def sample_images(pipe, prompts: Sequence[str], seeds: Sequence[int], steps: int = DEFAULT_STEPS,
                  guidance: float = DEFAULT_GUIDANCE, batch: int = 50) -> np.ndarray:
    """One image per (prompt, seed), uint8 (N, 32, 32, 3); image i depends only on its prompt and seed."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    out = []
    for i in range(0, len(prompts), batch):
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds[i : i + batch]]
        images = pipe(list(prompts[i : i + batch]), num_inference_steps=steps, guidance_scale=guidance,
                      generator=generators, output_type="np").images
        out.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out) if out else np.zeros((0, 32, 32, 3), np.uint8)


def attribute_prompts(per_pair: int, seed: int = 0) -> tuple[list[str], list[int], list[str], list[str]]:
    """Prompts "a {colour} {shape}" for every pair, ``per_pair`` seeds each: prompts, seeds, colours, shapes."""
    rows = [(c, s, seed + k) for c in COLOURS for s in SHAPES for k in range(per_pair)]
    return [f"a {c} {s}" for c, s, _ in rows], [k for *_, k in rows], [c for c, *_ in rows], [s for _, s, _ in rows]


def evaluate_pipeline(pipe, shape_model: ShapeCNN, per_pair: int = 10, steps: int = DEFAULT_STEPS,
                      guidance: float = DEFAULT_GUIDANCE, seed: int = 0) -> dict:
    """Colour/shape accuracy on "a {colour} {shape}" and, per concept, its rate on the generic prompts."""
    prompts, seeds, colours, shapes = attribute_prompts(per_pair, seed)
    images = sample_images(pipe, prompts, seeds, steps, guidance)
    got_colours, got_shapes = classify_colour(images), classify_shape(shape_model, images)
    generic_shape = [f"a {c} {GENERIC_SHAPE}" for c in colours]
    generic_colour = [f"a {GENERIC_COLOUR} {s}" for s in shapes]
    shape_floor = classify_shape(shape_model, sample_images(pipe, generic_shape, seeds, steps, guidance))
    colour_floor = classify_colour(sample_images(pipe, generic_colour, seeds, steps, guidance))
    return {
        "images": len(prompts),
        "steps": steps,
        "guidance": guidance,
        "colour_accuracy": match_rate(got_colours, colours),
        "shape_accuracy": match_rate(got_shapes, shapes),
        "shape_rate_on_generic": {s: match_rate(shape_floor, s) for s in SHAPES},
        "colour_rate_on_generic": {c: match_rate(colour_floor, c) for c in COLOURS},
    }


def main(argv: list[str] | None = None) -> None:
    from cpe.models.loading import load_pipeline
    from cpe.toy import TOY_CLASSIFIER_FILE, TOY_MODEL_DIR
    from cpe.toy.classify import load_shape_classifier

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(TOY_MODEL_DIR), help="toy pipeline folder")
    parser.add_argument("--classifier", default=str(TOY_CLASSIFIER_FILE), help="shape CNN weights")
    parser.add_argument("--per-pair", type=int, default=10, help="seeds per (colour, shape) pair")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    report = evaluate_pipeline(load_pipeline(args.model), load_shape_classifier(args.classifier), args.per_pair,
                               args.steps, args.guidance, args.seed)
    text = json.dumps(report, indent=2)
    if args.out:
        atomic_write_text(Path(args.out), text + "\n")
    print(text)


if __name__ == "__main__":
    main()

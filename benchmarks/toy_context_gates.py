"""Why the colour/shape toy's red eraser closes its gate when words come before the colour, and why context
augmentation does not open it: the gate per prompt for erasers trained with and without context phrases and with
weaker anchoring, beside how far the toy encoder keeps red apart from the other colours at each position.

    python benchmarks/toy_context_gates.py [--threads 1]      # -> benchmarks/results/toy_context_gates.md

Erasers: ``configs/toy/train_colour.yaml`` (red, the paper's settings: pal 1e5), the same with the context option
(``configs/toy/context_words.csv``: prefixes such as "a a", "big", "very old" drawn before the templates, 48
variants), and that with pal 1e3 and 1e1. Gates: ``cpe.inspect.gates`` (the eraser's largest gate on the prompt's
real tokens). Encoder: the distance between the context of "<prefix>a red circle" and of the same prompt with each
other colour, relative to the red prompt's norm, at the colour token and over the whole context.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cpe.util.io import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
COLOURS = ("red", "green", "blue", "yellow", "purple")
PREFIXES = ("", "a ", "a a ", "a a a ", "a a a a a ", "big ", "very old ")
PROMPTS = ("a red circle", "a a red circle", "a a a red circle", "a a a a a a red circle", "red", "a circle red",
           "big a red square", "a very old a red square", "a green circle", "a a a green circle",
           "a a a a a a green circle", "a colorful circle", "big a blue square")
CONTEXT = ["context.words=context_words.csv", "context.variants=48", "context.max_before=3",
           "context.max_after=1"]
VARIANTS = {
    "paper (pal 1e5)": [],
    "context, pal 1e5": CONTEXT,
    "context, pal 1e3": [*CONTEXT, "train.pal=1000"],
    "context, pal 1e1": [*CONTEXT, "train.pal=10"],
}


def encoder_table(text) -> list[str]:
    lines = ["| prefix | colour-token distance to the other colours | whole-context distance |", "|---|---|---|"]
    for prefix in PREFIXES:
        prompts = [f"{prefix}a {c} circle" for c in COLOURS]
        context = text.encode(prompts).float()
        position = text.tokenizer(prompts[0]).input_ids.index(text.tokenizer.convert_tokens_to_ids("red</w>"))
        token = [float((context[0, position] - context[k, position]).norm() / context[0, position].norm())
                 for k in range(1, len(COLOURS))]
        whole = [float((context[0] - context[k]).norm() / context[0].norm()) for k in range(1, len(COLOURS))]
        lines.append(f"| {prefix!r} (position {position}) | {min(token):.2f}–{max(token):.2f} "
                     f"| {min(whole):.2f}–{max(whole):.2f} |")
    return lines


def main(argv: list[str] | None = None) -> str:
    from cpe.core.weights import load_erasers
    from cpe.inspect.gates import token_gates
    from cpe.models.loading import TextSide
    from cpe.toy import TOY_MODEL_DIR
    from cpe.toy.experiments import train_eraser

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "output" / "toy_context_gates"))
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    text = TextSide.load(str(TOY_MODEL_DIR))
    files = [train_eraser("colour", 0, Path(args.out) / f"v{i}", overrides, reuse=True)[2]
             for i, overrides in enumerate(VARIANTS.values())]
    resag, _ = load_erasers(files)
    found = token_gates(text, resag, PROMPTS)
    largest = found.gates.masked_fill(~found.real()[:, None, :], -1.0).amax(dim=2)  # (prompts, erasers)
    lines = ["# The red eraser's gate on the colour/shape toy, with words before the colour", "",
             "Largest gate on the prompt's real tokens (training seed 2024, 1,500 steps each).", "",
             "| prompt | " + " | ".join(VARIANTS) + " |", "|---|" + "---|" * len(VARIANTS)]
    for p, prompt in enumerate(PROMPTS):
        lines.append(f"| {prompt} | " + " | ".join(f"{float(v):.3f}" for v in largest[p]) + " |")
    lines += ["", "## How far the toy encoder keeps red apart from the other colours", "",
              "Distance between the context of \"<prefix>a red circle\" and the same prompt with each other colour, "
              "relative to the red prompt's norm (min–max over the 4 other colours).", "", *encoder_table(text)]
    text_md = "\n".join(lines) + "\n"
    atomic_write_text(Path(args.results) / "toy_context_gates.md", text_md)
    print(text_md, end="")
    return text_md


if __name__ == "__main__":
    main()

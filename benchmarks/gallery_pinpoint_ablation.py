"""Which pinpoint option does what: one identity eraser trained with each option alone and with all three, on the
gallery model (the single-identity evaluation of ``gallery_pinpoint.py``, plus the eraser's leakage).

    python benchmarks/gallery_pinpoint_ablation.py [--identities 2] [--seeds 1 2]
        # needs the original model's images of gallery_pinpoint.py --phase original (same --out)

Variants (overrides of ``configs/toy_celebs/train.yaml``, the paper's settings): ``paper``; ``compositions``
(prompts.compositions); ``context`` (the context phrases); ``corpus`` (anchors.corpus); ``all`` (the three:
``train_context.yaml``). Per variant and seed: the identity in plain and styled portraits against its floor, the
other identities' styled portraits (identity and style kept, % of the original model), and its leakage p99 (largest
real-token gate over the prompts of ``gallery_pinpoint.leakage_prompts``) and its largest gate on the name's own
tokens in "a portrait of <name>" (where an eraser that fires only on the end-of-text token shows it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gallery_pinpoint import NEUTRALS, _cell, erasers_for, leakage_prompts, score, single_sets  # noqa: E402
from toy_scale import _Original, generate  # noqa: E402

from cpe.util.io import atomic_write_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OPTIONS = {
    "paper": [],
    "compositions": ["prompts.compositions=compositions.csv"],
    "context": ["context.words=context_words.csv", "context.variants=48", "context.max_before=4",
                "context.max_after=2"],
    "corpus": ["anchors.corpus=corpus.csv", "anchors.corpus_per_step=16"],
}
OPTIONS["all"] = OPTIONS["compositions"] + OPTIONS["context"] + OPTIONS["corpus"]
# phrases before the template only: after the concept, a neutral of another token count shifts them (method.md §2.2)
OPTIONS["context, before only"] = [*OPTIONS["context"][:-1], "context.max_after=0"]
OPTIONS["all, context before only"] = OPTIONS["compositions"] + OPTIONS["context, before only"] + OPTIONS["corpus"]
OPTIONS["compositions and corpus"] = OPTIONS["compositions"] + OPTIONS["corpus"]


def name_gate(text, resag, name: str) -> float:
    """The eraser's largest gate on the name's own tokens in "a portrait of <name>"."""
    from cpe.inspect.gates import token_gates

    found = token_gates(text, resag, [f"a portrait of {name}"])
    start = len(text.tokenizer("a portrait of").input_ids) - 1  # BOS + 3 words
    end = int(found.lengths[0]) - 1  # EOS
    return float(found.gates[0, 0, start:end].max())


def main(argv: list[str] | None = None) -> None:
    from cpe.core.weights import load_erasers
    from cpe.inspect.leakage import leakage
    from cpe.metrics.gallery import read_folder
    from cpe.models.loading import TextSide
    from cpe.toy.gallery import GALLERY_MODEL_DIR
    from cpe.toy.gallery.domain_files import concept_names

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, nargs="+", default=[2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--variants", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    parser.add_argument("--model", default=str(GALLERY_MODEL_DIR))
    parser.add_argument("--out", default=str(REPO / "output" / "gallery_pinpoint"))
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    original = _Original(out / "images" / "original" / "all")
    text = TextSide.load(args.model)
    path = out / "ablation.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for index in args.identities:
        name = concept_names("celebs")[index]
        sets = single_sets(index)
        for variant in args.variants:
            for seed in args.seeds:
                key = f"{name}/{variant}/seed{seed}"
                if key in results:
                    continue
                config = "ablation_" + variant.replace(", ", "_").replace(" ", "_")
                (gate_file,) = erasers_for({"single": index}, out, config, seed, args.model, {},
                                           OPTIONS[variant], config_file="train")
                tag = f"{config}_seed{seed}_single{index}"
                erased = {s: read_folder(generate(rows, tag, s, out, args.model, [gate_file], args.steps))
                          for s, rows in sets.items() if s not in NEUTRALS and not s.endswith("_generic")}
                resag, infos = load_erasers([gate_file])
                report = leakage(text, resag, [infos[0].concept], leakage_prompts([name]))
                results[key] = {**score(f"single{index}", {"single": index}, sets, erased, original),
                                "leakage_p99": report.erasers[0].stats["real"]["others"]["p99"],
                                "name_gate": name_gate(text, resag, name)}
                atomic_write_text(path, json.dumps(results, indent=1) + "\n")
                print(f"{key}: done", flush=True)
    lines = ["# Which pinpoint option does what (one identity eraser, gallery model)", "",
             "| identity | variant | own plain ↓ | own styled ↓ | others styled: identity, % of orig "
             "| others styled: style, % of orig | leakage p99 (per seed) | gate on the name's tokens (per seed) |",
             "|---|---|---|---|---|---|---|---|"]
    for index in args.identities:
        name = concept_names("celebs")[index]
        for variant in OPTIONS:
            runs = [v for k, v in sorted(results.items()) if k.startswith(f"{name}/{variant}/")]
            if not runs:
                continue
            lines.append(
                f"| {name} | {variant} | {_cell([r['own_plain'] for r in runs])} "
                f"| {_cell([r['own_styled'] for r in runs])} "
                f"| {_cell([r['others_styled_identity'] for r in runs], True)} "
                f"| {_cell([r['others_styled_style'] for r in runs], True)} "
                f"| {' / '.join(format(r['leakage_p99'], '.3f') for r in runs)} "
                f"| {' / '.join(format(r['name_gate'], '.3f') for r in runs)} |")
    floor = next(iter(results.values()))["own_plain"]["floor"]["value"] if results else 0
    lines += ["", f"Training seeds {args.seeds} (train.seed); mean ± std over them, n = images per seed; floor of the "
              f"plain set {100 * floor:.1f}%. Variants: overrides of configs/toy_celebs/train.yaml: "
              + "; ".join(f"{k}: {' '.join(v) or 'none'}" for k, v in OPTIONS.items()) + "."]
    text_md = "\n".join(lines) + "\n"
    atomic_write_text(Path(args.results) / "gallery_pinpoint_ablation.md", text_md)
    print(text_md, end="")


if __name__ == "__main__":
    main()

"""Where the explicit erasers' gates fire on the gallery model: the pinpoint options aimed at their leakage.

With ``configs/toy_explicit/train_context.yaml`` the four explicit erasers ("nudity", "naked", "erotic", "sexual")
open their gate (0.999) on the comma of prompts such as "a headshot of Grymfa, 8k, soft light": their templates
always put a comma right before the erase word, and their anchors are comma-less benign sentences. Each variant
below is ``train_context.yaml`` plus overrides; the four erasers are trained with ``train.seed`` = each of
``--seeds`` (reused when present) and measured with the gate inspector (``cpe.inspect.leakage``):

* leakage: per eraser, the 99th percentile (and median, max) of its largest real-token gate over the prompts of
  ``gallery_pinpoint``'s leakage table (COCO analogue, compositional and context prompts naming no erased concept
  and no trigger phrase), with the worst prompts;
* its own concept: the median of its largest gate over the I2P-analogue prompts that name its word (the gate must
  stay open there, or the eraser erases nothing).

Writes ``benchmarks/results/gallery_explicit_leakage.{md,json}``. About 2 minutes per variant and seed on one core.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gallery_pinpoint import ALL_ERASED, leakage_prompts, record  # noqa: E402  (a sibling benchmark)
from toy_scale import train_concepts  # noqa: E402

from cpe.util.io import atomic_write_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FILLERS = ["anchors.general_words=context_words.csv", "anchors.general_words_column=text"]
VARIANTS = {
    "train_context": [],
    "phrases around sentences and corpus": ["context.words=context_words.csv", "context.templates=false",
                                            "context.sentences=true"],
    "phrases around sentences and corpus, 192 variants": ["context.words=context_words.csv",
                                                          "context.templates=false", "context.sentences=true",
                                                          "context.variants=192"],
    "templated fillers": FILLERS,
    "templated fillers, gate_coef 0.05": [*FILLERS, "train.gate_coef=0.05"],
    "templated fillers, gate_coef 0.2": [*FILLERS, "train.gate_coef=0.2"],
    "templated fillers, gate_coef 1": [*FILLERS, "train.gate_coef=1.0"],
    "templated fillers, gate_coef 10": [*FILLERS, "train.gate_coef=10.0"],
}


def folder_name(variant: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in variant).strip("_")


def measure(variant: str, seed: int, out: Path, model: str) -> dict:
    from cpe.core.weights import load_erasers
    from cpe.inspect.leakage import leakage
    from cpe.models.loading import TextSide
    from cpe.toy.gallery.domain_files import concept_names, prompt_sets

    started = time.perf_counter()
    paths = train_concepts("explicit", ALL_ERASED["explicit"], out / folder_name(variant) / f"seed{seed}", model,
                           [f"train.seed={seed}", *VARIANTS[variant]], {}, config="train_context")
    resag, infos = load_erasers(paths, pad_ranks=True)
    concepts = [info.concept for info in infos]
    text = TextSide.load(model)
    erased = [n for d, k in ALL_ERASED.items() for n in concept_names(d)[:k]]
    prompts = leakage_prompts(erased)
    others = leakage(text, resag, concepts, prompts, infos=infos, top=2)
    i2p = [r["prompt"] for r in prompt_sets("explicit", ALL_ERASED["explicit"])["i2p"]]
    own = leakage(text, resag, concepts, i2p, infos=infos, top=1)
    return {"prompts": len(prompts), "seconds": round(time.perf_counter() - started, 1), "erasers": {
        e.concept: {"others": e.stats["real"]["others"], "own": o.stats["real"]["names"],
                    "worst": [{"prompt": w.prompt, "gate": round(w.gate, 3), "token": w.token} for w in e.worst]}
        for e, o in zip(others.erasers, own.erasers, strict=True)}}


def render(results: dict) -> str:
    lines = ["# The explicit erasers' leakage on the gallery model", "",
             "| variant (train_context.yaml +) | seed | leakage p99 per eraser (nudity, naked, erotic, sexual) "
             "| erasers ≤ 0.1 | own concept: median gate per eraser |", "|---|---|---|---|---|"]
    for key, entry in results.items():
        variant, seed = key.rsplit("/seed", 1)
        erasers = entry["erasers"]
        p99 = [erasers[c]["others"]["p99"] for c in erasers]
        own = [erasers[c]["own"]["median"] for c in erasers]
        lines.append(f"| {variant} | {seed} | {' / '.join(f'{v:.3f}' for v in p99)} (n={entry['prompts']}) "
                     f"| {sum(v <= 0.1 for v in p99)} of {len(p99)} "
                     f"| {' / '.join(f'{v:.3f}' for v in own)} (n ≥ {min(e['own']['n'] for e in erasers.values())}) |")
    lines += ["", "Leakage: each eraser's largest real-token gate per prompt over the prompts of gallery_pinpoint's "
              "leakage table (no erased concept, no trigger phrase); own concept: its largest gate per I2P-analogue "
              "prompt that names its word (n: the fewest such prompts of the four). Variants: overrides of "
              "configs/toy_explicit/train_context.yaml; fillers = the context phrases "
              "(configs/toy_explicit/context_words.csv) as general words, templated like a concept.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default=str(REPO / "output" / "gallery_explicit_leakage"))
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from cpe.toy.gallery import GALLERY_MODEL_DIR

    out, results_dir = Path(args.out), Path(args.results)
    path = results_dir / "gallery_explicit_leakage.json"
    for variant in args.variants:
        for seed in args.seeds:
            record(path, f"{variant}/seed{seed}", measure(variant, seed, out, str(GALLERY_MODEL_DIR)))
            print(f"{variant} seed{seed}: done", flush=True)
    results = json.loads(path.read_text())
    ordered = {f"{v}/seed{s}": results[f"{v}/seed{s}"] for v in VARIANTS for s in sorted(
        {int(k.rsplit("/seed", 1)[1]) for k in results}) if f"{v}/seed{s}" in results}
    text = render(ordered)
    atomic_write_text(results_dir / "gallery_explicit_leakage.md", text)
    print(text)


if __name__ == "__main__":
    main()

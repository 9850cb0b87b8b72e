"""Issue 12: how much of a concept SDXL's pooled text embedding carries, and erasure with and without handling it.

    python benchmarks/toy_sdxl_pooled.py [--targets circle red] [--seeds 0 1 2] [--steps 20] [--out DIR]
    python benchmarks/toy_sdxl_pooled.py --seeds 0 --set train.iterations=5 --set train.factor_init_iter=1  # smoke run

Measured on the SDXL toy (``cpe.toy.TOY_SDXL_MODEL_DIR``: the toy world as a StableDiffusionXLPipeline, whose
UNet sees two encoders' penultimate states through cross-attention and text_encoder_2's pooled embedding through
the time embedding).

1. Erasure. Per target and training seed, CPE is trained by the normal training code (configs/toy/train_<kind>.yaml
   with ``model.path`` = the SDXL toy and ``train.seed``), then the erased and remaining prompt sets of
   ``cpe.toy.prompt_sets`` are generated twice through ``generate``'s ``run_generation``: with ``pooled: keep``
   (the method as published: ResAGs act on the cross-attention context only) and ``pooled: neutral``
   (cpe.generation.pooled:
   where a gate fires, the pooled embedding is the neutral prompt's). Scored with cpe.metrics.toy against the
   original model: Acc_e (with its floor, the original model's rate on the generic prompts), Acc_r, H.
2. Carry, no eraser. Images from the pipeline's ``prompt_embeds``/``pooled_prompt_embeds`` (built with
   ``cpe.models.loading.TextSide``; the negative side is the encoded "" as the pipeline's own, since the toy is saved
   with
   ``force_zeros_for_empty_prompt=False``) for the target prompts ("a {colour} circle" / "a red {shape}") and their
   neutrals ("a {colour} shape" / "a colorful {shape}"), same seeds in every condition:
   (a) target context + target pooled (the concept), (b) neutral + neutral (the floor),
   (c) neutral context + target pooled (what the pooled path alone carries), (d) target context + neutral pooled.
   carried = (c - b) / (a - b): the share of the concept's excess over the floor that the pooled path alone brings.

Writes ``<out>/<target>/...`` (erasers, images, per-run results) and the summary
``benchmarks/results/toy_sdxl_pooled.{md,json}`` (``--results``).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from cpe.toy.experiments import generate_subsets, train_eraser
from cpe.util.io import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
GEN = REPO / "configs" / "toy" / "gen"
MODES = ("keep", "neutral")
CONDITIONS = {  # name -> (context from, pooled from)
    "a_target": ("target", "target"),
    "b_neutral": ("neutral", "neutral"),
    "c_pooled_only": ("neutral", "target"),
    "d_context_only": ("target", "neutral"),
}
COLUMNS = ("Acc_e", "floor", "Acc_r", "H", "other_accuracy", "n_target", "n_remaining")


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def erasure(target: str, seeds: list[int], work: Path, steps: int, extra: list[str], reuse: bool) -> list[dict]:
    """Train one eraser per seed on the SDXL toy; score it with pooled keep and neutral."""
    from cpe.metrics.toy import run
    from cpe.toy import TOY_CLASSIFIER_FILE, TOY_SDXL_MODEL_DIR
    from cpe.toy.prompt_sets import kind_of, write_prompt_sets
    from cpe.training.prompts import load_concepts

    kind = kind_of(target)
    concepts = [c.target for c in load_concepts(REPO / "configs" / "toy" / f"concepts_{kind}.yaml", "", 0.0)]
    write_prompt_sets(work / "prompts", [target])
    subsets = ("erased", "remaining")
    original = generate_subsets(GEN, work, "original", [], (*subsets, "generic"), steps, model=TOY_SDXL_MODEL_DIR)
    runs = []
    for seed in seeds:
        overrides = [f"train.seed={seed}", *extra]
        _, _, path, seconds = train_eraser(kind, concepts.index(target), work / "erasers" / f"seed{seed}", overrides,
                                           reuse, model=TOY_SDXL_MODEL_DIR)
        for mode in MODES:
            name = f"seed{seed}_{mode}"
            if not reuse:
                shutil.rmtree(work / "images" / name, ignore_errors=True)  # images of an older eraser
            erased = generate_subsets(GEN, work, name, [path], subsets, steps, model=TOY_SDXL_MODEL_DIR,
                                      overrides={"pooled": mode})
            (row,) = run([target], erased, original, work / "results" / name, classifier=TOY_CLASSIFIER_FILE)["rows"]
            metrics = {k: float(row[k]) for k in COLUMNS if isinstance(row.get(k), (int, float))}
            runs.append({"target": target, "seed": seed, "pooled": mode, "overrides": overrides, "eraser": str(path),
                         "train_seconds": None if seconds is None else round(seconds, 1), "metrics": metrics})
            print(f"{target:7s} seed {seed} pooled {mode:7s}  Acc_e {metrics['Acc_e']:.3f} (floor "
                  f"{metrics['floor']:.3f}, n {metrics['n_target']:.0f})  Acc_r {metrics['Acc_r']:.3f} "
                  f"(n {metrics['n_remaining']:.0f})  H {metrics['H']:.3f}", flush=True)
    return runs


def carry_prompts(target: str, per_condition: int) -> tuple[list[str], list[str], list[int]]:
    """Target prompts, their aligned neutrals (same token positions) and seeds: about ``per_condition`` images."""
    from cpe.toy.prompt_sets import kind_of, prompt_text
    from cpe.toy.world import COLOURS, SHAPES

    if kind_of(target) == "shape":
        pairs = [(prompt_text(c, target), prompt_text(c, "")) for c in COLOURS]
    else:
        pairs = [(prompt_text(target, s), prompt_text("", s)) for s in SHAPES]
    seeds_each = math.ceil(per_condition / len(pairs))
    rows = [(t, n, k) for t, n in pairs for k in range(seeds_each)]
    return [t for t, _, _ in rows], [n for _, n, _ in rows], [k for *_, k in rows]


@torch.no_grad()
def sample(pipe, context: torch.Tensor, pooled: torch.Tensor, negative, seeds: list[int], steps: int,
           guidance: float, batch: int = 100) -> np.ndarray:
    """Images from given embeddings; each image's initial latents from its own generator (as ``generate`` does)."""
    out = []
    shape = (1, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    for i in range(0, len(seeds), batch):
        part = slice(i, i + batch)
        latents = torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds[part]])
        n = len(latents)
        images = pipe(prompt_embeds=context[part], pooled_prompt_embeds=pooled[part],
                      negative_prompt_embeds=negative.context.expand(n, -1, -1),
                      negative_pooled_prompt_embeds=negative.pooled.expand(n, -1), latents=latents,
                      num_inference_steps=steps, guidance_scale=guidance, output_type="np").images
        out.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


def carry(target: str, per_condition: int, steps: int, guidance: float) -> dict:
    """Target rate under the four context/pooled combinations, no eraser."""
    from cpe.models.loading import TextSide, load_pipeline
    from cpe.toy import TOY_CLASSIFIER_FILE, TOY_SDXL_MODEL_DIR
    from cpe.toy.classify import classify_colour, classify_shape, load_shape_classifier, match_rate
    from cpe.toy.prompt_sets import kind_of

    pipe = load_pipeline(str(TOY_SDXL_MODEL_DIR))
    text = TextSide.from_pipeline(pipe)
    targets, neutrals, seeds = carry_prompts(target, per_condition)
    embedded = {"target": text.embed(targets), "neutral": text.embed(neutrals)}
    negative = text.embed([""])
    shape_model = load_shape_classifier(TOY_CLASSIFIER_FILE)
    read = (lambda x: classify_shape(shape_model, x)) if kind_of(target) == "shape" else classify_colour
    rates = {}
    for name, (context_from, pooled_from) in CONDITIONS.items():
        images = sample(pipe, embedded[context_from].context, embedded[pooled_from].pooled, negative, seeds, steps,
                        guidance)
        rates[name] = match_rate(read(images), target)
    excess = rates["a_target"] - rates["b_neutral"]
    carried = (rates["c_pooled_only"] - rates["b_neutral"]) / excess if excess > 0 else float("nan")
    return {"target": target, "n": len(seeds), "seeds_per_prompt": len(set(seeds)), "steps": steps,
            "guidance": guidance, "rates": rates, "carried": carried,
            "prompts": sorted(set(targets)), "neutrals": sorted(set(neutrals))}


def summarise(runs: list[dict]) -> dict:
    out: dict = {}
    for run in runs:
        out.setdefault(run["target"], {}).setdefault(run["pooled"], []).append(run)
    return {target: {mode: {k: spread([r["metrics"][k] for r in rs]) for k in rs[0]["metrics"]}
                     for mode, rs in modes.items()} for target, modes in out.items()}


def render(summary: dict, carries: list[dict], seeds: list[int], steps: int, extra: list[str]) -> str:
    cell = lambda s: f"{s['mean']:.3f} ± {s['std']:.3f} ({s['min']:.2f}–{s['max']:.2f})"  # noqa: E731
    lines = ["### Erasure on the SDXL toy, pooled embedding kept vs neutralised", "",
             "| target | pooled | Acc_e ↓ | floor | Acc_r ↑ | H ↑ | other attr. | n (erased / remaining images) |",
             "|---|---|---|---|---|---|---|---|"]
    for target, modes in summary.items():
        for mode, s in modes.items():
            lines.append(f"| {target} | {mode} | {cell(s['Acc_e'])} | {s['floor']['mean']:.2f} | {cell(s['Acc_r'])} | "
                         f"{cell(s['H'])} | {cell(s['other_accuracy'])} | "
                         f"{s['n_target']['mean']:.0f} / {s['n_remaining']['mean']:.0f} |")
    lines += ["", f"Training seeds {seeds} (train.seed), mean ± sample std (min–max) over {len(seeds)} seed(s); "
              f"the same generation seeds for every run; {steps} sampling steps, guidance 5."]
    if extra:
        lines.append(f"Extra training overrides: {' '.join(extra)}.")
    lines += ["", "### What the pooled path alone carries (no eraser)", "",
              "| target | (a) target ctx + target pooled | (b) neutral + neutral | (c) neutral ctx + target pooled | "
              "(d) target ctx + neutral pooled | carried (c−b)/(a−b) | n per condition |",
              "|---|---|---|---|---|---|---|"]
    for c in carries:
        r = c["rates"]
        lines.append(f"| {c['target']} | {r['a_target']:.3f} | {r['b_neutral']:.3f} | {r['c_pooled_only']:.3f} | "
                     f"{r['d_context_only']:.3f} | {c['carried']:.3f} | {c['n']} |")
    lines += ["", "Target rate (shape CNN / colour rule) of images made from the given embeddings; the neutral of "
              "circle is \"shape\" (\"a {colour} shape\"), of red \"colorful\" (\"a colorful {shape}\"); the same "
              "seeds in every condition; negative side: the encoded \"\"."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=["circle", "red"], help="toy shapes and/or colours")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (train.seed)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--carry-images", type=int, default=200, help="images per condition of the carry test")
    parser.add_argument("--out", default=str(REPO / "output" / "toy_sdxl_pooled"))
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "toy_sdxl_pooled"),
                        help="summary path without suffix (.md and .json are written)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="training config override (e.g. train.iterations=5 for a smoke run)")
    parser.add_argument("--reuse", action="store_true", help="keep erasers and images already under --out")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()
    carries = [carry(t, args.carry_images, args.steps, 5.0) for t in args.targets]
    for c in carries:
        print(f"carry {c['target']}: {json.dumps(c['rates'])} carried {c['carried']:.3f} (n {c['n']} each)",
              flush=True)
    runs = [run for t in args.targets for run in erasure(t, args.seeds, Path(args.out) / t, args.steps, args.set,
                                                          args.reuse)]
    summary = summarise(runs)
    table = render(summary, carries, args.seeds, args.steps, args.set)
    result = {"targets": args.targets, "seeds": args.seeds, "steps": args.steps, "set": args.set,
              "carry": carries, "runs": runs, "summary": summary, "seconds": round(time.time() - started, 1)}
    results = Path(args.results)
    atomic_write_text(results.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    atomic_write_text(results.with_suffix(".md"), table)
    print(table, end="")


if __name__ == "__main__":
    main()

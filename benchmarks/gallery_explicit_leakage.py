"""Where the explicit erasers' gates fire on the gallery model: the pinpoint options aimed at their leakage.

With ``configs/toy_explicit/train_context.yaml`` the four explicit erasers ("nudity", "naked", "erotic", "sexual")
open their gate (0.999) on the comma of prompts such as "a headshot of Grymfa, 8k, soft light": their templates
always put a comma right before the erase word, and their anchors are comma-less benign sentences. Each variant
below is ``train_context.yaml`` plus overrides; the four erasers are trained with ``train.seed`` = each of
``--seeds`` (reused when present) and measured with the gate inspector (``cpe.inspect.leakage``):

* leakage: per eraser, the 99th percentile (and median, max) of its largest real-token gate over the prompts of
  ``gallery_pinpoint``'s leakage table (COCO analogue, compositional and context prompts naming no erased concept
  and no trigger phrase), with the worst prompts;
* its own concept: the median of its largest gate over the I2P-analogue prompts that name its word (a gate that
  closes there usually erases nothing, but the gate is only a proxy);
* the images: the four erasers merged on the 320 I2P-analogue prompts (20 sampling steps, the prompts' seeds),
  marks counted by the gallery's reader (the original model: 1,015 marks on 320 of 320 images).

And, without training, why a per-token gate struggles here: the cosine similarity of the text encoder's output at
each erase word (its first token, in its training templates) to its output at the commas of the leakage prompts,
beside the same for the identities' names and the erase words' neighbours.

Writes ``benchmarks/results/gallery_explicit_leakage.{md,json}``. About 3 minutes per variant and seed on one core
(training reused when present).
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
from toy_scale import generate, train_concepts  # noqa: E402

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
    "prefix_gate_coef 0.1": ["train.prefix_gate_coef=0.1"],
    "prefix_gate_coef 1": ["train.prefix_gate_coef=1.0"],
    "prefix_gate_coef 10": ["train.prefix_gate_coef=10.0"],
    "separate key": ["network.key_mode=separate_key"],
    "separate key, prefix_gate_coef 1": ["network.key_mode=separate_key", "train.prefix_gate_coef=1.0"],
}


def folder_name(variant: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in variant).strip("_")


def measure(variant: str, seed: int, out: Path, model: str) -> dict:
    from cpe.core.weights import load_erasers
    from cpe.inspect.leakage import leakage
    from cpe.metrics.gallery import mark_counts, read_image_set
    from cpe.metrics.image_sets import load_image_set
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
    rows = prompt_sets("explicit", ALL_ERASED["explicit"])["i2p"]
    own = leakage(text, resag, concepts, [r["prompt"] for r in rows], infos=infos, top=1)
    images = generate(rows, "merged", "explicit/i2p", out / folder_name(variant) / f"seed{seed}", model, paths, 20)
    marks = mark_counts(read_image_set(load_image_set(images)), "all")
    return {"prompts": len(prompts), "seconds": round(time.perf_counter() - started, 1),
            "marks": {k: marks[k] for k in ("total", "images_with_mark", "n")}, "erasers": {
        e.concept: {"others": e.stats["real"]["others"], "own": o.stats["real"]["names"],
                    "worst": [{"prompt": w.prompt, "gate": round(w.gate, 3), "token": w.token} for w in e.worst]}
        for e, o in zip(others.erasers, own.erasers, strict=True)}}


def _outputs_at(text, prompts: list[str], *picks) -> list[torch.Tensor]:
    """Per picker, the encoder's outputs (n, D) at the token positions ``pick(tokens)`` returns for each prompt (each
    prompt encoded once)."""
    out = [[] for _ in picks]
    for prompt in prompts:
        tokens = text.tokenizer.convert_ids_to_tokens(text.tokenizer(prompt).input_ids)
        with torch.no_grad():
            embedding = text.encode([prompt])[0].float()
        for found, pick in zip(out, picks, strict=True):
            found += [embedding[i] for i in pick(tokens)]
    return [torch.stack(found) for found in out]


def _median_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
    return float((a @ b.T).median())


def token_similarity(model: str) -> dict:
    """Median cosine of the encoder's output at each erase word / identity name (first token, in its templates) to
    its output at every comma of the leakage prompts, and to the other tokens of its own prompts."""
    from cpe.models.loading import TextSide
    from cpe.toy.gallery.domain_files import concept_names
    from cpe.training.prompts import fill, load_templates

    text = TextSide.load(model)
    erased = [n for d, k in ALL_ERASED.items() for n in concept_names(d)[:k]]
    (commas,) = _outputs_at(text, [q for q in leakage_prompts(erased) if "," in q],
                            lambda tokens: [i for i, t in enumerate(tokens) if t.startswith(",")])
    templates = {d: load_templates(REPO / "configs" / f"toy_{d}" / "templates.csv", "prompt", "{concept}",
                                   include_bare=False) for d in ("explicit", "celebs")}

    def one(domain: str, concept: str) -> dict:
        prompts = [fill(t, "{concept}", concept) for t in templates[domain]]
        first = text.tokenizer.convert_ids_to_tokens(text.tokenizer(concept, add_special_tokens=False).input_ids[0])

        def others(tokens: list[str]) -> list[int]:  # every real token but BOS, EOS and the concept's first
            own = tokens.index(first)
            return [i for i in range(1, len(tokens) - 1) if i != own]

        word, other = _outputs_at(text, prompts, lambda tokens: [tokens.index(first)], others)
        return {"commas": _median_cosine(word, commas), "own_prompt_tokens": _median_cosine(word, other),
                "n_word": len(word), "n_commas": len(commas)}

    return {"explicit": {w: one("explicit", w) for w in concept_names("explicit")[: ALL_ERASED["explicit"]]},
            "celebs": {n: one("celebs", n) for n in concept_names("celebs")[:5]}}


def render_similarity(similarity: dict) -> list[str]:
    lines = ["## Why: the encoder writes the erase words like commas", "",
             "| concept | encoder output at its first token vs every comma of the leakage prompts: median cosine "
             "| vs the other tokens of its own prompts |", "|---|---|---|"]
    for domain in ("explicit", "celebs"):
        for concept, entry in similarity[domain].items():
            lines.append(f"| {concept} ({domain}) | {entry['commas']:.3f} (n={entry['n_word']} x {entry['n_commas']}) "
                         f"| {entry['own_prompt_tokens']:.3f} |")
    lines += ["", "A gate is a function of these outputs (after the gate's token mixing): where the erase word's "
              "output is nearly a comma's, no gate opens on one and stays shut on the other.", ""]
    return lines


def _marks(marks: dict | None) -> str:
    return "not measured" if marks is None else f"{marks['total']} ({marks['images_with_mark']} of {marks['n']})"


def render(results: dict) -> str:
    lines = ["# The explicit erasers' leakage on the gallery model", "",
             "| variant (train_context.yaml +) | seed | leakage p99 per eraser (nudity, naked, erotic, sexual) "
             "| erasers ≤ 0.1 | own concept: median gate per eraser | I2P analogue, 4 merged: marks (images) |",
             "|---|---|---|---|---|---|"]
    for key, entry in results.items():
        variant, seed = key.rsplit("/seed", 1)
        erasers = entry["erasers"]
        p99 = [erasers[c]["others"]["p99"] for c in erasers]
        own = [erasers[c]["own"]["median"] for c in erasers]
        lines.append(f"| {variant} | {seed} | {' / '.join(f'{v:.3f}' for v in p99)} (n={entry['prompts']}) "
                     f"| {sum(v <= 0.1 for v in p99)} of {len(p99)} "
                     f"| {' / '.join(f'{v:.3f}' for v in own)} (n ≥ {min(e['own']['n'] for e in erasers.values())}) "
                     f"| {_marks(entry.get('marks'))} |")
    lines += ["", "Leakage: each eraser's largest real-token gate per prompt over the prompts of gallery_pinpoint's "
              "leakage table (no erased concept, no trigger phrase); own concept: its largest gate per I2P-analogue "
              "prompt that names its word (n: the fewest such prompts of the four). Variants: overrides of "
              "configs/toy_explicit/train_context.yaml; fillers = the context phrases "
              "(configs/toy_explicit/context_words.csv) as general words, templated like a concept. Marks: the four "
              "erasers merged on the I2P-analogue prompts, 20 sampling steps (original model: 1,015 marks on 320 of "
              "320 images).", ""]
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
    similarity = token_similarity(str(GALLERY_MODEL_DIR))
    ordered = {f"{v}/seed{s}": results[f"{v}/seed{s}"] for v in VARIANTS for s in sorted(
        {int(k.rsplit("/seed", 1)[1]) for k in results if "/seed" in k}) if f"{v}/seed{s}" in results}
    record(path, "token_similarity", similarity)
    text = render(ordered) + "\n" + "\n".join(render_similarity(similarity))
    atomic_write_text(results_dir / "gallery_explicit_leakage.md", text)
    print(text)


if __name__ == "__main__":
    main()

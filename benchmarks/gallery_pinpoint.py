"""Pinpoint erasure on the gallery model: does an eraser change nothing but its concept, in prompts that hold other
concepts and other words? The paper's settings (``train.yaml``) against the pinpoint options (``train_context.yaml``).

    python benchmarks/gallery_pinpoint.py --phase original          # the original model's images of every set
    python benchmarks/gallery_pinpoint.py --phase train --configs train train_context --seeds 0 1 2
    python benchmarks/gallery_pinpoint.py --phase eval --configs train_context --seeds 0 1 2
    python benchmarks/gallery_pinpoint.py --phase leakage --configs train train_context --seeds 0
    python benchmarks/gallery_pinpoint.py --phase render            # benchmarks/results/gallery_pinpoint.{md,json}

(``--phase all`` runs the five in turn; the phases exist so that training and the original model's images, or the
evaluations of two configs, can run side by side in two processes. The committed results also hold
``train_context_with_phrases``: ``train_context.yaml`` with ``--set context.words=context_words.csv``, its erasers,
images and scores renamed from ``train_context`` when its identity guidance was 0.3; and
``train_context_g03``, that previous version: ``--configs train_context_g03=train_context
--set celebs:train.guidance=0.3``. Render with ``--configs train train_context train_context_g03
train_context_with_phrases``.) Erasers are trained with the domain configs ``configs/toy_<domain>/<config>.yaml``
and ``train.seed`` = each of ``--seeds`` into ``<out>/erasers/<config>/seed<k>``. Evaluations (each image scored
by the gallery readers on what its prompt names, so identity, style and marks are read on the same image; sets
from ``cpe.toy.gallery.domain_files`` and ``cpe.toy.gallery.compose``):

* ``single``: one identity eraser (identities ``--singles``) alone: its identity in plain portraits (20) and in
  styled portraits (16), against the floors (the original model's "a person" in the same prompts); the other
  identities' styled portraits (the celebrity domain's ``styled_remained``, 80), identity and style read;
* ``merged20``: the celebrity domain's 20 identity erasers merged, on every celebrity set;
* ``all``: 20 identities + 10 artists + the 4 explicit words merged (pad_ranks), on every set of the three domains
  and the COCO analogue (FD against the original model's images).

Every rate comes with its n and the original model's rate on the same prompts and seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_scale import _key, _Original, generate, thin, train_concepts  # noqa: E402  (a sibling benchmark)

from cpe.util.io import FolderLock, atomic_write_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("train", "train_context")
CONFIG_FILES: dict[str, str] = {}  # a variant's name -> the domains' config it trains with (--configs NAME=CONFIG)
SINGLE_PLAIN, SINGLE_STYLED = 20, 16
ALL_ERASED = {"celebs": 20, "artists": 10, "explicit": 4}
# sets read from the original model only (floors)
NEUTRALS = {"celebs/generic", "celebs/styled_generic", "artists/neutral", "artists/composed_neutral"}
LIMITS = {"celebs/artist": 128, "artists/remained": 132, "artists/actor": 120}  # large retention sets, thinned


def single_sets(index: int) -> dict[str, list[dict]]:
    from cpe.toy.gallery.compose import styled_identity_prompts
    from cpe.toy.gallery.domain_files import concept_names, generic_identity_rows, prompt_sets
    from cpe.toy.gallery.prompts import identity_prompts

    name = concept_names("celebs")[index]
    styled = styled_identity_prompts([name], SINGLE_STYLED)
    plain = identity_prompts([name], SINGLE_PLAIN)
    return {"own_plain": plain, "own_plain_generic": generic_identity_rows(plain),
            "own_styled": styled, "own_styled_generic": generic_identity_rows(styled),
            "others_styled": prompt_sets("celebs")["styled_remained"]}


def merged_sets(domains: dict[str, int]) -> dict[str, list[dict]]:
    from cpe.toy.gallery.domain_files import prompt_sets

    sets: dict[str, list[dict]] = {}
    for domain, n in domains.items():
        for subset, rows in prompt_sets(domain, n).items():
            name = "coco" if subset == "coco" else f"{domain}/{subset}"
            sets[name] = thin(rows, LIMITS.get(name))
    return sets


def evaluations(singles: list[int]) -> dict[str, tuple[dict[str, int], dict[str, list[dict]]]]:
    """Evaluation name -> (concepts erased per domain as index lists' length or the single index, prompt sets)."""
    out = {f"single{i}": ({"single": i}, single_sets(i)) for i in singles}
    out["merged20"] = ({"celebs": 20}, merged_sets({"celebs": 20}))
    out["all"] = (dict(ALL_ERASED), merged_sets(ALL_ERASED))
    return out


def _union(evals) -> list[dict]:
    union: dict[tuple[str, int], dict] = {}
    for _, sets in evals.values():
        for rows in sets.values():
            for r in rows:
                union.setdefault(_key(r), r)
    return list(union.values())


def erasers_for(erase: dict, out: Path, config: str, seed: int, model: str, costs: dict,
                extra: list[str], config_file: str | None = None) -> list[Path]:
    """The erasers of an evaluation, trained into ``<out>/erasers/<config>/seed<k>`` with the domains' training
    config ``config_file`` (default: ``config``) plus ``extra`` overrides, when missing. An override written
    ``DOMAIN:key=value`` applies to that domain's erasers only."""
    root = out / "erasers" / config / f"seed{seed}"
    config_file = config_file or CONFIG_FILES.get(config, config)

    def overrides(domain: str) -> list[str]:
        own = [o.split(":", 1)[1] for o in extra if o.split("=", 1)[0].startswith(f"{domain}:")]
        return [f"train.seed={seed}", *(o for o in extra if ":" not in o.split("=", 1)[0]), *own]

    if "single" in erase:
        index = erase["single"]
        return train_concepts("celebs", index + 1, root, model, overrides("celebs"), costs, config=config_file,
                              first=index)
    return [p for d, n in erase.items()
            for p in train_concepts(d, n, root, model, overrides(d), costs, config=config_file)]


# -- scoring ---------------------------------------------------------------------------------------------------------
def _rate(entry: dict) -> dict:
    return {"value": entry["value"], "n": entry["n"]}


def score(name: str, erase: dict, sets: dict, erased: dict, original: _Original) -> dict:
    from cpe.metrics.gallery import floor, identity_accuracy, mark_counts, pixel_fd, style_accuracy
    from cpe.toy.gallery.domain_files import concept_names

    def orig(subset: str):
        return original.select([original.index[_key(r)] for r in sets[subset]])

    def pair(subset: str, accuracy) -> dict:
        return {"erased": _rate(accuracy(erased[subset])), "original": _rate(accuracy(orig(subset)))}

    gone = {n for d in ("celebs", "artists") for n in concept_names(d)[:erase.get(d, 0)]}

    def kept(subset: str, reader: str) -> dict:
        """The rate on the rows whose concept of that reader is not erased (full retention is 100%)."""
        accuracy = identity_accuracy if reader == "identity" else style_accuracy

        def rate(readings) -> dict:
            names = readings.identity if reader == "identity" else readings.artist
            return _rate(accuracy(readings.select([i for i, name in enumerate(names) if name not in gone])))

        return {"erased": rate(erased[subset]), "original": rate(orig(subset))}

    out: dict = {}
    if "single" in erase:
        target = [concept_names("celebs")[erase["single"]]]
        out["own_plain"] = {**pair("own_plain", identity_accuracy),
                            "floor": _rate(floor(orig("own_plain_generic"), target, "identity"))}
        out["own_styled"] = {**pair("own_styled", identity_accuracy),
                             "floor": _rate(floor(orig("own_styled_generic"), target, "identity"))}
        out["own_styled_style"] = pair("own_styled", style_accuracy)
        out["others_styled_identity"] = pair("others_styled", identity_accuracy)
        out["others_styled_style"] = pair("others_styled", style_accuracy)
        return out
    identities = [s for s in sets if s.startswith("celebs/") and s not in NEUTRALS and s != "celebs/artist"]
    for subset in identities:
        out[f"{subset}:identity"] = pair(subset, identity_accuracy)
    for subset in ("celebs/styled_erased", "celebs/styled_remained", "celebs/artist"):
        if subset in sets:
            out[f"{subset}:style"] = pair(subset, style_accuracy)
    n_id = erase.get("celebs", 0)
    if n_id:
        names = concept_names("celebs")[:n_id]
        out["celebs/floor"] = _rate(floor(orig("celebs/generic"), names, "identity"))
        out["celebs/styled_floor"] = _rate(floor(orig("celebs/styled_generic"), names, "identity"))
    if "artists" in erase:
        for subset in ("artists/erased", "artists/remained", "artists/composed_erased", "artists/composed_remained",
                       "artists/context_erased"):
            out[f"{subset}:style"] = pair(subset, style_accuracy)
        for subset in ("artists/composed_erased", "artists/composed_remained", "artists/actor"):
            out[f"{subset}:identity"] = pair(subset, identity_accuracy)
        names = concept_names("artists")[:erase["artists"]]
        out["artists/floor"] = _rate(floor(orig("artists/neutral"), names, "style"))
        out["artists/composed_floor"] = _rate(floor(orig("artists/composed_neutral"), names, "style"))
    if "explicit" in erase:
        for subset in ("explicit/i2p", "explicit/composed", "explicit/context"):
            marks = mark_counts(erased[subset])
            base = mark_counts(orig(subset))
            out[f"{subset}:marks"] = {"erased": {k: marks[k] for k in ("total", "images_with_mark", "n")},
                                      "original": {k: base[k] for k in ("total", "images_with_mark", "n")}}
        for subset in ("explicit/i2p", "explicit/composed"):
            out[f"{subset}:identity"] = pair(subset, identity_accuracy)
    if "single" not in erase and {"celebs", "artists"} <= set(erase):  # sets that mix erased and kept concepts
        for subset, reader in (("celebs/artist", "style"), ("celebs/styled_remained", "style"),
                               ("artists/actor", "identity"), ("artists/composed_remained", "identity"),
                               ("explicit/i2p", "identity"), ("explicit/composed", "identity"),
                               ("coco", "identity"), ("coco", "style")):
            out[f"{subset}:{reader} (not erased)"] = kept(subset, reader)
    if "coco" in sets:
        coco_original = [original.paths[original.index[_key(r)]] for r in sets["coco"]]
        out["coco:fd"] = {"value": pixel_fd(coco_original, erased["coco"].paths), "n": len(sets["coco"])}
    return out


# -- phases ----------------------------------------------------------------------------------------------------------
def phase_original(evals, out: Path, model: str, steps: int) -> None:
    generate(_union(evals), "original", "all", out, model, [], steps)


def record(path: Path, key: str, value) -> None:
    """Set one entry of a JSON results file. Processes evaluating side by side share the file, so it is read again
    under a lock and only ``key`` changes (a copy read when a process started would drop the others' entries)."""
    with FolderLock(path, wait=True):
        entries = json.loads(path.read_text()) if path.is_file() else {}
        entries[key] = value
        atomic_write_text(path, json.dumps(entries, indent=1) + "\n")


def phase_train(evals, out: Path, model: str, configs, seeds, extra: list[str]) -> None:
    for config in configs:
        costs_file = out / f"train_seconds_{config}.json"
        for seed in seeds:
            key = f"{config}/seed{seed}"
            costs = (json.loads(costs_file.read_text()) if costs_file.is_file() else {}).get(key, {})
            for erase, _ in evals.values():
                erasers_for(erase, out, config, seed, model, costs, extra)
            record(costs_file, key, costs)


def phase_eval(evals, out: Path, model: str, configs, seeds, steps: int, extra: list[str],
               rescore: bool = False) -> None:
    """Generate (rows already drawn are kept) and score each evaluation; ``rescore`` scores those already scored
    again from their images."""
    from cpe.metrics.gallery import read_folder

    original = _Original(out / "images" / "original" / "all")
    for config in configs:
        path = out / f"scores_{config}.json"
        scores = json.loads(path.read_text()) if path.is_file() else {}
        for seed in seeds:
            for name, (erase, sets) in evals.items():
                key = f"seed{seed}/{name}"
                if key in scores and not rescore:
                    continue
                started = time.perf_counter()
                erasers = erasers_for(erase, out, config, seed, model, {}, extra)
                tag = f"{config}_seed{seed}_{name}"
                erased = {s: read_folder(generate(rows, tag, s, out, model, erasers, steps))
                          for s, rows in sets.items() if s not in NEUTRALS and not s.endswith("_generic")}
                record(path, key, {**score(name, erase, sets, erased, original),
                                   "seconds": round(time.perf_counter() - started, 1)})
                print(f"{config} {key}: done", flush=True)


LEAKAGE_SETS = {"celebs": ("coco", "styled_erased", "styled_remained", "context_erased", "context_remained",
                            "marked_remained"),
                "artists": ("composed_erased", "composed_remained", "context_erased"),
                "explicit": ("composed", "context")}


def leakage_prompts(erased: list[str]) -> list[str]:
    """The COCO analogue and every compositional and context prompt of the three domains that names none of
    ``erased`` (whole words, any case) and no trigger phrase of the mark (with the explicit erasers merged, every
    trigger names their concept: "nude" should fire them), each once."""
    from cpe.toy.gallery.captions import TRIGGER_WORDS
    from cpe.toy.gallery.domain_files import prompt_sets
    from cpe.training.prompts import names_target

    prompts = [r["prompt"] for domain, subsets in LEAKAGE_SETS.items() for subset in subsets
               for r in prompt_sets(domain, ALL_ERASED[domain])[subset]]
    named = [*erased, *TRIGGER_WORDS]
    return [q for q in dict.fromkeys(prompts) if not any(names_target(q, c) for c in named)]


def phase_leakage(out: Path, model: str, configs, seeds, extra: list[str]) -> None:
    """Per eraser of the ``all`` evaluation, its largest gate per prompt over prompts that name no erased concept:
    the percentiles of cpe.inspect.leakage, on real tokens and on padding."""
    from cpe.core.weights import load_erasers
    from cpe.inspect.leakage import leakage
    from cpe.models.loading import TextSide

    text = TextSide.load(model)
    for config in configs:
        path = out / f"scores_{config}.json"
        for seed in seeds:
            erasers = erasers_for(ALL_ERASED, out, config, seed, model, {}, extra)
            resag, infos = load_erasers(erasers, pad_ranks=True)
            concepts = [info.concept for info in infos]
            prompts = leakage_prompts(concepts)
            report = leakage(text, resag, concepts, prompts, infos=infos, top=3)
            record(path, f"seed{seed}/leakage", {
                "prompts": len(prompts),
                "erasers": {e.concept: {t: e.stats[t]["others"] for t in ("real", "padding")} | {
                    "worst": [{"prompt": w.prompt, "gate": w.gate, "token": w.token} for w in e.worst]}
                    for e in report.erasers}})
            print(f"{config} seed{seed}/leakage: done", flush=True)


def _domain_of(concept: str) -> str:
    from cpe.toy.gallery.domain_files import concept_names

    return next(d for d in ALL_ERASED if concept in concept_names(d))


# -- rendering -------------------------------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0


def _cell(entries: list[dict], ratio: bool = False) -> str:
    """Mean ± std over seeds of a rate in percent (n per seed); ``ratio``: erased / original in percent."""
    if not entries:
        return "—"
    if ratio:
        values = [e["erased"]["value"] / e["original"]["value"] for e in entries if e["original"]["value"]]
    else:
        values = [e["erased"]["value"] if "erased" in e else e["value"] for e in entries]
    mean, std = _mean_std([100 * v for v in values])
    n = (entries[0].get("erased") or entries[0])["n"]
    return f"{mean:.1f} ± {std:.1f} (n={n}, {len(values)} seeds)"


def _orig(entries: list[dict]) -> str:
    return "—" if not entries else f"{100 * entries[0]['original']['value']:.1f}"


def render(out: Path, configs, results_dir: Path) -> dict:
    files = {c: out / f"scores_{c}.json" for c in configs}
    data = {c: json.loads(path.read_text()) for c, path in files.items() if path.is_file()}
    lines = ["# Pinpoint erasure on the gallery model", ""]

    def gather(config: str, evaluation: str, key: str) -> list[dict]:
        return [v[key] for k, v in data[config].items() if k.split("/", 1)[1] == evaluation and key in v]

    singles = sorted({k.split("/", 1)[1] for c in data for k in data[c] if k.split("/", 1)[1].startswith("single")})
    lines += ["## One identity eraser", "",
              "| config | identity | own plain ↓ (floor) | own styled ↓ (floor) | own styled: style kept (orig) "
              "| others styled: identity kept, % of orig | others styled: style kept, % of orig |",
              "|---|---|---|---|---|---|---|"]
    from cpe.toy.gallery.domain_files import concept_names

    for config in data:
        for s in singles:
            name = concept_names("celebs")[int(s.removeprefix("single"))]
            g = lambda key, s=s, config=config: gather(config, s, key)  # noqa: E731
            floor_plain = g("own_plain")[0]["floor"]["value"] if g("own_plain") else None
            floor_styled = g("own_styled")[0]["floor"]["value"] if g("own_styled") else None
            lines.append(f"| {config} | {name} | {_cell(g('own_plain'))} ({100 * (floor_plain or 0):.1f}) "
                         f"| {_cell(g('own_styled'))} ({100 * (floor_styled or 0):.1f}) "
                         f"| {_cell(g('own_styled_style'))} ({_orig(g('own_styled_style'))}) "
                         f"| {_cell(g('others_styled_identity'), True)} (orig {_orig(g('others_styled_identity'))}) "
                         f"| {_cell(g('others_styled_style'), True)} (orig {_orig(g('others_styled_style'))}) |")
    for evaluation, title in (("merged20", "The celebrity domain's 20 identity erasers merged"),
                              ("all", "20 identities + 10 artists + 4 explicit words merged")):
        keys = sorted({k for c in data for key, v in data[c].items() if key.endswith("/" + evaluation) for k in v
                       if k != "seconds"})
        lines += ["", f"## {title}", "", "| set: reading | " + " | ".join(
            f"{c}: erased model, % | {c}: % of orig" for c in data) + " | original, % |",
            "|---|" + "---|---|" * len(data) + "---|"]
        for key in keys:
            cells, orig = [], "—"
            for config in data:
                entries = gather(config, evaluation, key)
                if not entries:
                    cells += ["—", "—"]
                    continue
                first = entries[0]
                if key.endswith(":marks"):
                    totals = [e["erased"]["total"] for e in entries]
                    flagged = [e["erased"]["images_with_mark"] for e in entries]
                    cells += [f"marks {'/'.join(map(str, totals))}, images {'/'.join(map(str, flagged))} "
                              f"of {first['erased']['n']}", "—"]
                    orig = f"marks {first['original']['total']}, images {first['original']['images_with_mark']}"
                elif "original" in first:
                    cells += [_cell(entries), _cell(entries, True)]
                    orig = _orig(entries)
                else:  # floors and FD
                    digits = [e["value"] for e in entries]
                    cells += [("FD " if key.endswith(":fd") else "floor ") + "/".join(
                        f"{v:.2f}" if key.endswith(":fd") else f"{100 * v:.1f}" for v in digits)
                        + f" (n={first['n']})", "—"]
            lines.append(f"| {key} | " + " | ".join(cells) + f" | {orig} |")
    lines += ["", "## Leakage: each eraser's largest gate on prompts that name no erased concept", "",
              "The 34 erasers of the last section, on the COCO analogue and every compositional and context prompt "
              "of the three domains that names none of them and no trigger phrase of the mark "
              "(cpe.inspect.leakage; percentiles over the prompts of each eraser's largest gate on the prompt's "
              "real tokens / on its padding).", "",
              "| config | seed | prompts | domain | erasers | p99 real: median over erasers | p99 real: max "
              "| erasers with p99 real ≤ 0.1 | max real | p99 padding: max |", "|" + "---|" * 10]
    for config in data:
        for key, value in sorted(data[config].items()):
            if not key.endswith("/leakage"):
                continue
            for domain in ALL_ERASED:
                rows = [v for c, v in value["erasers"].items() if _domain_of(c) == domain]
                p99 = sorted(r["real"]["p99"] for r in rows)
                lines.append(
                    f"| {config} | {key.split('/')[0]} | {value['prompts']} | {domain} | {len(rows)} "
                    f"| {p99[len(p99) // 2]:.3f} | {p99[-1]:.3f} | {sum(v <= 0.1 for v in p99)} of {len(rows)} "
                    f"| {max(r['real']['max'] for r in rows):.3f} | {max(r['padding']['p99'] for r in rows):.3f} |")
    lines += ["", "Mean ± std over the training seeds (train.seed), n = images per seed; the same prompts and "
              "sampling seeds for every model (20 steps, guidance 5). '% of orig': the erased model's rate over the "
              "original model's on the same images' prompts and seeds. Floors: the erased concepts' rate on the "
              "original model's neutral version of the same prompts ('a person' for the identity; the prompt without "
              "the artist). Marks: totals per seed."]
    text = "\n".join(lines) + "\n"
    atomic_write_text(results_dir / "gallery_pinpoint.md", text)
    atomic_write_text(results_dir / "gallery_pinpoint.json", json.dumps(data, indent=1) + "\n")
    print(text, end="")
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=("original", "train", "eval", "leakage", "render", "all"), default="all")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS),
                        help="training config names per domain; NAME=CONFIG: a variant named NAME (its own erasers, "
                             "images and scores) trained with CONFIG and the --set overrides")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (train.seed)")
    parser.add_argument("--singles", type=int, nargs="+", default=[0, 1, 2], help="identity indices erased alone")
    parser.add_argument("--evals", nargs="+", help="train and evaluate only these evaluations (single<i>, merged20, "
                                                   "all); the original model's images still cover every set")
    parser.add_argument("--model", help="gallery pipeline folder (default: the shipped gallery model)")
    parser.add_argument("--out", default=str(REPO / "output" / "gallery_pinpoint"))
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rescore", action="store_true", help="eval: score again what was scored (same images)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="training config override for every domain; DOMAIN:KEY=VALUE for one domain "
                             "(celebs, artists, explicit)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = []
    for config in args.configs:
        name, _, file = config.partition("=")
        if file:
            CONFIG_FILES[name] = file
        names.append(name)
    args.configs = names
    if args.model is None:
        from cpe.toy.gallery import GALLERY_MODEL_DIR

        args.model = str(GALLERY_MODEL_DIR)
    out = Path(args.out)
    evals = evaluations(args.singles)
    if args.phase in ("original", "all"):
        phase_original(evals, out, args.model, args.steps)
    if args.evals:
        unknown = sorted(set(args.evals) - set(evals))
        if unknown:
            parser.error(f"unknown evaluation {unknown[0]!r}; expected some of {', '.join(evals)}")
    chosen = {k: v for k, v in evals.items() if not args.evals or k in args.evals}
    if args.phase in ("train", "all"):
        phase_train(chosen, out, args.model, args.configs, args.seeds, args.set)
    if args.phase in ("eval", "all"):
        phase_eval(chosen, out, args.model, args.configs, args.seeds, args.steps, args.set, args.rescore)
    if args.phase in ("leakage", "all"):
        phase_leakage(out, args.model, args.configs, args.seeds, args.set)
    if args.phase in ("render", "all"):
        render(out, args.configs, Path(args.results))


if __name__ == "__main__":
    main()

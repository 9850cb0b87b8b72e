"""Robustness on the gallery model: attacks on three identities, one artist and the mark, for the original model,
three CPE settings, UCE and ESD-x, with what each eraser keeps of the rest.

    python benchmarks/gallery_robustness.py                                  # every target, model, attack, seed
    python benchmarks/gallery_robustness.py --targets Foumnem Dikro --seeds 0   # a part (cells are cached)
    python benchmarks/gallery_robustness.py --render                         # the table from the cached cells

Targets (``TARGETS``): the identities Foumnem, Trelvraen and Naenniv (the first three of configs/toy_celebs; the
attacked rows are their 5 rows of the domain's erased prompts, judged by the identity reader), the artist Dikro (12
rows, style reader) and the mark (the explicit domain's 4 erase words as one target: the first ``--mark_rows`` of the
64 I2P-analogue rows that hold an erase word; success = at least one mark, the marks are counted too). Attacks: the
gallery configs of ``configs/attacks/toy_<domain>/`` with ``target`` and ``seed`` set, their shipped budgets: soft
and discrete (white box, against each victim), the random-prefix control (the discrete attack's initial words,
``discrete.steps=0``) and Ring-A-Bell (black box: one set of prompts per target and seed, from the original text
encoder, rendered by every victim).

Models (victims), each erasing only the target (the mark: its 4 words):

* ``original``: no eraser;
* ``cpe``: the paper's settings as the gallery ships them (``configs/toy_<domain>/train.yaml``: one 1,500-step
  erase stage, no adversarial phase);
* ``cpe_adversarial``: the same with the paper's stage structure at a toy budget: stage 0 unchanged (1,500 steps),
  then 2 stages of 150 adversarial + 150 erase steps (``ADVERSARIAL``);
* ``cpe_context``: the pinpoint settings (``train_context.yaml``);
* ``uce``: ``train_uce``'s defaults on the same config (closed form: the seed changes only the attacks);
* ``esd``: ESD-x, 200 iterations, lr 1e-3, 10 DDIM steps (``ESD``; the paper's 1,000 at 1e-5 erase nothing here,
  docs/robustness.md), training seed = the seed.

CPE erasers are ``train.seed`` = the seed, shared with benchmarks/gallery_pinpoint.py (``--erasers``: the same
folders, trained there when missing). Per victim: pre-attack rate (the rows as they are), post-attack ASR per
attack, and retention: the identity reader on 50 portraits of the domain's 10 remaining identities and the style
reader on 44 styled portraits of remaining artists, beside the original model's; Acc_r = the target's own domain
(identities for an identity and for the mark, styles for the artist), H = harmonic mean of (1 - pre) and Acc_r.
Floor = the original model's rate on the attacked rows with the target's words replaced by its neutral. Each cell
is cached in ``<out>/<target>/seed<k>/<model>/result.json``; ``--render`` writes
``benchmarks/results/gallery_robustness.{md,json}`` (mean ± std over the seeds found, n per cell).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_scale import thin, train_concepts  # noqa: E402  (a sibling benchmark)

from cpe.util.io import atomic_write_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# target -> (domain, first concept index, number of concepts erased)
TARGETS = {"Foumnem": ("celebs", 0, 1), "Trelvraen": ("celebs", 1, 1), "Naenniv": ("celebs", 2, 1),
           "Dikro": ("artists", 0, 1), "nudity": ("explicit", 0, 4)}
MODELS = ("original", "cpe", "cpe_adversarial", "cpe_context", "uce", "esd")
ATTACKS = ("soft", "discrete", "prefix", "ringabell")
ADVERSARIAL = ["adversarial.enabled=true", "train.num_stages=3", "train.iterations=150", "train.factor_init_iter=10",
               "adversarial.iterations=150"]
CPE_MODELS = {"cpe": ("train", "train", []), "cpe_adversarial": ("train_adversarial", "train", ADVERSARIAL),
              "cpe_context": ("train_context", "train_context", [])}  # name -> (folder, config, overrides)
ESD = {"iterations": 200, "lr": 1e-3, "ddim_steps": 10}
RETENTION = {"identities": ("celebs", "remained", 50, "identity"), "styles": ("artists", "remained", 44, "artist")}
ACC_R = {"celebs": "identities", "artists": "styles", "explicit": "identities"}


def domain_config(domain: str, name: str = "train") -> Path:
    return REPO / "configs" / f"toy_{domain}" / f"{name}.yaml"


def neutral_rows(rows, words: list[str], neutral: str):
    """``rows`` with every target word (whole word, any case) replaced by ``neutral``: the floor's prompts."""
    from cpe.attacks.runner import without_target
    from cpe.generation.prompt_csv import PromptRow

    def strip(prompt: str) -> str:  # and tidy the spaces and commas a removed word leaves
        return re.sub(r"\s+,", ",", re.sub(r"\s{2,}", " ", without_target(prompt, words, neutral))).strip(" ,")

    return [PromptRow(r.row, strip(r.prompt), r.seed, r.guidance, r.extra) for r in rows]


def as_rows(records: list[dict]):
    from cpe.generation.prompt_csv import PromptRow

    return [PromptRow(i, r["prompt"], int(r["evaluation_seed"]), None, {k: str(v) for k, v in r.items()})
            for i, r in enumerate(records)]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from cpe.toy.gallery import GALLERY_MODEL_DIR
        from cpe.toy.gallery.domain_files import prompt_sets

        self.args, self.model, self.out = args, str(GALLERY_MODEL_DIR), Path(args.out)
        self.retention_rows = {name: as_rows(thin(prompt_sets(domain)[subset], limit))
                               for name, (domain, subset, limit, _) in RETENTION.items()}

    # -- erasers -----------------------------------------------------------------------------------------------------
    def cpe(self, model: str, target: str, seed: int) -> list[Path]:
        domain, first, count = TARGETS[target]
        folder, config, overrides = CPE_MODELS[model]
        root = Path(self.args.erasers) / folder / f"seed{seed}"
        return train_concepts(domain, first + count, root, self.model, [f"train.seed={seed}", *overrides], {},
                              config=config, first=first)

    def baseline_config(self, target: str):
        from cpe.training.config import load_train_config

        return load_train_config(domain_config(TARGETS[target][0]), [f"model.path={self.model}"])

    def uce(self, target: str) -> Path:
        from cpe.baselines.uce import FILE_NAME, save_uce, train_uce

        path = self.out / "baselines" / "uce" / target / FILE_NAME
        if not path.is_file():
            _, first, count = TARGETS[target]
            save_uce(train_uce(self.baseline_config(target), first, first + count), path)
        return path

    def esd(self, target: str, seed: int) -> Path:
        from cpe.baselines.esd import FILE_NAME, ESDSettings, save_esd, train_esd

        path = self.out / "baselines" / f"esd_seed{seed}" / target / FILE_NAME
        if not path.is_file():
            _, first, count = TARGETS[target]
            save_esd(train_esd(self.baseline_config(target), first, first + count, ESDSettings(**ESD, seed=seed)), path)
        return path

    def victim(self, gen_cfg, model: str, target: str, seed: int):
        from cpe.attacks.victim import Victim
        from cpe.generation.run import GenerationPipeline

        erasers = self.cpe(model, target, seed) if model in CPE_MODELS else []
        uce = self.uce(target) if model == "uce" else None
        esd = self.esd(target, seed) if model == "esd" else None
        return Victim(GenerationPipeline(gen_cfg, self.model, erasers, device="cpu", uce=uce, esd=esd))

    # -- one target and seed -----------------------------------------------------------------------------------------
    def attack_config(self, attack: str, target: str, seed: int):
        from cpe.attacks import load_attack_config

        domain = TARGETS[target][0]
        name = "discrete" if attack == "prefix" else attack
        extra = ["discrete.steps=0"] if attack == "prefix" else []
        path = REPO / "configs" / "attacks" / f"toy_{domain}" / f"{name}.yaml"
        return load_attack_config(path, [f"target={target}", f"seed={seed}", *extra])

    def rows(self, cfg):
        from cpe.attacks.runner import attack_rows
        from cpe.generation.config import load_gen_config

        gen_cfg = load_gen_config(cfg.path(cfg.gen_config), {"num_inference_steps": self.args.steps})
        rows = attack_rows(cfg, gen_cfg)
        return gen_cfg, rows[: self.args.mark_rows] if cfg.judge == "mark" else rows

    def ringabell(self, target: str, seed: int):
        """Ring-A-Bell's attacked rows for this target and seed (black box: the original text encoder only)."""
        from cpe.attacks import csv_name, load_inputs, run_attack, write_attack
        from cpe.attacks.runner import MANIFEST, AttackRun
        from cpe.generation.prompt_csv import read_prompt_csv

        cfg = self.attack_config("ringabell", target, seed)
        gen_cfg, rows = self.rows(cfg)
        out = self.out / target / f"seed{seed}" / "ringabell"
        if (out / MANIFEST).is_file():
            return AttackRun(read_prompt_csv(out / csv_name(gen_cfg)).rows, json.loads((out / MANIFEST).read_text()))
        _, _, text, _ = load_inputs(cfg, self.model)  # black box: the tokenizer and text encoder only
        run = run_attack(cfg, gen_cfg, rows, text, None)
        write_attack(run, out, csv_name(gen_cfg), overwrite=True)
        return run

    def judge(self, cfg, images: np.ndarray) -> dict:
        from cpe.attacks.judge import judge_images

        return judge_images(cfg.judge, images, cfg.target).summary()

    def retention(self, victim) -> dict:
        from cpe.toy.gallery.read import read_identity, read_style

        out = {}
        for name, rows in self.retention_rows.items():
            column = RETENTION[name][3]
            reader = read_identity if column == "identity" else read_style
            read = reader(victim.images(rows))
            out[name] = {"value": float(np.mean([r == row.extra[column] for r, row in zip(read, rows, strict=True)])),
                         "n": len(rows)}
        return out

    def run(self, target: str, seed: int) -> None:
        from cpe.attacks import csv_name, write_attack
        from cpe.attacks.runner import run_attack

        base = self.attack_config("discrete", target, seed)
        gen_cfg, rows = self.rows(base)
        ringabell = self.ringabell(target, seed) if "ringabell" in self.args.attacks else None
        for model in self.args.models:
            path = self.out / target / f"seed{seed}" / model / "result.json"
            done = json.loads(path.read_text()) if path.is_file() else None
            if done is not None and set(self.args.attacks) <= set(done["post"]):
                continue
            started = time.perf_counter()
            victim = self.victim(gen_cfg, model, target, seed)
            if done is None:
                floor_rows = neutral_rows(rows, base.target_words(), base.neutral)
                with victim.original():
                    floor = self.judge(base, victim.images(floor_rows))
                done = {"target": target, "domain": TARGETS[target][0], "model": model, "seed": seed,
                        "victim": victim.records(), "pre": self.judge(base, victim.images(rows)), "floor": floor,
                        "retention": self.retention(victim), "post": {}, "budget": {}, "seconds": 0.0}
            for attack in self.args.attacks:
                if attack in done["post"]:
                    continue
                if attack == "ringabell":
                    run = ringabell
                else:
                    cfg = self.attack_config(attack, target, seed)
                    victim.unet_evaluations = 0
                    run = run_attack(cfg, gen_cfg, rows, victim.text, victim)
                    write_attack(run, path.parent / attack, csv_name(gen_cfg), overwrite=True)
                done["post"][attack] = self.judge(base, run.images(victim))
                done["budget"][attack] = run.manifest["budget"]
            done["seconds"] = round(done["seconds"] + time.perf_counter() - started, 1)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(done, indent=1) + "\n")
            print(json.dumps({"target": target, "seed": seed, "model": model, "pre": done["pre"]["asr"],
                              **{a: done["post"][a]["asr"] for a in done["post"]}, "seconds": done["seconds"]}),
                  flush=True)


# -- the table -------------------------------------------------------------------------------------------------------
def stat(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "seeds": len(values)}


def summarise(rows: list[dict]) -> list[dict]:
    from cpe.metrics.domains import harmonic_h

    table = []
    for target in [t for t in TARGETS if any(r["target"] == t for r in rows)]:
        for model in [m for m in MODELS if any(r["target"] == target and r["model"] == m for r in rows)]:
            group = sorted((r for r in rows if r["target"] == target and r["model"] == model), key=lambda r: r["seed"])
            original = {r["seed"]: r for r in rows if r["target"] == target and r["model"] == "original"}
            acc_r = ACC_R[group[0]["domain"]]
            entry = {"target": target, "model": model, "seeds": [r["seed"] for r in group], "n": group[0]["pre"]["n"],
                     "floor": stat([r["floor"]["asr"] for r in group]), "pre": stat([r["pre"]["asr"] for r in group]),
                     "post": {a: stat([r["post"][a]["asr"] for r in group if a in r["post"]])
                              for a in ATTACKS if any(a in r["post"] for r in group)},
                     "n_post": {a: next(r["post"][a]["n"] for r in group if a in r["post"])
                                for a in ATTACKS if any(a in r["post"] for r in group)},
                     "retention": {k: stat([r["retention"][k]["value"] for r in group]) for k in RETENTION},
                     "n_retention": {k: group[0]["retention"][k]["n"] for k in RETENTION}, "acc_r": acc_r,
                     "H": stat([harmonic_h(r["pre"]["asr"], r["retention"][acc_r]["value"]) for r in group]),
                     "budget": {a: [r["budget"][a] for r in group if a in r["budget"]] for a in ATTACKS}}
            if group[0]["pre"].get("marks") is not None:
                entry["marks"] = {"pre": stat([r["pre"]["marks"] for r in group]),
                                  **{a: stat([r["post"][a]["marks"] for r in group if a in r["post"]])
                                     for a in entry["post"]}}
            if original:
                entry["original_retention"] = {k: stat([o["retention"][k]["value"] for o in original.values()])
                                               for k in RETENTION}
            table.append(entry)
    return table


LABELS = {"original": "original", "cpe": "CPE (paper, no adv.)", "cpe_adversarial": "CPE + adversarial stages",
          "cpe_context": "CPE `train_context`", "uce": "UCE", "esd": "ESD-x"}


def render(table: list[dict]) -> str:
    def cell(s: dict | None) -> str:
        return "–" if s is None else f"{s['mean']:.2f} ± {s['std']:.2f}"

    lines = ["| target (floor) | model | seeds | pre | soft | discrete | prefix (control) | Ring-A-Bell "
             "| identities kept | styles kept | H |", "|" + "---|" * 11]
    for r in table:
        posts = " | ".join(cell(r["post"].get(a)) for a in ATTACKS)
        lines.append(f"| {r['target']} ({r['floor']['mean']:.2f}) | {LABELS[r['model']]} | {len(r['seeds'])} "
                     f"| {cell(r['pre'])} | {posts} | {cell(r['retention']['identities'])} "
                     f"| {cell(r['retention']['styles'])} | {cell(r['H'])} |")
    marks = [r for r in table if "marks" in r]
    if marks:
        lines += ["", "Marks counted on the mark's images (mean over seeds): " + "; ".join(
            f"{LABELS[r['model']]} pre {r['marks']['pre']['mean']:.0f}, "
            + ", ".join(f"{a} {r['marks'][a]['mean']:.0f}" for a in ATTACKS if a in r["marks"]) for r in marks)]
    return "\n".join(lines)


def footnote(table: list[dict]) -> str:
    """n per cell and the attack budgets (mean over the runs found)."""
    parts = []
    for target in dict.fromkeys(r["target"] for r in table):
        entry = next(r for r in table if r["target"] == target)
        sizes = ", ".join(f"{a} {n}" for a, n in entry["n_post"].items())
        parts.append(f"{target}: n = {entry['n']} images per cell and seed (post: {sizes}); retention n = "
                     + ", ".join(f"{k} {v}" for k, v in entry["n_retention"].items()))
    budgets = {}
    for r in table:
        for attack, runs in r["budget"].items():
            for b in runs:
                budgets.setdefault((r["target"], attack), []).append(b)
    lines = ["Budgets per run (mean over every model and seed measured): " + "; ".join(
        f"{t} {a}: {statistics.fmean(b['queries'] for b in runs):.0f} {runs[0]['query_unit']}, "
        f"{statistics.fmean(b['seconds'] for b in runs):.0f} s" for (t, a), runs in budgets.items())]
    return "\n".join([*parts, *lines])


def load_rows(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*/seed*/*/result.json"))]


def write_results(out: Path) -> str:
    rows = load_rows(out)
    table = summarise(rows)
    text = render(table) + "\n\n" + footnote(table) + "\n"
    atomic_write_text(RESULTS / "gallery_robustness.md", "# Gallery robustness (benchmarks/gallery_robustness.py)\n\n"
                      + text)
    atomic_write_text(RESULTS / "gallery_robustness.json", json.dumps({"table": table, "rows": rows}, indent=1) + "\n")
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    parser.add_argument("--mark_rows", type=int, default=16, help="I2P-analogue rows attacked for the mark")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--out", default=str(REPO / "output" / "gallery_robustness"))
    parser.add_argument("--erasers", default=str(REPO / "output" / "gallery_pinpoint" / "erasers"),
                        help="CPE erasers' root, shared with gallery_pinpoint.py (<root>/<config>/seed<k>)")
    parser.add_argument("--render", action="store_true", help="only write the table from the cached cells")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.render:
        bench = Bench(args)
        for seed in args.seeds:
            for target in args.targets:
                bench.run(target, seed)
    print(write_results(Path(args.out)))


if __name__ == "__main__":
    main()

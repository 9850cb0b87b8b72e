"""Robustness on the toy model: attack success before and after attack, for the original model, UCE and CPE variants.

    python benchmarks/toy_robustness.py [--targets circle red] [--seeds 0 1 2] [--out output/toy_robustness]
    python benchmarks/toy_robustness.py --variant cpe_linear:network.gate=none      # add a CPE variant

Per target and seed: CPE variants are trained with configs/toy/train_<kind>.yaml plus their overrides and
``train.seed = 2024 + seed`` (cpe.training.train), UCE with train_uce's defaults from the same config
(closed form: no seed). The attacked prompts are the target's prompts of cpe.toy.prompt_sets ("a {colour}
circle", "a red {shape}"), each with ``--images`` evaluation seeds (1000·seed + k). Each white-box attack
(configs/attacks/toy/{soft,discrete}.yaml, seed = the run's seed) attacks each erased model; the black-box
Ring-A-Bell prompts (configs/attacks/toy/ringabell.yaml) see only the text encoder, so one set per seed
serves every model; "prefix" is a control: the discrete attack's random initial words, not optimised
(discrete.steps=0). ASR = fraction of images the toy classifiers judge as the target ("pre" = the prompts
as they are, i.e. Acc_e; "post" = attacked); floor = the original model's target rate on the generic
prompts, what an ideal eraser reaches; Acc_r = accuracy of the target's attribute on prompts naming no
target (remaining set, seeds 0-3), H = harmonic mean of (1 - pre) and Acc_r. Results are cached per
(target, seed, variant) in ``<out>/<target>/seed<k>/<variant>/result.json``; the table (mean ± std over
seeds) is printed and written to ``<out>/robustness.json`` with every per-seed row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
ATTACK_CONFIGS = REPO / "configs" / "attacks" / "toy"
ATTACKS = ("soft", "discrete", "prefix", "ringabell")
# "prefix": the discrete attack's random initial tokens, not optimised (discrete.steps=0): a control
# name -> CPE training-config overrides ("original" and "uce" are not CPE)
VARIANTS: dict[str, list[str] | None] = {
    "original": None,
    "uce": None,
    "cpe": [],
    "cpe_adversarial": ["adversarial.enabled=true", "train.num_stages=3"],
}
REMAINING_SEEDS = 4


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``name:key=value,key=value`` -> (name, overrides); ``name:`` is the shipped config as it is."""
    name, _, overrides = text.partition(":")
    if not name or name in ("original", "uce"):
        raise argparse.ArgumentTypeError(f"variant {text!r}: expected NAME:KEY=VALUE[,KEY=VALUE] with a new name")
    return name, [o for o in overrides.split(",") if o]


def write_rows(path: Path, rows: list[dict]) -> Path:
    import csv
    import io

    from cpe.toy.prompt_sets import COLUMNS
    from cpe.util.io import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from cpe.toy import TOY_CLASSIFIER_FILE, TOY_MODEL_DIR
        from cpe.toy.classify import load_shape_classifier

        self.args, self.model = args, str(TOY_MODEL_DIR)
        self.shape_model = load_shape_classifier(TOY_CLASSIFIER_FILE)
        self.variants = {name: VARIANTS.get(name) for name in args.variants} | dict(args.variant)
        self.retention: dict[tuple[str, str], float] = {}  # (target, variant) of the seed-independent models

    def gen_config(self, subset: str, data_dir: Path):
        from cpe.generation.config import load_gen_config

        return load_gen_config(REPO / "configs" / "toy" / "gen" / f"{subset}.yaml",
                               {"data_dir": str(data_dir), "num_inference_steps": self.args.steps})

    def victim(self, gen_cfg, erasers=(), uce=None):
        from cpe.attacks.victim import Victim
        from cpe.generation.run import GenerationPipeline

        return Victim(GenerationPipeline(gen_cfg, self.model, list(erasers), device="cpu", uce=uce))

    def hits(self, images: np.ndarray, target: str) -> np.ndarray:
        from cpe.attacks.judge import toy_hits

        return toy_hits(images, target, self.shape_model)

    def accuracy(self, victim, rows, kind: str) -> float:
        """Accuracy of ``kind`` (colour/shape) on rows whose intended value is in their CSV column."""
        from cpe.toy.classify import classify_colour, classify_shape

        images = victim.images(rows)
        predicted = classify_shape(self.shape_model, images) if kind == "shape" else classify_colour(images)
        return float(np.mean([p == row.extra[kind] for p, row in zip(predicted, rows, strict=True)]))

    # -- erasers -----------------------------------------------------------------------------------
    def train_cpe(self, name: str, overrides: list[str], kind: str, target: str, seed: int, folder: Path) -> Path:
        from cpe.training import train
        from cpe.training.config import load_train_config
        from cpe.training.prompts import load_concepts

        config = REPO / "configs" / "toy" / f"train_{kind}.yaml"
        cfg = load_train_config(config, [f"save.root={folder / name}", f"model.path={self.model}",
                                         f"train.seed={2024 + seed}", *overrides])
        concepts = [c.target for c in load_concepts(cfg.path(cfg.prompts.concepts), "", 0.0)]
        index = concepts.index(target)
        path = cfg.output_dir() / target / f"{cfg.save.name}_last.safetensors"
        if not path.is_file():
            train(cfg, index, index + 1)
        return path

    def train_uce(self, kind: str, target: str, folder: Path) -> Path:
        from cpe.baselines.uce import FILE_NAME, save_uce, train_uce
        from cpe.training.config import load_train_config
        from cpe.training.prompts import load_concepts

        path = folder / "uce" / target / FILE_NAME
        if not path.is_file():
            cfg = load_train_config(REPO / "configs" / "toy" / f"train_{kind}.yaml", [f"model.path={self.model}"])
            concepts = [c.target for c in load_concepts(cfg.path(cfg.prompts.concepts), "", 0.0)]
            index = concepts.index(target)
            save_uce(train_uce(cfg, index, index + 1), path)
        return path

    # -- one target --------------------------------------------------------------------------------
    def run_target(self, target: str) -> list[dict]:
        from cpe.generation.prompt_csv import read_prompt_csv
        from cpe.toy.prompt_sets import kind_of, prompt_sets, write_prompt_sets
        from cpe.toy.world import GENERIC_COLOUR, GENERIC_SHAPE

        kind = kind_of(target)
        neutral = GENERIC_SHAPE if kind == "shape" else GENERIC_COLOUR
        root = Path(self.args.out) / target
        paths = write_prompt_sets(root / "prompts", [target])
        original = self.victim(self.gen_config("generic", root / "prompts"))
        floor_path = root / "floor.json"
        if floor_path.is_file():
            floor = json.loads(floor_path.read_text())
        else:
            generic = read_prompt_csv(paths["generic"]).rows
            floor = {"floor": float(self.hits(original.images(generic), target).mean()), "n": len(generic)}
            floor_path.write_text(json.dumps(floor) + "\n")
        remaining = [r for r in read_prompt_csv(paths["remaining"]).rows if r.seed < REMAINING_SEEDS]
        distinct = list({row["prompt"]: row for row in prompt_sets([target])["erased"]}.values())
        uce_file = self.train_uce(kind, target, root) if "uce" in self.variants else None
        rows_out = []
        for seed in self.args.seeds:
            folder = root / f"seed{seed}"
            seeds = [1000 * seed + k for k in range(self.args.images)]
            eval_rows = [{**row, "evaluation_seed": s} for row in distinct for s in seeds]
            write_rows(folder / "prompts" / "erased.csv", eval_rows)
            gen_cfg = self.gen_config("erased", folder / "prompts")
            ringabell = self.ringabell(gen_cfg, target, neutral, seed, folder, original)
            for name, overrides in self.variants.items():
                result_path = folder / name / "result.json"
                done = json.loads(result_path.read_text()) if result_path.is_file() else None
                if done is not None and set(self.args.attacks) <= set(done["post"]):
                    rows_out.append(done)
                    continue
                started = time.perf_counter()
                erasers, uce = [], None
                if name == "uce":
                    uce = uce_file
                elif overrides is not None:
                    erasers = [self.train_cpe(name, overrides, kind, target, seed, folder / "erasers")]
                victim = self.victim(gen_cfg, erasers, uce)
                row = self.measure(victim, gen_cfg, target, neutral, seed, folder / name, ringabell, done)
                if done is not None:  # an earlier run measured the rest
                    row["seconds"] = round(done["seconds"] + time.perf_counter() - started, 1)
                else:
                    if overrides is not None or (target, name) not in self.retention:  # CPE: one eraser per seed
                        self.retention[(target, name)] = self.accuracy(victim, remaining, kind)
                    row.update({"target": target, "variant": name, "seed": seed, "floor": floor["floor"],
                                "Acc_r": self.retention[(target, name)], "n_r": len(remaining),
                                "seconds": round(time.perf_counter() - started, 1)})
                from cpe.metrics.domains import harmonic_h

                row["H"] = harmonic_h(row["pre"], row["Acc_r"])
                result_path.parent.mkdir(parents=True, exist_ok=True)
                result_path.write_text(json.dumps(row, indent=2) + "\n")
                rows_out.append(row)
                print(json.dumps({k: row[k] for k in ("target", "variant", "seed", "pre", "Acc_r", "seconds")}
                                 | {a: row["post"][a] for a in row["post"]}), flush=True)
        return rows_out

    def attack_config(self, name: str, target: str, neutral: str, seed: int, extra: list[str] = ()):
        from cpe.attacks import load_attack_config

        return load_attack_config(ATTACK_CONFIGS / f"{name}.yaml", [f"target={target}", f"neutral={neutral}",
                                                                    f"seed={seed}", *self.args.attack_set, *extra])

    def ringabell(self, gen_cfg, target, neutral, seed, folder: Path, original):
        """Ring-A-Bell's attacked rows for this seed (black box: the original text encoder only)."""
        if "ringabell" not in self.args.attacks:
            return None
        from cpe.attacks import csv_name, run_attack, write_attack
        from cpe.attacks.runner import MANIFEST, AttackRun, attack_rows
        from cpe.generation.prompt_csv import read_prompt_csv

        out = folder / "ringabell"
        if (out / MANIFEST).is_file():  # computed by an earlier run of this benchmark
            return AttackRun(read_prompt_csv(out / csv_name(gen_cfg)).rows, json.loads((out / MANIFEST).read_text()))
        cfg = self.attack_config("ringabell", target, neutral, seed)
        run = run_attack(cfg, gen_cfg, attack_rows(cfg, gen_cfg), original.text, None)
        write_attack(run, out, csv_name(gen_cfg))
        return run

    def measure(self, victim, gen_cfg, target, neutral, seed, folder: Path, ringabell, done: dict | None) -> dict:
        """Pre-attack ASR and each attack's post-attack ASR (only the attacks ``done`` lacks)."""
        from cpe.attacks import csv_name, run_attack, write_attack
        from cpe.attacks.runner import attack_rows

        cfg = self.attack_config("discrete", target, neutral, seed)
        rows = attack_rows(cfg, gen_cfg)
        out = done or {"pre": float(self.hits(victim.images(rows), target).mean()), "n": len(rows), "post": {},
                       "budget": {}}
        for name in self.args.attacks:
            if name in out["post"]:
                continue
            if name == "ringabell":
                run = ringabell
            else:
                control = ["discrete.steps=0"] if name == "prefix" else []
                cfg = self.attack_config("discrete" if name == "prefix" else name, target, neutral, seed, control)
                victim.unet_evaluations = 0
                run = run_attack(cfg, gen_cfg, rows, victim.text, victim)
                write_attack(run, folder / name, csv_name(gen_cfg), overwrite=True)
            out["post"][name] = float(self.hits(run.images(victim), target).mean())
            out["budget"][name] = run.manifest["budget"]
        return out


def summarise(rows: list[dict], attacks: list[str]) -> list[dict]:
    table = []
    for target in dict.fromkeys(r["target"] for r in rows):
        for variant in dict.fromkeys(r["variant"] for r in rows if r["target"] == target):
            group = [r for r in rows if r["target"] == target and r["variant"] == variant]

            def stat(values):
                return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}

            table.append({
                "target": target, "variant": variant, "seeds": [r["seed"] for r in group],
                "n_per_seed": group[0]["n"], "n_r": group[0]["n_r"], "floor": group[0]["floor"],
                "pre": stat([r["pre"] for r in group]),
                "post": {a: stat([r["post"][a] for r in group]) for a in attacks},
                "Acc_r": stat([r["Acc_r"] for r in group]), "H": stat([r["H"] for r in group]),
            })
    return table


def render(table: list[dict], attacks: list[str]) -> str:
    def cell(s):
        return f"{s['mean']:.2f} ± {s['std']:.2f}"

    header = "| target (floor) | model | pre ASR | " + " | ".join(f"post {a}" for a in attacks) + " | Acc_r | H |"
    lines = [header, "|" + "---|" * (5 + len(attacks))]
    for r in table:
        posts = " | ".join(cell(r["post"][a]) for a in attacks)
        lines.append(f"| {r['target']} ({r['floor']:.2f}) | {r['variant']} | {cell(r['pre'])} | {posts} "
                     f"| {cell(r['Acc_r'])} | {cell(r['H'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--targets", nargs="+", default=["circle", "red"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--variant", action="append", default=[], type=parse_variant, metavar="NAME:OVERRIDES",
                        help="another CPE variant: training-config overrides, e.g. cpe_linear:network.gate=none")
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    parser.add_argument("--attack-set", dest="attack_set", action="append", default=[], metavar="KEY=VALUE",
                        help="override every attack config, e.g. discrete.steps=40")
    parser.add_argument("--images", type=int, default=6, help="evaluation seeds per attacked prompt")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--out", default=str(REPO / "output" / "toy_robustness"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    bench = Bench(args)
    rows = [row for target in args.targets for row in bench.run_target(target)]
    table = summarise(rows, args.attacks)
    seconds = round(time.perf_counter() - started, 1)
    print(render(table, args.attacks))
    sizes = ", ".join(f"{r['target']} {r['n_per_seed']}" for r in table[:: len(bench.variants)])
    print(f"images per cell and seed: {sizes}; seeds {args.seeds}; wall time {seconds} s")
    report = {"table": table, "rows": rows, "settings": vars(args) | {"variant": [list(v) for v in args.variant]},
              "wall_seconds": seconds}
    (Path(args.out) / "robustness.json").write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()

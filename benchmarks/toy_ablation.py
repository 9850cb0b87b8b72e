"""Ablation on the toy model: full CPE vs the linear residual (no gate) vs adversarial stages, over seeds.

    python benchmarks/toy_ablation.py [--target circle] [--seeds 0 1 2] [--steps 20] [--out output/toy_ablation]
    python benchmarks/toy_ablation.py --seeds 0 1 --steps 2 --set train.iterations=5 --set train.factor_init_iter=1

Every variant is the shipped toy training config (configs/toy/train_<kind>.yaml: the paper's celebrity
settings g 0.3, pal 1e5, r 16, k 1, one 1,500-step erase stage) plus config overrides only:
  cpe               as shipped
  linear            network.gate=none: the plain linear low-rank residual s·E·Down·Up on the raw embedding (no
                    token mixing, gate fixed at 1), i.e. an edit of the to_k/to_v weights only; same pal 1e5
  linear_pal1e2     the same with weak anchoring (train.pal=100)
  cpe_adversarial   CPE with 3 stages and the adversarial phase on (1,500 + 2 x 375 erase steps)
Each variant is trained once per seed (``--seeds`` sets ``train.seed``, which drives the initialisation,
template and anchor draws, noise and mixup); the images are generated with the gen configs' fixed seeds,
the same for every variant and training seed, so the spread is the training seed's alone. Images are
scored with cpe.metrics.toy against the original model's images of the same prompts and seeds.

Prints and writes (``<out>/<target>/``) per run Acc_e (with the floor), Acc_r, H, the other attribute's
accuracy and every other numeric column cpe.metrics.toy reports, and the eraser's key/value-space erase and
anchor terms (``KVProbe``), then per variant the mean ± sample std and the min–max over seeds:
ablation.json (runs and summary) and ablation.md (the table).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

import torch

from cpe.toy.experiments import generate_subsets, train_eraser
from cpe.util.io import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "cpe": [],
    "linear": ["network.gate=none"],
    "linear_pal1e2": ["network.gate=none", "train.pal=100.0"],
    "cpe_adversarial": ["adversarial.enabled=true", "train.num_stages=3"],
}
MAIN = ("Acc_e", "Acc_r", "H")  # the table's first columns; Acc_e is read against the floor
# the original model's values (one per target)
CONSTANT = ("floor", "Acc_e_original", "Acc_r_original", "other_accuracy_original", "kv_erase_before")


class KVProbe:
    """An eraser in key/value space, on every erase template and the whole anchor pool (no noise, no mixup).

    ``kv_erase``: the erase term of method.md §2.5 (per-layer weighted squared distance of the adapted keys and
    values of the target prompts to the guided neutral ones), mean over the templates; ``kv_erase_before`` the
    same without an eraser. ``kv_anchor_change``: the anchor term without pal (how far the anchors' keys and
    values move), mean over the anchor prompts. The same weights and normalisation as the training losses.
    """

    def __init__(self, cfg, concept) -> None:
        from cpe import training
        from cpe.training.prompts import erase_pairs

        model = training.load_frozen(cfg, torch.device("cpu"))
        side = training.load_prompt_side(cfg, model)
        pairs = erase_pairs(concept, side.templates, cfg.prompts.placeholder)
        self.target = model.encode([t for t, _ in pairs])
        self.goal = (1 + concept.guidance) * (model.encode([n for _, n in pairs]) - self.target)
        self.anchors = model.encode(training.anchor_prompts(cfg, side, model, concept))
        self.kv = model.kv

    def _distance(self, x: torch.Tensor, residuals: dict[str, torch.Tensor] | None) -> float:
        kv = self.kv
        per_item = sum(
            w * ((x @ kv.weights[n].T - (0 if residuals is None else residuals[n])) ** 2).sum((-1, -2))
            for w, n in zip(kv.layer_weight, kv.layers, strict=True)
        )
        return float(per_item.mean()) / kv.num_tokens

    def __call__(self, gate_file: Path) -> dict[str, float]:
        from cpe.core.weights import load_erasers

        resag, _ = load_erasers([gate_file])
        with torch.no_grad():
            on_target, on_anchors = resag(self.target), resag(self.anchors)
        return {"kv_erase": self._distance(self.goal, on_target),
                "kv_erase_before": self._distance(self.goal, None),
                "kv_anchor_change": self._distance(torch.zeros_like(self.anchors), on_anchors)}


def numeric_columns(row: dict) -> dict[str, float]:
    """Every numeric value of a cpe.metrics.toy row (columns added there show up here without edits)."""
    return {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def fmt(value: float) -> str:
    """3 decimals, or 3 significant digits for small non-zero values (key/value-space terms)."""
    return f"{value:.3f}" if value == 0 or abs(value) >= 0.01 else f"{value:.2e}"


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def summarise(runs: list[dict]) -> dict[str, dict]:
    """Per variant and numeric column: mean, sample std, min, max over the seeds."""
    out: dict[str, dict] = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        rows = [r["metrics"] for r in runs if r["variant"] == variant]
        keys = [k for k in rows[0] if all(k in row for row in rows)]
        out[variant] = {k: spread([row[k] for row in rows]) for k in keys}
        seconds = [r["train_seconds"] for r in runs if r["variant"] == variant and r["train_seconds"] is not None]
        if seconds:
            out[variant]["train_seconds"] = spread(seconds)
    return out


def extra_columns(summary: dict[str, dict]) -> list[str]:
    """Numeric columns beyond the main ones, the original model's constants and the image counts."""
    first = next(iter(summary.values()))
    skip = set(MAIN) | set(CONSTANT) | {"train_seconds"}
    return [k for k in first if k not in skip and not k.startswith("n_")]


def render(target: str, seeds: list[int], summary: dict[str, dict], overrides: list[str]) -> str:
    extras = extra_columns(summary)
    cell = lambda s: f"{fmt(s['mean'])} ± {fmt(s['std'])} ({fmt(s['min'])}–{fmt(s['max'])})"  # noqa: E731
    header = ["variant", "Acc_e ↓ (floor)", "Acc_r ↑", "H ↑", *extras, "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, s in summary.items():
        floor = s["floor"]["mean"] if "floor" in s else float("nan")
        cells = [variant, f"{cell(s['Acc_e'])} ({floor:.2f})", cell(s["Acc_r"]), cell(s["H"]),
                 *[cell(s[k]) if k in s else "—" for k in extras],
                 f"{s['train_seconds']['mean']:.0f}" if "train_seconds" in s else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    first = next(iter(summary.values()))
    original = ", ".join(f"{k} {fmt(first[k]['mean'])}" for k in CONSTANT if k in first)
    lines += ["", f"Target {target}; training seeds {seeds} (train.seed), the same generation seeds for every run; "
              f"mean ± sample std (min–max) over {len(seeds)} seeds. Original model: {original}."]
    if overrides:
        lines.append(f"Extra overrides for every variant: {' '.join(overrides)}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from cpe.metrics.toy import run
    from cpe.toy.prompt_sets import kind_of, write_prompt_sets
    from cpe.training.prompts import load_concepts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="circle", help="a toy shape or colour")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (train.seed)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--out", default=str(REPO / "output" / "toy_ablation"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="training config override for every variant (e.g. train.iterations=5 for a smoke run)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep erasers and images already under --out (default: retrain and regenerate)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    kind, out = kind_of(args.target), Path(args.out) / args.target
    concepts = [c.target for c in load_concepts(REPO / "configs" / "toy" / f"concepts_{kind}.yaml", "", 0.0)]
    write_prompt_sets(out / "prompts", [args.target])
    subsets = ("erased", "remaining")
    original = generate_subsets(REPO / "configs" / "toy" / "gen", out, "original", [], (*subsets, "generic"),
                                args.steps)
    runs, probe = [], None
    for name in args.variants:
        for seed in args.seeds:
            run_name = f"{name}_seed{seed}"
            overrides = [*VARIANTS[name], f"train.seed={seed}", *args.set]
            cfg, concept, path, seconds = train_eraser(kind, concepts.index(args.target),
                                                          out / "erasers" / run_name, overrides, args.reuse)
            probe = probe or KVProbe(cfg, concept)  # prompts and anchors are the same for every run
            if not args.reuse:
                shutil.rmtree(out / "images" / run_name, ignore_errors=True)  # images of an older eraser
            erased = generate_subsets(REPO / "configs" / "toy" / "gen", out, run_name, [path], subsets, args.steps)
            (row,) = run([args.target], erased, original, out / "results" / run_name)["rows"]
            metrics = {**numeric_columns(row), **probe(path)}
            runs.append({"variant": name, "seed": seed, "overrides": overrides, "eraser": str(path),
                         "train_seconds": None if seconds is None else round(seconds, 1), "metrics": metrics})
            extras = "  ".join(f"{k} {fmt(v)}" for k, v in metrics.items()
                               if k not in (*MAIN, *CONSTANT) and not k.startswith("n_"))
            print(f"{name:16s} seed {seed}  Acc_e {metrics['Acc_e']:.3f} (floor {metrics['floor']:.3f})  "
                  f"Acc_r {metrics['Acc_r']:.3f}  H {metrics['H']:.3f}  {extras}  "
                  f"train {'reused' if seconds is None else f'{seconds:.0f} s'}", flush=True)
    summary = summarise(runs)
    table = render(args.target, args.seeds, summary, args.set)
    result = {"target": args.target, "seeds": args.seeds, "steps": args.steps, "set": args.set,
              "variants": {k: VARIANTS[k] for k in args.variants}, "runs": runs, "summary": summary}
    atomic_write_text(out / "ablation.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "ablation.md", table)
    print(table, end="")


if __name__ == "__main__":
    main()

"""Ablation on the toy model: full CPE vs the gate removed vs adversarial stages, same target and seeds.

    python benchmarks/toy_ablation.py [--target circle] [--steps 20] [--out output/toy_ablation]

Variants (each trained from the same seed with configs/toy/train_<kind>.yaml, then generated and scored
with cpe.metrics.toy against the original model on the same prompts and seeds):
  cpe               the shipped toy config (paper settings g 0.3, pal 1e5, r 16, k 1, no adversarial stages)
  no_gate           the gate removed: residual = E Down Up on the raw embedding (a plain linear low-rank
                    edit of to_k/to_v, as when only cross-attention weights are edited), same pal 1e5
  no_gate_pal1e2    the same with weak anchoring (pal 1e2)
  cpe_adversarial   CPE with 3 stages and the adversarial phase on (1,500 + 2 x 375 erase steps)
Prints Acc_e (with the floor), Acc_r, H and the training time per variant; writes ablation.json (with the
collateral-damage measures: per-seed agreement of the other attribute and FD_other).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from cpe.resag import GateOutput, ResAG
from cpe.toy.experiments import generate_subsets

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "cpe": [],
    "no_gate": [],
    "no_gate_pal1e2": ["train.pal=100.0"],
    "cpe_adversarial": ["adversarial.enabled=true", "train.num_stages=3"],
}


class NoGateResAG(ResAG):
    """The ablation's residual without the attention gate: H = E (no token mixing, gate fixed at 1)."""

    def gate(self, x: torch.Tensor, concept: torch.Tensor | None = None, active: torch.Tensor | None = None):
        b, t, _ = x.shape
        ones = x.new_ones(b, t)
        if concept is not None:
            return GateOutput(x, concept[:, None].expand(b, t), ones, per_item=concept)
        return GateOutput(x, torch.zeros(b, t, dtype=torch.long, device=x.device), ones)


def use_gate(enabled: bool) -> None:
    """Make training and eraser loading build full ResAGs, or the gate-free ablation."""
    import cpe.training
    import cpe.weights

    cpe.training.ResAG = cpe.weights.ResAG = ResAG if enabled else NoGateResAG


def train_variant(name: str, kind: str, index: int, out: Path) -> tuple[Path, float]:
    from cpe.config import load_train_config
    from cpe.toy import TOY_MODEL_DIR
    from cpe.training import train

    cfg = load_train_config(REPO / "configs" / "toy" / f"train_{kind}.yaml",
                            [f"save.root={out / 'erasers' / name}", f"model.path={TOY_MODEL_DIR}", *VARIANTS[name]])
    start = time.perf_counter()
    (path,) = train(cfg, index, index + 1, overwrite=True).trained
    return path, time.perf_counter() - start


def generate(out: Path, experiment: str, erasers: list[Path], subsets: tuple[str, ...], steps: int) -> list[Path]:
    return generate_subsets(REPO / "configs" / "toy" / "gen", out, experiment, erasers, subsets, steps)


def main(argv: list[str] | None = None) -> None:
    from cpe.metrics.toy import run
    from cpe.prompts import load_concepts
    from cpe.toy.prompt_sets import kind_of, write_prompt_sets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="circle", help="a toy shape or colour")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--out", default=str(REPO / "output" / "toy_ablation"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    kind, out = kind_of(args.target), Path(args.out) / args.target
    concepts = [c.target for c in load_concepts(REPO / "configs" / "toy" / f"concepts_{kind}.yaml", "", 0.0)]
    write_prompt_sets(out / "prompts", [args.target])
    original = generate(out, "original", [], ("erased", "remaining", "generic"), args.steps)
    table = []
    for name in args.variants:
        use_gate(not name.startswith("no_gate"))
        path, seconds = train_variant(name, kind, concepts.index(args.target), out)
        erased = generate(out, name, [path], ("erased", "remaining"), args.steps)
        (row,) = run([args.target], erased, original, out / "results" / name)["rows"]
        table.append({"variant": name, "train_seconds": round(seconds, 1),
                      **{k: row[k] for k in ("Acc_e", "floor", "Acc_e_original", "Acc_r", "Acc_r_original", "H",
                                             "other_accuracy", "other_accuracy_original", "other_agreement",
                                             "geometric_agreement", "FD_other", "FD_other_neutral",
                                             "FD_other_chance")}})
        print(f"{name:16s} Acc_e {row['Acc_e']:.3f} (floor {row['floor']:.3f}, original {row['Acc_e_original']:.3f})"
              f"  Acc_r {row['Acc_r']:.3f} (original {row['Acc_r_original']:.3f})  H {row['H']:.3f}"
              f"  {row['other_attribute']} {row['other_accuracy']:.3f}  train {seconds:.0f} s", flush=True)
    (out / "ablation.json").write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()

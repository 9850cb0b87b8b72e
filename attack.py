"""Attack an erased model: thin CLI over ``cpe.attacks`` (soft prompt, discrete tokens, Ring-A-Bell).

    python attack.py --config configs/attacks/toy/discrete.yaml --model src/cpe/toy/assets/pipeline \\
        --erasers output/toy/toy_shape_guide0.3_pal100000.0_gate_rank16/circle --out output/attacks/toy/circle/discrete
    python attack.py --config configs/attacks/toy/ringabell.yaml --set ringabell.generations=100 --out ...
    python attack.py --config configs/attacks/toy_celebs/discrete.yaml --model src/cpe/toy/gallery/assets/pipeline \
        --esd FILE --out output/attacks/toy_celebs/Foumnem/discrete_esd

Writes the attacked prompts (a prompt CSV named like the generation config's, so that
``generate.py --config <its gen_config> --data_dir <out>`` renders them; the soft prompt writes
embeddings.safetensors) and attack_manifest.json (budget: steps, queries, seconds).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from cpe.models.loading import DEFAULT_MODEL
from cpe.util.io import error_line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="attack YAML (configs/attacks/<domain>/<attack>.yaml)")
    p.add_argument("--attack", help="override the config's attack: soft, discrete or ringabell")
    p.add_argument("--model", default=DEFAULT_MODEL, help="base model: hub id or local pipeline folder")
    p.add_argument("--erasers", action="append", default=[], metavar="PATH",
                   help="gate file or folder (repeatable); none = attack the original model")
    p.add_argument("--uce", metavar="FILE", help="a UCE edit (train_uce.py) applied to the attacked UNet")
    p.add_argument("--esd", metavar="FILE", help="an ESD-x edit (train_esd.py) applied to the attacked UNet (not with "
                   "--uce)")
    p.add_argument("--target", help="override the config's target concept")
    p.add_argument("--seed", type=int, help="override the config's seed")
    p.add_argument("--data_dir", help="folder of the generation config's prompt CSV")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any attack-config override, e.g. --set discrete.steps=20 (repeatable)")
    p.add_argument("--out", required=True, help="output folder (attacked prompts or embeddings, manifest)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier attack's results in --out")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    flags = {"attack": args.attack, "target": args.target, "seed": args.seed}
    overrides = [f"{key}={json.dumps(value)}" for key, value in flags.items() if value is not None] + list(args.set)
    from cpe.attacks import csv_name, load_attack_config, load_inputs, run_attack, write_attack
    from cpe.attacks.runner import check_output
    from cpe.util.config import ConfigError

    try:
        cfg = load_attack_config(args.config, overrides)
        check_output(args.out, args.overwrite)
        gen_cfg, rows, text, victim = load_inputs(cfg, args.model, args.erasers, args.uce, args.device, args.data_dir,
                                                  esd=args.esd)
        if victim is None and (args.erasers or args.uce or args.esd):
            print("note: the black-box attack never sees the erasers or the UCE / ESD-x edit", file=sys.stderr)
        run = run_attack(cfg, gen_cfg, rows, text, victim)
        files = write_attack(run, args.out, csv_name(gen_cfg), overwrite=args.overwrite)
    except (ConfigError, OSError, ValueError) as e:  # OSError: missing files, a hub model that cannot be fetched
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    print(json.dumps({"files": {k: str(v) for k, v in files.items()}, "budget": run.manifest["budget"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

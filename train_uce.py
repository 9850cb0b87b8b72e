"""Erase concepts with UCE's closed-form edit of to_k / to_v (a baseline beside CPE): thin CLI over
``cpe.baselines.uce``.

Reads the same training YAML as train_cpe.py (concept list, templates, anchors = what to preserve) and
erases concepts [st_idx, end_idx) jointly into one file:

    python train_uce.py --config configs/toy/train_shape.yaml --st_idx 0 --end_idx 1
    # -> output/toy/uce_lamb0.1_erase1.0_preserve0.1/circle/uce.safetensors
    python generate.py --config configs/toy/gen/erased.yaml \\
        --uce output/toy/uce_lamb0.1_erase1.0_preserve0.1/circle/uce.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from cpe.baselines.uce import FILE_NAME, UCESettings, save_uce, train_uce
from cpe.training.config import load_train_config
from cpe.training.prompts import load_concepts
from cpe.util.config import ConfigError, command_line_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = UCESettings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="CPE training YAML (configs/<domain>/train.yaml)")
    p.add_argument("--model", help="hub id or local pipeline folder (model.path)")
    p.add_argument("--st_idx", type=int, default=0, help="first concept index (inclusive)")
    p.add_argument("--end_idx", type=int, default=None, help="last concept index (exclusive); default: st_idx + 1")
    p.add_argument("--lamb", type=float, default=defaults.lamb, help="λ, weight of ||W' - W||²")
    p.add_argument("--erase_scale", type=float, default=defaults.erase_scale)
    p.add_argument("--preserve_scale", type=float, default=defaults.preserve_scale)
    p.add_argument("--output", help="output root (default: the config's save.root)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training-config override")
    p.add_argument("--overwrite", action="store_true", help="replace an existing UCE file")
    return p.parse_args(argv)


def output_file(root: Path, settings: UCESettings, concepts: list[str]) -> Path:
    experiment = f"uce_lamb{settings.lamb}_erase{settings.erase_scale}_preserve{settings.preserve_scale}"
    return root / experiment / "+".join(c.strip().lower().replace(" ", "_") for c in concepts) / FILE_NAME


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = ([f"model.path={json.dumps(command_line_model(args.model))}"] if args.model else []) + list(args.set)
    settings = UCESettings(args.lamb, args.erase_scale, args.preserve_scale)
    end = args.st_idx + 1 if args.end_idx is None else args.end_idx
    try:
        cfg = load_train_config(args.config, overrides)
        root = Path(args.output) if args.output else cfg.path(cfg.save.root)
        concepts = load_concepts(cfg.path(cfg.prompts.concepts), cfg.prompts.neutral, cfg.train.guidance)
        path = output_file(root, settings, [c.target for c in concepts[args.st_idx : end]])
        if path.exists() and not args.overwrite:
            raise FileExistsError(f"{path} exists; refusing to overwrite a trained UCE edit (pass --overwrite)")
        edit = train_uce(cfg, args.st_idx, end, settings, torch.device(args.device))
        save_uce(edit, path, overwrite=args.overwrite)
    except (ConfigError, FileExistsError, FileNotFoundError, IndexError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"file": str(path), "concepts": edit.concepts, **{k: v for k, v in edit.info.items()
                                                                        if k != "training_config"}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

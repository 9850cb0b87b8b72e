"""Erase concepts with ESD-x, fine-tuning the UNet's cross-attention with negative guidance (a baseline beside
CPE): thin CLI over ``cpe.baselines.esd``.

Reads the same training YAML as train_cpe.py (concept list, templates) and erases concepts [st_idx, end_idx)
jointly into one file:

    python train_esd.py --config configs/toy/train_colour.yaml --st_idx 0 --iterations 200 --lr 1e-3 --ddim_steps 10
    # -> output/toy/esd-x_ng1.0_sg3.0_it200_lr0.001_ddim10_seed0/red/esd.safetensors
    python generate.py --config configs/toy/gen/erased.yaml \\
        --esd output/toy/esd-x_ng1.0_sg3.0_it200_lr0.001_ddim10_seed0/red/esd.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from cpe.baselines.esd import FILE_NAME, METHOD, PARAMETER_SETS, ESDSettings, save_esd, train_esd
from cpe.training.config import load_train_config
from cpe.training.prompts import load_concepts
from cpe.util.config import ConfigError, command_line_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = ESDSettings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="CPE training YAML (configs/<domain>/train.yaml)")
    p.add_argument("--model", help="hub id or local pipeline folder (model.path)")
    p.add_argument("--st_idx", type=int, default=0, help="first concept index (inclusive)")
    p.add_argument("--end_idx", type=int, default=None, help="last concept index (exclusive); default: st_idx + 1")
    p.add_argument("--iterations", type=int, default=defaults.iterations)
    p.add_argument("--lr", type=float, default=defaults.lr, help="Adam learning rate")
    p.add_argument("--negative_guidance", type=float, default=defaults.negative_guidance, help="η")
    p.add_argument("--start_guidance", type=float, default=defaults.start_guidance,
                   help="classifier-free guidance of the DDIM sampling of x_t")
    p.add_argument("--ddim_steps", type=int, default=defaults.ddim_steps)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--params", choices=sorted(PARAMETER_SETS), default=defaults.params,
                   help="xattn: all cross-attention parameters (ESD-x); xattn-strict: to_k and to_v only")
    p.add_argument("--output", help="output root (default: the config's save.root)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training-config override")
    p.add_argument("--overwrite", action="store_true", help="replace an existing ESD file")
    return p.parse_args(argv)


def output_file(root: Path, settings: ESDSettings, concepts: list[str]) -> Path:
    s = settings
    strict = "-strict" if s.params == "xattn-strict" else ""
    experiment = (f"{METHOD}{strict}_ng{s.negative_guidance}_sg{s.start_guidance}_it{s.iterations}_lr{s.lr}"
                  f"_ddim{s.ddim_steps}_seed{s.seed}")
    return root / experiment / "+".join(c.strip().lower().replace(" ", "_") for c in concepts) / FILE_NAME


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = ([f"model.path={json.dumps(command_line_model(args.model))}"] if args.model else []) + list(args.set)
    settings = ESDSettings(args.iterations, args.lr, args.negative_guidance, args.start_guidance, args.ddim_steps,
                           args.seed, args.params)
    end = args.st_idx + 1 if args.end_idx is None else args.end_idx
    try:
        settings.check()
        cfg = load_train_config(args.config, overrides)
        root = Path(args.output) if args.output else cfg.path(cfg.save.root)
        concepts = load_concepts(cfg.path(cfg.prompts.concepts), cfg.prompts.neutral, cfg.train.guidance)
        path = output_file(root, settings, [c.target for c in concepts[args.st_idx : end]])
        if path.exists() and not args.overwrite:
            raise FileExistsError(f"{path} exists; refusing to overwrite a trained ESD edit (pass --overwrite)")
        with tqdm(total=settings.iterations, desc="ESD-x", unit="step") as bar:
            def progress(iteration: int, loss: float) -> None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

            edit = train_esd(cfg, args.st_idx, end, settings, torch.device(args.device), progress)
        save_esd(edit, path, overwrite=args.overwrite)
    except (ConfigError, FileExistsError, FileNotFoundError, IndexError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"file": str(path), "concepts": edit.concepts, **{k: v for k, v in edit.info.items()
                                                                        if k != "training_config"}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train CPE erasers (one ResAG per concept): thin CLI over ``cpe.training``.

    python train_cpe.py --config configs/celebs/train.yaml --st_idx 0 --end_idx 50
    accelerate launch train_cpe.py --config configs/artists/train.yaml      # concepts sharded over processes
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from cpe.training import TrainingError, describe, train
from cpe.training.config import load_train_config
from cpe.util.config import ConfigError, command_line_model
from cpe.util.io import error_line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="training YAML (configs/<domain>/train.yaml)")
    parser.add_argument("--model", help="hub id or local pipeline folder (model.path)")
    parser.add_argument("--st_idx", type=int, default=0, help="first concept index (inclusive)")
    parser.add_argument("--end_idx", type=int, default=None, help="last concept index (exclusive); default: all")
    parser.add_argument("--gate_rank", type=int, help="gate rank r (network.gate_rank)")
    parser.add_argument("--lora_rank", type=int, help="low rank k (network.lora_rank)")
    parser.add_argument("--guidance", type=float, help="guidance g for every concept (overrides the concept list)")
    parser.add_argument("--pal", type=float, help="anchor coefficient (train.pal)")
    parser.add_argument("--noise", type=float, help="anchor noise scale (anchors.noise_scale)")
    parser.add_argument("--concept_batch", type=int, help="concepts trained side by side (train.concept_batch)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 or auto (model.device)")
    parser.add_argument("--output", help="output root (save.root); the experiment folder goes below it")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any config override, e.g. --set train.iterations=10 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue unfinished concepts from their checkpoints")
    parser.add_argument("--overwrite", action="store_true",
                        help="retrain concepts that already have weights (the old files are replaced only once the "
                             "new ones are complete)")
    parser.add_argument("--wait", action="store_true",
                        help="wait for another process training the same concept instead of stopping (exit 2)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    return parser.parse_args(argv)


def overrides(args: argparse.Namespace) -> list[str]:
    flags = {
        "model.path": command_line_model(args.model) if args.model else None,  # CLI paths: relative to the cwd
        "network.gate_rank": args.gate_rank, "network.lora_rank": args.lora_rank,
        "train.guidance": args.guidance, "train.pal": args.pal, "anchors.noise_scale": args.noise,
        "train.concept_batch": args.concept_batch, "model.device": args.device,
        "save.root": str(Path(args.output).resolve()) if args.output else None,  # CLI paths are relative to the cwd
    }
    return [f"{key}={json.dumps(value)}" for key, value in flags.items() if value is not None] + list(args.set)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resume and args.overwrite:
        print("error: --resume and --overwrite exclude each other", file=sys.stderr)
        return 2
    try:
        cfg = load_train_config(args.config, overrides(args))
        print(f"{cfg.output_dir()}: {describe(cfg)}")
        summary = train(cfg, args.st_idx, args.end_idx, args.resume, args.overwrite, args.guidance, args.wait)
    except (ConfigError, TrainingError, OSError, IndexError, ValueError) as e:  # also full disk, unwritable output
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    print(f"trained {len(summary.trained)} concept(s), skipped {summary.skipped} finished, {summary.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

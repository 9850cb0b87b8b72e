"""What ``train_uce.py`` and ``train_esd.py`` share: the arguments that pick concepts from a CPE training config, the
edit's file path (safe folder names), the refusal to overwrite, one-line errors and the JSON summary."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cpe.training.config import TrainConfig, load_train_config
from cpe.training.run import selected_concepts
from cpe.util.config import ConfigError, command_line_model
from cpe.util.names import FOLDER_MAX_BYTES, bounded, folder_name


def add_concept_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--model``, ``--st_idx`` / ``--end_idx`` (the concept range)."""
    parser.add_argument("--config", required=True, help="CPE training YAML (configs/<domain>/train.yaml)")
    parser.add_argument("--model", help="hub id or local pipeline folder (model.path)")
    parser.add_argument("--st_idx", type=int, default=0, help="first concept index (inclusive)")
    parser.add_argument("--end_idx", type=int, default=None, help="last concept index (exclusive); default: st_idx + 1")


def add_output_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--output``, ``--device``, ``--set``, ``--overwrite``."""
    parser.add_argument("--output", help="output root (default: the config's save.root)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training-config override")
    parser.add_argument("--overwrite", action="store_true", help=f"replace an existing {what} file")


def edit_path(root: Path, experiment: str, concepts: list[str], file_name: str) -> Path:
    """``<root>/<experiment>/<concept>+<concept>…/<file_name>``, each concept a safe folder name (one component,
    bounded length), so a concept string never reaches outside ``root``."""
    folder = bounded("+".join(folder_name(c) for c in concepts), FOLDER_MAX_BYTES, "+".join(concepts))
    path = root / experiment / folder / file_name
    if root.resolve() not in path.resolve().parents:
        raise ValueError(f"{path}: outside the output root {root}")
    return path


def run_baseline(args: argparse.Namespace, what: str, experiment: str, file_name: str,
                 train: Callable[[TrainConfig, int, int, torch.device], Any],
                 save: Callable[[Any, Path, bool], Any], check: Callable[[], None] | None = None) -> int:
    """Train concepts ``[st_idx, end_idx)`` of the config into one edit file; exit status 0, or 2 with one line
    (``check`` first: the method's settings)."""
    overrides = ([f"model.path={json.dumps(command_line_model(args.model))}"] if args.model else []) + list(args.set)
    end = args.st_idx + 1 if args.end_idx is None else args.end_idx
    try:
        if check is not None:
            check()
        cfg = load_train_config(args.config, overrides)
        root = Path(args.output) if args.output else cfg.path(cfg.save.root)
        concepts = selected_concepts(cfg, args.st_idx, end)
        path = edit_path(root, experiment, [c.target for c in concepts], file_name)
        if path.exists() and not args.overwrite:
            raise FileExistsError(f"{path} exists; refusing to overwrite a trained {what} edit (pass --overwrite)")
        edit = train(cfg, args.st_idx, end, torch.device(args.device))
        save(edit, path, args.overwrite)
    except (ConfigError, FileExistsError, FileNotFoundError, IndexError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"file": str(path), "concepts": edit.concepts, **{k: v for k, v in edit.info.items()
                                                                        if k != "training_config"}}))
    return 0

"""Train toy erasers and run the toy generation subsets (used by the toy benchmarks and the tests).

Both work with either embedded toy model: ``TOY_MODEL_DIR`` (SD-style, the default) or ``TOY_SDXL_MODEL_DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cpe.util.config import REPO_ROOT


def train_eraser(kind: str, index: int, root: Path, overrides: list[str], reuse: bool = False,
                 model: str | Path | None = None):
    """Train concept ``index`` of the toy config ``configs/toy/train_<kind>.yaml`` plus ``overrides`` on ``model``
    (default: the SD-style toy); see :func:`train_concept`."""
    from cpe.toy import TOY_MODEL_DIR

    config = REPO_ROOT / "configs" / "toy" / f"train_{kind}.yaml"
    return train_concept(config, index, root, overrides, reuse, model or TOY_MODEL_DIR)


def train_concept(config: Path, index: int, root: Path, overrides: list[str], reuse: bool, model: str | Path):
    """Train concept ``index`` of the training config ``config`` plus ``overrides`` on ``model``, into ``root``.

    Returns the config, the concept, its gate file and the training seconds (None: an existing eraser reused).
    """
    from cpe.training import ConceptPaths, train
    from cpe.training.config import load_train_config
    from cpe.training.prompts import load_concepts

    cfg = load_train_config(config, [f"save.root={root}", f"model.path={model}", *overrides])
    summary = train(cfg, index, index + 1, overwrite=not reuse)
    p = cfg.prompts
    concept = load_concepts(cfg.path(p.concepts), p.neutral, cfg.train.guidance)[index]
    path = ConceptPaths(cfg.output_dir() / concept.folder, cfg.save.name).last
    return cfg, concept, path, summary.seconds if summary.trained else None


def generate_subsets(
    gen_config_dir: Path, work: Path, experiment: str, erasers: list[Path], subsets: tuple[str, ...], steps: int,
    model: str | Path | None = None, overrides: dict[str, Any] | None = None,
) -> list[Path]:
    """Generate ``<gen_config_dir>/<subset>.yaml`` for each subset with ``model`` (default: the SD-style toy),
    prompts from ``work/prompts``; ``overrides`` are further generation config values (e.g. ``pooled``).

    Images and manifests go to ``work/images/<experiment>/<subset>``; returns those folders.
    """
    from cpe.generation.config import load_gen_config
    from cpe.generation.run import run_generation
    from cpe.toy import TOY_MODEL_DIR

    folders = []
    for subset in subsets:
        values = {"data_dir": str(work / "prompts"), "save_root": str(work / "images"), "num_inference_steps": steps,
                  **(overrides or {})}
        cfg = load_gen_config(Path(gen_config_dir) / f"{subset}.yaml", values)
        folders.append(run_generation(cfg, str(model or TOY_MODEL_DIR), erasers, experiment=experiment,
                                      device="cpu").out_dir)
    return folders

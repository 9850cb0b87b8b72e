"""Run the toy generation subsets with the shipped toy model (used by the ablation benchmark and the tests)."""

from __future__ import annotations

from pathlib import Path


def generate_subsets(
    gen_config_dir: Path, work: Path, experiment: str, erasers: list[Path], subsets: tuple[str, ...], steps: int
) -> list[Path]:
    """Generate ``<gen_config_dir>/<subset>.yaml`` for each subset, prompts from ``work/prompts``.

    Images and manifests go to ``work/images/<experiment>/<subset>``; returns those folders.
    """
    from cpe.gen_config import load_gen_config
    from cpe.generation import run_generation
    from cpe.toy import TOY_MODEL_DIR

    folders = []
    for subset in subsets:
        overrides = {"data_dir": str(work / "prompts"), "save_root": str(work / "images"), "num_inference_steps": steps}
        cfg = load_gen_config(Path(gen_config_dir) / f"{subset}.yaml", overrides)
        folders.append(run_generation(cfg, str(TOY_MODEL_DIR), erasers, experiment=experiment, device="cpu").out_dir)
    return folders

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
import sys

from tqdm.auto import tqdm

from cpe.baselines.cli import add_concept_arguments, add_output_arguments, run_baseline
from cpe.baselines.esd import FILE_NAME, METHOD, PARAMETER_SETS, ESDSettings, save_esd, train_esd


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = ESDSettings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_concept_arguments(p)
    p.add_argument("--iterations", type=int, default=defaults.iterations)
    p.add_argument("--lr", type=float, default=defaults.lr, help="Adam learning rate")
    p.add_argument("--negative_guidance", type=float, default=defaults.negative_guidance, help="η")
    p.add_argument("--start_guidance", type=float, default=defaults.start_guidance,
                   help="classifier-free guidance of the DDIM sampling of x_t")
    p.add_argument("--ddim_steps", type=int, default=defaults.ddim_steps)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--params", choices=sorted(PARAMETER_SETS), default=defaults.params,
                   help="xattn: all cross-attention parameters (ESD-x); xattn-strict: to_k and to_v only")
    add_output_arguments(p, "ESD")
    return p.parse_args(argv)


def experiment_name(s: ESDSettings) -> str:
    strict = "-strict" if s.params == "xattn-strict" else ""
    return (f"{METHOD}{strict}_ng{s.negative_guidance}_sg{s.start_guidance}_it{s.iterations}_lr{s.lr}"
            f"_ddim{s.ddim_steps}_seed{s.seed}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = ESDSettings(args.iterations, args.lr, args.negative_guidance, args.start_guidance, args.ddim_steps,
                           args.seed, args.params)

    def train(cfg, start: int, end: int, device):
        with tqdm(total=settings.iterations, desc="ESD-x", unit="step") as bar:
            def progress(iteration: int, loss: float) -> None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

            return train_esd(cfg, start, end, settings, device, progress)

    return run_baseline(args, "ESD", experiment_name(settings), FILE_NAME, train,
                        lambda edit, path, overwrite: save_esd(edit, path, overwrite=overwrite), check=settings.check)


if __name__ == "__main__":
    sys.exit(main())

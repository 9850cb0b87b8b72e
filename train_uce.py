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
import sys

from cpe.baselines.cli import add_concept_arguments, add_output_arguments, run_baseline
from cpe.baselines.uce import FILE_NAME, UCESettings, save_uce, train_uce


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = UCESettings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_concept_arguments(p)
    p.add_argument("--lamb", type=float, default=defaults.lamb, help="λ, weight of ||W' - W||²")
    p.add_argument("--erase_scale", type=float, default=defaults.erase_scale)
    p.add_argument("--preserve_scale", type=float, default=defaults.preserve_scale)
    add_output_arguments(p, "UCE")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = UCESettings(args.lamb, args.erase_scale, args.preserve_scale)
    experiment = f"uce_lamb{settings.lamb}_erase{settings.erase_scale}_preserve{settings.preserve_scale}"
    return run_baseline(args, "UCE", experiment, FILE_NAME,
                        lambda cfg, start, end, device: train_uce(cfg, start, end, settings, device),
                        lambda edit, path, overwrite: save_uce(edit, path, overwrite=overwrite))


if __name__ == "__main__":
    sys.exit(main())

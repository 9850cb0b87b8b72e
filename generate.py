"""Generate images from a prompt CSV with the original model or with any set of merged erasers.

    python generate.py --config configs/celebs/gen/erased.yaml --erasers output/celebs/<experiment>
    accelerate launch generate.py --config ...        # rows split across processes / GPUs
"""

from __future__ import annotations

import argparse
import sys

from cpe.generation.config import load_gen_config
from cpe.models.loading import DEFAULT_MODEL
from cpe.util.io import error_line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="generation config YAML (configs/<domain>/gen/<subset>.yaml)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="base model: hub id or local pipeline folder")
    p.add_argument("--erasers", action="append", default=[], metavar="PATH",
                   help="gate file or folder of gate files (repeatable); none = the original model")
    p.add_argument("--experiment", "--save_env", dest="experiment",
                   help="output folder name under save_root (default: the erasers' experiment folder, or 'original')")
    p.add_argument("--grid", action="store_true", help="one labelled PNG per prompt: original vs erased, same seed")
    p.add_argument("--pad_ranks", action="store_true",
                   help="merge erasers of different gate/low ranks (celebrities + explicit) exactly by zero-padding")
    p.add_argument("--overwrite", action="store_true",
                   help="start the output folder over when it holds images of other erasers or settings "
                        "(its images and manifest are deleted); without it such a rerun is refused")
    p.add_argument("--uce", metavar="FILE", help="a UCE edit (train_uce.py) applied to the UNet before sampling")
    p.add_argument("--esd", metavar="FILE",
                   help="an ESD-x edit (train_esd.py) applied to the UNet before sampling (not with --uce)")
    p.add_argument("--strict_base", action="store_true",
                   help="refuse erasers trained on another base model than --model (or not recording theirs); "
                        "without it they are used after one warning line")
    p.add_argument("--wait", action="store_true",
                   help="wait for another process writing the same output folder instead of stopping (exit 2)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the accelerate process's device)")
    overrides = p.add_argument_group("config overrides")
    overrides.add_argument("--data_dir", help="folder of the prompt CSVs (relative prompt_path values)")
    overrides.add_argument("--save_root")
    overrides.add_argument("--batch_size", type=int)
    overrides.add_argument("--first_row", "--st_prompt_idx", dest="first_row", type=int, help="first CSV row (0-based)")
    overrides.add_argument("--last_row", "--end_prompt_idx", dest="last_row", type=int, help="end CSV row (exclusive)")
    overrides.add_argument("--num_inference_steps", type=int)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keys = ("data_dir", "save_root", "batch_size", "first_row", "last_row", "num_inference_steps")
    try:
        cfg = load_gen_config(args.config, {key: getattr(args, key) for key in keys})
        from cpe.generation.run import describe, run_generation

        summary = run_generation(cfg, args.model, args.erasers, experiment=args.experiment,
                                 config_path=args.config, grid=args.grid, device=args.device,
                                 pad_ranks=args.pad_ranks, overwrite=args.overwrite, uce=args.uce, esd=args.esd,
                                 strict_base=args.strict_base, wait=args.wait)
    except (OSError, ValueError) as e:  # bad input, and OS failures (full disk, unwritable folder), in one line
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(describe(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Inspect where erasers' gates fire before generating: per-token gate maps and leakage over prompt CSVs.

Loads only the model's tokenizer(s) and text encoder(s) (no UNet: seconds on a CPU, SD v1.4 and SDXL alike).

    python inspect_gates.py --model CompVis/stable-diffusion-v1-4 --erasers output/celebs/<experiment> \\
        --prompt "a portrait of Adam Driver" --prompt "a portrait of Adam Sandler" \\
        --leakage configs/celebs/prompts/remained.csv --out output/inspect/celebs

Writes to --out: gate_maps.txt (also printed) and gate_map_<n>_<prompt>.png per prompt; leakage.json and
leakage.md for the --leakage CSVs.
"""

from __future__ import annotations

import argparse
import sys

import torch

from cpe.models.loading import DEFAULT_MODEL
from cpe.util.io import error_line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="base model: hub id or local pipeline folder")
    p.add_argument("--erasers", action="append", default=[], metavar="PATH",
                   help="gate file or folder of gate files, ours or the authors' released ones (repeatable)")
    p.add_argument("--prompt", action="append", default=[], help="a prompt to map token by token (repeatable)")
    p.add_argument("--prompts", action="append", default=[], metavar="FILE",
                   help="prompts to map: a CSV (its --column) or a text file, one prompt per line (repeatable)")
    p.add_argument("--leakage", action="append", default=[], metavar="CSV",
                   help="prompt CSV to measure leakage over (repeatable; all together form one prompt set)")
    p.add_argument("--column", default="prompt", help="the prompt column of the CSVs (default: prompt)")
    p.add_argument("--out", default="output/inspect", help="output folder (default: output/inspect)")
    p.add_argument("--max_erasers", type=int, default=12,
                   help="columns per gate map: the erasers with the largest gates on the prompt (0 = all)")
    p.add_argument("--top", type=int, default=5, help="worst-leakage prompts listed per eraser")
    p.add_argument("--batch_size", type=int, default=64, help="prompts encoded at once")
    p.add_argument("--pad_ranks", action="store_true", help="inspect erasers of different gate/low ranks together")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto (default: cpu)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        from transformers.utils import logging as transformers_logging

        from cpe.inspect.run import run_inspection

        transformers_logging.disable_progress_bar()  # the text encoder loads in a second: no bar on stderr

        result = run_inspection(args.model, args.erasers, prompts=args.prompt, prompt_files=args.prompts,
                                leakage_csvs=args.leakage, out=args.out, column=args.column, device=args.device,
                                batch_size=args.batch_size, max_erasers=args.max_erasers or None, top=args.top,
                                pad_ranks=args.pad_ranks)
    except (OSError, ValueError) as e:  # bad input (GateFileError, ModelLoadError are ValueErrors), in one line
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    if result.table:
        print(result.table)
    if result.report is not None:
        print(f"leakage over {result.report.prompts} prompts")
    print("wrote " + ", ".join(str(path) for path in result.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())

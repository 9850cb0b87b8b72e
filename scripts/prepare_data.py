"""Build the evaluation prompt CSVs the project cannot ship, from their public sources (needs internet).

Writes into ``--out`` (default ``data/generation_prompts``, the generation configs' ``data_dir``), in the
column layout of method.md §6.4 (``prompt``, ``evaluation_seed``[, ``evaluation_guidance``], ...):

    python scripts/prepare_data.py i2p          # I2P_prompts_4703.csv from the AIML-TUDA/i2p dataset
    python scripts/prepare_data.py coco --captions annotations/captions_val2014.json   # coco_30k.csv
    python scripts/prepare_data.py mace         # celebrity_50_erased / celebrity_100_remained / art_100_*.csv
    python scripts/prepare_data.py authors      # all seven CSVs exactly as the CPE authors ship them

``coco`` takes the first caption of the first 30,000 images in the caption file's order (the order of the
authors' list) with seeds from a seeded generator: the prompts match the authors' list, the seeds do not
(theirs are not derivable); use ``authors`` for a faithful rerun. ``mace`` splits MACE's public
100-celebrity and 100-artist lists; the 50 erased celebrities are the targets of configs/celebs/concepts.yaml.
Existing files are kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import yaml

from cpe.metrics.gcd import celebrity_name
from cpe.util.io import atomic_write_text, check_columns, csv_text

REPO = Path(__file__).resolve().parents[1]
AUTHORS_URL = "https://raw.githubusercontent.com/Hyun1A/CPE/{ref}/generation_prompts/{name}"
AUTHORS_FILES = ("celebrity_50_erased.csv", "celebrity_100_remained.csv", "art_100_erased.csv",
                 "art_100_remained.csv", "character_64.csv", "coco_30k.csv", "I2P_prompts_4703.csv")
MACE_URL = "https://raw.githubusercontent.com/Shilin-LU/MACE/{ref}/prompts_csv/{name}"
COCO_ANNOTATIONS_URL = "http://images.cocodataset.org/annotations/annotations_trainval2014.zip"
I2P_RENAMES = {"sd_seed": "evaluation_seed", "sd_guidance_scale": "evaluation_guidance"}


def fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            return response.read()
    except OSError as e:
        raise RuntimeError(f"could not download {url} ({e})") from None


def parse_csv(text: str, source: str) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    if not rows:
        raise ValueError(f"{source}: empty CSV")
    return rows[0], rows[1:]


def column(header: list[str], name: str, source: str) -> int:
    check_columns(header, [name], source)
    return header.index(name)


def i2p_table(header: list[str], rows: list[list[str]], source: str) -> str:
    """The I2P benchmark with ``sd_seed``/``sd_guidance_scale`` renamed, an index and ``case_number``."""
    renamed = [I2P_RENAMES.get(name, name) for name in header]
    column(renamed, "prompt", source)
    column(renamed, "evaluation_seed", source)
    return csv_text(["", *renamed, "case_number"], ([i, *row, i] for i, row in enumerate(rows)))


def coco_table(captions: dict, count: int = 30000, seed: int = 2024) -> str:
    """First caption of the first ``count`` images in annotation order, one random seed per row."""
    chosen: dict[int, str] = {}
    for annotation in captions["annotations"]:
        if annotation["image_id"] not in chosen:
            chosen[annotation["image_id"]] = annotation["caption"]
            if len(chosen) == count:
                break
    if len(chosen) < count:
        raise ValueError(f"the caption file has only {len(chosen)} images, {count} requested")
    seeds = np.random.default_rng(seed).integers(0, 100000, size=count)
    pairs = zip(chosen.items(), seeds.tolist(), strict=True)
    rows = ([i, "coco-30k", caption, seed, image] for i, ((image, caption), seed) in enumerate(pairs))
    return csv_text(["case_number", "source", "prompt", "evaluation_seed", "coco_id"], rows)


def split_rows(header: list[str], rows: list[list[str]], key: str, keep, renumber: bool) -> str:
    """Rows whose column ``key`` satisfies ``keep``; the leading index renumbered from 0 if asked."""
    index = header.index(key)
    kept = [row for row in rows if keep(row[index])]
    if renumber:
        kept = [[str(i), *row[1:]] for i, row in enumerate(kept)]
    return csv_text(header, kept)


def mace_tables(celebrities: tuple[list[str], list[list[str]]], artists: tuple[list[str], list[list[str]]],
                erased_celebrities: set[str]) -> dict[str, str]:
    """CPE's four celebrity/artist CSVs from MACE's ``celebrity_100_concepts`` / ``art_100_concepts``."""
    c_header, c_rows = celebrities
    a_header, a_rows = artists
    prompt = column(c_header, "prompt", "celebrity_100_concepts.csv")
    kind = column(c_header, "type", "celebrity_100_concepts.csv")
    column(a_header, "type", "art_100_concepts.csv")
    targets = {name.lower() for name in erased_celebrities}
    erased = [row for row in c_rows if row[kind] == "erased" and celebrity_name(row[prompt]).lower() in targets]
    return {
        "celebrity_50_erased.csv": csv_text(c_header, ([str(i), *row[1:]] for i, row in enumerate(erased))),
        "celebrity_100_remained.csv": split_rows(c_header, c_rows, "type", lambda t: t == "others", False),
        "art_100_erased.csv": split_rows(a_header, a_rows, "type", lambda t: t == "0", False),
        "art_100_remained.csv": split_rows(a_header, a_rows, "type", lambda t: t == "1", False),
    }


def coco_captions(path: str | None) -> dict:
    if path:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    print(f"downloading {COCO_ANNOTATIONS_URL} (about 240 MB)", file=sys.stderr)
    with zipfile.ZipFile(io.BytesIO(fetch(COCO_ANNOTATIONS_URL))) as archive:
        return json.loads(archive.read("annotations/captions_val2014.json"))


def build(args: argparse.Namespace) -> dict[str, str]:
    if args.source == "authors":
        return {name: fetch(AUTHORS_URL.format(ref=args.ref, name=name)).decode("utf-8") for name in AUTHORS_FILES}
    if args.source == "i2p":
        from huggingface_hub import hf_hub_download

        path = hf_hub_download("AIML-TUDA/i2p", "i2p_benchmark.csv", repo_type="dataset")
        header, rows = parse_csv(Path(path).read_text(encoding="utf-8"), path)
        return {"I2P_prompts_4703.csv": i2p_table(header, rows, path)}
    if args.source == "coco":
        return {"coco_30k.csv": coco_table(coco_captions(args.captions))}
    tables = [parse_csv(fetch(MACE_URL.format(ref=args.ref, name=name)).decode("utf-8"), name)
              for name in ("celebrity_100_concepts.csv", "art_100_concepts.csv")]
    concepts = yaml.safe_load((REPO / "configs" / "celebs" / "concepts.yaml").read_text(encoding="utf-8"))
    return mace_tables(tables[0], tables[1], {entry["target"] for entry in concepts})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", choices=["i2p", "coco", "mace", "authors"])
    p.add_argument("--out", default="data/generation_prompts", help="folder to write the CSVs into")
    p.add_argument("--captions", help="coco: a local captions_val2014.json (default: download the annotations)")
    p.add_argument("--ref", default="main", help="mace/authors: git branch or commit of the source repository")
    p.add_argument("--overwrite", action="store_true", help="replace CSVs that already exist")
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        tables = build(args)
    except (RuntimeError, ValueError, OSError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, text in tables.items():
        path = out / name
        if path.exists() and not args.overwrite:
            print(f"kept existing {path} (pass --overwrite to replace it)")
            continue
        atomic_write_text(path, text)
        print(f"wrote {path} ({len(parse_csv(text, name)[1])} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

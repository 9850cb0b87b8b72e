"""Erasure against the number of erased concepts on the gallery model: the project's Table 1 / "number of concepts".

    python benchmarks/toy_scale.py                                  # the shipped gallery model, full prompt sets
    python benchmarks/toy_scale.py --model DIR --identities 1 2 --artists 1 --combined 2 1 1 \\
        --iterations 2 --set train.factor_init_iter=1 --limit 8 --steps 2      # a smoke run in seconds

Rows: the first 1, 10, 50 identities (configs/toy_celebs), the first 1, 10, 30 artists (configs/toy_artists), and
the domains' own setups together: 20 identities + 10 artists + the 4 explicit words (one generation with every eraser
merged, pad_ranks).
Each concept is trained once, with its domain's training config (save.root = ``<out>/erasers``), and serves every
row that erases it (the sets are nested prefixes of the concept lists); its training seconds are recorded in
``<out>/train_seconds.json`` (kept across reruns that reuse the erasers). Prompt sets are those of
``cpe.toy.gallery.domain_files.prompt_sets`` (``--limit`` keeps at most N rows of each, evenly spaced). The
original model draws every prompt of every set once (``<out>/images/original/all``); each row's eraser draws its
own sets. Scores (``cpe.metrics.gallery``, each with its n): identity rows: Acc_e with its floor (the original
model's "a person" images), Acc_r on identities 50-59, H, style accuracy of every artist (retention); artist
rows: Style_e with its floor (the erased prompts without the artist), Style_r on the artists not erased, H of the
two, identity accuracy of every identity (retention); the combined row all of these and the mark counts on the
I2P analogue; every row the FD on the COCO analogue against the original model's images of the same prompts
(its chance level: the original model on the same prompts with other seeds).
``--anchor-pool world`` trains identities and artists anchored on every identity and artist name (``pool_overrides``;
an ablation of the paper's per-domain pool) into ``output/toy_scale_world``.
Writes ``<results>/toy_scale.md`` and ``<results>/toy_scale.json`` (``toy_scale_world.*`` for the world pool).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import torch

from cpe.util.io import atomic_write_csv, atomic_write_text

REPO = Path(__file__).resolve().parents[1]
RETENTION = {"celebs": "artist", "artists": "actor"}  # the other domain's set each row keeps
NEUTRAL_SET = {"celebs": "generic", "artists": "neutral"}
READER = {"celebs": "identity", "artists": "style"}
RESEED = 100_000  # seed offset of the original model's second COCO-analogue sample (FD's chance level)
COMPOSITIONAL_SETS = {  # compositional and context sets scored per domain: (subset, reader)
    "celebs": (("styled_erased", "identity"), ("styled_erased", "style"), ("styled_remained", "identity"),
               ("styled_remained", "style"), ("context_erased", "identity"), ("context_remained", "identity")),
    "artists": (("composed_erased", "style"), ("composed_erased", "identity"), ("composed_remained", "style"),
                ("composed_remained", "identity"), ("context_erased", "style")),
}
FLOOR_SETS = ("/generic", "/neutral", "/styled_generic", "/composed_neutral")  # drawn by the original model only
POOLS = {  # anchor pools (pool_overrides) -> what they anchor
    "domain": "identities anchored on identities, artists on artists (the paper's)",
    "world": "identities and artists anchored on every identity and artist name (an ablation)",
}


def thin(rows: list[dict], limit: int | None) -> list[dict]:
    """At most ``limit`` rows, evenly spaced (every concept of a set keeps some rows when it can)."""
    if limit is None or len(rows) <= limit:
        return rows
    step = math.ceil(len(rows) / limit)
    return rows[::step][:limit]


def plan_rows(identities: list[int], artists: list[int], combined: list[int] | None) -> list[dict]:
    """The table rows: name, and the number of concepts erased per domain (``combined``: identities, artists,
    explicit words erased together, or None)."""
    rows = [{"name": f"{n} identities", "erase": {"celebs": n}} for n in identities]
    rows += [{"name": f"{n} artists", "erase": {"artists": n}} for n in artists]
    if combined:
        n_id, n_art, n_words = combined
        rows.append({"name": f"{n_id} identities + {n_art} artists + {n_words} explicit words",
                     "erase": {"celebs": n_id, "artists": n_art, "explicit": n_words}})
    return rows


def row_sets(erase: dict[str, int], limit: int | None) -> dict[str, list[dict]]:
    """The prompt sets a row is scored on, named ``<domain>/<subset>`` (and ``coco``)."""
    from cpe.toy.gallery.domain_files import prompt_sets

    sets: dict[str, list[dict]] = {}
    for domain, n in erase.items():
        for subset, rows in prompt_sets(domain, n).items():
            name = "coco" if subset == "coco" else f"{domain}/{subset}"
            sets[name] = thin(rows, limit)
    return sets


def pool_overrides(domain: str, pool: str) -> list[str]:
    """Training overrides of an anchor pool: ``domain`` (the paper's: a celebrity is anchored on other celebrities, an
    artist on other artists) changes nothing; ``world`` anchors identities and artists on every other identity and
    artist name (``candidates_world.csv``, all of them). The explicit words' anchors are sentences either way."""
    from cpe.toy.gallery.domain_files import WORLD_CANDIDATES, world_names

    if pool not in POOLS:
        raise ValueError(f"unknown anchor pool {pool!r}; expected one of {tuple(POOLS)}")
    if pool == "domain" or domain == "explicit":
        return []
    return [f"anchors.candidates={WORLD_CANDIDATES}", f"anchors.top_k={len(world_names()) - 1}"]


def train_concepts(domain: str, count: int, out: Path, model: str, overrides: list[str], costs: dict,
                   pool: str = "domain", config: str = "train", first: int = 0) -> list[Path]:
    """Gate files of concepts ``first`` .. ``count - 1`` of ``domain`` (trained when missing) with the domain's
    training config ``configs/toy_<domain>/<config>.yaml``, recording seconds."""
    from cpe.toy.experiments import train_concept

    config = REPO / "configs" / f"toy_{domain}" / f"{config}.yaml"
    paths = []
    for index in range(first, count):
        _, concept, path, seconds = train_concept(config, index, out / "erasers",
                                                  ["model.device=cpu", *pool_overrides(domain, pool), *overrides],
                                                  reuse=True, model=model)
        if seconds is not None:
            costs.setdefault(domain, {})[concept.target] = round(seconds, 2)
        paths.append(path)
    return paths


def generate(rows: list[dict], name: str, subset: str, out: Path, model: str, erasers: list[Path], steps: int):
    """Generate ``rows`` (a prompt CSV written under ``<out>/prompts``) into ``<out>/images/<name>/<subset>``."""
    from cpe.generation.config import load_gen_config
    from cpe.generation.run import run_generation
    from cpe.toy.gallery.prompts import COLUMNS

    csv = atomic_write_csv(out / "prompts" / name / f"{subset.replace('/', '_')}.csv", COLUMNS, rows)
    cfg = load_gen_config(REPO / "configs" / "toy_celebs" / "gen" / "erased.yaml",
                          {"prompt_path": str(csv.resolve()), "subset": subset.replace("/", "_"),
                           "save_root": str(out / "images"), "num_inference_steps": steps})
    cfg.gate_rank = None  # the combined row merges erasers of gate rank 16 and 64 (pad_ranks)
    return run_generation(cfg, model, erasers, experiment=name, device="cpu", pad_ranks=len(erasers) > 0).out_dir


def _key(record_or_row: dict) -> tuple[str, int]:
    seed = record_or_row.get("seed", record_or_row.get("evaluation_seed"))
    return record_or_row["prompt"], int(seed)


def score_row(row: dict, sets: dict[str, list[dict]], erased: dict, original, costs: dict) -> dict:
    """Every number of one table row, each with its n, beside the original model's."""
    from cpe.metrics.gallery import floor, harmonic, identity_accuracy, mark_counts, pixel_fd, style_accuracy
    from cpe.toy.gallery.domain_files import concept_names

    def orig(subset: str):
        return original.select([original.index[_key(r)] for r in sets[subset]])

    result: dict = {"name": row["name"], "erase": row["erase"]}
    accuracy = {"celebs": identity_accuracy, "artists": style_accuracy}
    reader = {"identity": identity_accuracy, "style": style_accuracy}
    compositional = {domain: [(subset, what, reader[what]) for subset, what in pairs]
                     for domain, pairs in COMPOSITIONAL_SETS.items()}
    for domain, n in row["erase"].items():
        if domain == "explicit":
            for which in ("all", "erase_words", "other_words"):
                result[f"marks_{which}"] = mark_counts(erased["explicit/i2p"], which)
                result[f"marks_{which}_original"] = mark_counts(orig("explicit/i2p"), which)
            continue
        names = concept_names(domain)[:n]
        keep = accuracy["artists" if domain == "celebs" else "celebs"]  # the other domain's accuracy
        retained = f"{domain}/{RETENTION[domain]}"
        acc_e, acc_r = accuracy[domain](erased[f"{domain}/erased"]), accuracy[domain](erased[f"{domain}/remained"])
        result[domain] = {
            "erased": n,
            "acc_e": acc_e, "acc_e_original": accuracy[domain](orig(f"{domain}/erased")),
            "floor": floor(orig(f"{domain}/{NEUTRAL_SET[domain]}"), names, READER[domain]),
            "acc_r": acc_r, "acc_r_original": accuracy[domain](orig(f"{domain}/remained")),
            "H": harmonic(acc_e["value"], acc_r["value"]),
            "retention": keep(erased[retained]), "retention_original": keep(orig(retained)),
        }
        result[domain]["compositional"] = {  # cpe.toy.gallery.compose: two readers on the same image
            f"{subset}:{what}": {"erased": read(erased[f"{domain}/{subset}"]),
                                   "original": read(orig(f"{domain}/{subset}"))}
            for subset, what, read in compositional[domain]}
        seconds = [costs.get(domain, {}).get(c) for c in names]
        known = [s for s in seconds if s is not None]
        result[domain]["train_seconds_per_concept"] = sum(known) / len(known) if known else None
        result[domain]["train_seconds_known"] = len(known)
    coco_original = [original.paths[original.index[_key(r)]] for r in sets["coco"]]
    result["fd_coco"] = {"value": pixel_fd(coco_original, erased["coco"].paths), "n": len(sets["coco"])}
    return result


class _Original:
    """The original model's readings of every prompt, indexed by (prompt, seed)."""

    def __init__(self, folder: Path):
        from cpe.metrics.gallery import read_image_set
        from cpe.metrics.image_sets import load_image_set

        images = load_image_set(folder)
        self.readings = read_image_set(images)
        self.paths = images.paths
        self.index = {_key(r): i for i, r in enumerate(images.records)}
        if len(self.index) != len(images.records):
            raise ValueError(f"{folder}: a prompt and seed appear twice (its images come from runs with other rows "
                             "or --limit; rerun without --reuse, or with another --out)")

    def select(self, keep: list[int]):
        return self.readings.select(keep)


def _pct(entry: dict | None) -> str:
    return "—" if not entry or entry.get("value") is None else f"{100 * entry['value']:.1f} (n={entry['n']})"


def _num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _fd(entry: dict) -> str:
    """FD >= 0 (a rounding-size negative of near-identical sets shows as 0, as cpe.metrics.fid_kid's cells)."""
    return f"{_num(None if entry['value'] is None else max(entry['value'], 0.0), 2)} (n={entry['n']})"


def title(pool: str, config: str = "train") -> str:
    return "Erasure against the number of erased concepts (gallery" + ("" if pool == "domain" else f", {pool} anchor "
                                                                      "pool") + (
        "" if config == "train" else f", {config}.yaml") + ")"


def render(results: dict) -> str:
    pool = results.get("anchor_pool", "domain")
    header = ["row", "domain", "erased", "Acc_e ↓ (orig)", "floor", "Acc_r ↑ (orig)", "H ↑", "retention ↑ (orig)",
              "marks I2P ↓ (orig)", "FD COCO ↓", "train s / concept"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results["rows"]:
        marks = "—"
        if "marks_all" in r:
            m, o = r["marks_all"], r["marks_all_original"]
            marks = (f"{m['total']} ({m['images_with_mark']}/{m['n']}) ({o['total']} ({o['images_with_mark']}/"
                     f"{o['n']}))")
        for domain in ("celebs", "artists"):
            if domain not in r:
                continue
            d = r[domain]
            what = "identity" if domain == "celebs" else "style"
            other = "style" if domain == "celebs" else "identity"
            lines.append(
                f"| {r['name']} | {what} | {d['erased']} | {_pct(d['acc_e'])} ({_pct(d['acc_e_original'])}) "
                f"| {_pct(d['floor'])} | {_pct(d['acc_r'])} ({_pct(d['acc_r_original'])}) "
                f"| {_num(None if d['H'] is None else 100 * d['H'])} "
                f"| {other} {_pct(d['retention'])} ({_pct(d['retention_original'])}) | {marks} "
                f"| {_fd(r['fd_coco'])} "
                f"| {_num(d['train_seconds_per_concept'])} |")
        if "celebs" not in r and "artists" not in r:
            lines.append(f"| {r['name']} | marks | — | — | — | — | — | — | {marks} "
                         f"| {_fd(r['fd_coco'])} | — |")
    lines += ["", "Compositional and context sets (cpe.toy.gallery.compose; identity and style read on the same "
              "image): the row's rate on its erased model (the original model's).", "",
              "| row | set: reader | rate (orig) |", "|---|---|---|"]
    for r in results["rows"]:
        for domain in ("celebs", "artists"):
            for key, entry in r.get(domain, {}).get("compositional", {}).items():
                lines.append(f"| {r['name']} | {domain}/{key} | {_pct(entry['erased'])} ({_pct(entry['original'])}) |")
    lines += ["", f"Model {results['model']}; {results['steps']} sampling steps, guidance 5.0, seeds as in the prompt "
              f"CSVs (cpe.toy.gallery.domain_files; limit {results['limit']} rows per set); training overrides "
              f"{results['overrides'] or 'none'}; anchor pool {pool}: {POOLS[pool]}. "
              "Percentages of images, n = images scored; (orig) = the original model on the same prompts and seeds. "
              "Acc_e/Acc_r: identity (identity rows) or style (artist rows) accuracy on the erased / remaining "
              "concepts' prompts (remaining identities: 50-59 always; remaining "
              "artists: those not erased); floor: mean over the erased concepts of their rate on the original "
              "model's neutral prompts ('a person'; the style prompts without the artist); H: harmonic mean of "
              "100 − Acc_e and Acc_r; retention: the other domain's accuracy on every identity / artist; marks: "
              "total marks (images with ≥1 / n) on the I2P analogue; FD: Fréchet distance of 4x4-pooled pixels, "
              "erased vs original model, COCO analogue; its chance level (the original model, same prompts, seeds "
              f"+{RESEED}) is {_fd(results['fd_chance'])}. Train s / concept: mean wall seconds of the concepts "
              f"trained by this script, model loading included ({results['threads']} torch threads)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    from cpe.metrics.gallery import pixel_fd, read_folder
    from cpe.toy.gallery.domain_files import ERASED

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="gallery pipeline folder (default: cpe.toy.gallery.GALLERY_MODEL_DIR)")
    parser.add_argument("--out", help="erasers, prompts, images (default: output/toy_scale, output/toy_scale_world "
                                      "with --anchor-pool world)")
    parser.add_argument("--erasers", help="root the erasers are trained into or reused from (default: --out); e.g. "
                                          "gallery_pinpoint.py's output/gallery_pinpoint/erasers/train_context/seed0 "
                                          "with --set train.seed=0")
    parser.add_argument("--config", default="train", help="training config of every domain: configs/toy_<domain>/"
                                                          "<config>.yaml (train_context: the pinpoint options)")
    parser.add_argument("--anchor-pool", choices=list(POOLS), default="domain",
                        help="; ".join(f"{name}: {what}" for name, what in POOLS.items()))
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results"), help="folder of toy_scale.{md,json}")
    parser.add_argument("--identities", type=int, nargs="*", default=[1, 10, 50], help="identity set sizes")
    parser.add_argument("--artists", type=int, nargs="*", default=[1, 10, 30], help="artist set sizes")
    parser.add_argument("--combined", type=int, nargs=3, metavar=("IDENTITIES", "ARTISTS", "WORDS"),
                        default=[ERASED["celebs"], ERASED["artists"], ERASED["explicit"]],
                        help="the row erasing identities, artists and explicit words together (default: the domains' "
                             "setups, 20 10 4)")
    parser.add_argument("--no-combined", action="store_true", help="leave out the combined row")
    parser.add_argument("--iterations", type=int, help="train.iterations for every domain (smoke runs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training config override")
    parser.add_argument("--limit", type=int, help="at most N prompt rows per set (evenly spaced)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the images already under --out (from a run with the same rows and --limit)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.model is None:
        from cpe.toy.gallery import GALLERY_MODEL_DIR

        args.model = str(GALLERY_MODEL_DIR)
    if not (Path(args.model) / "model_index.json").is_file():
        raise SystemExit(f"error: no gallery pipeline at {args.model} (python -m cpe.toy.gallery.build --out DIR)")
    suffix = ("" if args.anchor_pool == "domain" else f"_{args.anchor_pool}") + (
        "" if args.config == "train" else f"_{args.config.removeprefix('train_')}")
    out = Path(args.out or REPO / "output" / f"toy_scale{suffix}").resolve()  # save.root resolves against the config
    results_dir = Path(args.results)
    overrides = [*([f"train.iterations={args.iterations}"] if args.iterations else []), *args.set]
    rows = plan_rows(args.identities, args.artists, None if args.no_combined else args.combined)

    costs_file = out / "train_seconds.json"
    costs = json.loads(costs_file.read_text()) if costs_file.is_file() else {}
    need: dict[str, int] = {}
    for row in rows:
        for domain, n in row["erase"].items():
            need[domain] = max(need.get(domain, 0), n)
    started = time.perf_counter()
    erasers_root = Path(args.erasers).resolve() if args.erasers else out
    gates = {d: train_concepts(d, n, erasers_root, args.model, overrides, costs, args.anchor_pool, args.config)
             for d, n in need.items()}
    atomic_write_text(costs_file, json.dumps(costs, indent=1) + "\n")
    train_seconds = time.perf_counter() - started

    per_row = [(row, row_sets(row["erase"], args.limit)) for row in rows]
    union: dict[tuple[str, int], dict] = {}  # every prompt and seed of every set, drawn once by the original model
    for _, sets in per_row:
        for prompt_rows in sets.values():
            for r in prompt_rows:
                union.setdefault(_key(r), r)
    if not args.reuse:
        shutil.rmtree(out / "images", ignore_errors=True)
    started = time.perf_counter()
    original = _Original(generate(list(union.values()), "original", "all", out, args.model, [], args.steps))
    # FD's chance level: the original model on the same COCO-analogue prompts with other seeds
    coco = per_row[0][1]["coco"]
    reseeded = [dict(r, evaluation_seed=r["evaluation_seed"] + RESEED) for r in coco]
    reseeded_dir = generate(reseeded, "original", "coco_reseeded", out, args.model, [], args.steps)
    fd_chance = pixel_fd([original.paths[original.index[_key(r)]] for r in coco], read_folder(reseeded_dir).paths)
    scored = []
    for index, (row, sets) in enumerate(per_row):
        erasers = [p for d, n in row["erase"].items() for p in gates[d][:n]]
        name = f"row{index}"
        erased = {}
        for subset, prompt_rows in sets.items():
            if subset.endswith(FLOOR_SETS):
                continue
            erased[subset] = read_folder(generate(prompt_rows, name, subset, out, args.model, erasers, args.steps))
        scored.append({**score_row(row, sets, erased, original, costs),
                       "erasers": [str(p.relative_to(erasers_root)) for p in erasers]})
        print(f"{row['name']}: done", flush=True)
    results = {"model": args.model, "steps": args.steps, "limit": args.limit, "overrides": overrides,
               "erasers_root": str(erasers_root),
               "config": args.config,
               "anchor_pool": args.anchor_pool,
               "fd_chance": {"value": fd_chance, "n": len(coco), "seed_offset": RESEED},
               "threads": args.threads, "train_seconds_this_run": round(train_seconds, 1),
               "generate_and_score_seconds": round(time.perf_counter() - started, 1), "train_seconds": costs,
               "rows": scored}
    atomic_write_text(results_dir / f"toy_scale{suffix}.json", json.dumps(results, indent=1) + "\n")
    table = render(results)
    atomic_write_text(results_dir / f"toy_scale{suffix}.md", f"# {title(args.anchor_pool, args.config)}\n\n" + table)
    print(table, end="")
    return results


if __name__ == "__main__":
    main()

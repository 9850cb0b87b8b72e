"""The gallery's three erasure domains: shipped files match their generator and the world, configs load, the
evaluation gives the right numbers on rendered images of known content, the scripts parse, the scale benchmark runs."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cpe.generation.config import load_gen_config
from cpe.generation.manifest import MANIFEST_NAME
from cpe.generation.prompt_csv import read_prompt_csv
from cpe.metrics.domains import DOMAINS
from cpe.toy.gallery import GALLERY_MODEL_DIR, domain_files
from cpe.toy.gallery.captions import ERASE_WORDS, GENERIC_PERSON, OTHER_TRIGGERS, words
from cpe.toy.gallery.identities import identities
from cpe.toy.gallery.objects import OBJECTS
from cpe.toy.gallery.prompts import coco_prompts, generic_person_prompts, i2p_prompts, identity_prompts, style_prompts
from cpe.toy.gallery.scene import Scene, render
from cpe.toy.gallery.styles import PLAIN, artists
from cpe.training.config import load_train_config
from cpe.training.prompts import load_concepts, read_csv_column
from cpe.util.config import ConfigError
from cpe.util.io import atomic_write_jsonl

REPO = Path(__file__).resolve().parents[2]
NAMES, ARTISTS = list(identities()), list(artists())
SUBSET_ROWS = {  # prompt rows of every shipped evaluation CSV
    "celebs": {"erased": 100, "remained": 100, "generic": 250, "artist": 384, "coco": 300, "styled_erased": 40,
               "styled_generic": 40, "styled_remained": 80, "context_erased": 80, "context_remained": 40,
               "marked_remained": 20},
    "artists": {"erased": 120, "remained": 264, "neutral": 120, "actor": 240, "coco": 300, "composed_erased": 40,
                "composed_neutral": 40, "composed_remained": 66, "context_erased": 40},
    "explicit": {"i2p": 320, "coco": 300, "composed": 40, "context": 40},
}
SCRIPT_NAMES = {"celebs": "toy_celeb", "artists": "toy_artist", "explicit": "toy_explicit"}


def _cfg(domain: str, overrides: list[str] | None = None):
    return load_train_config(REPO / "configs" / f"toy_{domain}" / "train.yaml", overrides)


# -- shipped files -----------------------------------------------------------------------------------------------------
def test_shipped_files_are_what_the_generator_writes(tmp_path):
    assert domain_files.differences(REPO) == []
    changed = tmp_path / "configs" / "toy_celebs" / "prompts" / "erased.csv"
    domain_files.write(tmp_path, ["celebs"])
    changed.write_text(changed.read_text().replace("a portrait of", "a photo of", 1))
    assert [line.split(":")[0] for line in domain_files.differences(tmp_path, ["celebs"])] == [
        "configs/toy_celebs/prompts/erased.csv"]
    assert domain_files.main(["--root", str(tmp_path), "--check", "--domains", "celebs"]) == 1


def test_concept_lists_neutrals_and_anchors_match_the_world():
    expected = {"celebs": (NAMES, GENERIC_PERSON, 16, 1), "artists": (ARTISTS, "", 16, 1),
                "explicit": (list(ERASE_WORDS), "", 64, 4)}
    for domain, (names, neutral, gate_rank, lora_rank) in expected.items():
        cfg = _cfg(domain)
        p = cfg.prompts
        concepts = load_concepts(cfg.path(p.concepts), p.neutral, cfg.train.guidance)
        assert [c.target for c in concepts] == names
        assert {c.neutral for c in concepts} == {neutral} and p.neutral == domain_files.NEUTRALS[domain]
        assert (cfg.network.gate_rank, cfg.network.lora_rank) == (gate_rank, lora_rank)
        assert Path(cfg.model_path()) == GALLERY_MODEL_DIR
        templates = read_csv_column(cfg.path(p.templates), "prompt")
        assert templates == domain_files.templates(domain)
        assert all(t.endswith("{concept}") for t in templates)  # nothing after the concept shifts (method.md §2.2)
    assert len(NAMES) == 60 and len(ARTISTS) == 32
    celebs, artists_cfg, explicit = _cfg("celebs"), _cfg("artists"), _cfg("explicit")
    assert read_csv_column(celebs.path(celebs.anchors.candidates), "key") == NAMES
    assert read_csv_column(celebs.path(celebs.anchors.general_words), "key") == [GENERIC_PERSON]
    assert read_csv_column(artists_cfg.path(artists_cfg.anchors.candidates), "key") == ARTISTS
    assert artists_cfg.anchors.top_k == len(ARTISTS) - 1  # every other artist
    for cfg in (celebs, artists_cfg):  # the "world" anchor pool (toy_scale --anchor-pool world): every name
        assert read_csv_column(cfg.path(domain_files.WORLD_CANDIDATES), "key") == NAMES + ARTISTS
    sentences = read_csv_column(explicit.path(explicit.anchors.sentences), "name")
    triggers = set(ERASE_WORDS) | set(OTHER_TRIGGERS)
    assert len(sentences) >= 60 and not any(triggers & words(s) for s in sentences)
    # training leaves out candidates containing the target's name: no name may contain another
    for pool in (NAMES, ARTISTS, NAMES + ARTISTS):
        low = [n.lower() for n in pool]
        assert not [(a, b) for a in low for b in low if a != b and a in b]
    # the paper's per-domain guidance and anchor weight
    assert [(c.train.guidance, c.train.pal) for c in (celebs, artists_cfg, explicit)] == [
        (0.3, 1e5), (0.5, 1e4), (3.0, 1e4)]


def test_training_configs_refuse_unknown_keys(tmp_path):
    text = (REPO / "configs" / "toy_artists" / "train.yaml").read_text().replace("  top_k: 31", "  top_kk: 31")
    bad = tmp_path / "train.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=r"top_kk.*train\.yaml|train\.yaml.*top_kk"):
        load_train_config(bad)


def test_generation_configs_read_their_shipped_prompt_csvs():
    for domain, subsets in SUBSET_ROWS.items():
        folder = REPO / "configs" / f"toy_{domain}" / "gen"
        assert sorted(p.stem for p in folder.glob("*.yaml")) == sorted(subsets) == sorted(
            DOMAINS[f"toy_{domain}"].subsets)
        for subset, rows in subsets.items():
            cfg = load_gen_config(folder / f"{subset}.yaml", {"data_dir": str(REPO / f"configs/toy_{domain}/prompts")})
            assert (cfg.subset, cfg.width, cfg.height, cfg.gate_rank) == (
                subset, 32, 32, _cfg(domain).network.gate_rank)
            assert cfg.save_root == f"generated_images/toy_{domain}"
            table = read_prompt_csv(cfg.resolved_prompt_path())
            assert len(table.rows) == rows and table.skipped_empty == 0
            assert set(table.rows[0].extra) == {"identity", "artist", "marks"}
    erased = read_prompt_csv(REPO / "configs/toy_celebs/prompts/erased.csv").rows
    assert {r.extra["identity"] for r in erased} == set(NAMES[:20])
    remained = read_prompt_csv(REPO / "configs/toy_celebs/prompts/remained.csv").rows
    assert {r.extra["identity"] for r in remained} == set(NAMES[50:])
    gone = read_prompt_csv(REPO / "configs/toy_artists/prompts/erased.csv").rows
    kept = read_prompt_csv(REPO / "configs/toy_artists/prompts/remained.csv").rows
    assert {r.extra["artist"] for r in gone} == set(ARTISTS[:10]) and {r.extra["artist"] for r in kept} == set(
        ARTISTS[10:])
    neutral = read_prompt_csv(REPO / "configs/toy_artists/prompts/neutral.csv").rows
    assert all(a not in r.prompt for r in neutral for a in ARTISTS) and len(neutral) == len(gone)
    i2p = read_prompt_csv(REPO / "configs/toy_explicit/prompts/i2p.csv").rows
    with_erase_word = sum(bool(set(ERASE_WORDS) & words(r.prompt)) for r in i2p)
    assert with_erase_word == 64  # one in five: most I2P-analogue prompts say none of the four words


def test_pinpoint_configs_are_the_papers_settings_plus_the_pinpoint_options():
    from cpe.toy.gallery import compose

    for domain in domain_files.DOMAINS:
        paper = _cfg(domain)
        context = load_train_config(REPO / "configs" / f"toy_{domain}" / "train_context.yaml")
        # the one training setting that differs: the identities' erase target (guidance 1.0, docs/pinpoint.md)
        guidance = 1.0 if domain == "celebs" else paper.train.guidance
        assert context.train == dataclasses.replace(paper.train, guidance=guidance)
        assert (context.network, context.adversarial, context.model) == (paper.network, paper.adversarial, paper.model)
        assert dataclasses.replace(context.prompts, compositions=None) == paper.prompts
        assert dataclasses.replace(context.anchors, corpus=None, corpus_per_step=paper.anchors.corpus_per_step) == (
            paper.anchors)
        assert context.experiment_name() == paper.experiment_name().replace(
            f"guide{paper.train.guidance}", f"guide{guidance}") + "_context"
        # the phrase augmentation: off around the erase templates, where it weakened erasure; the artists put the
        # phrases on the anchor side only, which halved their leakage (docs/pinpoint.md)
        if domain == "artists":
            assert context.context == dataclasses.replace(paper.context, words="context_words.csv", templates=False,
                                                          sentences=True)
        else:
            assert paper.context == context.context and context.context.words is None
        assert read_csv_column(context.path("context_words.csv"), "text")  # shipped, for --set context.words=...
        compositions = read_csv_column(context.path(context.prompts.compositions), "prompt")
        assert compositions == compose.compositions(domain) and all(c.count("{concept}") == 1 for c in compositions)
        # each composition names a concept of another domain beside the placeholder
        others = {"celebs": ARTISTS + list(OTHER_TRIGGERS), "artists": NAMES + list(OBJECTS), "explicit": NAMES}
        assert all(any(o in c for o in others[domain]) for c in compositions)
        corpus = read_csv_column(context.path(context.anchors.corpus), "prompt")
        assert len(corpus) == len(set(corpus)) >= 300
        triggered = [q for q in corpus if set(ERASE_WORDS + OTHER_TRIGGERS) & words(q)]
        assert (len(triggered) > 50) == (domain != "explicit")  # the mark's eraser never anchors its own triggers
    # evaluation context phrases are held out from training
    assert not set(compose.EVAL_BEFORE + compose.EVAL_AFTER) & set(compose.TRAIN_BEFORE + compose.TRAIN_AFTER)
    styled = read_prompt_csv(REPO / "configs/toy_celebs/prompts/styled_remained.csv").rows
    assert {r.extra["identity"] for r in styled} == set(NAMES[50:])
    assert all(r.extra["artist"] in ARTISTS and r.extra["artist"] in r.prompt for r in styled)
    generic = read_prompt_csv(REPO / "configs/toy_celebs/prompts/styled_generic.csv").rows
    erased = read_prompt_csv(REPO / "configs/toy_celebs/prompts/styled_erased.csv").rows
    assert [g.prompt for g in generic] == [e.prompt.replace(e.extra["identity"], GENERIC_PERSON) for e in erased]


def test_prompt_sets_per_size_are_nested_prefixes():
    small, large = domain_files.prompt_sets("celebs", 10), domain_files.prompt_sets("celebs", 50)
    assert small["erased"] == large["erased"][: 10 * domain_files.SEEDS_PER_IDENTITY]
    assert small["remained"] == large["remained"]  # identities 50-59 at every size
    one = domain_files.prompt_sets("artists", 1)
    assert {r["artist"] for r in one["erased"]} == {ARTISTS[0]} and len(one["remained"]) == 31 * 12
    for domain, n in (("celebs", 51), ("artists", 32), ("artists", 0)):
        with pytest.raises(ValueError, match=domain):
            domain_files.prompt_sets(domain, n)


# -- scripts -----------------------------------------------------------------------------------------------------------
def test_shell_scripts_parse_and_name_the_trained_experiment(tmp_path):
    scripts = sorted((REPO / "shell_scripts").glob("toy_*/*.sh")) + [
        REPO / "shell_scripts/common/toy_gallery.sh", REPO / "shell_scripts/common/evaluate_toy_gallery.sh"]
    assert len(scripts) == 17  # 5 per domain (train, generate, evaluate, quickstart, inspect) and the 2 shared
    for script in scripts:
        assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0, script
    for domain, prefix in SCRIPT_NAMES.items():
        folder = REPO / "shell_scripts" / f"toy_{domain}"
        train = (folder / f"train_{prefix}_cpe_single.sh").read_text()
        generate = (folder / f"generate_by_{prefix}_model.sh").read_text()
        value = lambda text, key: re.search(rf"{key}=\$\{{{key}:-([^}}]+)\}}", text).group(1)  # noqa: E731
        assert int(value(train, "END_IDX")) == domain_files.ERASED[domain]
        assert re.search(r"EXPERIMENT_PREFIX=(\S+)", generate).group(1) == prefix
        cfg = _cfg(domain, [f"train.guidance={value(generate, 'GUIDE')}", f"train.pal={value(generate, 'PAL')}"])
        assert cfg.experiment_name() == (f"{prefix}_single_guide{value(generate, 'GUIDE')}_pal{value(generate, 'PAL')}"
                                         f"_gate_rank{value(generate, 'GATE_RANK')}_noise0.001")
        assert value(generate, "GEN_CONFIG").startswith(f"configs/toy_{domain}/gen/")
        original, erased = re.findall(r"for subset in ([\w ]+); do", (folder / "quickstart.sh").read_text())
        subsets = set(DOMAINS[f"toy_{domain}"].subsets)
        floors = {"generic", "neutral", "styled_generic", "composed_neutral"}  # read on the original model only
        assert set(original.split()) == subsets and set(erased.split()) == subsets - floors
    run = subprocess.run(["bash", str(REPO / "shell_scripts/toy_celebs/generate_by_toy_celeb_model.sh")],
                         env={"PATH": "/usr/bin:/bin", "MODEL": str(tmp_path / "none")}, capture_output=True, text=True)
    assert run.returncode == 2 and "no gallery model at" in run.stderr


# -- evaluation on rendered images of known content -------------------------------------------------------------------
def _write(folder: Path, rows: list[dict], scenes: list[Scene], seed: int) -> None:
    """A generation folder (PNGs + manifest) whose images are renders of ``scenes`` for the prompt ``rows``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for i, (row, scene) in enumerate(zip(rows, scenes, strict=True)):
        name = f"{i:05d}.png"
        Image.fromarray(render(scene, rng)).save(folder / name)
        records.append({"file": name, "row": i, "prompt": row["prompt"], "seed": row["evaluation_seed"],
                        "image_index": 0, "guidance": 5.0, "erasers": [], "model": "renders", "config": "test",
                        "extra": {k: str(row[k]) for k in ("identity", "artist", "marks")}})
    atomic_write_jsonl(folder / MANIFEST_NAME, records)


def _as_asked(row: dict) -> Scene:
    return Scene(identity=row["identity"] or None, artist=None if row["artist"] == PLAIN else row["artist"],
                 marks=int(row["marks"]))


def _evaluate(domain: str, root: Path, out: Path) -> dict:
    from cpe.metrics.evaluate import main

    main(["--domain", domain, "--root", str(root), "--experiment", "original", "--experiment", "cpe", "--out",
          str(out)])
    return json.loads((out / "results.json").read_text())["experiments"]


def _value(results: dict, experiment: str, column: str) -> tuple:
    entry = results[experiment]["metrics"][column]
    return entry["value"], entry["n"]


def test_celebrity_table_on_renders(tmp_path):
    root = tmp_path / "images"
    erased, remained = identity_prompts(NAMES[:4], 5), identity_prompts(NAMES[50:54], 5)
    generic = generic_person_prompts(20)
    shown_generic = [NAMES[0]] * 2 + [NAMES[2], NAMES[3]] + [NAMES[58]] * 16  # floor: 4 hits / (4 x 20)
    style, coco = style_prompts(ARTISTS[:4], 3), coco_prompts()[:20]
    original = {"erased": erased, "remained": remained, "artist": style, "coco": coco}
    for subset, rows in original.items():
        _write(root / "original" / subset, rows, [_as_asked(r) for r in rows], seed=1)
    _write(root / "original" / "generic", generic, [Scene(identity=n) for n in shown_generic], seed=2)
    # the eraser: the first two erased identities drawn as another one, five remaining images without a person
    _write(root / "cpe" / "erased", erased,
           [Scene(identity=NAMES[55]) if r["identity"] in NAMES[:2] else _as_asked(r) for r in erased], seed=3)
    _write(root / "cpe" / "remained", remained,
           [Scene() if k % 4 == 0 else _as_asked(r) for k, r in enumerate(remained)], seed=4)
    _write(root / "cpe" / "artist", style, [_as_asked(r) for r in style], seed=5)
    _write(root / "cpe" / "coco", coco, [_as_asked(r) for r in coco], seed=6)
    results = _evaluate("toy_celebs", root, tmp_path / "results")
    assert _value(results, "original", "Acc_e") == (1.0, 20) and _value(results, "cpe", "Acc_e") == (0.5, 20)
    assert _value(results, "cpe", "floor") == (pytest.approx(4 / 80), 20)
    assert results["cpe"]["metrics"]["floor"]["per_name"] == dict(zip(NAMES[:4], [2, 0, 1, 1]))
    assert _value(results, "original", "Acc_r") == (1.0, 20) and _value(results, "cpe", "Acc_r") == (0.75, 20)
    assert results["cpe"]["metrics"]["H"]["value"] == pytest.approx(2 / (1 / 0.5 + 1 / 0.75))
    assert _value(results, "cpe", "Style") == (1.0, 12)
    fd_self, fd_cpe = results["original"]["metrics"]["FD"]["value"], results["cpe"]["metrics"]["FD"]["value"]
    assert abs(fd_self) < 1e-4 < 0.1 < fd_cpe  # the same images / fresh renders of the same scenes
    table = (tmp_path / "results" / "results.md").read_text()
    assert "| cpe | 50.00 (n=20) | 5.00 (n=20) | 75.00 (n=20) | 60.00 |" in table


def test_artist_and_explicit_tables_on_renders(tmp_path):
    root = tmp_path / "artists"
    erased, remained = style_prompts(ARTISTS[:2], 4), style_prompts(ARTISTS[2:4], 4)
    neutral = domain_files.neutral_style_rows(erased)
    actor, coco = identity_prompts(NAMES[:6], 1), coco_prompts()[:10]
    for subset, rows in {"erased": erased, "remained": remained, "actor": actor, "coco": coco}.items():
        _write(root / "original" / subset, rows, [_as_asked(r) for r in rows], seed=1)
        shown = [Scene(identity=r["identity"] or None) if subset == "erased" else _as_asked(r) for r in rows]
        _write(root / "cpe" / subset, rows, shown, seed=1)  # the eraser draws the erased prompts unstyled
    shown_neutral = [Scene(identity=r["identity"] or None, artist=ARTISTS[0] if k == 0 else None)
                     for k, r in enumerate(neutral)]
    _write(root / "original" / "neutral", neutral, shown_neutral, seed=2)
    results = _evaluate("toy_artists", root, tmp_path / "artist_results")
    assert _value(results, "original", "Style_e") == (1.0, 8) and _value(results, "cpe", "Style_e") == (0.0, 8)
    assert _value(results, "cpe", "floor") == (pytest.approx(1 / 16), 8)
    assert results["cpe"]["metrics"]["floor"]["read_as_named"] == pytest.approx(1 / 8)  # plain is no artist
    assert _value(results, "cpe", "Style_r") == (1.0, 8) and _value(results, "cpe", "Acc_id") == (1.0, 6)
    assert results["cpe"]["metrics"]["FD"]["value"] == pytest.approx(0.0, abs=1e-4)  # the same renders

    root = tmp_path / "explicit"
    i2p, coco = i2p_prompts()[:20], coco_prompts()[:10]
    has_erase_word = [bool(set(ERASE_WORDS) & words(r["prompt"])) for r in i2p]
    _write(root / "original" / "i2p", i2p, [Scene(marks=2) for _ in i2p], seed=1)
    _write(root / "cpe" / "i2p", i2p, [Scene(marks=0 if w else 1) for w in has_erase_word], seed=1)
    for experiment in ("original", "cpe"):
        _write(root / experiment / "coco", coco, [_as_asked(r) for r in coco], seed=3)
    results = _evaluate("toy_explicit", root, tmp_path / "explicit_results")
    k = sum(has_erase_word)
    assert k == 4
    marks = results["original"]["metrics"]["Marks"]
    assert (marks["total"], marks["images_with_mark"], marks["n"]) == (40, 20, 20)
    cpe = results["cpe"]["metrics"]
    assert (cpe["Marks"]["total"], cpe["Marks"]["images_with_mark"]) == (20 - k, 20 - k)
    assert (cpe["Marks_erase_words"]["total"], cpe["Marks_erase_words"]["n"]) == (0, k)
    assert (cpe["Marks_other_words"]["total"], cpe["Marks_other_words"]["n"]) == (20 - k, 20 - k)
    assert (cpe["Marks_coco"]["total"], cpe["Marks_coco"]["n"]) == (0, 10)
    table = (tmp_path / "explicit_results" / "results.md").read_text()
    assert f"| cpe | {20 - k} ({20 - k}/20 with ≥1) | 0 (0/{k} with ≥1) |" in table


# -- the scale benchmark ----------------------------------------------------------------------------------------------
def test_world_anchor_pool_anchors_every_other_name_and_leaves_explicit_alone(load_benchmark):
    import torch

    from cpe.training.anchors import most_similar

    toy_scale = load_benchmark("toy_scale")
    everyone = NAMES + ARTISTS
    for domain, target in (("celebs", NAMES[3]), ("artists", ARTISTS[5])):
        assert toy_scale.pool_overrides(domain, "domain") == []
        cfg = _cfg(domain, toy_scale.pool_overrides(domain, "world"))
        names = read_csv_column(cfg.path(cfg.anchors.candidates), "key")
        assert names == everyone and cfg.anchors.top_k == len(everyone) - 1
        # the trainer's selection (cpe.training.anchors.most_similar) then anchors every name but the target's own
        chosen = most_similar(torch.randn(4), torch.randn(len(names), 4), names, target, cfg.anchors.top_k)
        assert sorted(chosen) == sorted(n for n in everyone if n != target)
        # the other settings stay the domain's: only the pool differs from the default config
        default = _cfg(domain)
        assert (cfg.train, cfg.network, cfg.prompts) == (default.train, default.network, default.prompts)
    assert toy_scale.pool_overrides("explicit", "world") == []
    with pytest.raises(ValueError, match="unknown anchor pool 'galaxy'"):
        toy_scale.pool_overrides("celebs", "galaxy")


@pytest.mark.slow
def test_scale_benchmark_smoke_run_on_a_tiny_pipeline(tmp_path, load_benchmark):
    from cpe.models.zoo import build_tiny_pipeline

    toy_scale = load_benchmark("toy_scale")
    model = build_tiny_pipeline(tmp_path / "tiny", max_length=32)
    results = toy_scale.main(["--model", str(model), "--out", str(tmp_path / "out"), "--results",
                              str(tmp_path / "results"), "--identities", "1", "--artists", "--combined", "1", "1",
                              "1", "--iterations", "1", "--set", "train.factor_init_iter=1", "--limit", "3",
                              "--steps", "1", "--threads", "1"])
    one, combined = results["rows"]
    assert one["name"] == "1 identities" and combined["name"] == "1 identities + 1 artists + 1 explicit words"
    # the identity's eraser was trained once and serves both rows; every concept's seconds are recorded
    assert one["erasers"] == combined["erasers"][:1] and len(combined["erasers"]) == 3
    assert {d: list(v) for d, v in results["train_seconds"].items()} == {
        "celebs": NAMES[:1], "artists": ARTISTS[:1], "explicit": ["nudity"]}
    assert one["celebs"]["acc_e"]["n"] == 3 and one["celebs"]["floor"]["n"] == 3  # thinned sets (--limit 3)
    assert combined["marks_all"]["n"] == 3 and combined["fd_coco"]["n"] == results["fd_chance"]["n"] == 3
    assert set(combined) >= {"celebs", "artists", "marks_all", "marks_erase_words", "fd_coco"}
    assert results["config"] == "train" and set(one["celebs"]["compositional"]) == {
        "styled_erased:identity", "styled_erased:style", "styled_remained:identity", "styled_remained:style",
        "context_erased:identity", "context_remained:identity"}
    assert combined["artists"]["compositional"]["composed_remained:style"]["erased"]["n"] == 3
    table = (tmp_path / "results" / "toy_scale.md").read_text()
    assert "| 1 identities | identity | 1 |" in table and "(n=3)" in table

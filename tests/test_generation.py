"""Generation on the tiny pipeline: erasers, batching, resume, manifest, grids, processes, bad inputs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cpe.core.network import spec_for_unet
from cpe.core.resag import ResAG
from cpe.core.weights import save_gate_file
from cpe.generation.config import GenerationConfig, load_gen_config
from cpe.generation.manifest import check_manifest, read_manifest
from cpe.generation.prompt_csv import PromptRow, read_prompt_csv
from cpe.generation.run import (
    GenerationPipeline,
    batches,
    experiment_name,
    image_name,
    run_generation,
    shard,
    slugify,
)
from cpe.models.loading import load_unet
from cpe.models.zoo import tiny_unet

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
PROMPTS = FIXTURES / "gen_prompts.csv"  # 6 rows, row 3 has an empty prompt
TARGET_ROWS = (0, 1)  # the "Adam Driver" prompts


def tiny_config(save_root: Path, **changes) -> GenerationConfig:
    values = {"prompt_path": str(PROMPTS), "subset": "erased", "width": 16, "height": 16,
              "num_inference_steps": 2, "save_root": str(save_root), "negative_prompt": "blurry"}
    return GenerationConfig(**{**values, **changes})


def write_gate(folder: Path, unet, concept: str, seed: int | None) -> Path:
    """A gate file for ``unet``: zero-initialised (seed None, residual exactly 0) or random."""
    resag = ResAG(spec_for_unet(unet))
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in resag.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))
    return save_gate_file(resag, folder / concept / "cpe_last.safetensors", concept=concept)


def pixels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def plain(tiny_pipeline_dir, tmp_path_factory) -> Path:
    """Images of the plain pipeline, one row per pipeline call."""
    root = tmp_path_factory.mktemp("plain")
    summary = run_generation(tiny_config(root, batch_size=1), str(tiny_pipeline_dir), device="cpu")
    assert summary.generated == 5 and summary.skipped_empty == 1
    return summary.out_dir


@pytest.fixture(scope="module")
def gates(tiny_pipeline_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gates")
    unet = load_unet(str(tiny_pipeline_dir))
    return {
        "zero": write_gate(root / "zero_experiment", unet, "adam driver", seed=None),
        "random": write_gate(root / "random_experiment", unet, "adam driver", seed=0),
        "other_arch": write_gate(root / "sd2_experiment", tiny_unet("sd2"), "adam driver", seed=0),
    }


def test_manifest_lists_every_image_with_its_row_seed_and_extra_columns(plain):
    assert plain.parts[-2:] == ("original", "erased")
    check = check_manifest(plain)
    assert (len(check.records), check.missing_images, check.unlisted_images) == (5, [], [])
    records = read_manifest(plain)
    assert [r["row"] for r in records] == [0, 1, 2, 4, 5]  # row 3 (empty prompt) skipped
    first = records[0]
    assert first["file"] == "0_A_portrait_of_Adam_Driver_1_0.png"
    assert (first["seed"], first["image_index"], first["guidance"], first["erasers"]) == (1, 0, 7.5, [])
    assert first["extra"] == {"index": "0", "type": "erased", "case_number": "10"}
    assert first["config"]["negative_prompt"] == "blurry" and first["config"]["num_inference_steps"] == 2
    assert records[3]["file"] == "4_a_photo_of_a_cat_with_stars_5_0.png"


def test_batch_size_four_gives_identical_images(plain, tiny_pipeline_dir, tmp_path):
    summary = run_generation(tiny_config(tmp_path, batch_size=4), str(tiny_pipeline_dir), device="cpu")
    batched, single = pixels(summary.out_dir), pixels(plain)
    assert list(batched) == list(single)
    assert all(np.array_equal(batched[name], single[name]) for name in single)


def test_zero_initialised_erasers_give_bit_identical_images(plain, gates, tiny_pipeline_dir, tmp_path):
    summary = run_generation(tiny_config(tmp_path, batch_size=2), str(tiny_pipeline_dir), [gates["zero"]], device="cpu")
    assert summary.out_dir.parts[-2:] == ("zero_experiment", "erased")
    erased, original = pixels(summary.out_dir), pixels(plain)
    assert all(np.array_equal(erased[name], original[name]) for name in original)
    record = read_manifest(summary.out_dir)[0]
    assert record["erasers"][0]["name"] == "adam driver" and len(record["erasers"][0]["sha256"]) == 64


def test_random_erasers_change_target_images_and_manifest_is_complete(plain, gates, tiny_pipeline_dir, tmp_path):
    cfg = tiny_config(tmp_path, batch_size=3)
    summary = run_generation(cfg, str(tiny_pipeline_dir), [gates["random"].parent], experiment="mine", device="cpu")
    assert summary.out_dir == tmp_path / "mine" / "erased"
    erased, original = pixels(summary.out_dir), pixels(plain)
    for row in TARGET_ROWS:
        name = next(n for n in original if n.startswith(f"{row}_"))
        assert np.abs(erased[name].astype(int) - original[name].astype(int)).mean() > 1.0
    check = check_manifest(summary.out_dir)
    assert (len(check.records), check.missing_images, check.unlisted_images) == (5, [], [])
    assert all(r["erasers"] == check.records[0]["erasers"] != [] for r in check.records)


def test_gate_runs_once_per_pipeline_call_and_rows_keep_their_guidance(gates, tiny_pipeline_dir, tmp_path):
    cfg = tiny_config(tmp_path, batch_size=4)
    gen = GenerationPipeline(cfg, str(tiny_pipeline_dir), [gates["random"]], device="cpu")
    rows = read_prompt_csv(FIXTURES / "gen_prompts_guidance.csv").rows  # guidance 7, 7, 12
    calls = list(batches(rows, cfg.batch_size, gen.guidance))
    assert [[r.row for r in b] for b in calls] == [[0, 1], [2]]
    for batch in calls:
        assert len(gen.images(batch)) == len(batch)
    assert gen.network.gate_evaluations == 2  # one per call, not one per denoising step or layer


def test_resume_regenerates_exactly_the_deleted_images(plain, tiny_pipeline_dir, tmp_path):
    out = tmp_path / "original" / "erased"
    shutil.copytree(plain, out)
    names = sorted(p.name for p in out.glob("*.png"))
    deleted = names[::2]
    kept = {n: (out / n).stat().st_mtime_ns for n in names if n not in deleted}
    for name in deleted:
        (out / name).unlink()
    summary = run_generation(tiny_config(tmp_path, batch_size=2), str(tiny_pipeline_dir), device="cpu")
    assert (summary.generated, summary.skipped_existing) == (len(deleted), len(kept))
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept
    again, original = pixels(out), pixels(plain)
    assert all(np.array_equal(again[n], original[n]) for n in deleted)
    assert read_manifest(out) == read_manifest(plain)


def test_grid_mode_puts_original_and_erased_side_by_side(plain, gates, tiny_pipeline_dir, tmp_path):
    cfg = tiny_config(tmp_path, last_row=1)
    summary = run_generation(cfg, str(tiny_pipeline_dir), [gates["random"]], grid=True, device="cpu")
    grids = sorted((summary.out_dir / "grids").glob("*.png"))
    assert [g.name for g in grids] == ["0_A_portrait_of_Adam_Driver_1.png"]
    assert not (summary.out_dir / "manifest.jsonl").exists()
    grid = np.asarray(Image.open(grids[0]))
    original = pixels(plain)["0_A_portrait_of_Adam_Driver_1_0.png"]
    assert grid.shape[1] == 32
    left, right = grid[-16:, :16], grid[-16:, 16:]
    assert np.array_equal(left, original) and not np.array_equal(right, original)


@pytest.mark.slow
def test_two_processes_make_the_same_images_and_manifest_as_one(plain, tiny_pipeline_dir, tmp_path):
    config = tmp_path / "erased.yaml"
    config.write_text("width: 16\nheight: 16\nnum_inference_steps: 2\nnegative_prompt: blurry\nbatch_size: 2\n"
                      f"prompt_path: {PROMPTS.name}\n")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "generate.py"),
               "--config", str(config), "--model", str(tiny_pipeline_dir), "--data_dir", str(FIXTURES),
               "--save_root", str(tmp_path / "out")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "out" / "original" / "erased"
    two, one = pixels(out), pixels(plain)
    assert list(two) == list(one) and all(np.array_equal(two[n], one[n]) for n in one)
    strip = [{k: v for k, v in r.items() if k != "config"} for r in read_manifest(out)]
    assert strip == [{k: v for k, v in r.items() if k != "config"} for r in read_manifest(plain)]
    assert '"processes": 2' in (out / "generation_log.jsonl").read_text()


def test_shards_cover_every_row_once():
    rows = [PromptRow(i, "p", i, None) for i in range(11)]
    for count in range(1, 6):
        parts = [shard(rows, index, count) for index in range(count)]
        assert sum(parts, []) == rows
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_batches_break_where_row_guidance_changes():
    rows = [PromptRow(i, "p", i, g) for i, g in enumerate([7.0, 7.0, 7.0, 12.0, None, None])]
    groups = list(batches(rows, 2, lambda r: 7.5 if r.guidance is None else r.guidance))
    assert [[r.row for r in b] for b in groups] == [[0, 1], [2], [3], [4, 5]]


def test_slugs_are_safe_file_names():
    assert slugify("a photo/of a cat: with *stars*?") == "a_photo_of_a_cat_with_stars"
    assert slugify("Chaïm Soutine") == "Chaïm_Soutine"
    assert slugify(' <>:"/\\|?* ') == "prompt"
    assert len(slugify("word " * 100)) <= 80
    assert image_name(PromptRow(7, "A/B", 3, None), 2) == "7_A_B_3_2.png"
    assert experiment_name([]) == "original"


# -- bad inputs: one-line errors, nothing written ------------------------------------------------------------------


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    sys.path.insert(0, str(REPO))
    try:
        import generate
    finally:
        sys.path.remove(str(REPO))
    code = generate.main(args)
    return code, capsys.readouterr().err.strip().splitlines()[-1]  # progress bars may precede the error


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_column", "lacks column 'evaluation_seed'"),
        ("unreadable_csv", "is not a readable UTF-8 CSV"),
        ("unknown_key", "unknown generation config key 'guidance'"),
        ("other_architecture", "erasers do not fit model"),
        ("no_config", "generation config (GEN_CONFIG) does not exist"),
    ],
)
def test_bad_inputs_fail_in_one_line_and_write_nothing(case, expected, gates, tiny_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "out" / "sd2_experiment" / "erased"
    out.mkdir(parents=True)
    (out / "0_kept_1_0.png").write_bytes(b"an image a user keeps")
    (out / "manifest.jsonl").write_text("{}\n")
    before = snapshot(tmp_path / "out")
    csv = tmp_path / "prompts.csv"
    csv.write_text("prompt,evaluation_seed\na cat,1\n")
    config = tmp_path / "erased.yaml"
    lines = [f"prompt_path: {csv}", "width: 16", "height: 16", "num_inference_steps: 1"]
    erasers = []
    if case == "missing_column":
        csv.write_text("prompt,seed\na cat,1\n")
    elif case == "unreadable_csv":
        csv.write_bytes(b"\xff\xfe\x00\x81garbage\x00")
    elif case == "unknown_key":
        lines.append("guidance: 7.5")
    elif case == "other_architecture":
        erasers = ["--erasers", str(gates["other_arch"])]
    if case != "no_config":
        config.write_text("\n".join(lines) + "\n")
    args = ["--config", str(config), "--model", str(tiny_pipeline_dir), "--save_root", str(tmp_path / "out"), *erasers]
    code, err = run_cli(args, capsys)
    assert code == 2
    assert err.startswith("error: ") and expected in err
    assert snapshot(tmp_path / "out") == before


def test_generation_config_rejects_wrong_types_and_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("prompt_path: x.csv\nwidth: wide\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: width must be an integer, got 'wide'"):
        load_gen_config(path)
    path.write_text("prompt_path: x.csv\n")
    cfg = load_gen_config(path, {"batch_size": 8, "last_row": None})
    assert (cfg.subset, cfg.batch_size, cfg.last_row) == ("bad", 8, None)


def test_erasers_of_different_ranks_merge_only_when_asked(tiny_pipeline_dir, tmp_path):
    unet = load_unet(str(tiny_pipeline_dir))
    small = write_gate(tmp_path / "a", unet, "adam driver", seed=1)
    wide = ResAG(spec_for_unet(unet, gate_rank=8, lora_rank=2))
    wide_path = save_gate_file(wide, tmp_path / "b" / "cat" / "cpe_last.safetensors", concept="cat")
    cfg = tiny_config(tmp_path / "out", last_row=2)
    with pytest.raises(ValueError, match=r"gate rank r 8 differs from 16 .*pad_ranks"):
        run_generation(cfg, str(tiny_pipeline_dir), [small, wide_path], device="cpu")
    assert not (tmp_path / "out").exists()
    summary = run_generation(cfg, str(tiny_pipeline_dir), [small, wide_path], device="cpu", pad_ranks=True)
    assert summary.generated == 2
    assert [e["name"] for e in read_manifest(summary.out_dir)[0]["erasers"]] == ["adam driver", "cat"]

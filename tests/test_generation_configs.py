"""Domain generation configs, their prompt CSVs and the generate_by_*_model.sh scripts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cpe.generation.config import load_gen_config
from cpe.generation.prompt_csv import read_prompt_csv
from cpe.metrics.domains import DOMAINS

REPO = Path(__file__).resolve().parents[1]
SUBSETS = {
    "celebs": ["artist", "character", "coco_30k", "erased", "remained"],
    "artists": ["actor", "character", "coco_30k", "erased", "remained"],
    "explicit": ["coco_30k", "i2p"],
}
# (prompt rows, images per row, empty prompts) per CSV, method.md §5.1
EXPECTED = {
    "celebrity_50_erased.csv": (1250, 1, 0),
    "celebrity_100_remained.csv": (2500, 1, 0),
    "art_100_erased.csv": (2500, 1, 0),
    "art_100_remained.csv": (2500, 1, 0),
    "character_64.csv": (325, 5, 0),
    "coco_30k.csv": (30000, 1, 0),
    "I2P_prompts_4703.csv": (4702, 1, 1),
}
SCRIPTS = {"celebs": "celeb", "artists": "artist", "explicit": "explicit"}


def test_every_domain_has_its_subset_configs():
    for domain, subsets in SUBSETS.items():
        found = sorted(p.stem for p in (REPO / "configs" / domain / "gen").glob("*.yaml"))
        assert found == subsets == sorted(DOMAINS[domain].subsets)  # the folders the metrics read
        for subset in subsets:
            cfg = load_gen_config(REPO / "configs" / domain / "gen" / f"{subset}.yaml")
            assert (cfg.subset, cfg.width, cfg.num_inference_steps, cfg.guidance_scale) == (subset, 512, 50, 7.5)
            assert cfg.gate_rank == (64 if domain == "explicit" else 16)
            celebrity_prompts = cfg.prompt_path.startswith("celebrity")
            assert cfg.negative_prompt.startswith("bad anatomy,watermark") == celebrity_prompts


def test_domain_configs_read_the_reference_prompt_csvs(reference_dir):
    seen = set()
    for domain, subsets in SUBSETS.items():
        for subset in subsets:
            cfg = load_gen_config(REPO / "configs" / domain / "gen" / f"{subset}.yaml",
                                  {"data_dir": str(reference_dir / "generation_prompts")})
            if cfg.prompt_path in seen:
                continue
            seen.add(cfg.prompt_path)
            table = read_prompt_csv(cfg.resolved_prompt_path())
            rows, per_row, empty = EXPECTED[cfg.prompt_path]
            assert (len(table.rows), cfg.generate_num, table.skipped_empty) == (rows, per_row, empty)
    assert seen == set(EXPECTED)
    i2p = read_prompt_csv(reference_dir / "generation_prompts" / "I2P_prompts_4703.csv", 0, 1)
    assert (i2p.rows[0].seed, i2p.rows[0].guidance, i2p.rows[0].extra["case_number"]) == (4261553411, 13.0, "0")


@pytest.mark.parametrize("domain", sorted(SCRIPTS))
def test_generate_scripts_pass_gen_config_and_reference_layout(domain, tmp_path):
    script = REPO / "shell_scripts" / domain / f"generate_by_{SCRIPTS[domain]}_model.sh"
    config = f"configs/{domain}/gen/coco_30k.yaml"
    env = {**os.environ, "LAUNCH": "echo", "GEN_CONFIG": config}
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, check=True).stdout.split()
    assert out[:5] == ["generate.py", "--config", config, "--model", "CompVis/stable-diffusion-v1-4"]
    experiment = out[out.index("--save_env") + 1]
    assert out[out.index("--erasers") + 1].endswith(f"_single_{experiment}")
    original = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True,
                              env={**env, "ERASERS": ""}).stdout.split()
    assert "--erasers" not in original and "--save_env" not in original
    missing = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                             env={**env, "GEN_CONFIG": str(tmp_path / "nope.yaml")})
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: GEN_CONFIG does not exist: {tmp_path}/nope.yaml"


def test_prompt_csv_carries_row_guidance_and_large_seeds():
    table = read_prompt_csv(REPO / "tests" / "fixtures" / "gen_prompts_guidance.csv", first_row=1)
    assert [(r.row, r.seed, r.guidance) for r in table.rows] == [(1, 42, 7.0), (2, 7, 12.0)]
    assert table.rows[1].extra == {"index": "2", "categories": "shocking", "case_number": "2"}


def test_row_ranges_are_half_open_like_the_training_concept_range(tmp_path):
    prompts = REPO / "tests" / "fixtures" / "gen_prompts.csv"  # 6 rows, row 3 has an empty prompt
    assert [r.row for r in read_prompt_csv(prompts, 1, 3).rows] == [1, 2]
    assert [r.row for r in read_prompt_csv(prompts, 4).rows] == [4, 5]
    table = read_prompt_csv(prompts, 2, 100)  # an end past the file is clipped
    assert ([r.row for r in table.rows], table.skipped_empty) == ([2, 4, 5], 1)
    config = tmp_path / "erased.yaml"
    config.write_text(f"prompt_path: {prompts}\nfirst_row: 2\nlast_row: 2\n")
    with pytest.raises(ValueError, match=r"erased\.yaml: last_row must be after first_row: rows \[2, 2\) are none"):
        load_gen_config(config)
    script = REPO / "shell_scripts" / "celebs" / "generate_by_celeb_model.sh"
    env = {**os.environ, "LAUNCH": "echo", "ST_IDX": "0", "END_IDX": "10"}
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, check=True).stdout.split()
    assert out[out.index("--first_row") + 1 :][:3] == ["0", "--last_row", "10"]

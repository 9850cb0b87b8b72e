"""train_cpe.py end to end: the domain shell scripts, two processes vs one, one-line errors for bad inputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from train_support import small_config

import train_cpe
from cpe.core.weights import read_gate_file

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--set", "train.iterations=1", "--set", "train.num_stages=2", "--set", "train.factor_init_iter=1",
         "--set", "adversarial.iterations=1", "--set", "adversarial.num_embeddings=2", "--set", "anchors.per_step=2",
         "--set", "anchors.top_k=2", "--set", "train.lr_warmup_steps=0", "--threads", "1"]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return env


DOMAINS = {  # domain: (script, first concept's folder, experiment folder, gate-file name, (r, k))
    "celebs": ("train_celeb_cpe_single.sh", "chris_evans", "celeb_single_guide0.3_pal100000.0_gate_rank16_noise0.001",
               "singleton_onebyone_person", (16, 1)),
    "artists": ("train_artist_cpe_single.sh", "briton_rivière",
                "artist_single_guide0.5_pal10000.0_gate_rank16_noise0.001", "artistic_onebyone", (16, 1)),
    "explicit": ("train_explicit_cpe_single.sh", "nudity", "explicit_single_guide3.0_pal10000.0_gate_rank64_noise0.001",
                 "singleton_onebyone_explicit", (64, 4)),
}


def test_each_domain_shell_script_trains_on_the_tiny_pipeline(tiny_pipeline_dir, tmp_path):
    words = tmp_path / "general.csv"
    words.write_text("key\nfamous people\n")
    runs = {}
    for domain, (script, *_) in DOMAINS.items():  # the three scripts run at the same time
        extra = [] if domain == "explicit" else ["--set", f"anchors.general_words={words}"]
        env = _env(MODEL=str(tiny_pipeline_dir), OUTPUT=str(tmp_path / domain), ST_IDX="0", END_IDX="1", DEVICE="cpu")
        runs[domain] = subprocess.Popen(["bash", str(REPO / "shell_scripts" / domain / script), *QUICK, *extra],
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for domain, (_, concept, experiment, name, ranks) in DOMAINS.items():
        _, stderr = runs[domain].communicate(timeout=300)
        assert runs[domain].returncode == 0, (domain, stderr[-2000:])
        folder = tmp_path / domain / experiment / concept
        tensors, info = read_gate_file(folder / f"{name}_last.safetensors")
        assert info.concept == concept.replace("_", " ") and (info.spec.gate_rank, info.spec.lora_rank) == ranks
        assert (folder / f"{name}_adv_prompts_last.safetensors").is_file() and (folder / "train_log.jsonl").is_file()
        assert any(t.abs().sum() > 0 for k, t in tensors.items() if k.endswith(".up")), domain


def test_two_processes_write_the_same_files_as_one(tiny_pipeline_dir, tmp_path):
    short = {"train": {"num_stages": 2, "iterations": 2, "factor_init_iter": 1}, "adversarial": {"iterations": 1}}
    config = small_config(tmp_path / "cfg", tiny_pipeline_dir, **short)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          str(REPO / "train_cpe.py"), "--config", str(config), "--output", str(tmp_path / "two"),
                          "--threads", "1"], env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("trained 2 concept(s)") == 1 and run.stdout.count("trained 1 concept(s)") == 1
    assert train_cpe.main(["--config", str(config), "--output", str(tmp_path / "one")]) == 0
    files = {}
    for name in ("one", "two"):  # tensors only: the metadata records the (different) output folders
        out = tmp_path / name / "exp"  # beside it, <output>/embedding_cache holds the text encoder's outputs
        files[name] = {p.relative_to(out): load_file(p) for p in sorted(out.rglob("*.safetensors"))}
    assert len(files["one"]) == 3 * 4  # 3 concepts x (2 stage files, last, adversarial bank)
    assert files["one"].keys() == files["two"].keys()
    for path, tensors in files["one"].items():
        assert tensors.keys() == files["two"][path].keys()
        assert all(torch.equal(t, files["two"][path][k]) for k, t in tensors.items()), path


def test_a_toy_config_trains_from_another_folder(tmp_path):
    """Every path of a config, model.path included, is found from wherever the command runs."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = REPO / "configs" / "toy" / "train_shape.yaml"
    run = subprocess.run([sys.executable, str(REPO / "train_cpe.py"), "--config", str(config), "--output", "out",
                          "--end_idx", "1", "--set", "anchors.cache=false", *QUICK], cwd=elsewhere, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    (gate_file,) = (elsewhere / "out").glob("*/circle/cpe_last.safetensors")
    info = read_gate_file(gate_file)[1]
    assert info.concept == "circle" and info.base_model == "{root}/src/cpe/toy/assets/pipeline"  # true in any clone


def _error(argv: list[str], capsys) -> str:
    assert train_cpe.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_bad_inputs_get_one_line_errors(tiny_pipeline_dir, tmp_path, capsys):
    config = small_config(tmp_path, tiny_pipeline_dir)
    base = ["--config", str(config)]
    assert "unknown key 'train.iteration'" in _error([*base, "--set", "train.iteration=3"], capsys)

    bad = tmp_path / "bad_templates.csv"
    bad.write_text("prompt\na photo of a person\n")
    assert "has no placeholder {concept}" in _error([*base, "--set", f"prompts.templates={bad}"], capsys)

    concepts = tmp_path / "no_target.yaml"
    concepts.write_text("- target: adam driver\n- neutral: a person\n")
    assert "entry 1 has no target" in _error([*base, "--set", f"prompts.concepts={concepts}"], capsys)

    assert "model folder does not exist: /no/such/model" in _error([*base, "--model", "/no/such/model"], capsys)
    assert "concept range [2, 5) out of bounds for 3 concepts" in _error([*base, "--st_idx", "2", "--end_idx", "5"],
                                                                          capsys)
    assert "config file does not exist" in _error(["--config", str(tmp_path / "missing.yaml")], capsys)

"""kill -9 during training and generation, then resume: the results equal an uninterrupted run's, bit for bit.

A real ``train_cpe.py`` / ``generate.py`` process runs in a subprocess; a thin driver pauses it right after
step K (K drawn from a seeded RNG, so a failure reproduces), the test sends SIGKILL, and the same command
with ``--resume`` (training) or as is (generation) finishes the job.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors import safe_open
from train_support import small_config

import train_cpe
from cpe import training
from cpe.manifest import read_manifest

REPO = Path(__file__).resolve().parents[1]
RNG = random.Random(13)
TRAIN_STEPS = 3 * (2 + 2)  # 3 stages x (2 erase + 2 adversarial steps), one log record each
TRAIN_KILL = RNG.randrange(5, TRAIN_STEPS)  # after the first stage's checkpoint, before the end
GEN_ROWS = 8
GEN_KILL = RNG.randrange(1, GEN_ROWS - 1)  # images written before the kill

DRIVER = r"""
import sys, time
kind, count, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3]
calls = 0

def pause_after(real):
    def wrapper(*args, **kwargs):
        global calls
        result = real(*args, **kwargs)
        calls += 1
        if calls == count:
            open(marker, "w").close()
            time.sleep(600)  # the test sends SIGKILL here
        return result
    return wrapper

if kind == "train":
    from cpe.training import loop
    loop.RunLog.record = pause_after(loop.RunLog.record)  # called once per optimisation step
    import train_cpe as cli
else:
    import cpe.generation as generation
    generation._save_png = pause_after(generation._save_png)  # called once per image
    import generate as cli
sys.exit(cli.main(sys.argv[4:]))
"""


def kill_after(kind: str, count: int, argv: list[str], tmp_path: Path) -> None:
    """Run the CLI in a subprocess, SIGKILL it right after its ``count``-th step (or image)."""
    marker, log = tmp_path / f"{kind}.paused", tmp_path / f"{kind}.stderr"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH")]))}
    with open(log, "w") as err:
        process = subprocess.Popen([sys.executable, "-c", DRIVER, kind, str(count), str(marker), *argv], env=env,
                                   stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 300
        while not marker.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"{kind} did not reach step {count}: {log.read_text()[-2000:]}")
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL


def tensors(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return {key: f.get_tensor(key) for key in f.keys()}


def test_training_killed_at_a_random_step_resumes_to_identical_weights_and_log(tiny_pipeline_dir, tmp_path):
    config = small_config(tmp_path / "cfg", tiny_pipeline_dir, concepts=("adam driver",),
                          train={"num_stages": 3, "iterations": 2, "factor_init_iter": 1, "lr_warmup_steps": 0},
                          adversarial={"num_embeddings": 2, "iterations": 2, "lr_warmup_steps": 0})
    argv = ["--config", str(config), "--threads", "1"]
    assert train_cpe.main([*argv, "--output", str(tmp_path / "whole")]) == 0

    kill_after("train", TRAIN_KILL, [*argv, "--output", str(tmp_path / "killed")], tmp_path)
    folder = tmp_path / "killed" / "exp" / "adam_driver"
    assert (folder / training.CHECKPOINT).is_file() and not (folder / "cpe_last.safetensors").exists(), TRAIN_KILL
    assert len((folder / training.LOG_FILE).read_text().splitlines()) == TRAIN_KILL
    assert train_cpe.main([*argv, "--output", str(tmp_path / "killed"), "--resume"]) == 0

    whole = tmp_path / "whole" / "exp" / "adam_driver"
    names = sorted(p.name for p in whole.iterdir())
    assert names == sorted(p.name for p in folder.iterdir())  # no checkpoint, no temporary file left
    assert len([n for n in names if n.endswith(".safetensors")]) == 3 + 2  # 3 stage files, last, adversarial bank
    for name in names:
        if name.endswith(".safetensors"):
            a, b = tensors(whole / name), tensors(folder / name)
            assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), (name, TRAIN_KILL)
    log = (folder / training.LOG_FILE).read_bytes()
    assert log == (whole / training.LOG_FILE).read_bytes(), TRAIN_KILL  # each step once, same numbers
    assert len(log.splitlines()) == TRAIN_STEPS


def test_generation_killed_after_a_random_image_resumes_to_identical_images_and_manifest(tiny_pipeline_dir,
                                                                                         tmp_path):
    csv = tmp_path / "prompts.csv"
    csv.write_text("prompt,evaluation_seed\n" + "".join(f"prompt number {i},{i}\n" for i in range(GEN_ROWS)))
    config = tmp_path / "erased.yaml"
    config.write_text(f"prompt_path: {csv}\nwidth: 16\nheight: 16\nnum_inference_steps: 2\n")
    argv = ["--config", str(config), "--model", str(tiny_pipeline_dir), "--device", "cpu"]
    sys.path.insert(0, str(REPO))
    try:
        import generate
    finally:
        sys.path.remove(str(REPO))
    assert generate.main([*argv, "--save_root", str(tmp_path / "whole")]) == 0

    kill_after("generate", GEN_KILL, [*argv, "--save_root", str(tmp_path / "killed")], tmp_path)
    killed = tmp_path / "killed" / "original" / "erased"
    assert len(list(killed.glob("*.png"))) == GEN_KILL and not (killed / "manifest.jsonl").exists()
    assert generate.main([*argv, "--save_root", str(tmp_path / "killed")]) == 0

    whole = tmp_path / "whole" / "original" / "erased"
    images = sorted(p.name for p in whole.glob("*.png"))
    assert len(images) == GEN_ROWS and images == sorted(p.name for p in killed.glob("*.png"))
    for name in images:
        assert np.array_equal(np.asarray(Image.open(whole / name)), np.asarray(Image.open(killed / name))), name
    assert read_manifest(killed) == read_manifest(whole)
    assert not [p for p in killed.iterdir() if p.name.startswith(".")]

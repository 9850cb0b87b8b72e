"""kill -9 during training and generation, then resume: the results equal an uninterrupted run's, bit for bit.

``train_cpe.main`` / ``generate.main`` run in a separate process (forked from the test, which saves a second
import of torch); a thin wrapper pauses it right after step K (K drawn from a seeded RNG, so a failure
reproduces), the test sends SIGKILL, and the same command with ``--resume`` (training) or as is
(generation) finishes the job.
"""

from __future__ import annotations

import json
import multiprocessing
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
from cpe.generation.manifest import read_manifest

REPO = Path(__file__).resolve().parents[1]
RNG = random.Random(13)
TRAIN_STEPS = 3 * (2 + 2)  # 3 stages x (2 erase + 2 adversarial steps), one log record each
TRAIN_KILL = RNG.randrange(5, TRAIN_STEPS)  # after the first stage's checkpoint, before the end
GEN_ROWS = 8
GEN_KILL = RNG.randrange(1, GEN_ROWS - 1)  # images written before the kill

def _paused_cli(kind: str, count: int, marker: str, argv: list[str]) -> None:
    """In the forked child: run the CLI, pausing right after its ``count``-th step (or image) until the file
    ``<marker>.go`` appears (the kill tests never make it: they send SIGKILL); exit with the CLI's status."""
    calls = 0

    def pause_after(real):
        def wrapper(*args, **kwargs):
            nonlocal calls
            result = real(*args, **kwargs)
            calls += 1
            if calls == count:
                Path(marker).touch()
                deadline = time.monotonic() + 600
                while not Path(f"{marker}.go").exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
            return result
        return wrapper

    code = 3  # never return into pytest
    try:
        if kind == "train":
            from cpe.training import loop

            loop.RunLog.record = pause_after(loop.RunLog.record)  # called once per optimisation step
            code = train_cpe.main(argv)
        else:
            import cpe.generation.run as generation

            generation._save_png = pause_after(generation._save_png)  # called once per image
            code = _generate_cli().main(argv)
    finally:
        os._exit(code)


def _generate_cli():
    sys.path.insert(0, str(REPO))
    try:
        import generate
    finally:
        sys.path.remove(str(REPO))
    return generate


def paused_after(kind: str, count: int, argv: list[str], tmp_path: Path) -> tuple[multiprocessing.Process, Path]:
    """Run the CLI in a separate process (forked: no second import of torch) and return it, paused after step
    ``count``, with the file that lets it go on."""
    marker = tmp_path / f"{kind}.paused"
    process = multiprocessing.get_context("fork").Process(target=_paused_cli, args=(kind, count, str(marker), argv))
    process.start()
    deadline = time.monotonic() + 300
    while not marker.exists():
        if not process.is_alive() or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{kind} did not reach step {count} (exit code {process.exitcode})")
        time.sleep(0.02)
    return process, Path(f"{marker}.go")


def kill_after(kind: str, count: int, argv: list[str], tmp_path: Path) -> None:
    """Run the CLI in a separate process, SIGKILL it after step ``count``."""
    process, _ = paused_after(kind, count, argv, tmp_path)
    os.kill(process.pid, signal.SIGKILL)  # kill -9
    process.join(timeout=60)
    assert process.exitcode == -signal.SIGKILL


def one_concept(tmp_path: Path, model: Path, stages: int, adversarial_steps: int) -> Path:
    """A training config of one concept (adam driver), 2 erase and ``adversarial_steps`` adversarial steps a stage."""
    return small_config(tmp_path / "cfg", model, concepts=("adam driver",),
                        train={"num_stages": stages, "iterations": 2, "factor_init_iter": 1, "lr_warmup_steps": 0},
                        adversarial={"num_embeddings": 2, "iterations": adversarial_steps, "lr_warmup_steps": 0})


def gen_config(tmp_path: Path, rows: int, steps: int) -> Path:
    """A generation config of ``rows`` prompts (seeds 0..rows-1), 16-pixel images, ``steps`` sampling steps."""
    csv = tmp_path / "prompts.csv"
    csv.write_text("prompt,evaluation_seed\n" + "".join(f"prompt number {i},{i}\n" for i in range(rows)))
    config = tmp_path / "erased.yaml"
    config.write_text(f"prompt_path: {csv}\nwidth: 16\nheight: 16\nnum_inference_steps: {steps}\n")
    return config


def tensors(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return {key: f.get_tensor(key) for key in f.keys()}


def test_training_killed_at_a_random_step_resumes_to_identical_weights_and_log(tiny_pipeline_dir, tmp_path):
    config = one_concept(tmp_path, tiny_pipeline_dir, stages=3, adversarial_steps=2)
    argv = ["--config", str(config), "--threads", "1"]
    assert train_cpe.main([*argv, "--output", str(tmp_path / "whole")]) == 0

    kill_after("train", TRAIN_KILL, [*argv, "--output", str(tmp_path / "killed")], tmp_path)
    folder = tmp_path / "killed" / "exp" / "adam_driver"
    assert (folder / training.CHECKPOINT).is_file() and not (folder / "cpe_last.safetensors").exists(), TRAIN_KILL
    assert len((folder / training.LOG_FILE).read_text().splitlines()) == TRAIN_KILL
    assert (folder.parent / ".adam_driver.lock").is_file()  # the killed process's lock file blocks nobody
    assert train_cpe.main([*argv, "--output", str(tmp_path / "killed"), "--resume"]) == 0
    assert not (folder.parent / ".adam_driver.lock").exists()

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
    config = gen_config(tmp_path, GEN_ROWS, steps=2)
    argv = ["--config", str(config), "--model", str(tiny_pipeline_dir), "--device", "cpu"]
    generate = _generate_cli()
    assert generate.main([*argv, "--save_root", str(tmp_path / "whole")]) == 0

    kill_after("generate", GEN_KILL, [*argv, "--save_root", str(tmp_path / "killed")], tmp_path)
    killed = tmp_path / "killed" / "original" / "erased"
    assert len(list(killed.glob("*.png"))) == GEN_KILL and not (killed / "manifest.jsonl").exists()
    assert (killed.parent / ".erased.lock").is_file()  # the killed process's lock file blocks nobody
    assert generate.main([*argv, "--save_root", str(tmp_path / "killed")]) == 0
    assert not (killed.parent / ".erased.lock").exists()

    whole = tmp_path / "whole" / "original" / "erased"
    images = sorted(p.name for p in whole.glob("*.png"))
    assert len(images) == GEN_ROWS and images == sorted(p.name for p in killed.glob("*.png"))
    for name in images:
        assert np.array_equal(np.asarray(Image.open(whole / name)), np.asarray(Image.open(killed / name))), name
    assert read_manifest(killed) == read_manifest(whole)
    assert not [p for p in killed.iterdir() if p.name.startswith(".")]


# -- one job per folder ------------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return env


def _cli(script: str, argv: list[str], **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / script), *argv], env=_env(), text=True, **popen)


def _waiting(process: subprocess.Popen, err: Path) -> None:
    """Block until ``process`` says on stderr (the file ``err``) that it waits for the folder."""
    deadline = time.monotonic() + 300
    while "waiting for " not in err.read_text():
        assert process.poll() is None and time.monotonic() < deadline, err.read_text()[-2000:]
        time.sleep(0.05)


def assert_refused(script: str, argv: list[str], folder: Path, holder: int) -> None:
    """A second process stops with status 2 and one line naming the folder and the holder's PID."""
    second = _cli(script, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 2
    assert err.strip().splitlines()[-1] == (f"error: {folder}: another process (PID {holder}) is working in this "
                                            "folder; pass --wait to wait for it")


def test_a_second_training_of_the_same_concept_stops_naming_folder_and_pid_or_waits(tiny_pipeline_dir, tmp_path):
    config = one_concept(tmp_path, tiny_pipeline_dir, stages=2, adversarial_steps=1)
    argv = ["--config", str(config), "--threads", "1"]
    folder = tmp_path / "cfg" / "out" / "exp" / "adam_driver"
    first, go = paused_after("train", 1, argv, tmp_path)  # holds the concept, in its first step

    assert_refused("train_cpe.py", argv, folder, first.pid)
    with open(tmp_path / "waiting.err", "w") as err_file:
        waiting = _cli("train_cpe.py", [*argv, "--wait"], stdout=subprocess.PIPE, stderr=err_file)
        _waiting(waiting, tmp_path / "waiting.err")
        go.touch()
        first.join(timeout=300)
        out, _ = waiting.communicate(timeout=300)
    assert first.exitcode == 0 and waiting.returncode == 0
    assert "trained 0 concept(s), skipped 1 finished" in out  # it waited, then found the concept done
    records = [json.loads(line) for line in (folder / training.LOG_FILE).read_text().splitlines()]
    steps = [(r["stage"], r["phase"], r["step"]) for r in records]
    assert len(steps) == 2 * (2 + 1) and len(set(steps)) == len(steps)  # each step logged once
    assert sorted(p.name for p in folder.parent.iterdir()) == ["adam_driver"]  # no lock file left


def test_a_second_generation_into_the_same_folder_stops_naming_folder_and_pid(tiny_pipeline_dir, tmp_path):
    config = gen_config(tmp_path, 3, steps=1)
    argv = ["--config", str(config), "--model", str(tiny_pipeline_dir), "--device", "cpu",
            "--save_root", str(tmp_path / "out")]
    folder = tmp_path / "out" / "original" / "erased"
    first, go = paused_after("generate", 1, argv, tmp_path)  # holds the folder, one image written

    assert_refused("generate.py", argv, folder, first.pid)
    assert len(list(folder.glob("*.png"))) == 1  # the second process made none
    go.touch()
    first.join(timeout=300)
    assert first.exitcode == 0
    assert len(read_manifest(folder)) == 3 and len(list(folder.glob("*.png"))) == 3
    log = [json.loads(line) for line in (folder / "generation_log.jsonl").read_text().splitlines()]
    assert [r["generated"] for r in log] == [3]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["erased"]  # no lock file left

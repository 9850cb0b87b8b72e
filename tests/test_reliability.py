"""Nothing lost, nothing written outside its folder (issue 13): one test per defect a fault drill found.

Each test feeds the exact bad input, asserts the one-line error (exit status 2 for the CLIs) and that
nothing outside the output root, and nothing already written, changed.
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import shutil
import signal
import stat
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from train_support import interrupted_in_stage_two, small_config

import train_cpe
from cpe import training
from cpe.core.network import spec_for_unet
from cpe.core.resag import ResAG
from cpe.core.weights import GateFileError, read_gate_file, save_gate_file
from cpe.generation.config import GenerationConfig
from cpe.generation.manifest import MANIFEST_NAME, check_manifest, read_manifest
from cpe.generation.prompt_csv import PromptRow
from cpe.generation.run import _save_png, image_name, run_generation
from cpe.models.loading import load_unet
from cpe.training.config import load_train_config
from cpe.training.files import ConceptPaths, TrainingError, remove_tree, trim_log
from cpe.training.prompts import load_concepts, read_csv_column
from cpe.util.config import ConfigError
from cpe.util.io import atomic_write, atomic_write_jsonl, atomic_write_text, read_jsonl, remove_stale_temp_files
from cpe.util.names import NAME_MAX_BYTES, folder_name

REPO = Path(__file__).resolve().parents[1]
# One erase stage of one step, no adversarial stage: the cheapest complete training run.
# The embedding cache (under save.root, beside the experiments) is off: these tests snapshot everything else.
QUICK = {"train": {"num_stages": 1, "iterations": 1, "factor_init_iter": 1, "lr_warmup_steps": 0},
         "adversarial": {"enabled": False}, "anchors": {"cache": False}}


def generate_main(argv: list[str]) -> int:
    sys.path.insert(0, str(REPO))
    try:
        import generate
    finally:
        sys.path.remove(str(REPO))
    return generate.main(argv)


def one_line_error(code: int, capsys) -> str:
    """The CLI failed with status 2 and exactly one ``error:`` line, the last one, and no traceback."""
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0] and "Traceback" not in err, err[-2000:]
    return errors[0]


def snapshot(folder: Path, skip: Path | None = None) -> dict[str, tuple[bytes, int]]:
    """Every file below ``folder`` (except below ``skip``) with its bytes and mode."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not (skip is not None and p.is_relative_to(skip))
    }


def write_gate(path: Path, unet, concept: str, seed: int) -> Path:
    resag = ResAG(spec_for_unet(unet))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in resag.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    return save_gate_file(resag, path, concept=concept)


def rewrite_gate(src: Path, dst: Path, tensor_change=None, metadata_change=None) -> Path:
    """A copy of a gate file with one tensor or one metadata entry changed."""
    with safe_open(str(src), framework="pt") as f:
        metadata = dict(f.metadata())
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    if tensor_change:
        tensor_change(tensors)
    if metadata_change:
        metadata_change(metadata)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst), metadata=metadata)
    return dst


def prompt_csv(path: Path, prompts: list[str]) -> Path:
    lines = ["prompt,evaluation_seed"] + [f'"{p}",{i + 1}' for i, p in enumerate(prompts)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def gen_yaml(folder: Path, csv: Path, steps: int = 2, size: int = 16) -> Path:
    path = folder / "erased.yaml"
    path.write_text(f"prompt_path: {csv}\nwidth: {size}\nheight: {size}\nnum_inference_steps: {steps}\n")
    return path


@pytest.fixture(scope="module")
def unet(tiny_pipeline_dir):
    return load_unet(str(tiny_pipeline_dir))


@pytest.fixture(scope="module")
def trained(tiny_pipeline_dir, tmp_path_factory) -> Path:
    """An experiment folder with 'adam driver' trained (QUICK settings): the weights later runs must keep."""
    folder = tmp_path_factory.mktemp("trained")
    config = small_config(folder, tiny_pipeline_dir, concepts=("adam driver",), **QUICK)
    assert train_cpe.main(["--config", str(config)]) == 0
    return folder / "out" / "exp"


def copy_trained(trained: Path, folder: Path, tiny_pipeline_dir: Path, **sections) -> tuple[Path, Path]:
    """A config in ``folder`` with the settings of ``trained`` and a copy of its experiment folder."""
    config = small_config(folder, tiny_pipeline_dir, concepts=("adam driver",), **{**QUICK, **sections})
    experiment = folder / "out" / "exp"
    shutil.copytree(trained, experiment)
    return config, experiment


# -- 1. concept names are folder names: never outside the experiment folder, never an unrelated delete -------------


def test_1_concept_names_cannot_reach_outside_the_experiment_folder(tiny_pipeline_dir, tmp_path, capsys):
    assert folder_name("Briton Rivière") == "briton_rivière" and folder_name("adam driver") == "adam_driver"
    assert folder_name("../../victim") == "_.._victim" and folder_name("/abs/path") == "_abs_path"
    assert folder_name("a\x00b\nc\u202ed") == "a_b_c_d"
    assert len(folder_name("名" * 200).encode()) <= 200
    for bad in ("..", ".", "/", "  "):
        with pytest.raises(ValueError, match="gives no usable folder name"):
            folder_name(bad)

    victim = tmp_path / "victim"  # another experiment's finished weights, beside the output root
    victim.mkdir()
    (victim / "cpe_last.safetensors").write_bytes(b"weights someone trained for a week")
    absolute = tmp_path / "abs" / "path"
    absolute.mkdir(parents=True)
    (absolute / "notes.txt").write_text("mine")
    folder = tmp_path / "cfg"
    config = small_config(folder, tiny_pipeline_dir, concepts=("../../victim", str(absolute)), **QUICK)
    experiment = folder / "out" / "exp"
    before = snapshot(tmp_path)
    assert train_cpe.main(["--config", str(config), "--overwrite"]) == 0
    assert snapshot(tmp_path, skip=experiment) == before  # outside the experiment folder nothing changed
    assert sorted(p.name for p in experiment.iterdir()) == sorted(["_.._victim", folder_name(str(absolute))])
    assert all((p / "cpe_last.safetensors").is_file() for p in experiment.iterdir())

    concepts = folder / "concepts.yaml"
    before = snapshot(tmp_path)
    for entries, expected in [
        ('- ".."\n- adam driver\n', "concepts.yaml: entry 0: concept '..' gives no usable folder name"),
        ("- Adam Driver\n- adam driver\n", "entries 0 ('Adam Driver') and 1 ('adam driver') share the output "
                                           "folder 'adam_driver'"),
        ("- a/b\n- a:b\n", "share the output folder 'a_b'"),
    ]:
        concepts.write_text(entries)
        assert expected in one_line_error(train_cpe.main(["--config", str(config), "--overwrite"]), capsys)
    for setting, expected in [("save.name=../x", "save.name '../x' must be a plain file-name part"),
                              ("save.experiment=../../x", "save.experiment '../../x' must be a relative folder"),
                              ("save.experiment=/abs", "save.experiment '/abs' must be a relative folder")]:
        code = train_cpe.main(["--config", str(config), "--overwrite", "--set", setting])
        assert expected in one_line_error(code, capsys)
    concepts.write_text("- adam driver\n")
    assert snapshot(tmp_path, skip=concepts) == {k: v for k, v in before.items() if k != "cfg/concepts.yaml"}
    with pytest.raises(TrainingError, match="refusing to delete"):  # the one delete helper checks containment
        remove_tree(victim, experiment)
    with pytest.raises(TrainingError, match="refusing to delete"):
        remove_tree(experiment / ".." / ".." / "victim", experiment)
    assert (victim / "cpe_last.safetensors").is_file()


# -- 2. --overwrite replaces old weights only with a complete new result -------------------------------------------


def test_2_overwrite_keeps_the_old_weights_until_the_new_ones_are_complete(trained, tiny_pipeline_dir, tmp_path,
                                                                            capsys, monkeypatch):
    config, experiment = copy_trained(trained, tmp_path / "cfg", tiny_pipeline_dir)
    broken = tmp_path / "broken_model"
    shutil.copytree(tiny_pipeline_dir, broken)
    (broken / "text_encoder" / "model.safetensors").write_bytes(b"not a safetensors file")
    before = snapshot(tmp_path)
    code = train_cpe.main(["--config", str(config), "--overwrite", "--model", str(broken)])
    assert "broken_model: cannot load the text encoder" in one_line_error(code, capsys)
    assert snapshot(tmp_path) == before

    real_losses = training.loop.erase_losses

    def poisoned(kv, resag, batch, bank, **options):  # a run that fails after it has started training
        losses = real_losses(kv, resag, batch, bank, **options)
        losses["erase"] = losses["erase"] * float("nan")
        return losses

    monkeypatch.setattr(training.loop, "erase_losses", poisoned)
    code = train_cpe.main(["--config", str(config), "--overwrite"])
    assert "non-finite erase loss for concept(s) adam driver" in one_line_error(code, capsys)
    prefix = "cfg/out/exp/adam_driver/"
    assert snapshot(experiment / "adam_driver") == {k.removeprefix(prefix): v for k, v in before.items()
                                                     if k.startswith(prefix)}
    monkeypatch.setattr(training.loop, "erase_losses", real_losses)
    assert train_cpe.main(["--config", str(config), "--overwrite"]) == 0  # a complete run does replace them
    assert sorted(p.name for p in experiment.iterdir()) == ["adam_driver"]  # no staging or retired folder left
    new, old = (read_gate_file(e / "adam_driver" / "cpe_last.safetensors")[0] for e in (experiment, trained))
    assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in new)


def test_2_an_interrupted_overwrite_continues_with_resume_and_swaps_only_when_complete(trained, tiny_pipeline_dir,
                                                                                         tmp_path, monkeypatch):
    two_stages = {"train": {"num_stages": 2, "iterations": 1, "factor_init_iter": 1, "lr_warmup_steps": 0}}
    reference = load_train_config(small_config(tmp_path / "ref", tiny_pipeline_dir, concepts=("adam driver",),
                                               **{**QUICK, **two_stages}))
    expected = read_gate_file(training.train(reference).trained[0])[0]
    config, experiment = copy_trained(trained, tmp_path / "cfg", tiny_pipeline_dir, **two_stages)
    cfg = load_train_config(config)
    old = snapshot(experiment)
    with interrupted_in_stage_two(monkeypatch), pytest.raises(KeyboardInterrupt):
        training.train(cfg, overwrite=True)
    assert {k: v for k, v in snapshot(experiment).items() if k.startswith("adam_driver/")} == old
    assert (experiment / ".adam_driver.cpe-new" / training.CHECKPOINT).is_file()
    training.train(cfg, resume=True)  # continues the staged run from its stage-1 checkpoint, then swaps
    assert sorted(p.name for p in experiment.iterdir()) == ["adam_driver"]
    resumed = read_gate_file(experiment / "adam_driver" / "cpe_last.safetensors")[0]
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)

    final = ConceptPaths(experiment / "bob", "cpe")  # a kill between the swap's two renames
    for folder, content in ((".bob.cpe-old", b"old"), (".bob.cpe-new", b"new")):
        (experiment / folder).mkdir()
        (experiment / folder / "cpe_last.safetensors").write_bytes(content)
    training.files.finish_swap(final, experiment)
    assert final.last.read_bytes() == b"new" and sorted(p.name for p in experiment.iterdir()) == ["adam_driver", "bob"]
    os.replace(final.folder, experiment / ".bob.cpe-old")  # the same kill, with no complete new result
    training.files.finish_swap(final, experiment)
    assert final.last.read_bytes() == b"new" and not (experiment / ".bob.cpe-old").exists()


# -- 3. gate files with NaN or Inf are refused ------------------------------------------------------------------------


def test_3_gate_files_with_non_finite_tensors_or_metadata_are_refused(unet, tiny_pipeline_dir, tmp_path, capsys):
    good = write_gate(tmp_path / "gates" / "ok" / "adam driver" / "cpe_last.safetensors", unet, "adam driver", 0)
    bad = tmp_path / "gates" / "bad" / "adam driver"

    def nan_vector(t):
        t["gate.vector"][0, 0, 0] = float("nan")

    def inf_layer(t):
        key = next(k for k in t if k.endswith(".up"))
        t[key][0, 0, -1] = float("inf")

    cases = {
        "nan.safetensors": (rewrite_gate(good, bad / "nan.safetensors", tensor_change=nan_vector),
                            "tensor gate.vector has non-finite values"),
        "inf.safetensors": (rewrite_gate(good, bad / "inf.safetensors", tensor_change=inf_layer), ".up has non-finite"),
        "alpha.safetensors": (rewrite_gate(good, bad / "alpha.safetensors",
                                           metadata_change=lambda m: m.update(alpha="nan")),
                              "metadata alpha='nan' is not a finite number"),
    }
    csv = prompt_csv(tmp_path / "prompts.csv", ["a portrait of adam driver"])
    config = gen_yaml(tmp_path, csv)
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    for name, (path, expected) in cases.items():
        with pytest.raises(GateFileError, match=expected):
            read_gate_file(path)
        code = generate_main(["--config", str(config), "--model", str(tiny_pipeline_dir), "--save_root", str(out),
                              "--erasers", str(path), "--device", "cpu"])
        line = one_line_error(code, capsys)
        assert str(path) in line and name in line
    assert snapshot(tmp_path) == before and not out.exists()


# -- 4. long non-ASCII prompts: names bounded in bytes -----------------------------------------------------------------


def test_4_long_non_ascii_prompts_get_names_bounded_in_bytes(tiny_pipeline_dir, tmp_path):
    cjk = "一只猫坐在窗台上看着外面的雨" * 6  # 84 characters, 252 UTF-8 bytes
    prompts = [cjk[:80], cjk * 3, "a cat"]
    csv = prompt_csv(tmp_path / "prompts.csv", prompts)
    cfg = GenerationConfig(prompt_path=str(csv), subset="erased", width=16, height=16, num_inference_steps=1,
                           save_root=str(tmp_path / "out"))
    summary = run_generation(cfg, str(tiny_pipeline_dir), device="cpu")
    assert summary.generated == 3
    names = sorted(p.name for p in summary.out_dir.iterdir())
    assert all(len(n.encode()) <= 120 for n in names), names
    check = check_manifest(summary.out_dir)
    assert (len(check.records), check.missing_images, check.unlisted_images) == (3, [], [])
    assert [r["prompt"] for r in check.records] == prompts
    assert check.records[0]["file"].startswith("0_一只猫") and len(image_name(PromptRow(0, cjk * 9, 1, None), 0)
                                                               .encode()) <= 100
    longest = tmp_path / ("名" * 85)  # 255 bytes: the longest legal name, and its temporary name still fits
    atomic_write_text(longest, "ok")
    assert longest.read_text() == "ok" and len(longest.name.encode()) == NAME_MAX_BYTES


# -- 5. written files get a plain open()'s mode, and reach the disk -------------------------------------------------


def test_5_atomic_writes_keep_the_umask_mode_and_are_flushed(unet, tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(stat.S_IFMT(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    old = os.umask(0o022)
    try:
        written = [
            write_gate(tmp_path / "gate_last.safetensors", unet, "adam driver", 0),
            atomic_write_jsonl(tmp_path / MANIFEST_NAME, [{"file": "x.png"}]),
            atomic_write_text(tmp_path / "prompts.csv", "prompt,evaluation_seed\na,1\n"),
            atomic_write(tmp_path / "checkpoint.pt", lambda tmp: torch.save({"a": 1}, tmp)),
        ]
        from PIL import Image

        _save_png(Image.new("RGB", (4, 4)), tmp_path / "0_a_1_0.png")
        written.append(tmp_path / "0_a_1_0.png")
        assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {p.name: "0o644" for p in written}
        assert synced.count(stat.S_IFREG) == 5 and synced.count(stat.S_IFDIR) == 5  # each file, then its folder
        os.umask(0o077)
        assert stat.S_IMODE(atomic_write_text(tmp_path / "private.txt", "x").stat().st_mode) == 0o600
        shared = tmp_path / "results.json"
        shared.write_text("{}")
        shared.chmod(0o664)
        atomic_write_text(shared, '{"a": 1}')  # a rewrite does not narrow a wider mode
        assert stat.S_IMODE(shared.stat().st_mode) == 0o664 and shared.read_text() == '{"a": 1}'
    finally:
        os.umask(old)
    assert not list(tmp_path.glob(".*"))  # no temporary file left


# -- 6. a rerun into an existing output with other erasers or settings is refused --------------------------------------


def test_6_generation_refuses_to_mix_erasers_or_settings(unet, tiny_pipeline_dir, tmp_path, capsys):
    gate_a = write_gate(tmp_path / "gates" / "a" / "adam driver" / "cpe_last.safetensors", unet, "adam driver", 0)
    gate_b = write_gate(tmp_path / "gates" / "b" / "adam driver" / "cpe_last.safetensors", unet, "adam driver", 1)
    csv = prompt_csv(tmp_path / "prompts.csv", ["a portrait of adam driver", "a cat", "a dog"])
    config = gen_yaml(tmp_path, csv, steps=1)
    root = tmp_path / "out"
    base = ["--config", str(config), "--model", str(tiny_pipeline_dir), "--save_root", str(root),
            "--experiment", "mine", "--device", "cpu"]
    assert generate_main([*base, "--erasers", str(gate_a)]) == 0
    out = root / "mine" / "erased"
    images = sorted(out.glob("*.png"))
    for image in images[:2]:
        image.unlink()
    before = snapshot(tmp_path)
    sha_a, sha_b = (read_gate_file(g)[1].sha256[:8] for g in (gate_a, gate_b))
    line = one_line_error(generate_main([*base, "--erasers", str(gate_b)]), capsys)
    assert f"erasers: folder [adam driver {sha_a}], this run [adam driver {sha_b}]" in line and "--overwrite" in line
    line = one_line_error(generate_main([*base, "--erasers", str(gate_a), "--num_inference_steps", "2"]), capsys)
    assert "num_inference_steps: folder 1, this run 2" in line
    csv.write_text(csv.read_text().replace("a dog", "a dog!"))  # the same file name, another prompt
    line = one_line_error(generate_main([*base, "--erasers", str(gate_a)]), capsys)
    assert "image 2_a_dog_3_0.png was made for prompt 'a dog', row 2 now has 'a dog!'" in line
    csv.write_text(csv.read_text().replace("a dog!", "a dog"))
    assert snapshot(tmp_path) == before

    assert generate_main([*base, "--erasers", str(gate_a)]) == 0  # same erasers and settings: resume
    assert sorted(out.glob("*.png")) == images
    assert generate_main([*base, "--erasers", str(gate_b), "--overwrite"]) == 0
    check = check_manifest(out)  # the folder was started over: only gate B's images, all described
    assert (len(check.records), check.missing_images, check.unlisted_images) == (3, [], [])
    assert all(r["erasers"][0]["sha256"][:8] == sha_b for r in check.records)

    undescribed = root / "other" / "erased"  # images nothing describes (no settings file, no manifest)
    undescribed.mkdir(parents=True)
    shutil.copy(images[-1], undescribed / images[-1].name)
    other = ["--config", str(config), "--model", str(tiny_pipeline_dir), "--save_root", str(root),
             "--experiment", "other", "--device", "cpu"]
    line = one_line_error(generate_main(other), capsys)
    assert "holds 1 image(s)" in line and "no generation_settings.json or manifest" in line


def test_6_training_refuses_to_skip_concepts_trained_with_other_settings(trained, tiny_pipeline_dir, tmp_path,
                                                                         capsys):
    config, experiment = copy_trained(trained, tmp_path / "cfg", tiny_pipeline_dir)
    before = snapshot(tmp_path)
    code = train_cpe.main(["--config", str(config), "--set", "train.iterations=2"])
    assert "cpe_last.safetensors was trained with other settings (train.iterations: recorded 1, this run 2)" in \
        one_line_error(code, capsys)
    code = train_cpe.main(["--config", str(config), "--guidance", "0.5"])
    assert "concept.guidance: recorded 0.3, this run 0.5" in one_line_error(code, capsys)
    assert snapshot(tmp_path) == before
    assert train_cpe.main(["--config", str(config), "--set", "train.concept_batch=4"]) == 0  # same numbers: skip
    assert "skipped 1 finished" in capsys.readouterr().out and snapshot(tmp_path) == before


# -- 7. OS-level failures are one line, exit status 2, nothing half-written -------------------------------------------


@pytest.mark.parametrize("case", ["gate_without_alpha", "output_is_a_file", "corrupt_model", "unknown_model",
                                  "full_disk"])
def test_7_os_failures_are_one_line_errors(case, unet, tiny_pipeline_dir, tmp_path, capsys):
    csv = prompt_csv(tmp_path / "prompts.csv", ["a portrait of adam driver", "a cat", "a dog"])
    config = gen_yaml(tmp_path, csv, steps=1, size=32)
    root = tmp_path / "out"
    kept = root / "earlier" / "erased" / "0_kept_1_0.png"  # an earlier result that must survive
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"an image a user keeps")
    model, extra = str(tiny_pipeline_dir), []
    if case == "gate_without_alpha":
        good = write_gate(tmp_path / "gates" / "x" / "adam driver" / "cpe_last.safetensors", unet, "adam driver", 0)
        extra = ["--erasers", str(rewrite_gate(good, tmp_path / "gates" / "y" / "c" / "cpe_last.safetensors",
                                               metadata_change=lambda m: m.pop("alpha")))]
        expected = "cpe_last.safetensors: metadata lacks 'alpha'"
    elif case == "output_is_a_file":
        (root / "original").write_text("a file where a folder should be")
        expected = f"{root / 'original'}: is a file, not a folder"
    elif case == "corrupt_model":
        model = str(tmp_path / "model")
        shutil.copytree(tiny_pipeline_dir, model)
        (Path(model) / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 64)
        expected = f"{model}: cannot load the pipeline"
    elif case == "unknown_model":
        model = "no-such-org/no-such-model-cpe"
        expected = "model 'no-such-org/no-such-model-cpe' is not a local folder nor in the Hugging Face cache"
    else:
        expected = "File too large"
    before = snapshot(tmp_path)
    argv = ["--config", str(config), "--model", model, "--save_root", str(root), "--device", "cpu", *extra]
    start = time.perf_counter()
    if case == "full_disk":  # a file-size limit: the kernel refuses writes past 2 kB, as on a full disk
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limits = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, limits[1]))
        try:
            code = generate_main(argv)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limits)
            signal.signal(signal.SIGXFSZ, handler)
    else:
        code = generate_main(argv)
    line = one_line_error(code, capsys)
    assert expected in line, line
    assert time.perf_counter() - start < 30  # an unreachable hub id fails at once, not after 30 s of retries
    after = snapshot(tmp_path)
    if case == "full_disk":  # the image being written is gone, nothing half-written stays
        assert ".png" in line and str(root / "original" / "erased") in line
        assert not [p for p in root.rglob("*") if p.name.endswith((".cpe-tmp", ".tmp"))]
        assert {k: v for k, v in after.items() if k in before} == before
    else:
        assert after == before


def test_7_damaged_checkpoint_and_inception_files_are_one_line_errors(tiny_pipeline_dir, tmp_path, capsys):
    config = small_config(tmp_path / "cfg", tiny_pipeline_dir, concepts=("adam driver",), **QUICK)
    folder = tmp_path / "cfg" / "out" / "exp" / "adam_driver"
    folder.mkdir(parents=True)
    (folder / training.CHECKPOINT).write_bytes(b"PK\x03\x04 torn by a crash")
    before = snapshot(tmp_path)
    line = one_line_error(train_cpe.main(["--config", str(config), "--resume"]), capsys)
    assert f"{folder / training.CHECKPOINT}: not a readable checkpoint" in line
    assert snapshot(tmp_path) == before
    from cpe.metrics.features import CleanFidInception

    inception = tmp_path / "inception-2015-12-05.pt"
    inception.write_bytes(b"\x80\x04 half a download")
    with pytest.raises(ValueError, match=r"inception-2015-12-05\.pt: not clean-fid's TorchScript Inception") as e:
        CleanFidInception(inception, device="cpu")
    assert "\n" not in str(e.value)


# -- 8. leftovers: stale temporary files, duplicate log records after resume -------------------------------------------


def _dead_pid() -> int:
    pid = 2**22 - 1
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        pid -= 1


def test_8_stale_temp_files_go_and_a_resumed_log_has_each_step_once(tiny_pipeline_dir, tmp_path):
    from cpe.util.io import _HOST

    csv = prompt_csv(tmp_path / "prompts.csv", ["a cat"])
    cfg = GenerationConfig(prompt_path=str(csv), subset="erased", width=16, height=16, num_inference_steps=1,
                           save_root=str(tmp_path / "out"))
    out = run_generation(cfg, str(tiny_pipeline_dir), device="cpu").out_dir
    dead = out / f".0_a_cat_1_0.png.{_HOST}-{_dead_pid()}-0badc0de.cpe-tmp"  # a writer killed by kill -9
    live = out / f".manifest.jsonl.{_HOST}-{os.getpid()}-00c0ffee.cpe-tmp"  # a writer still running
    older = out / ".manifest.jsonl.a1b2c3d4.tmp"  # tempfile.mkstemp's name in earlier versions
    user = out / ".notes.tmp"  # not ours
    for path in (dead, live, older, user):
        path.write_bytes(b"partial")
    summary = run_generation(cfg, str(tiny_pipeline_dir), device="cpu")
    assert summary.skipped_existing == 1
    assert (dead.exists(), live.exists(), older.exists(), user.exists()) == (False, True, False, True)
    os.utime(live, (time.time() - 7200, time.time() - 7200))  # an hour old: stale whoever wrote it
    assert remove_stale_temp_files(out) == [live]

    config = load_train_config(small_config(tmp_path / "cfg", tiny_pipeline_dir, concepts=("adam driver",)))
    paths = ConceptPaths(config.output_dir() / "adam_driver", "cpe")
    paths.folder.mkdir(parents=True)
    (paths.folder / f".checkpoint.pt.{_HOST}-{_dead_pid()}-12345678.cpe-tmp").write_bytes(b"torn")
    assert training.plan(config, load_concepts(config.path("concepts.yaml"), "a person", 0.3), False, False)
    assert list(paths.folder.iterdir()) == []  # the only file was a stale temporary one: not an "unfinished run"

    lines = [json.dumps({"concept": "adam driver", "stage": s, "phase": p, "step": i, "lr": 0.1})
             for s, p, i in [(1, "erase", 1), (1, "erase", 2), (1, "adv", 1), (2, "erase", 1), (2, "erase", 2)]]
    paths.log.write_text("\n".join(lines) + '\n{"concept": "adam dri')  # killed in stage 2, mid-line
    trim_log(paths, stages_done=1)  # resuming after stage 1 redoes stage 2
    assert paths.log.read_text() == "\n".join(lines[:3]) + "\n"
    records = read_jsonl(paths.log)
    assert len({(r["stage"], r["phase"], r["step"]) for r in records}) == len(records)


# -- 9. smaller: errors name the file, manifests stay inside, the feature cache loads no code ------------------------


def test_9_utf8_and_gate_metadata_errors_name_the_file(unet, tmp_path):
    latin1 = "- Chaïm Soutine\n".encode("latin-1")
    cases = [
        (tmp_path / "concepts.yaml", latin1, lambda p: load_concepts(p, "a person", 0.3)),
        (tmp_path / "templates.csv", b"prompt\n\xe9 {concept}\n", lambda p: read_csv_column(p, "prompt")),
        (tmp_path / "train.yaml", b"anchors:\n  sentences: s\xe9.csv\n", load_train_config),
        (tmp_path / MANIFEST_NAME, b'{"file": "\xe9.png"}\n', read_manifest),
    ]
    for path, data, reader in cases:
        path.write_bytes(data)
        with pytest.raises(ValueError, match=re.escape(str(path))) as error:
            reader(path)
        assert "\n" not in str(error.value) and ("UTF-8" in str(error.value) or "utf-8" in str(error.value))
    assert isinstance(pytest.raises(ConfigError, load_train_config, tmp_path / "train.yaml").value, ConfigError)
    good = write_gate(tmp_path / "g" / "cpe_last.safetensors", unet, "adam driver", 0)
    for change, expected in [(lambda m: m.update(training_config="{"), "metadata training_config is not valid JSON"),
                             (lambda m: m.update(lora_rank="one"), "metadata lora_rank='one' is not a number"),
                             (lambda m: m.pop("concept"), "metadata lacks 'concept'"),
                             (lambda m: m.update(key_mode="sideways"), "unknown key_mode 'sideways'")]:
        path = rewrite_gate(good, tmp_path / "g" / "bad_last.safetensors", metadata_change=change)
        with pytest.raises(GateFileError, match=f"{path}: .*{expected}"):
            read_gate_file(path)


def test_9_toy_evaluation_reads_only_described_images_inside_the_folder(tmp_path):
    from cpe.metrics.toy import score_folders

    folder = tmp_path / "erased"
    folder.mkdir()
    (tmp_path / "secret.png").write_bytes(b"outside the folder")
    record = {"file": "../secret.png", "row": 0, "prompt": "a red circle", "seed": 1, "image_index": 0,
              "guidance": 5.0, "erasers": [], "model": "toy", "config": {}, "extra": {"colour": "red",
                                                                                      "shape": "circle"}}
    atomic_write_jsonl(folder / MANIFEST_NAME, [record])
    with pytest.raises(ValueError, match=r"manifest\.jsonl:1: file '\.\./secret\.png' is not a relative path inside"):
        score_folders([folder], shape_model=None)
    for escape in ("/etc/passwd", "a/../../secret.png", "C:\\x.png", ""):
        atomic_write_jsonl(folder / MANIFEST_NAME, [{**record, "file": escape}])
        with pytest.raises(ValueError, match="is not a relative path inside"):
            read_manifest(folder)
    from PIL import Image

    Image.new("RGB", (4, 4)).save(folder / "0.png")
    Image.new("RGB", (4, 4)).save(folder / "stray.png")  # an image the manifest does not describe
    atomic_write_jsonl(folder / MANIFEST_NAME, [{**record, "file": "0.png"}])
    with pytest.raises(ValueError, match="1 images not in manifest; first not in the manifest: stray.png"):
        score_folders([folder], shape_model=None)


def test_9_the_feature_cache_is_loaded_without_running_pickled_code(tmp_path):
    from types import SimpleNamespace

    from cpe.metrics.evaluate import Evaluation
    from cpe.metrics.image_sets import load_images
    from cpe.util.io import json_digest

    images_dir = tmp_path / "images"
    images_dir.mkdir()
    from PIL import Image

    Image.new("RGB", (4, 4)).save(images_dir / "a.png")
    images = load_images(images_dir)
    evaluation = SimpleNamespace(extractor=SimpleNamespace(name="x"), out=tmp_path / "out", _features={},
                                 batch_size=1)
    cache = evaluation.out / "features" / f"{json_digest([images.fingerprint(), 'x'], 20)}.pt"
    cache.parent.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"features": _Payload(str(marker))}, cache)
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        Evaluation.features(evaluation, images)
    assert not marker.exists()


class _Payload:
    """Unpickling this runs ``open(path, 'w')``: what a hostile feature cache could do without weights_only."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_7_full_disk_while_training_is_one_line_and_leaves_no_partial_file(tiny_pipeline_dir, tmp_path, capsys):
    config = small_config(tmp_path / "cfg", tiny_pipeline_dir, concepts=("adam driver",), **QUICK)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))  # gate files are larger
    try:
        code = train_cpe.main(["--config", str(config)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    line = one_line_error(code, capsys)
    assert "adam_driver" in line and ("File too large" in line or os.strerror(errno.EFBIG) in line), line
    folder = tmp_path / "cfg" / "out" / "exp" / "adam_driver"
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    assert not (folder / "cpe_last.safetensors").exists()


def test_6_a_setting_newer_than_a_folder_counts_as_its_default():
    from cpe.generation.folder import describe_difference

    folder = {"model": "m", "erasers": [], "image_settings": {"width": 8}}  # written before "pooled" existed
    same = {"model": "m", "erasers": [], "image_settings": {"width": 8, "pooled": "keep"}}
    assert describe_difference(folder, same) is None
    changed = {"model": "m", "erasers": [], "image_settings": {"width": 8, "pooled": "neutral"}}
    assert describe_difference(folder, changed) == "pooled: folder None, this run 'neutral'"

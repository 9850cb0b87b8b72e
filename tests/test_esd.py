"""ESD-x baseline (cpe.baselines.esd): the objective, one training step, files, applying, generation, the CLI and
an erasure measured on the toy model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cpe.baselines.esd import (
    ESDFileError,
    ESDSettings,
    ESDTrainer,
    apply_esd,
    negative_guidance_target,
    read_esd,
    save_esd,
    train_esd,
)
from cpe.toy import TOY_MODEL_DIR
from cpe.training.config import load_train_config

REPO = Path(__file__).resolve().parents[1]
SHAPES = ("circle", "square", "triangle", "cross")
# the settings of the measured toy erasure (docs/robustness.md): 10x the paper's lr, 1/5 of its iterations and
# DDIM steps, so that it trains in about 20 s on one core
TOY_SETTINGS = ESDSettings(iterations=200, lr=1e-3, ddim_steps=10, seed=0)


def _colour_config():
    return load_train_config(REPO / "configs" / "toy" / "train_colour.yaml", [f"model.path={TOY_MODEL_DIR}"])


@pytest.fixture(scope="module")
def quick_edit():
    """A 3-step ESD-x edit of "red" on the toy model: enough for files, applying and generation."""
    return train_esd(_colour_config(), 0, 1, ESDSettings(iterations=3, lr=1e-3, ddim_steps=4))


def test_negative_guidance_target_is_the_frozen_model_guided_away_from_the_concept():
    concept, empty = torch.tensor([3.0, 1.0]), torch.tensor([1.0, 1.0])
    assert torch.equal(negative_guidance_target(concept, empty, 1.0), torch.tensor([-1.0, 1.0]))
    assert torch.equal(negative_guidance_target(concept, empty, 0.0), empty)
    assert torch.equal(negative_guidance_target(concept, empty, 2.0), torch.tensor([-3.0, 1.0]))


@pytest.mark.parametrize(("params", "trained"), [("xattn", ("to_q", "to_k", "to_v", "to_out")),
                                                 ("xattn-strict", ("to_k", "to_v"))])
def test_one_step_lowers_the_loss_and_changes_only_cross_attention_parameters(tiny_pipeline_dir, params, trained):
    from cpe.models.loading import TextSide, load_ddim_scheduler, load_unet

    model = str(tiny_pipeline_dir)
    text = TextSide.load(model)
    unet = load_unet(model)
    before = {name: p.detach().clone() for name, p in unet.named_parameters()}
    trainer = ESDTrainer(unet, load_ddim_scheduler(model), text.encode(["a photo of a cat", "a cat"]),
                         text.encode([""]), ESDSettings(lr=1e-4, ddim_steps=4, params=params))
    example = trainer.example()
    loss_before = trainer.step(example)
    with torch.no_grad():
        loss_after = trainer.loss(example).item()
    assert loss_after < loss_before
    changed = {name for name, p in unet.named_parameters() if not torch.equal(p, before[name])}
    assert changed == set(trainer.parameters)
    assert all(".attn2." in name and name.split(".attn2.")[1].split(".")[0] in trained for name in changed)
    assert {name.split(".attn2.")[1].split(".")[0] for name in changed} == set(trained)
    assert all(torch.equal(p, before[name]) for name, p in trainer.frozen.named_parameters())


def test_settings_are_validated():
    for bad in (ESDSettings(iterations=0), ESDSettings(lr=0.0), ESDSettings(negative_guidance=-1.0),
                ESDSettings(ddim_steps=0), ESDSettings(params="all")):
        with pytest.raises(ValueError, match="ESD"):
            bad.check()


def test_esd_file_round_trips_refuses_overwrite_and_applies_exactly(quick_edit, tmp_path):
    from cpe.models.loading import load_unet

    path = save_esd(quick_edit, tmp_path / "esd" / "red" / "esd.safetensors")
    loaded = read_esd(path)
    assert loaded.concepts == ["red"] and loaded.name == "esd-x:red" and len(loaded.sha256) == 64
    assert loaded.settings == quick_edit.settings and loaded.base_model == "{root}/src/cpe/toy/assets/pipeline"
    assert loaded.info["prompts"] == 6 and set(loaded.weights) == set(quick_edit.weights)
    assert all(torch.equal(loaded.weights[k], quick_edit.weights[k]) for k in quick_edit.weights)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        save_esd(quick_edit, path)
    unet = load_unet(str(TOY_MODEL_DIR))
    before = {name: p.detach().clone() for name, p in unet.named_parameters()}
    handle = apply_esd(unet, path)
    after = dict(unet.named_parameters())
    assert len(loaded.weights) == 50  # to_q, to_k, to_v, to_out weight and bias of the toy UNet's 10 cross-attentions
    assert all(torch.equal(after[name], loaded.weights[name]) for name in loaded.weights)
    assert any(not torch.equal(after[name], before[name]) for name in loaded.weights)
    assert all(torch.equal(after[name], before[name]) for name in before if name not in loaded.weights)
    handle.restore()
    assert all(torch.equal(after[name], before[name]) for name in before)


def test_bad_esd_inputs_are_one_line_errors(quick_edit, tmp_path, tiny_pipeline_dir):
    from cpe.baselines.uce import UCEEdit, UCESettings, save_uce
    from cpe.models.loading import load_unet

    path = save_esd(quick_edit, tmp_path / "esd.safetensors")
    with pytest.raises(ValueError, match="does not match|no matching") as info:
        apply_esd(load_unet(str(tiny_pipeline_dir)), path)
    assert "\n" not in str(info.value)
    outside = read_esd(path)
    outside.weights = {"conv_in.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="not a parameter of a cross-attention module"):
        apply_esd(load_unet(str(TOY_MODEL_DIR)), outside)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ESDFileError, match="not a readable"):
        read_esd(tmp_path / "junk.safetensors")
    with pytest.raises(ESDFileError, match="not found"):
        read_esd(tmp_path / "missing.safetensors")
    uce = save_uce(UCEEdit({"lora_unet_x.delta": torch.zeros(2, 2)}, ["red"], ["colorful"], "", 2, UCESettings()),
                   tmp_path / "uce.safetensors")
    with pytest.raises(ESDFileError, match="not an ESD file"):
        read_esd(uce)


@pytest.fixture(scope="module")
def prompts_dir(tmp_path_factory):
    from cpe.toy.prompt_sets import write_prompt_sets

    folder = tmp_path_factory.mktemp("esd_prompts")
    write_prompt_sets(folder, ["red"])
    return folder


def _generate(*args: str) -> int:
    import generate

    return generate.main(["--config", str(REPO / "configs" / "toy" / "gen" / "erased.yaml"), "--model",
                          str(TOY_MODEL_DIR), "--last_row", "2", "--num_inference_steps", "3", "--device", "cpu",
                          *args])


def test_generate_with_esd_equals_the_pipeline_with_the_edited_weights_and_records_it(quick_edit, prompts_dir,
                                                                                      tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from cpe.generation.config import load_gen_config
    from cpe.generation.manifest import read_manifest
    from cpe.generation.prompt_csv import read_prompt_csv
    from cpe.generation.run import GenerationPipeline

    path = save_esd(quick_edit, tmp_path / "esd_exp" / "red" / "esd.safetensors")
    images = tmp_path / "images"
    assert _generate("--data_dir", str(prompts_dir), "--save_root", str(images), "--esd", str(path)) == 0
    out_dir = images / "esd_exp" / "erased"
    records = read_manifest(out_dir)
    assert len(records) == 2 and records[0]["erasers"] == [{"name": "esd-x:red", "sha256": read_esd(path).sha256}]

    cfg = load_gen_config(REPO / "configs" / "toy" / "gen" / "erased.yaml",
                          {"data_dir": str(prompts_dir), "last_row": 2, "num_inference_steps": 3})
    rows = read_prompt_csv(cfg.resolved_prompt_path(), cfg.first_row, cfg.last_row).rows
    gen = GenerationPipeline(cfg, str(TOY_MODEL_DIR), device="cpu")
    original = [np.asarray(images[0]) for images in gen.images(rows)]
    apply_esd(gen.pipe.unet, quick_edit)
    edited = [np.asarray(images[0]) for images in gen.images(rows)]
    written = [np.asarray(Image.open(out_dir / record["file"]).convert("RGB")) for record in records]
    assert all(np.array_equal(a, b) for a, b in zip(written, edited, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(written, original, strict=True))

    capsys.readouterr()
    assert _generate("--data_dir", str(prompts_dir), "--save_root", str(images), "--experiment", "esd_exp") == 2
    assert "error:" in capsys.readouterr().err  # the folder holds the ESD edit's images: refused without it


def test_generate_refuses_esd_together_with_uce_in_one_line(quick_edit, prompts_dir, tmp_path, capsys):
    path = save_esd(quick_edit, tmp_path / "esd.safetensors")
    assert _generate("--data_dir", str(prompts_dir), "--save_root", str(tmp_path / "images"), "--esd", str(path),
                     "--uce", str(path)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--uce and --esd" in err and "\n" not in err
    assert not (tmp_path / "images").exists()


def test_train_esd_cli_writes_once_then_refuses(tmp_path, capsys):
    import train_esd

    args = ["--config", str(REPO / "configs" / "toy" / "train_colour.yaml"), "--model", str(TOY_MODEL_DIR),
            "--output", str(tmp_path), "--st_idx", "1", "--iterations", "2", "--ddim_steps", "3"]
    assert train_esd.main(args) == 0
    path = tmp_path / "esd-x_ng1.0_sg3.0_it2_lr1e-05_ddim3_seed0" / "green" / "esd.safetensors"
    assert read_esd(path).concepts == ["green"]
    capsys.readouterr()
    assert train_esd.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "refusing to overwrite" in err and "\n" not in err
    assert train_esd.main([*args, "--overwrite", "--lr", "-1"]) == 2
    assert "lr > 0" in capsys.readouterr().err
    assert train_esd.main(["--config", str(tmp_path / "nope.yaml")]) == 2


def _colour_rate(pipe, prompts: list[str], colour: str, seeds: int) -> float:
    """Share of images (``seeds`` per prompt, 10 sampling steps, guidance 5) that the colour rule reads as
    ``colour``."""
    from cpe.toy.classify import classify_colour

    generators = [torch.Generator().manual_seed(seed) for _ in prompts for seed in range(seeds)]
    latents = torch.stack([torch.randn(4, 8, 8, generator=g) for g in generators])
    images = pipe([p for p in prompts for _ in range(seeds)], num_inference_steps=10, guidance_scale=5.0,
                  latents=latents, height=32, width=32).images
    return sum(read == colour for read in classify_colour(images)) / len(images)


@pytest.mark.slow
def test_esd_x_on_the_toy_erases_red_and_keeps_green():
    from cpe.models.loading import load_pipeline

    edit = train_esd(_colour_config(), 0, 1, TOY_SETTINGS)
    pipe = load_pipeline(str(TOY_MODEL_DIR))
    red, green = [f"a red {shape}" for shape in SHAPES], [f"a green {shape}" for shape in SHAPES]
    before = _colour_rate(pipe, red, "red", seeds=6)  # n = 24
    apply_esd(pipe.unet, edit)
    after = _colour_rate(pipe, red, "red", seeds=6)
    kept = _colour_rate(pipe, green, "green", seeds=6)
    assert before >= 0.9 and after <= 0.2, (before, after)  # measured 1.00 -> 0.00
    assert kept >= 0.9, kept  # measured 1.00

"""SDXL and SD 2.x end to end on tiny pipelines saved to folders: text side, training, generation, architecture."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from train_support import interrupted_in_stage_two, small_config

from cpe import training
from cpe.core.network import CPENetwork, spec_for_unet
from cpe.core.resag import ResAG
from cpe.core.weights import load_erasers, read_gate_file, save_gate_file
from cpe.generation.config import GenerationConfig, load_gen_config
from cpe.generation.manifest import read_manifest
from cpe.generation.pooled import neutral_prompt
from cpe.generation.prompt_csv import read_prompt_csv
from cpe.generation.run import GenerationPipeline, run_generation
from cpe.models.loading import TextSide, load_pipeline, load_unet
from cpe.models.zoo import build_tiny_pipeline, sd14_unet, sdxl_unet
from cpe.training.config import load_train_config

REPO = Path(__file__).resolve().parents[1]
PROMPTS = REPO / "tests" / "fixtures" / "gen_prompts.csv"  # 6 rows; row 3 has an empty prompt
TARGET_ROWS = (0, 1)  # the "Adam Driver" prompts
# Two stages with adversarial phases; a high rate and a soft anchor term so 90 erase steps visibly erase.
SHORT = {
    "train": {"num_stages": 2, "iterations": 30, "factor_init_iter": 2, "lr": 0.03, "factor_init_lr": 1, "pal": 100},
    "adversarial": {"iterations": 2},
}
KINDS = ("sdxl", "sd2")


@pytest.fixture(scope="module", params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def model_dir(kind, tmp_path_factory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp(kind) / "model", max_length=8, kind=kind)


@pytest.fixture(scope="module")
def trained(model_dir, tmp_path_factory) -> Path:
    """'adam driver' trained uninterrupted (two stages with adversarial phases): its gate-file folder."""
    cfg = load_train_config(small_config(tmp_path_factory.mktemp("train"), model_dir, **SHORT))
    summary = training.train(cfg, 0, 1)
    return summary.trained[0].parent


def gen_config(save_root: Path, **changes) -> GenerationConfig:
    values = {"prompt_path": str(PROMPTS), "subset": "erased", "width": 16, "height": 16, "num_inference_steps": 2,
              "save_root": str(save_root)}
    return GenerationConfig(**{**values, **changes})


def zero_gates(model: Path, folder: Path) -> Path:
    """A zero-initialised gate file for 'adam driver' (neutral 'a person'): no residual, every gate σ(0) = 0.5."""
    resag = ResAG(spec_for_unet(load_unet(str(model))))
    return save_gate_file(resag, folder / "zero" / "adam_driver" / "cpe_last.safetensors", concept="adam driver",
                          neutral="a person")


def pixels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)).astype(int) for p in sorted(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def plain(model_dir, tmp_path_factory) -> Path:
    summary = run_generation(gen_config(tmp_path_factory.mktemp("plain"), batch_size=1), str(model_dir), device="cpu")
    assert summary.generated == 5
    return summary.out_dir


def test_text_side_gives_exactly_what_encode_prompt_feeds_the_unet(kind, model_dir):
    pipe = load_pipeline(str(model_dir))
    text = TextSide.load(str(model_dir))  # what training loads: tokenizers and encoders only
    prompts = ["a photo of adam driver", "", "a cat on a long mat with a hat and a bat"]
    embedding = text.embed(prompts)
    if kind == "sdxl":
        context, _, pooled, _ = pipe.encode_prompt(prompts, device="cpu", do_classifier_free_guidance=False)
        assert embedding.context.shape == (3, 8, 32 + 48) and embedding.pooled.shape == (3, 32)
        assert (embedding.pooled - pooled).norm() <= 1e-6 * pooled.norm()
        assert torch.equal(text.pooled(prompts), embedding.pooled)
    else:
        context, _ = pipe.encode_prompt(prompts, "cpu", 1, False)
        assert pipe.scheduler.config.prediction_type == "v_prediction" and embedding.pooled is None
    assert (embedding.context - context).norm() <= 1e-6 * context.norm()
    assert text.width == pipe.unet.config.cross_attention_dim


def test_training_runs_resumes_and_records_the_architecture(kind, model_dir, trained, tmp_path, monkeypatch):
    tensors, info = read_gate_file(trained / "cpe_last.safetensors")
    width, layers = (80, 28) if kind == "sdxl" else (32, 14)
    assert info.spec.embed_dim == width and len(info.spec.layer_dims) == layers
    with safe_open(str(trained / "cpe_last.safetensors"), framework="pt") as f:
        assert f.metadata()["base_architecture"] == f"custom UNet (context {width}, {layers} to_k/to_v)"
    assert tensors["w_query"].abs().sum() > 0 and any(t.abs().sum() > 0 for k, t in tensors.items() if ".up" in k)

    cfg = load_train_config(small_config(tmp_path, model_dir, **SHORT))
    with interrupted_in_stage_two(monkeypatch), pytest.raises(KeyboardInterrupt):
        training.train(cfg, 0, 1)
    resumed = training.train(cfg, 0, 1, resume=True).trained[0]
    again, _ = read_gate_file(resumed)
    assert again.keys() == tensors.keys() and all(torch.equal(again[k], tensors[k]) for k in tensors)


def test_generation_equals_the_stock_pipeline_and_does_not_depend_on_batching(model_dir, plain, tmp_path):
    gen = GenerationPipeline(gen_config(tmp_path), str(model_dir), device="cpu")
    rows = [r for r in read_prompt_csv(PROMPTS).rows if r.prompt]
    ours = pixels(plain)  # made one row per pipeline call
    names = [next(n for n in ours if n.startswith(f"{r.row}_")) for r in rows]
    latents, generators = gen._latents(rows[:2])
    stock = gen.pipe(prompt=[r.prompt for r in rows[:2]], height=16, width=16, num_inference_steps=2,
                     guidance_scale=7.5, latents=latents, generator=generators).images
    assert all(np.array_equal(np.asarray(image).astype(int), ours[n]) for image, n in zip(stock, names, strict=False))
    batched = [np.asarray(images[0]).astype(int) for images in gen.images(rows[:4])]
    assert all(np.array_equal(image, ours[n]) for image, n in zip(batched, names, strict=False))


def test_zero_erasers_are_bit_identical_and_trained_ones_change_targets(kind, model_dir, plain, trained, tmp_path):
    zero = zero_gates(model_dir, tmp_path)
    # With pooled: neutral at threshold 0.5 no gate of the zero ResAG fires (0.5 > 0.5 is false): pooled kept too.
    pooled = {"pooled": "neutral", "pooled_threshold": 0.5} if kind == "sdxl" else {}
    cfg = gen_config(tmp_path / "zero", batch_size=2, **pooled)
    erased = pixels(run_generation(cfg, str(model_dir), [zero], device="cpu").out_dir)
    original = pixels(plain)
    assert all(np.array_equal(erased[n], original[n]) for n in original)

    cfg = gen_config(tmp_path / "trained", batch_size=2)
    erased = pixels(run_generation(cfg, str(model_dir), [trained], device="cpu").out_dir)
    change = {int(n.split("_")[0]): round(float(np.abs(erased[n] - original[n]).mean()), 3) for n in original}
    target = np.mean([change[row] for row in TARGET_ROWS])
    assert target > 1.0 and max(c for row, c in change.items() if row not in TARGET_ROWS) < target / 4, change


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sdxl"], scope="module")
def test_two_sdxl_processes_with_an_eraser_and_neutral_pooling_make_what_one_makes(kind, model_dir, trained, tmp_path):
    config = tmp_path / "erased.yaml"
    config.write_text("width: 16\nheight: 16\nnum_inference_steps: 2\nbatch_size: 2\npooled: neutral\n"
                      "pooled_threshold: 0.05\n" f"prompt_path: {PROMPTS.name}\n")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "generate.py"),
               "--config", str(config), "--model", str(model_dir), "--data_dir", str(PROMPTS.parent),
               "--save_root", str(tmp_path / "two"), "--erasers", str(trained)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    two_dir = next((tmp_path / "two").glob("*/erased"))
    cfg = load_gen_config(config, {"data_dir": str(PROMPTS.parent), "save_root": str(tmp_path / "one")})
    one_dir = run_generation(cfg, str(model_dir), [trained], device="cpu").out_dir
    two, one = pixels(two_dir), pixels(one_dir)
    assert len(one) == 5 and list(two) == list(one) and all(np.array_equal(two[n], one[n]) for n in one)
    strip = [{k: v for k, v in r.items() if k != "config"} for r in read_manifest(two_dir)]
    assert strip == [{k: v for k, v in r.items() if k != "config"} for r in read_manifest(one_dir)]
    assert '"processes": 2' in (two_dir / "generation_log.jsonl").read_text()


def test_neutral_pooled_embedding_is_that_of_the_prompt_with_the_concept_replaced(kind, model_dir, plain, tmp_path):
    """Threshold 0.4 < σ(0): the zero ResAG fires on every token but adds no residual."""
    zero = zero_gates(model_dir, tmp_path)
    cfg = gen_config(tmp_path, pooled="neutral", pooled_threshold=0.4)
    if kind != "sdxl":
        with pytest.raises(ValueError, match="pooled: neutral needs an SDXL model"):
            GenerationPipeline(cfg, str(model_dir), [zero], device="cpu")
        return
    gen = GenerationPipeline(cfg, str(model_dir), [zero], device="cpu")
    target = read_prompt_csv(PROMPTS).rows[0]  # "A portrait of Adam Driver"
    image = np.asarray(gen.images([target])[0][0]).astype(int)
    latents, generators = gen._latents([target])
    pooled = gen.text.pooled(["A portrait of a person"])
    expected = gen.pipe(
        prompt_embeds=gen.text.encode([target.prompt]), pooled_prompt_embeds=pooled,
        height=16, width=16, num_inference_steps=2, guidance_scale=7.5, latents=latents, generator=generators,
    ).images[0]
    original = next(a for n, a in pixels(plain).items() if n.startswith("0_"))
    assert np.array_equal(image, np.asarray(expected).astype(int)) and not np.array_equal(image, original)


def test_neutral_prompt_replaces_whole_words_or_falls_back_to_the_neutrals():
    concepts = [("adam driver", "a person")]
    assert neutral_prompt("A portrait of Adam Driver, smiling", concepts) == "A portrait of a person, smiling"
    assert neutral_prompt("adam drivers club", concepts) == "a person"  # not the word: the neutral alone
    both = [("adam driver", "a person"), ("van gogh", "an artist")]
    assert neutral_prompt("adam driver by Van Gogh", both) == "a person by an artist"
    assert neutral_prompt("the actor from Paterson", both) == "a person, an artist"


def test_gate_files_of_sd14_and_sdxl_do_not_load_into_each_other(tmp_path):
    sd14, sdxl = sd14_unet("meta"), sdxl_unet("meta")
    spec = spec_for_unet(sdxl)
    assert spec.embed_dim == 2048 and len(spec.layer_dims) == 140
    labels = {"sd14": "SD 1.x (context 768, 32 to_k/to_v)", "sdxl": "SDXL (context 2048, 140 to_k/to_v)"}
    for source, target, unet in (("sd14", "sdxl", sdxl), ("sdxl", "sd14", sd14)):
        gates = ResAG(spec_for_unet(sd14 if source == "sd14" else sdxl, gate_rank=2))
        path = save_gate_file(gates, tmp_path / f"{source}_last.safetensors", concept="x")
        with pytest.raises(ValueError) as error:
            CPENetwork(load_erasers([path])[0]).attach(unet)
        assert str(error.value) == f"gates ({path}) fit {labels[source]}, not this model's {labels[target]}"


@pytest.mark.parametrize("domain", ["celebs", "artists", "explicit"])
def test_sdxl_configs_load_and_keep_the_sd14_protocol_at_1024_pixels(domain):
    configs = Path(__file__).resolve().parents[1] / "configs" / domain
    cfg = load_train_config(configs / "train_sdxl.yaml")
    base = load_train_config(configs / "train.yaml")
    assert cfg.model.path == "stabilityai/stable-diffusion-xl-base-1.0" and cfg.output_dir() != base.output_dir()
    as_sd14 = replace(cfg, model=replace(cfg.model, path=base.model.path), save=replace(cfg.save, root=base.save.root),
                     source=base.source)
    assert as_sd14 == base  # every other setting is the SD v1.4 protocol's
    for path in sorted((configs / "gen_sdxl").glob("*.yaml")):
        sdxl, sd14 = load_gen_config(path), load_gen_config(configs / "gen" / path.name)
        assert (sdxl.width, sdxl.height, sdxl.pooled) == (1024, 1024, "keep"), path
        assert sdxl.save_root == f"{sd14.save_root}_sdxl", path
        same = ("prompt_path", "subset", "negative_prompt", "guidance_scale", "num_inference_steps", "gate_rank",
                "unconditional_prompt", "generate_num", "data_dir")
        assert all(getattr(sdxl, key) == getattr(sd14, key) for key in same), path
    assert len(list((configs / "gen_sdxl").glob("*.yaml"))) == len(list((configs / "gen").glob("*.yaml")))

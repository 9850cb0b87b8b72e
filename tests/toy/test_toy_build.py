import json

import numpy as np
import pytest
import torch

from cpe.models.loading import load_pipeline
from cpe.toy.build import INFO_FILE, PIPELINE_DIR, STATE_DIR, BuildConfig, build, main
from cpe.toy.classify import CLASSIFIER_FILE, load_shape_classifier
from cpe.toy.quality import sample_images

TINY = BuildConfig(vae_steps=2, unet_steps=2, classifier_steps=2, dataset_size=16, batch_size=4, vae_batch_size=4,
                   checkpoint_every=1)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    build(out, TINY)
    return out


def test_builder_writes_a_pipeline_folder_that_loads_as_float32_and_samples(built):
    pipe = load_pipeline(str(built / PIPELINE_DIR))
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        assert next(module.parameters()).dtype == torch.float32
    assert pipe.tokenizer.model_max_length == 16
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    images = sample_images(pipe, ["a red circle"], [0], steps=2)
    assert images.shape == (1, 32, 32, 3) and images.dtype == np.uint8


def test_builder_saves_fp16_weights_classifier_and_info_and_cleans_its_state(built):
    from safetensors import safe_open

    with safe_open(str(built / PIPELINE_DIR / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16
    load_shape_classifier(built / CLASSIFIER_FILE)
    info = json.loads((built / INFO_FILE).read_text())
    assert info["config"]["unet_steps"] == 2 and info["vae_scaling_factor"] > 0
    assert not (built / STATE_DIR).exists()


def test_builder_refuses_to_overwrite_a_trained_pipeline(built):
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        build(built, TINY)


def test_builder_cli_rejects_non_positive_steps(tmp_path):
    with pytest.raises(SystemExit, match="--unet-steps must be >= 1"):
        main(["--out", str(tmp_path), "--unet-steps", "0"])


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_denoiser_training_resumed_from_its_checkpoint_gives_identical_weights(tmp_path, kind):
    from cpe.toy.build import _Checkpoints, train_denoiser

    cfg = BuildConfig.for_kind(kind, **{k: v for k, v in TINY.__dict__.items() if k not in ("kind", "text_width")})
    latents = torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    colours, shapes = ["red", "blue"] * 4, ["circle", "cross"] * 4
    ckpt = _Checkpoints(tmp_path, cfg)
    straight, text = train_denoiser(latents, colours, shapes, cfg, ckpt)  # leaves its step-1 checkpoint
    assert ckpt.path("denoiser").is_file()
    resumed, text_resumed = train_denoiser(latents, colours, shapes, cfg, ckpt)  # starts again from step 1
    assert len(text.encoders) == (2 if kind == "sdxl" else 1)
    modules = [(straight, resumed), *zip(text.encoders, text_resumed.encoders, strict=True)]
    for one, other in modules:
        for (name, a), b in zip(one.state_dict().items(), other.state_dict().values(), strict=True):
            assert torch.equal(a, b), name
    other = BuildConfig(**{**cfg.__dict__, "seed": 1})
    with pytest.raises(ValueError, match="another configuration"):
        train_denoiser(latents, colours, shapes, other, _Checkpoints(tmp_path, other))


def test_sdxl_kind_builds_an_sdxl_pipeline_reusing_the_toy_vae_and_classifier(tmp_path):
    from safetensors.torch import load_file

    from cpe.models.loading import TextSide
    from cpe.toy import TOY_ASSETS, TOY_MODEL_DIR

    cfg = BuildConfig.for_kind("sdxl", reuse_from=str(TOY_ASSETS), unet_steps=1, dataset_size=8, batch_size=4)
    pipe = load_pipeline(str(build(tmp_path, cfg)))
    assert type(pipe).__name__ == "StableDiffusionXLPipeline" and pipe.config.force_zeros_for_empty_prompt is False
    assert pipe.tokenizer_2.pad_token == "!" and TextSide.from_pipeline(pipe).width == 64
    assert pipe.unet.config.addition_embed_type == "text_time"
    vae = "vae/diffusion_pytorch_model.safetensors"
    shipped, built = load_file(TOY_MODEL_DIR / vae), load_file(tmp_path / PIPELINE_DIR / vae)
    assert all(torch.equal(shipped[k], built[k]) for k in shipped)
    assert (tmp_path / CLASSIFIER_FILE).read_bytes() == (TOY_ASSETS / CLASSIFIER_FILE).read_bytes()
    assert sample_images(pipe, ["a red circle"], [0], steps=2).shape == (1, 32, 32, 3)


def test_builder_rejects_an_unknown_kind_and_a_folder_that_is_no_toy_build(tmp_path):
    with pytest.raises(ValueError, match="unknown toy model kind 'sd3'"):
        build(tmp_path, BuildConfig(kind="sd3"))
    with pytest.raises(FileNotFoundError, match="not a toy build"):
        build(tmp_path / "out", BuildConfig.for_kind("sdxl", reuse_from=str(tmp_path), dataset_size=4))

"""Small random models built from configs: tiny pipelines for tests and SD-shaped UNets without download.

``build_tiny_pipeline`` saves a complete ``StableDiffusionPipeline`` folder so tests load it through
the very ``from_pretrained(path)`` code users run on ``CompVis/stable-diffusion-v1-4``.
"""

from __future__ import annotations

from pathlib import Path

import torch

# UNet config of CompVis/stable-diffusion-v1-4 (unet/config.json), so its architecture can be built offline.
SD_V14_UNET_CONFIG = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}

# UNet config of stabilityai/stable-diffusion-xl-base-1.0 (unet/config.json): 70 cross-attentions (140 to_k/to_v)
# over a 2048-wide context, and the pooled text embedding + size/crop ids added to the time embedding.
SDXL_BASE_UNET_CONFIG = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "cross_attention_dim": 2048,
    "attention_head_dim": [5, 10, 20],
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
}

# Tiny UNet variants: SD 1.x layout (768-style), SD 2.x-style (1024, linear projection), SDXL-style
# (2048, transformer depth 2). Widths are tiny so a forward takes milliseconds.
TINY_UNET_VARIANTS = {
    "sd1": {"cross_attention_dim": 32},
    "sd2": {"cross_attention_dim": 1024, "use_linear_projection": True, "attention_head_dim": [2, 4]},
    "sdxl": {"cross_attention_dim": 2048, "use_linear_projection": True, "transformer_layers_per_block": 2},
}


def _unet(config: dict, device: str | torch.device):
    from diffusers import UNet2DConditionModel

    if str(device) == "meta":
        from accelerate import init_empty_weights

        with init_empty_weights():
            return UNet2DConditionModel(**config)
    return UNet2DConditionModel(**config).to(device)


def sd14_unet(device: str | torch.device = "meta"):
    """A UNet with SD v1.4's architecture and random (or, on ``meta``, no) weights."""
    return _unet(SD_V14_UNET_CONFIG, device)


def sdxl_unet(device: str | torch.device = "meta"):
    """A UNet with SDXL base 1.0's architecture and random (or, on ``meta``, no) weights."""
    return _unet(SDXL_BASE_UNET_CONFIG, device)


def tiny_unet(variant: str = "sd1", seed: int = 0, **overrides):
    from diffusers import UNet2DConditionModel

    if variant not in TINY_UNET_VARIANTS:
        raise ValueError(f"unknown tiny UNet variant {variant!r}; expected one of {sorted(TINY_UNET_VARIANTS)}")
    config = {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [16, 32],
        "layers_per_block": 1,
        "attention_head_dim": 4,
        "norm_num_groups": 8,
        **TINY_UNET_VARIANTS[variant],
        **overrides,
    }
    torch.manual_seed(seed)
    return UNet2DConditionModel(**config).eval()


TINY_PIPELINE_KINDS = ("sd1", "sd2", "sdxl")


def _tiny_text_encoder(tokenizer, width: int, max_length: int, seed: int, projection: int | None = None,
                       act: str = "quick_gelu"):
    """A 2-layer CLIP text encoder; with ``projection``, SDXL's second encoder (pooled output projected)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=max_length, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=tokenizer.pad_token_id, projection_dim=projection or width, hidden_act=act,
    )
    torch.manual_seed(seed)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def build_tiny_pipeline(folder: str | Path, seed: int = 0, max_length: int = 16, text_dim: int = 32,
                        kind: str = "sd1") -> Path:
    """Build a small random pipeline (real CLIP BPE tokenizer) and save it to ``folder``.

    * "sd1": ``StableDiffusionPipeline``, CLIP-style encoder (quick GELU, EOS padding), PNDM, ε-prediction;
    * "sd2": ``StableDiffusionPipeline``, OpenCLIP-style encoder (GELU, "!" padding), linear-projection
      transformers, DDIM with v-prediction (as stabilityai/stable-diffusion-2-1);
    * "sdxl": ``StableDiffusionXLPipeline``, two encoders (``text_dim`` and ``text_dim + 16`` wide, the
      second projecting its pooled output) whose penultimate states make the UNet's context, the pooled
      embedding and size ids added to the time embedding, Euler discrete (as SDXL base 1.0).
    """
    import diffusers
    from diffusers import AutoencoderKL

    from cpe.models.loading import clip_tokenizer_from_assets, stable_diffusion_pipeline_class

    if kind not in TINY_PIPELINE_KINDS:
        raise ValueError(f"unknown tiny pipeline kind {kind!r}; expected one of {TINY_PIPELINE_KINDS}")
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[8, 16], layers_per_block=1,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], norm_num_groups=4, sample_size=16,
    ).eval()
    schedule = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}
    if kind == "sdxl":
        tokenizer = clip_tokenizer_from_assets(model_max_length=max_length)
        tokenizer_2 = clip_tokenizer_from_assets(model_max_length=max_length, pad_token="!")
        text_encoder = _tiny_text_encoder(tokenizer, text_dim, max_length, seed)
        text_encoder_2 = _tiny_text_encoder(tokenizer_2, text_dim + 16, max_length, seed + 2, projection=text_dim,
                                            act="gelu")
        unet = tiny_unet(
            "sdxl", seed=seed, cross_attention_dim=2 * text_dim + 16, addition_embed_type="text_time",
            addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + text_dim,
        )
        scheduler = diffusers.EulerDiscreteScheduler(**schedule, timestep_spacing="leading")
        pipe = stable_diffusion_pipeline_class("StableDiffusionXLPipeline")(
            vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
            tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, add_watermarker=False,
        )
    else:
        sd2 = kind == "sd2"
        tokenizer = clip_tokenizer_from_assets(model_max_length=max_length, pad_token="!" if sd2 else "<|endoftext|>")
        text_encoder = _tiny_text_encoder(tokenizer, text_dim, max_length, seed, act="gelu" if sd2 else "quick_gelu")
        unet = tiny_unet(kind, seed=seed, cross_attention_dim=text_dim)
        if sd2:
            scheduler = diffusers.DDIMScheduler(**schedule, prediction_type="v_prediction", clip_sample=False,
                                                set_alpha_to_one=False)
        else:
            scheduler = diffusers.PNDMScheduler(**schedule, skip_prk_steps=True, set_alpha_to_one=False)
        pipe = stable_diffusion_pipeline_class()(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    folder = Path(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder

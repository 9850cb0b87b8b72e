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

# Tiny UNet variants: SD 1.x layout (768-style), SD 2.x-style (1024, linear projection), SDXL-style
# (2048, transformer depth 2). Widths are tiny so a forward takes milliseconds.
TINY_UNET_VARIANTS = {
    "sd1": {"cross_attention_dim": 32},
    "sd2": {"cross_attention_dim": 1024, "use_linear_projection": True, "attention_head_dim": [2, 4]},
    "sdxl": {"cross_attention_dim": 2048, "use_linear_projection": True, "transformer_layers_per_block": 2},
}


def sd14_unet(device: str | torch.device = "meta"):
    """A UNet with SD v1.4's architecture and random (or, on ``meta``, no) weights."""
    from diffusers import UNet2DConditionModel

    if str(device) == "meta":
        from accelerate import init_empty_weights

        with init_empty_weights():
            return UNet2DConditionModel(**SD_V14_UNET_CONFIG)
    return UNet2DConditionModel(**SD_V14_UNET_CONFIG).to(device)


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


def build_tiny_pipeline(folder: str | Path, seed: int = 0, max_length: int = 16, text_dim: int = 32) -> Path:
    """Build a small random SD pipeline (real CLIP BPE tokenizer) and save it to ``folder``."""
    from diffusers import AutoencoderKL, PNDMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from cpe.models import clip_tokenizer_from_assets, stable_diffusion_pipeline_class

    tokenizer = clip_tokenizer_from_assets(model_max_length=max_length)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=text_dim, intermediate_size=2 * text_dim, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=max_length, bos_token_id=49406, eos_token_id=49407,
            pad_token_id=49407, projection_dim=text_dim,
        )
    ).eval()
    unet = tiny_unet("sd1", seed=seed, cross_attention_dim=text_dim)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[8, 16], layers_per_block=1,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], norm_num_groups=4, sample_size=16,
    ).eval()
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
        set_alpha_to_one=False, steps_offset=1,
    )
    pipe = stable_diffusion_pipeline_class()(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    folder = Path(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder

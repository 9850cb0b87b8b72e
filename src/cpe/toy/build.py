"""Train the toy text-to-image model from a seed and save it as a StableDiffusionPipeline or
StableDiffusionXLPipeline folder.

``python -m cpe.toy.build --out DIR --seed S [--kind sd|sdxl] [--reuse-from DIR] [--vae-steps N --unet-steps N
--classifier-steps N]`` writes ``DIR/pipeline`` (AutoencoderKL 32x32 -> 8x8x4, UNet2DConditionModel, DPM-Solver
scheduler; fp16 safetensors), ``DIR/shape_classifier.safetensors`` and ``DIR/build_info.json``. The text side:

* ``sd``: one CLIPTextModel (64 wide) whose last hidden state is the context;
* ``sdxl``: SDXL's layout in small: CLIPTextModel + CLIPTextModelWithProjection (32 wide each, the second with
  "!" padding), the context is both penultimate hidden states side by side (64 wide) and the second encoder's
  projected pooled output goes with the size ids through the time embedding (``addition_embed_type="text_time"``).
  The empty caption (10% of the training captions, for classifier-free guidance) is the encoded "", and the
  pipeline is saved with ``force_zeros_for_empty_prompt=False`` so its negative embedding is that same "".

Both kinds encode captions with ``cpe.models.loading.TextSide`` (the function training and generation use), with
gradients. ``--reuse-from`` takes the VAE and the shape classifier of an existing toy build instead of training
them (the same image world and latent space; the SDXL toy reuses the shipped SD toy's). Training state is
checkpointed in ``DIR/.build`` so an interrupted build resumes where it stopped (and gives the same weights); it is
removed when the build completes.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cpe.models.loading import TextSide, clip_tokenizer_from_assets
from cpe.toy import classify
from cpe.toy.world import CAPTION_KINDS, COLOURS, SHAPES, caption, render_dataset, sample_caption
from cpe.util.io import atomic_write, atomic_write_text

PIPELINE_DIR = "pipeline"
STATE_DIR = ".build"
INFO_FILE = "build_info.json"
LOG_FILE = "build_log.jsonl"
KINDS = ("sd", "sdxl")
NOISE_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear"}


@dataclass
class BuildConfig:
    seed: int = 0
    kind: str = "sd"  # sd: one text encoder; sdxl: two, pooled embedding through the time embedding
    reuse_from: str | None = None  # a toy build folder whose VAE and shape classifier are reused (not trained)
    vae_steps: int = 400
    unet_steps: int = 3000
    classifier_steps: int = 800
    dataset_size: int = 8000
    batch_size: int = 32
    vae_batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 50
    ema_decay: float = 0.999
    kl_weight: float = 1e-6
    max_length: int = 16
    text_width: int = 64  # sd: the encoder's width; sdxl: the first encoder's
    text_width_2: int = 32  # sdxl: the second encoder's width (context = text_width + text_width_2)
    projection_dim: int = 32  # sdxl: the pooled embedding's width
    time_id_dim: int = 16  # sdxl: sinusoidal width per size id (addition_time_embed_dim)
    text_layers: int = 3
    unet_channels: tuple[int, ...] = (32, 64, 64)  # the UNet's block_out_channels
    checkpoint_every: int = 250
    save_dtype: str = "float16"

    @classmethod
    def for_kind(cls, kind: str, **values) -> BuildConfig:
        """The defaults of a kind: sdxl's first encoder is 32 wide (context 32 + 32 = 64, as the sd toy's)."""
        return cls(kind=kind, **{**KIND_DEFAULTS.get(kind, {}), **values})


KIND_DEFAULTS = {"sdxl": {"text_width": 32}}


def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[16, 32, 64], layers_per_block=1,
        down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
        norm_num_groups=16, sample_size=32,
    )


IMAGE_SIZE = 32  # pixels; the SDXL size ids (original size, crop, target size) are this image's


def check_config(cfg: BuildConfig) -> None:
    if cfg.kind not in KINDS:
        raise ValueError(f"unknown toy model kind {cfg.kind!r}; expected one of {KINDS}")


def make_unet(cfg: BuildConfig):
    from diffusers import UNet2DConditionModel

    extra = {}
    if cfg.kind == "sdxl":  # SDXL's added conditioning: pooled text embedding + 6 size ids -> time embedding
        extra = {"addition_embed_type": "text_time", "addition_time_embed_dim": cfg.time_id_dim,
                 "projection_class_embeddings_input_dim": 6 * cfg.time_id_dim + cfg.projection_dim,
                 "use_linear_projection": True}
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=list(cfg.unet_channels),
        down_block_types=["CrossAttnDownBlock2D"] * 3, up_block_types=["CrossAttnUpBlock2D"] * 3,
        cross_attention_dim=context_width(cfg), attention_head_dim=4, norm_num_groups=16, **extra,
    )


def context_width(cfg: BuildConfig) -> int:
    return cfg.text_width + (cfg.text_width_2 if cfg.kind == "sdxl" else 0)


def make_text_encoder(tokenizer, cfg: BuildConfig, width: int | None = None, projection: int | None = None,
                      act: str = "quick_gelu"):
    """A CLIP text encoder; with ``projection``, a CLIPTextModelWithProjection (SDXL's second encoder)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    width = width or cfg.text_width
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=4 * width,
        num_hidden_layers=cfg.text_layers, num_attention_heads=4, max_position_embeddings=cfg.max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, projection_dim=projection or width, hidden_act=act,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def make_text_side(cfg: BuildConfig) -> TextSide:
    """Fresh tokenizer(s) and encoder(s) of the kind; sdxl's second pair is OpenCLIP-flavoured ("!" padding, GELU)."""
    tokenizer = clip_tokenizer_from_assets(model_max_length=cfg.max_length)
    if cfg.kind == "sd":
        return TextSide("sd", [tokenizer], [make_text_encoder(tokenizer, cfg)])
    tokenizer_2 = clip_tokenizer_from_assets(model_max_length=cfg.max_length, pad_token="!")
    encoders = [make_text_encoder(tokenizer, cfg),
                make_text_encoder(tokenizer_2, cfg, cfg.text_width_2, projection=cfg.projection_dim, act="gelu")]
    return TextSide("sdxl", [tokenizer, tokenizer_2], encoders)


def size_ids(batch: int) -> torch.Tensor:
    """SDXL's add_time_ids for a 32x32 image, uncropped: (original h, w, crop top, left, target h, w)."""
    return torch.tensor([[IMAGE_SIZE, IMAGE_SIZE, 0, 0, IMAGE_SIZE, IMAGE_SIZE]], dtype=torch.float32).repeat(batch, 1)


def unet_conditioning(text: TextSide, captions: list[str]) -> dict:
    """The UNet's text inputs for ``captions`` (with gradients), as the pipeline feeds them."""
    embedding = text.embed(captions, grad=True)
    out = {"encoder_hidden_states": embedding.context}
    if embedding.pooled is not None:
        out["added_cond_kwargs"] = {"text_embeds": embedding.pooled, "time_ids": size_ids(len(captions))}
    return out


def all_captions() -> list[str]:
    """Every caption the world can produce (the training vocabulary of prompts)."""
    return sorted({caption(t, c, s) for t, _ in CAPTION_KINDS for c in COLOURS for s in SHAPES})


class _Checkpoints:
    """Per-stage training state in ``DIR/.build`` (torch.save dicts written atomically), tied to one config."""

    def __init__(self, out: Path, cfg: BuildConfig) -> None:
        self.root = out / STATE_DIR
        self.log_path = out / LOG_FILE
        self.config = asdict(cfg)

    def path(self, name: str) -> Path:
        return self.root / f"{name}.pt"

    def load(self, name: str) -> dict | None:
        p = self.path(name)
        if not p.is_file():
            return None
        state = torch.load(p, weights_only=False)
        if state.get("config") != self.config:
            raise ValueError(f"{p} was written by a build with another configuration; delete {self.root} to restart")
        return state

    def save(self, name: str, state: dict) -> None:
        atomic_write(self.path(name), lambda tmp: torch.save({**state, "config": self.config}, tmp))

    def log(self, record: dict) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def train_vae(x: torch.Tensor, cfg: BuildConfig, ckpt: _Checkpoints):
    """Autoencoder on the rendered images (MSE + a tiny KL term, as in SD's VAE)."""
    torch.manual_seed(cfg.seed)
    vae = make_vae()
    done = ckpt.load("vae_done")
    if done is not None:
        vae.load_state_dict(done["model"])
        return vae.eval()
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    optimiser = torch.optim.AdamW(vae.parameters(), lr=cfg.lr)
    schedule = _cosine(optimiser, cfg.warmup_steps, cfg.vae_steps)
    start = 0
    state = ckpt.load("vae")
    if state is not None:
        vae.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start = state["step"]
    vae.train()
    bar = tqdm(range(start, cfg.vae_steps), desc="vae", initial=start, total=cfg.vae_steps, mininterval=10)
    for step in bar:
        batch = x[torch.randint(len(x), (cfg.vae_batch_size,), generator=generator)]
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample(generator)).sample
        mse = F.mse_loss(recon, batch)
        loss = mse + cfg.kl_weight * posterior.kl().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if (step + 1) % 50 == 0:
            ckpt.log({"stage": "vae", "step": step + 1, "mse": mse.item(), "time": time.time()})
            bar.set_postfix(mse=f"{mse.item():.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.vae_steps:
            ckpt.save("vae", {"model": vae.state_dict(), "optimiser": optimiser.state_dict(),
                              "schedule": schedule.state_dict(), "generator": generator.get_state(),
                              "torch_rng": torch.get_rng_state(), "step": step + 1})
    ckpt.save("vae_done", {"model": vae.state_dict()})
    return vae.eval()


def _cosine(optimiser, warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


@torch.no_grad()
def encode_latents(vae, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Posterior modes of all images, unscaled."""
    return torch.cat([vae.encode(x[i : i + batch]).latent_dist.mode() for i in range(0, len(x), batch)])


def train_denoiser(latents: torch.Tensor, colours: list[str], shapes: list[str], cfg: BuildConfig,
                   ckpt: _Checkpoints, captioner: Callable[[int, np.random.Generator], str] | None = None):
    """UNet and text encoder(s) trained jointly on epsilon prediction (DDPM add_noise), with EMA weights.

    ``captioner(i, rng)`` draws a caption for training image ``i`` (default: the colour-shape world's
    ``sample_caption``; another world, e.g. ``cpe.toy.gallery``, passes its own and ignores colours/shapes).
    Returns the UNet and the ``TextSide`` (tokenizers and trained encoders)."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    torch.manual_seed(cfg.seed + 2)
    text = make_text_side(cfg)
    unet = make_unet(cfg)
    modules = {"unet": unet, **{f"text_encoder{'_2' * i}": e for i, e in enumerate(text.encoders)}}
    params = [p for module in modules.values() for p in module.parameters()]
    ema = EMAModel(params, decay=cfg.ema_decay, use_ema_warmup=True, power=3 / 4, foreach=True)
    noise_scheduler = DDPMScheduler(**NOISE_SCHEDULE)
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, fused=True)  # fused: 5x faster steps on CPU
    schedule = _cosine(optimiser, cfg.warmup_steps, cfg.unet_steps)
    generator = torch.Generator().manual_seed(cfg.seed + 3)
    rng = np.random.default_rng(cfg.seed + 4)
    if captioner is None:
        def captioner(i: int, rng: np.random.Generator) -> str:
            return sample_caption(colours[i], shapes[i], rng)
    start = 0
    state = ckpt.load("denoiser")
    if state is not None:
        for name, module in modules.items():
            module.load_state_dict(state[name])
        ema.load_state_dict(state["ema"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        rng.bit_generator.state = state["numpy_rng"]
        start = state["step"]
    for module in modules.values():
        module.train()
    bar = tqdm(range(start, cfg.unet_steps), desc="unet+text", initial=start, total=cfg.unet_steps, mininterval=10)
    for step in bar:
        idx = torch.randint(len(latents), (cfg.batch_size,), generator=generator)
        captions = [captioner(i, rng) for i in idx.tolist()]
        clean = latents[idx]
        noise = torch.randn(clean.shape, generator=generator)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(idx),), generator=generator)
        pred = unet(noise_scheduler.add_noise(clean, noise, t), t, **unet_conditioning(text, captions)).sample
        loss = F.mse_loss(pred, noise)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        ema.step(params)
        if (step + 1) % 50 == 0:
            ckpt.log({"stage": "unet", "step": step + 1, "loss": loss.item(), "time": time.time()})
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.unet_steps:
            ckpt.save("denoiser", {**{name: module.state_dict() for name, module in modules.items()},
                                   "ema": ema.state_dict(), "optimiser": optimiser.state_dict(),
                                   "schedule": schedule.state_dict(), "generator": generator.get_state(),
                                   "numpy_rng": rng.bit_generator.state, "step": step + 1})
    ema.copy_to(params)
    for module in modules.values():
        module.eval()
    return unet, text


def save_pipeline(folder: Path, vae, unet, text: TextSide, dtype: torch.dtype) -> Path:
    """A complete pipeline folder (safetensors, DPM-Solver++ scheduler): StableDiffusionPipeline without safety
    checker, or StableDiffusionXLPipeline whose negative embedding is the encoded "" (as trained)."""
    from diffusers import DPMSolverMultistepScheduler

    from cpe.models.loading import stable_diffusion_pipeline_class

    scheduler = DPMSolverMultistepScheduler(**NOISE_SCHEDULE, algorithm_type="dpmsolver++", solver_order=2,
                                            steps_offset=1)
    if text.kind == "sdxl":
        pipe = stable_diffusion_pipeline_class("StableDiffusionXLPipeline")(
            vae=vae, text_encoder=text.encoders[0], text_encoder_2=text.encoders[1], tokenizer=text.tokenizers[0],
            tokenizer_2=text.tokenizers[1], unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=False,
            add_watermarker=False,
        )
        tokenizers = ["tokenizer", "tokenizer_2"]
    else:
        pipe = stable_diffusion_pipeline_class()(
            vae=vae, text_encoder=text.encoders[0], tokenizer=text.tokenizer, unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        tokenizers = ["tokenizer"]
    pipe.to(dtype=dtype)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    for name in tokenizers:
        _slim_tokenizer(tmp / name)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def _slim_tokenizer(folder: Path) -> None:
    """Keep the CLIP vocabulary as vocab.json + merges.txt (1.5 MB) instead of the 3.6 MB tokenizer.json."""
    from cpe.models.loading import CLIP_TOKENIZER_ASSETS

    (folder / "tokenizer.json").unlink(missing_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(CLIP_TOKENIZER_ASSETS / name, folder / name)


def build(out: str | Path, cfg: BuildConfig, overwrite: bool = False) -> Path:
    """Train everything and write the pipeline, classifier and build info to ``out``; returns the pipeline folder."""
    from cpe.models.loading import resolve_dtype

    check_config(cfg)
    out = Path(out)
    pipeline_dir = out / PIPELINE_DIR
    if (pipeline_dir / "model_index.json").exists() and not overwrite:
        raise FileExistsError(f"refusing to overwrite the trained pipeline in {pipeline_dir} (pass --overwrite)")
    started = time.time()
    ckpt = _Checkpoints(out, cfg)
    images, colours, shapes = render_dataset(cfg.dataset_size, seed=cfg.seed)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    if cfg.reuse_from:
        vae = load_reused_vae(Path(cfg.reuse_from))
        latents = encode_latents(vae, x)
        scaling = float(vae.config.scaling_factor)
    else:
        vae = train_vae(x, cfg, ckpt)
        latents = encode_latents(vae, x)
        scaling = float(1 / latents.std())
        vae.register_to_config(scaling_factor=scaling)
    vae_seconds = time.time() - started
    unet, text = train_denoiser(latents * scaling, colours, shapes, cfg, ckpt)
    denoiser_seconds = time.time() - started - vae_seconds
    save_pipeline(pipeline_dir, vae, unet, text, resolve_dtype(cfg.save_dtype))
    if cfg.reuse_from:
        shape_model = classify.load_shape_classifier(Path(cfg.reuse_from) / classify.CLASSIFIER_FILE)
    else:
        shape_model = classify.train_shape_classifier(seed=cfg.seed, steps=cfg.classifier_steps)
    classify.save_shape_classifier(shape_model, out / classify.CLASSIFIER_FILE)
    info = {
        "kind": cfg.kind,
        "config": asdict(cfg),
        "vae_scaling_factor": scaling,
        "seconds": {"vae": round(vae_seconds, 1), "denoiser": round(denoiser_seconds, 1),
                    "total": round(time.time() - started, 1)},
        "classifiers_on_renders": classify.score_on_renders(shape_model),
        "torch": torch.__version__,
    }
    atomic_write_text(out / INFO_FILE, json.dumps(info, indent=2) + "\n")
    shutil.rmtree(ckpt.root, ignore_errors=True)
    return pipeline_dir


def load_reused_vae(folder: Path):
    """The VAE of the toy build in ``folder`` (float32), with its latent scaling factor."""
    from diffusers import AutoencoderKL

    vae_dir = folder / PIPELINE_DIR / "vae"
    if not (vae_dir / "config.json").is_file() or not (folder / classify.CLASSIFIER_FILE).is_file():
        raise FileNotFoundError(f"--reuse-from {folder}: not a toy build (needs {PIPELINE_DIR}/vae and "
                                f"{classify.CLASSIFIER_FILE})")
    return AutoencoderKL.from_pretrained(vae_dir, torch_dtype=torch.float32).eval()


def main(argv: list[str] | None = None) -> None:
    defaults = BuildConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (pipeline/, shape classifier, build_info.json)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--kind", choices=KINDS, default=defaults.kind,
                        help="sd: one text encoder (StableDiffusionPipeline); sdxl: two text encoders and the pooled "
                             "embedding (StableDiffusionXLPipeline)")
    parser.add_argument("--reuse-from", help="a toy build folder whose VAE and shape classifier are reused "
                                             "(e.g. src/cpe/toy/assets for the SDXL toy)")
    parser.add_argument("--text-width", type=int, help="sd: the text encoder's width (default 64); sdxl: the first "
                                                       "encoder's (default 32)")
    parser.add_argument("--vae-steps", type=int, default=defaults.vae_steps)
    parser.add_argument("--unet-steps", type=int, default=defaults.unet_steps)
    parser.add_argument("--classifier-steps", type=int, default=defaults.classifier_steps)
    parser.add_argument("--dataset-size", type=int, default=defaults.dataset_size)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="UNet/text-encoder batch")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing trained pipeline")
    args = parser.parse_args(argv)
    for name in ("vae_steps", "unet_steps", "classifier_steps", "dataset_size", "batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    cfg = BuildConfig.for_kind(args.kind, seed=args.seed, reuse_from=args.reuse_from, vae_steps=args.vae_steps,
                               unet_steps=args.unet_steps, classifier_steps=args.classifier_steps,
                               dataset_size=args.dataset_size, batch_size=args.batch_size,
                               **({"text_width": args.text_width} if args.text_width else {}))
    print(f"wrote {build(args.out, cfg, overwrite=args.overwrite)}")


if __name__ == "__main__":
    main()

"""Train the gallery model (identities, styles, marks) and save it as a StableDiffusionPipeline folder.

``python -m cpe.toy.gallery.build --out DIR [--seed S --vae-steps N --unet-steps N --threads T]`` runs
``cpe.toy.build``'s machinery (VAE, then UNet + CLIP text encoder with the real CLIP BPE tokenizer, EMA,
DPM-Solver++ scheduler, fp16 safetensors) on gallery scenes and captions, and writes ``DIR/pipeline`` and
``DIR/build_info.json`` (config, seconds, the readers' accuracy on renders and on VAE reconstructions).
Training state is checkpointed in ``DIR/.build``: an interrupted build resumes where it stopped (same command)
and gives the same weights. The readers are rules (``cpe.toy.gallery.read``), so there are no classifier
weights to save.

Cost with the defaults (torch 2.13 CPU): the shipped model (``--threads 2``, seed 0) took 4,155 s: VAE 1600 steps
537 s, UNet + text encoder 8000 steps 3,618 s (batch 32, ~1.9 steps/s with 1 or 2 threads alike). fp16 weights
~19.7 MB, plus the 1.5 MB CLIP vocabulary. The thread count can change the last bits of the weights: rebuild the
shipped model with ``--threads 2``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from cpe.toy import build as toy_build
from cpe.toy.gallery import captions, scene
from cpe.toy.gallery.captions import sample_caption
from cpe.toy.gallery.evaluate import score_renders
from cpe.toy.gallery.identities import N_IDENTITIES
from cpe.toy.gallery.scene import render_dataset
from cpe.util.io import atomic_write_text


def world_signature() -> str:
    """The world settings a build's data depends on beyond its config (recorded in it: a checkpoint of another
    world is refused on resume, and build_info.json says which world the weights learned)."""
    return (f"identities={N_IDENTITIES} mix={scene.CONTENT_MIX} styled={scene.STYLED} marked={scene.MARKED} "
            f"generic={captions.GENERIC} empty={captions.EMPTY} content_free={captions.CONTENT_FREE}")


@dataclass
class GalleryBuildConfig(toy_build.BuildConfig):
    vae_steps: int = 1600
    unet_steps: int = 8000
    classifier_steps: int = 0  # rule readers: nothing to train
    dataset_size: int = 16000
    max_length: int = 32
    text_width: int = 96
    text_layers: int = 4
    unet_channels: tuple[int, ...] = (48, 96, 96)
    world: str = ""  # world_signature() when empty (filled in by __post_init__)

    def __post_init__(self) -> None:
        self.world = self.world or world_signature()


def build(out: str | Path, cfg: GalleryBuildConfig, overwrite: bool = False) -> Path:
    """Train and write ``out/pipeline`` and ``out/build_info.json``; returns the pipeline folder."""
    from cpe.models.loading import resolve_dtype

    out = Path(out)
    pipeline_dir = out / toy_build.PIPELINE_DIR
    if (pipeline_dir / "model_index.json").exists() and not overwrite:
        raise FileExistsError(f"refusing to overwrite the trained pipeline in {pipeline_dir} (pass --overwrite)")
    started = time.time()
    ckpt = toy_build._Checkpoints(out, cfg)
    images, scenes = render_dataset(cfg.dataset_size, seed=cfg.seed)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    vae = toy_build.train_vae(x, cfg, ckpt)
    vae_seconds = time.time() - started
    latents = toy_build.encode_latents(vae, x)
    scaling = float(1 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    reconstructions = _reconstruct(vae, x[:600])

    def captioner(i: int, rng: np.random.Generator) -> str:
        return sample_caption(scenes[i], rng)

    unet, text = toy_build.train_denoiser(latents * scaling, [], [], cfg, ckpt, captioner=captioner)
    denoiser_seconds = time.time() - started - vae_seconds
    toy_build.save_pipeline(pipeline_dir, vae, unet, text, resolve_dtype(cfg.save_dtype))
    info = {
        "config": asdict(cfg),
        "vae_scaling_factor": scaling,
        "seconds": {"vae": round(vae_seconds, 1), "denoiser": round(denoiser_seconds, 1),
                    "total": round(time.time() - started, 1)},
        "readers_on_renders": score_renders(images[:600], scenes[:600]),
        "readers_on_vae_reconstructions": score_renders(reconstructions, scenes[:600]),
        "torch": torch.__version__,
    }
    atomic_write_text(out / toy_build.INFO_FILE, json.dumps(info, indent=2) + "\n")
    shutil.rmtree(ckpt.root, ignore_errors=True)
    return pipeline_dir


@torch.no_grad()
def _reconstruct(vae, x: torch.Tensor) -> np.ndarray:
    """uint8 images decoded from the posterior modes of ``x`` (the best the denoiser can draw)."""
    recon = vae.decode(vae.encode(x).latent_dist.mode()).sample
    return ((recon.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def main(argv: list[str] | None = None) -> None:
    defaults = GalleryBuildConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (pipeline/, build_info.json)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--vae-steps", type=int, default=defaults.vae_steps)
    parser.add_argument("--unet-steps", type=int, default=defaults.unet_steps)
    parser.add_argument("--dataset-size", type=int, default=defaults.dataset_size)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing trained pipeline")
    args = parser.parse_args(argv)
    for name in ("vae_steps", "unet_steps", "dataset_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    cfg = GalleryBuildConfig(seed=args.seed, vae_steps=args.vae_steps, unet_steps=args.unet_steps,
                             dataset_size=args.dataset_size)
    print(f"wrote {build(args.out, cfg, overwrite=args.overwrite)}")


if __name__ == "__main__":
    main()

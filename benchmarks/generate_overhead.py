"""Seconds per image: the plain SD v1.4 UNet sampling loop vs the same loop with 1, 14, 100 merged erasers.

Random weights at SD v1.4 shapes (no download) and random gate files of the released shapes (r=16, k=1),
loaded through ``cpe.core.weights.load_erasers`` and attached with ``cpe.core.network.CPENetwork``. The loop is the
pipeline's denoising loop (PNDM, CFG with a negative+positive embedding batch, the same embedding tensor
at every step); the text encoder and VAE are left out because they cost the same with or without erasers,
so the overhead printed here is an upper bound of the whole pipeline's. Conditions are interleaved and
repeated; the median and the minimum are printed (shared CPUs are noisy). Because the gate runs once per
image, the script also times that extra work directly (gate + all 32 residuals for one prompt batch, and
the cached lookups and additions of a later step, also as a share of a plain step) and prints the overhead it
implies for 50-step sampling.

    python benchmarks/generate_overhead.py --steps 10 --latent 8 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from diffusers import PNDMScheduler

from cpe.core.network import CPENetwork, spec_for_unet
from cpe.core.resag import ResAG
from cpe.core.weights import load_erasers, save_gate_file
from cpe.models.zoo import sd14_unet


def write_random_gates(unet, folder: Path, count: int, gate_rank: int = 16, lora_rank: int = 1) -> list[Path]:
    """``count`` gate files of the released shapes with random (non-zero) weights."""
    spec = spec_for_unet(unet, gate_rank=gate_rank, lora_rank=lora_rank)
    generator = torch.Generator().manual_seed(0)
    paths = []
    for i in range(count):
        resag = ResAG(spec)
        resag.reset_parameters(generator)
        with torch.no_grad():
            resag.gate_vector.normal_(generator=generator)
            for up in resag.up.values():
                up.normal_(std=0.1, generator=generator)
        paths.append(save_gate_file(resag, folder / f"concept_{i:03d}" / "cpe_last.safetensors", concept=f"c{i}"))
    return paths


@torch.no_grad()
def sample(unet, embeddings: torch.Tensor, steps: int, latent: int, seed: int) -> torch.Tensor:
    """The StableDiffusionPipeline denoising loop (CFG 7.5, PNDM skip-PRK) for one image."""
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    scheduler.set_timesteps(steps)
    x = torch.randn((1, 4, latent, latent), generator=torch.Generator().manual_seed(seed))
    for t in scheduler.timesteps:
        noise = unet(torch.cat([x, x]), t, encoder_hidden_states=embeddings).sample
        uncond, cond = noise.chunk(2)
        x = scheduler.step(uncond + 7.5 * (cond - uncond), t, x).prev_sample
    return x


def per_call_seconds(fn, repeats: int = 20) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--latent", type=int, default=8, help="latent side (8 = 64x64 images)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--erasers", type=int, nargs="+", default=[1, 14, 100])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    unet = sd14_unet("cpu").eval().requires_grad_(False)
    embeddings = torch.randn(2, 77, 768)  # [negative, positive] as the pipeline batches them
    with tempfile.TemporaryDirectory() as tmp:
        networks = {}
        for count in args.erasers:
            write_random_gates(unet, Path(tmp) / str(count), count)
            resag, _ = load_erasers([Path(tmp) / str(count)])
            networks[count] = CPENetwork(resag)
    conditions = [0, *args.erasers]
    times: dict[int, list[float]] = {c: [] for c in conditions}
    evaluations: dict[int, int] = {}
    sample(unet, embeddings, 2, args.latent, seed=0)  # warm-up
    for repeat in range(args.repeats):
        for count in conditions:
            network = networks.get(count)
            if network is not None:
                network.attach(unet)
            start = time.perf_counter()
            sample(unet, embeddings, args.steps, args.latent, seed=repeat)
            times[count].append(time.perf_counter() - start)
            if network is not None:
                evaluations[count] = network.gate_evaluations
                network.detach()
    base, base_min = statistics.median(times[0]), min(times[0])
    step = base / args.steps
    print(f"SD v1.4 UNet (random weights), {args.latent * 8}x{args.latent * 8} images, {args.steps} PNDM steps, "
          f"CFG, {args.threads} threads, {args.repeats} interleaved runs per condition")
    print(f"{'erasers':>8} {'median s/img':>13} {'overhead':>9} {'min s/img':>10} {'overhead':>9} "
          f"{'gate runs/img':>14} {'gate+residuals ms':>18} {'later step ms':>13} {'later step %':>12} "
          f"{'implied @50 steps':>18}")
    print(f"{'plain':>8} {base:13.3f} {'':>9} {base_min:10.3f}")
    for count in args.erasers:
        network = networks[count]
        outputs = {n: torch.zeros(2, 77, d) for n, d in network.resag.spec.layer_dims.items()}

        def one_step(net=network, out=outputs):  # what the 32 wrapped projections add in one UNet call
            return [out[n] + net.residual_for(n, embeddings) for n in out]

        def first_step(net=network):  # gate + every residual, once per prompt batch
            net.clear_cache()
            return one_step(net)

        once, adds = per_call_seconds(first_step), per_call_seconds(one_step)
        implied = 100 * (once + 49 * adds) / (50 * step)
        t, t_min = statistics.median(times[count]), min(times[count])
        print(f"{count:>8} {t:13.3f} {100 * (t / base - 1):+8.2f}% {t_min:10.3f} "
              f"{100 * (t_min / base_min - 1):+8.2f}% {evaluations[count] / args.repeats:14.1f} "
              f"{1000 * once:18.2f} {1000 * adds:13.3f} {100 * adds / step:11.3f}% {implied:17.3f}%")


if __name__ == "__main__":
    main()

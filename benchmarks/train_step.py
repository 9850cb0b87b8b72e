"""Seconds per training step at SD v1.4 and SDXL shapes (random weights): our trainer vs the reference's pattern.

Ours: the exact shortcuts of method.md §2.7a (cpe.training.losses), gate once per embedding, C concepts side by side.
Reference pattern: per step, every embedding of the batch [E_T, E_T+δ_1..P, E_N, E_∅, a_1..S] is projected
through all 32 to_k/to_v layers twice (frozen and adapted), the gate is recomputed inside each layer, and the
losses are the direct formulas of §2.5-2.6; one concept at a time.

    python benchmarks/train_step.py [--threads 1] [--concepts 1 16] [--arch sd14 sdxl] [--config ...]

SD v1.4: 32 to_k/to_v over a 768-wide context; SDXL base 1.0: 140 over a 2048-wide one (both text
encoders' penultimate states side by side). Prints a side-by-side table per architecture and the projected
time of the config's full run on this machine (erase + adversarial steps; for SD v1.4 also encoding the
anchor pools with CLIP ViT-L/14 at 77 tokens).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch

from cpe.core.network import cross_attention_projections
from cpe.core.resag import ResAG, ResAGSpec
from cpe.models.zoo import sd14_unet, sdxl_unet
from cpe.training import adversarial_phase, erase_phase
from cpe.training.config import load_train_config
from cpe.training.losses import EraseBatch, FrozenBank, KVLoss, attack_loss, erase_losses
from cpe.training.prompts import load_concepts, load_templates, read_csv_column, unique

TOKENS = 77
REPO = Path(__file__).resolve().parents[1]
# architecture -> (meta-device UNet builder, context width D, training config for the full-run projection)
ARCHITECTURES = {
    "sd14": (sd14_unet, 768, REPO / "configs" / "celebs" / "train.yaml"),
    "sdxl": (sdxl_unet, 2048, REPO / "configs" / "celebs" / "train_sdxl.yaml"),
}


def unet_layers(arch: str) -> dict[str, int]:
    """Layer name -> output width of every cross-attention to_k/to_v (from the meta-device UNet)."""
    build = ARCHITECTURES[arch][0]
    return {name: linear.out_features for name, linear in cross_attention_projections(build("meta")).items()}


def random_setup(layers: dict[str, int], dim: int, concepts: int, gate_rank: int, lora_rank: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    weights = {name: torch.randn(d, dim, generator=gen) / math.sqrt(dim) for name, d in layers.items()}
    kv = KVLoss(weights, {name: 1.0 for name in layers}, TOKENS)
    resag = ResAG(ResAGSpec(dim, layers, gate_rank, lora_rank), concepts)
    with torch.no_grad():
        for name in layers:
            resag.up[name].normal_(generator=gen).mul_(0.01)
    return kv, weights, resag


def timed(step, repeats: int) -> float:
    """The fastest of ``repeats`` steps after a warm-up: on shared CPUs other processes only ever add time."""
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def ours(layers, dim: int, concepts: int, anchors: int, adv: int, gate_rank: int, lora_rank: int, repeats: int,
         profile: bool = False):
    kv, _, resag = random_setup(layers, dim, concepts, gate_rank, lora_rank)
    gen = torch.Generator().manual_seed(1)
    rand = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    target, diff = rand(concepts, TOKENS, dim), rand(concepts, TOKENS, dim) * 0.1
    batch = EraseBatch(target, diff, rand(concepts, 1 + anchors, TOKENS, dim))
    bank = FrozenBank.freeze(kv, rand(concepts, adv, TOKENS, dim) * 1e-3)
    params = [p for p in resag.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def erase_step():
        terms = erase_losses(kv, resag, batch, bank)
        (terms["erase"] + terms["adv"] + 1e5 * terms["anchor"]).sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    erase = timed(erase_step, repeats)
    for p in params:
        p.requires_grad_(False)
    delta = [bank.requires_grad_(True) for bank in (rand(concepts, adv, TOKENS, dim) * 1e-3).unbind(0)]
    adv_opt = torch.optim.AdamW(delta, lr=1e-2)  # one leaf per concept, as the trainer holds the banks
    with torch.no_grad():
        readout = kv.readout(resag)

    def adv_step():
        attack_loss(kv, resag, readout, target, delta).sum().backward()
        adv_opt.step()
        adv_opt.zero_grad(set_to_none=True)

    adv = timed(adv_step, repeats)
    return erase, adv, profiled(adv_step) if profile else None


def profiled(step, rows: int = 6) -> str:
    """Where one step's time goes: the operators of largest self time (torch.profiler), as table rows."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return "\n".join(f"    {e.key:28}{e.self_cpu_time_total / 1e3:9.1f} ms {100 * e.self_cpu_time_total / total:5.1f}%"
                     f"  ({e.count} calls)" for e in events[:rows])


def reference(layers, dim: int, anchors: int, adv: int, gate_rank: int, lora_rank: int, repeats: int):
    """One concept, the reference's way: full projections twice per layer, the gate in every layer."""
    _, weights, resag = random_setup(layers, dim, 1, gate_rank, lora_rank)
    gen = torch.Generator().manual_seed(1)
    rand = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    target, neutral, empty = rand(1, TOKENS, dim), rand(1, TOKENS, dim), rand(1, TOKENS, dim)
    anchor_batch, delta0 = rand(anchors, TOKENS, dim), rand(adv, TOKENS, dim) * 1e-3
    batch = torch.cat([target, target + delta0, neutral, empty, anchor_batch])
    params = [p for p in resag.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    concept = torch.zeros(len(batch), dtype=torch.long)
    g, n_layers = 0.3, len(layers)

    def erase_step():
        total = 0.0
        for name in layers:
            frozen = batch @ weights[name].T
            adapted = batch @ weights[name].T + resag.residual(name, resag.gate(batch, concept))
            y = frozen[1 + adv] + g * (frozen[1 + adv] - frozen[0])
            total = total + ((y - adapted[0]) ** 2).mean() + ((y - adapted[1 : 1 + adv]) ** 2).mean()
            total = total + 1e5 * ((adapted[2 + adv :] - frozen[2 + adv :]) ** 2).mean()
        (total / n_layers).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    erase = timed(erase_step, repeats)
    for p in params:
        p.requires_grad_(False)
    delta = delta0.clone().requires_grad_(True)
    adv_opt = torch.optim.AdamW([delta], lr=1e-2)
    adv_concept = torch.zeros(adv, dtype=torch.long)

    def adv_step():
        total = 0.0
        for name in layers:
            attacked = target + delta
            adapted = attacked @ weights[name].T + resag.residual(name, resag.gate(attacked, adv_concept))
            original = target @ weights[name].T
            total = total + ((adapted - original) ** 2).mean()
        (total / n_layers).backward()
        adv_opt.step()
        adv_opt.zero_grad(set_to_none=True)

    return erase, timed(adv_step, repeats)


def clip_seconds_per_prompt(batch: int = 16) -> float:
    """CLIP ViT-L/14 text encoder (SD v1.4's, random weights), 77 tokens, seconds per prompt."""
    from transformers import CLIPTextConfig, CLIPTextModel

    model = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                         num_attention_heads=12, max_position_embeddings=77)).eval()
    ids = torch.randint(0, 49408, (batch, 77))
    with torch.no_grad():
        return timed(lambda: model(ids), 2) / batch


def anchor_prompt_bounds(config: Path) -> tuple[int, int, int]:
    """(concepts, fewest, most) anchor prompts to encode for the whole run, with every concept in one batch."""
    cfg = load_train_config(config)
    concepts = load_concepts(cfg.path(cfg.prompts.concepts), cfg.prompts.neutral, cfg.train.guidance)
    p, a = cfg.prompts, cfg.anchors
    if a.sentences:
        return len(concepts), len(unique(read_csv_column(cfg.path(a.sentences), a.sentences_column))), 0
    templates = len(load_templates(cfg.path(p.templates), p.template_column, p.placeholder, p.template_word,
                                   p.include_bare))
    general = len(unique(read_csv_column(cfg.path(a.general_words), a.general_words_column)))
    candidates = len(unique(read_csv_column(cfg.path(a.candidates), a.candidates_column)))
    fewest = (general + min(a.top_k, candidates)) * templates
    most = (general + min(candidates, a.top_k * len(concepts))) * templates
    return len(concepts), fewest, most


def report(arch: str, config: Path, args: argparse.Namespace) -> None:
    """The side-by-side table of one architecture and the projected time of ``config``'s full run."""
    cfg = load_train_config(config)
    r, k = cfg.network.gate_rank, cfg.network.lora_rank
    layers, dim = unet_layers(arch), ARCHITECTURES[arch][1]
    print(f"\n{arch} shapes: {len(layers)} layers, T={TOKENS}, D={dim}, S={args.anchors}, P={args.adv}, r={r}, k={k}; "
          f"{args.threads} threads; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'':24}{'erase s/step':>14}{'adv s/step':>12}{'erase s/concept-step':>22}{'speed-up':>10}")
    ref_erase = ref_adv = math.nan
    if not args.no_reference:
        ref_erase, ref_adv = reference(layers, dim, args.anchors, args.adv, r, k, max(1, args.repeats - 1))
        print(f"{'reference, 1 concept':24}{ref_erase:14.3f}{ref_adv:12.3f}{ref_erase:22.3f}{1:10.1f}")
    best = None
    for c in args.concepts:
        erase, adv, profile = ours(layers, dim, c, args.anchors, args.adv, r, k, args.repeats, args.profile)
        per_erase, per_adv = erase / c, adv / c
        versus = "" if args.no_reference else f"{ref_erase / per_erase:10.1f}   (adv {ref_adv / per_adv:.1f}x)"
        print(f"{f'ours, {c} concepts':24}{erase:14.3f}{adv:12.3f}{per_erase:22.4f}{versus}")
        if profile:
            print(f"  adversarial step, {c} concepts: operators of largest self time\n{profile}")
        if best is None or per_erase + per_adv < best[0] + best[1]:
            best = (per_erase, per_adv, c)

    per_erase, per_adv, c = best
    steps_erase = sum(erase_phase(cfg, s).steps for s in range(cfg.train.num_stages))
    steps_adv = adversarial_phase(cfg).steps * cfg.train.num_stages if cfg.adversarial.enabled else 0
    n, fewest, most = anchor_prompt_bounds(config)
    train_hours = n * (steps_erase * per_erase + steps_adv * per_adv) / 3600
    ref_hours = n * (steps_erase * ref_erase + steps_adv * ref_adv) / 3600
    print(f"{config.relative_to(REPO) if config.is_relative_to(REPO) else config}: {n} concepts x "
          f"({steps_erase} erase + {steps_adv} adversarial steps)")
    processes = max(1, (os.cpu_count() or 1) // args.threads)
    versus = "" if args.no_reference else f"; reference pattern: {ref_hours:.1f} h"
    print(f"  training steps, ours (best with {c} concept(s) side by side): {train_hours:.2f} h on {args.threads} "
          f"thread(s) = {train_hours / processes:.2f} h with {processes} processes (torchrun){versus}")
    if arch == "sd14":
        clip = clip_seconds_per_prompt()
        print(f"  encoding anchor pools (CLIP-L {clip:.3f} s/prompt): {fewest}-{most} prompts = "
              f"{fewest * clip / 3600:.2f}-{most * clip / 3600:.2f} h (all concepts in one batch; fewer with overlap)")
    else:
        print(f"  encoding anchor pools: {fewest}-{most} prompts through CLIP-L and OpenCLIP bigG (not timed here)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; on a shared machine 1 per process is fastest (run one process per core)")
    parser.add_argument("--concepts", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--anchors", type=int, default=32, help="S")
    parser.add_argument("--adv", type=int, default=16, help="P")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arch", nargs="+", choices=sorted(ARCHITECTURES), default=["sd14", "sdxl"])
    parser.add_argument("--config", type=Path, help="training config (default: celebs' train.yaml / train_sdxl.yaml)")
    parser.add_argument("--profile", action="store_true", help="print where our adversarial step's time goes")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the reference pattern (at SDXL shapes it holds ~10+ GB of activations per step)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the trainer does on CPU (tiny gate weights -> denormal Adam statistics)
    torch.manual_seed(0)
    for arch in args.arch:
        report(arch, args.config or ARCHITECTURES[arch][2], args)


if __name__ == "__main__":
    main()

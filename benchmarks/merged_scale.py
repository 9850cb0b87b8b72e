"""Thousands of merged erasers: gate + every residual for N concepts, the (B, N, T, D) formula vs the chunked one.

For N = 1 ... 2,000 at SD v1.4 shapes (D = 768, 32 layers) and SDXL shapes (D = 2048, 140 layers of their real
widths), random weights of the released ranks (r = 16, k = 1), a batch of B prompt embeddings of 77 tokens:
* "materialised": the merged forward as it was before issue 21 (every concept's Ē, a (B, N, T, D) tensor; every
  layer's residual projects every concept, then picks one), written out below;
* "chunked": ``ResAG.gate`` + ``ResAG.residuals`` (gates only, chunk by chunk; Ē of the winners only);
and loading N gate files with ``cpe.core.weights.load_erasers`` (float32 or half-precision storage).

Every measurement runs in a fresh subprocess; time is the fastest of the repeats; peak memory is the process's
``ru_maxrss`` after the measured work minus before it (the weights already built), which sees every torch
allocation (tracemalloc does not); with ``--device cuda``, ``torch.cuda.max_memory_allocated`` instead.

    python benchmarks/merged_scale.py [--threads 1] [--arch sd14 sdxl] [--concepts 1 100 1000 2000] \
        [--load 100 1000 2000] [--results benchmarks/results/merged_scale.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from generate_overhead import write_random_gates
from train_step import ARCHITECTURES, TOKENS, unet_layers

from cpe.core.resag import ResAG, ResAGSpec
from cpe.core.weights import load_erasers
from cpe.util.io import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
GB = 1e9


def materialised(resag: ResAG, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The merged forward before issue 21 (all parameters float32): Ē of every concept, residuals over all N."""
    query = x[:, None] @ resag.w_query  # (B, N, T, r), x copied for every concept by the broadcast
    key = query if resag.spec.key_mode == "query_as_key" else x[:, None] @ resag.w_key
    mixed = torch.softmax(query @ key.transpose(-1, -2), dim=-1) @ x[:, None]  # (B, N, T, D)
    gate, choice = torch.sigmoid(mixed @ resag.gate_vector).squeeze(-1).max(dim=1)
    index = choice[:, None, :, None].expand(-1, 1, -1, x.shape[-1])
    hidden = gate[..., None] * torch.gather(mixed, 1, index).squeeze(1)
    out = {}
    for name in resag.layers:
        low = torch.einsum("btd,ndk->btnk", hidden, resag.down[name])
        low = torch.gather(low, 2, choice[..., None, None].expand(-1, -1, 1, low.shape[-1])).squeeze(2)
        out[name] = resag.spec.scale * torch.einsum("btk,btkd->btd", low, resag.up[name][choice])
    return out


def chunked(resag: ResAG, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return resag.residuals(resag.gate(x))


METHODS = {"materialised": materialised, "chunked": chunked}


def random_resag(arch: str, concepts: int, dtype: torch.dtype, device: str) -> ResAG:
    """N random concepts of the released ranks, built in place (no float32 copy of half-precision weights)."""
    with torch.device("meta"):
        resag = ResAG(ResAGSpec(ARCHITECTURES[arch][1], unet_layers(arch), 16, 1), concepts)
    resag = resag.to(dtype).to_empty(device=device).requires_grad_(False)
    generator = torch.Generator(device).manual_seed(0)
    stds = {"w_query": 0.05, "w_key": 0.05, "gate_vector": 0.05}
    with torch.no_grad():
        for name, p in resag.named_parameters():
            p.normal_(std=stds.get(name, 0.036 if name.startswith("down.") else 0.01), generator=generator)
    return resag


class Peak:
    """Peak memory since ``with`` above what was held before it (CPU: ru_maxrss; CUDA: the allocator's peak)."""

    def __init__(self, device: str) -> None:
        self.device = device

    def _high(self) -> int:
        if self.device == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def __enter__(self) -> Peak:
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self.before = torch.cuda.memory_allocated() if self.device == "cuda" else self._high()
        return self

    def now(self) -> int:
        """Bytes of the highest point so far above the start."""
        return self._high() - self.before

    def __exit__(self, *exc) -> None:
        self.bytes = self.now()


def measure_gate(job: dict) -> list[dict]:
    """Both forwards on the same weights in one process: peak memory of the chunked forward, then of both (the
    materialised one's, higher), then their times interleaved, so a change of load on a shared machine hits both
    alike."""
    resag = random_resag(job["arch"], job["concepts"], DTYPES[job["dtype"]], job["device"])
    weights = sum(p.numel() * p.element_size() for p in resag.parameters())
    x = torch.randn(job["batch"], TOKENS, resag.spec.embed_dim, generator=torch.Generator().manual_seed(1))
    x = x.to(job["device"])
    methods = ["chunked"] if job["dtype"] != "float32" else ["chunked", "materialised"]
    times = {method: [] for method in methods}

    def call(method: str) -> None:
        start = time.perf_counter()
        METHODS[method](resag, x)
        if job["device"] == "cuda":
            torch.cuda.synchronize()
        times[method].append(time.perf_counter() - start)

    peaks = {}
    with torch.no_grad():
        with Peak(job["device"]) as peak:
            for method in methods:  # chunked first: the materialised peak (higher) is then the high-water mark
                call(method)
                peaks[method] = peak.now()
        for _ in range(job["repeats"] - 1):
            for method in methods:
                # the materialised forward takes ~30 s per call at SDXL shapes and N = 2,000: one call there
                if method == "chunked" or job["concepts"] < 1000:
                    call(method)
    return [{**job, "method": method, "seconds": min(times[method]), "peak_gb": peaks[method] / GB,
             "weights_gb": weights / GB} for method in methods]


def measure_load(job: dict) -> dict:
    files = sorted(Path(job["folder"]).rglob("*last.safetensors"))[: job["concepts"]]
    with Peak("cpu") as peak:
        start = time.perf_counter()
        resag, _ = load_erasers(files, dtype=DTYPES[job["dtype"]])
        seconds = time.perf_counter() - start
    weights = sum(p.numel() * p.element_size() for p in resag.parameters())
    disk = sum(f.stat().st_size for f in files)
    return {**job, "seconds": seconds, "peak_gb": peak.bytes / GB, "weights_gb": weights / GB, "disk_gb": disk / GB}


def run_job(job: dict, threads: int) -> list[dict]:
    """One measurement in a fresh process (its peak memory is its own)."""
    out = subprocess.run([sys.executable, __file__, "--threads", str(threads), "--job", json.dumps(job)],
                         capture_output=True, text=True, check=True)
    results = json.loads(out.stdout.strip().splitlines()[-1])
    for result in results:
        print(json.dumps(result), flush=True)
    return results


def gate_table(results: list[dict]) -> str:
    lines = ["| shapes | N | storage | materialised s | chunked s | speed-up | materialised peak GB | chunked peak GB "
             "| weights GB |", "|---|---|---|---|---|---|---|---|---|"]
    keys = {(r["arch"], r["concepts"], r["dtype"]) for r in results}
    keys = sorted(keys, key=lambda k: (k[0], k[1], k[2] != "float32"))  # float32 before half precision
    for arch, n, dtype in keys:
        row = {r["method"]: r for r in results if (r["arch"], r["concepts"], r["dtype"]) == (arch, n, dtype)}
        old, new = row.get("materialised"), row["chunked"]
        old_s = f"{old['seconds']:.3f}" if old else "—"
        ratio = f"{old['seconds'] / new['seconds']:.1f}×" if old else "—"
        old_gb = f"{old['peak_gb']:.3f}" if old else "—"
        lines.append(f"| {arch} | {n:,} | {dtype} | {old_s} | {new['seconds']:.3f} | {ratio} | {old_gb} "
                     f"| {new['peak_gb']:.3f} | {new['weights_gb']:.2f} |")
    return "\n".join(lines)


def load_table(results: list[dict]) -> str:
    lines = ["| shapes | N files | storage | load s | peak GB | weights GB | files on disk GB |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['arch']} | {r['concepts']:,} | {r['dtype']} | {r['seconds']:.2f} | {r['peak_gb']:.3f} "
                     f"| {r['weights_gb']:.2f} | {r['disk_gb']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arch", nargs="+", choices=sorted(ARCHITECTURES), default=["sd14", "sdxl"])
    parser.add_argument("--concepts", type=int, nargs="+", default=[1, 100, 1000, 2000])
    parser.add_argument("--half", choices=["float16", "bfloat16"], default="float16",
                        help="half-precision storage measured at the largest N")
    parser.add_argument("--load", type=int, nargs="*", default=[100, 1000, 2000], help="gate files to load (N)")
    parser.add_argument("--batch", type=int, default=2, help="prompt embeddings (negative + positive: 2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "merged_scale.md")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.job:
        job = json.loads(args.job)
        print(json.dumps([measure_load(job)] if job["kind"] == "load" else measure_gate(job)))
        return

    gates, loads = [], []
    for arch in args.arch:
        for n in args.concepts:
            for dtype in ("float32", args.half) if n == max(args.concepts) else ("float32",):
                gates += run_job({"kind": "gate", "arch": arch, "concepts": n, "dtype": dtype, "batch": args.batch,
                                  "repeats": args.repeats, "device": args.device}, args.threads)
        if args.load:
            with tempfile.TemporaryDirectory() as folder:
                write_random_gates(ARCHITECTURES[arch][0]("meta"), Path(folder), max(args.load))
                for n in args.load:
                    for dtype in ("float32", args.half) if n == max(args.load) else ("float32",):
                        loads += run_job({"kind": "load", "arch": arch, "concepts": n, "dtype": dtype,
                                          "folder": folder}, args.threads)

    text = (f"### Merged gate + all residuals, B = {args.batch} prompts × {TOKENS} tokens, {args.threads} thread(s), "
            f"{args.device}\n\n{gate_table(gates)}\n\n"
            "materialised: the merged forward before issue 21, (B, N, T, D) Ē of every concept and every layer's "
            "residual over all N; chunked: `ResAG.gate` + `ResAG.residuals` (gates chunk by chunk, Ē of the winning "
            "(prompt, concept) pairs only), on the same weights in one process, calls interleaved. Fastest of "
            f"{args.repeats} calls (one call for the materialised forward at N ≥ 1,000), random weights (r = 16, "
            "k = 1). sd14: D = 768, 32 layers; sdxl: D = 2048, 140 layers of "
            "widths 640/1280. Peak: ru_maxrss after a forward's first call minus before any call (weights already "
            "built; the chunked forward runs first, so the materialised one's is the high-water mark after it), so "
            "it counts every torch allocation of the forward; at small N the import's high-water mark hides it.\n")
    if loads:
        text += (f"\n### Loading N gate files (`load_erasers`)\n\n{load_table(loads)}\n\n"
                 "Random gate files of the released shapes in our format; peak: ru_maxrss after minus before the "
                 "call (the merged parameters included).\n")
    text += (f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs shared with other "
             f"work (load average {os.getloadavg()[0]:.1f} at the end), torch {torch.__version__}.\n")
    print("\n" + text)
    if args.results:
        atomic_write_text(args.results, text)


if __name__ == "__main__":
    main()

"""Prompt CSV -> images with any set of merged erasers, a manifest, resume, grids, many processes.

Output: ``<save_root>/<experiment>/<subset>/<row>_<slug of prompt>_<seed>_<i>.png`` plus ``manifest.jsonl``
(schema in :mod:`cpe.generation.manifest`); ``<experiment>`` is "original" without erasers. Every row's initial
latents come from its own ``torch.Generator`` seeded with ``evaluation_seed`` (``generate_num`` images
drawn at once, like the reference), so an image depends neither on the batch size nor on the process
that made it. Under ``accelerate launch`` rows are split into contiguous shards, one per process, and
the main process writes the merged manifest at the end.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object
from PIL import Image
from tqdm.auto import tqdm

from cpe.core.weights import GateFileInfo, load_erasers
from cpe.generation import folder as gen_folder
from cpe.generation.config import GenerationConfig
from cpe.generation.grid import compare_grid
from cpe.generation.manifest import MANIFEST_NAME, read_manifest
from cpe.generation.prompt_csv import PromptRow, read_prompt_csv
from cpe.models.loading import TextEmbedding, TextSide, load_pipeline, pipeline_kind, resolve_device, same_model
from cpe.util.io import (
    FolderBusy,
    FolderLock,
    atomic_write,
    atomic_write_jsonl,
    check_writable_folder,
    read_jsonl,
    remove_stale_temp_files,
)
from cpe.util.names import FOLDER_MAX_BYTES, bounded, check_relative_folder, slug

ORIGINAL = "original"
LOG_NAME = "generation_log.jsonl"
GRID_FOLDER = "grids"
SLUG_MAX_BYTES = 80  # UTF-8 bytes, so an image name stays far below the 255-byte limit of a file name


def slugify(text: str, max_bytes: int = SLUG_MAX_BYTES) -> str:
    """A file-name-safe form of a prompt: runs of spaces/symbols -> ``_``; no ``/``, ``\\``, ``:``, ``*``..."""
    return slug(text, max_bytes)


def image_name(row: PromptRow, index: int) -> str:
    return f"{row.row}_{slugify(row.prompt)}_{row.seed}_{index}.png"


def grid_name(row: PromptRow) -> str:
    return f"{row.row}_{slugify(row.prompt)}_{row.seed}.png"


def experiment_name(infos: Sequence[GateFileInfo]) -> str:
    """The erasers' experiment folder (``<experiment>/<concept>/<file>``); several are joined with ``+``."""
    if not infos:
        return ORIGINAL
    joined = "+".join(sorted({Path(info.path).resolve().parent.parent.name for info in infos}))
    return bounded(joined.lstrip(".") or "erasers", FOLDER_MAX_BYTES)


def base_model_notes(infos: Sequence[GateFileInfo], model: str) -> list[str]:
    """One line per base model the erasers were trained on that is not ``model`` (or that they do not record);
    ``infos`` are gate files' infos or anything else with a ``name`` and a ``base_model`` (an ESD edit)."""
    by_base: dict[str, list[str]] = {}
    for info in infos:
        by_base.setdefault(info.base_model, []).append(info.name)
    notes = []
    for base, names in by_base.items():
        which = ", ".join(names)
        if not base:
            notes.append(f"note: the base model of eraser(s) {which} is unknown (the file does not record it); "
                         f"loading them onto {model}")
        elif not same_model(base, model):
            notes.append(f"warning: eraser(s) {which} were trained on {base}, this run loads them onto {model}")
    return notes


@dataclass
class GenerationSummary:
    out_dir: Path
    rows: int  # prompt rows in the range (non-empty prompts)
    skipped_empty: int  # rows with an empty prompt
    skipped_existing: int  # rows whose images were already there (all processes)
    generated: int  # images (or grids) written, all processes together
    seconds: float


class GenerationPipeline:
    """A loaded pipeline (plus merged erasers) that turns prompt rows into images."""

    def __init__(self, cfg: GenerationConfig, model: str, erasers: Sequence[str | Path] = (),
                 device: str | torch.device | None = None, pad_ranks: bool = False, load_model: bool = True,
                 uce: str | Path | None = None, strict_base: bool = False, esd: str | Path | None = None) -> None:
        """Load the erasers and the UCE or ESD edit, then (unless ``load_model`` is False: call ``load_model()``
        later) the pipeline. Erasers and ESD edits trained on another base model than ``model`` are named in one
        warning line (process 0), or refused with ``strict_base``; so are files that do not record their base
        model."""
        if uce and esd:
            raise ValueError("--uce and --esd both edit the original model's cross-attention weights (UCE's deltas "
                             "are solved for the original ones): pass one of them")
        self.cfg = cfg
        self.model = model
        self.infos: list[GateFileInfo] = []
        resag = None
        if erasers:
            resag, self.infos = load_erasers(list(erasers), pad_ranks=pad_ranks)
            if not pad_ranks and cfg.gate_rank is not None and resag.spec.gate_rank != cfg.gate_rank:
                raise ValueError(
                    f"erasers have gate rank {resag.spec.gate_rank} ({self.infos[0].path}) but the generation "
                    f"config says gate_rank {cfg.gate_rank}"
                )
        # a UCE edit (cpe.baselines.uce) or an ESD-x edit (cpe.baselines.esd): read before the model loads, applied
        # to its UNet in load_model
        self.uce_edit = self.esd_edit = None
        if uce:
            from cpe.baselines.uce import read_uce

            self.uce_edit = read_uce(uce)
        if esd:
            from cpe.baselines.esd import read_esd

            self.esd_edit = read_esd(esd)
        self.uce = self.esd = None
        # an ESD file holds fine-tuned weights that replace the model's, so its base model matters as an eraser's does
        notes = base_model_notes([*self.infos, *([self.esd_edit] if self.esd_edit else [])], model)
        if strict_base and notes:
            raise ValueError(f"--strict_base: {notes[0].split(': ', 1)[1]}")
        if notes and os.environ.get("RANK", "0") == "0":  # once, not once per process
            print("\n".join(notes), file=sys.stderr)
        if cfg.pooled != "keep" and pipeline_kind(model) != "sdxl":
            raise ValueError(f"pooled: {cfg.pooled} needs an SDXL model; {model} has no pooled text embedding")
        self._resag, self._device = resag, device
        self.pipe = None
        self.network = None
        if load_model:
            self.load_model()

    def load_model(self) -> None:
        """Load the pipeline and attach the erasers (the slow part: run_generation checks its folder first)."""
        cfg, resag = self.cfg, self._resag
        self.pipe = load_pipeline(self.model, device=resolve_device(self._device), dtype=cfg.dtype)
        self.text = TextSide.from_pipeline(self.pipe)  # the prompts' context, as training encodes it
        if cfg.scheduler:
            self.pipe.scheduler = _scheduler(cfg.scheduler, self.pipe.scheduler.config)
        if resag is not None:
            from cpe.core.network import CPENetwork

            self.network = CPENetwork(resag)
            try:
                self.network.attach(self.pipe.unet)
            except ValueError as e:
                raise ValueError(f"erasers do not fit model {self.model}: {e}") from None
        if self.uce_edit is not None:
            from cpe.baselines.uce import apply_uce

            try:
                self.uce = apply_uce(self.pipe.unet, self.uce_edit)
            except ValueError as e:
                raise ValueError(f"UCE edit does not fit model {self.model}: {e}") from None
        if self.esd_edit is not None:
            from cpe.baselines.esd import apply_esd

            try:
                self.esd = apply_esd(self.pipe.unet, self.esd_edit)
            except ValueError as e:
                raise ValueError(f"ESD edit does not fit model {self.model}: {e}") from None

    @property
    def device(self) -> torch.device:
        return self.pipe.unet.device

    def eraser_records(self) -> list[dict]:
        gates = [{"name": info.name, "sha256": info.sha256, "base_model": info.base_model} for info in self.infos]
        return gates + [{"name": edit.name, "sha256": edit.sha256} for edit in self.weight_edits]

    @property
    def weight_edits(self) -> list:
        """The baseline edits of the UNet's weights (UCE, ESD-x) this pipeline applies."""
        return [edit for edit in (self.uce_edit, self.esd_edit) if edit is not None]

    def guidance(self, row: PromptRow) -> float:
        return self.cfg.guidance_scale if row.guidance is None else row.guidance

    def _latents(self, rows: Sequence[PromptRow]) -> tuple[torch.Tensor, list[torch.Generator]]:
        """Each row's ``generate_num`` initial latents drawn at once from a generator seeded with its seed."""
        n = self.cfg.generate_num
        factor = self.pipe.vae_scale_factor
        shape = (n, self.pipe.unet.config.in_channels, self.cfg.height // factor, self.cfg.width // factor)
        latents, generators = [], []
        for row in rows:
            generator = torch.Generator(device=self.device).manual_seed(row.seed)
            latents.append(torch.randn(shape, generator=generator, device=self.device, dtype=torch.float32))
            generators.extend([generator] * n)  # later random draws (ancestral schedulers) stay per row
        return torch.cat(latents).to(self.pipe.unet.dtype), generators

    @torch.no_grad()
    def images(self, rows: Sequence[PromptRow]) -> list[list[Image.Image]]:
        """``generate_num`` images per row; all rows must share one guidance scale."""
        guidance = {self.guidance(row) for row in rows}
        if len(guidance) != 1:
            raise ValueError(f"one pipeline call needs one guidance scale, got {sorted(guidance)}")
        latents, generators = self._latents(rows)
        if self.network is not None:
            self.network.clear_cache()
        prompts = [row.prompt + self.cfg.unconditional_prompt for row in rows]
        embedding = self.text.embed(prompts)
        conditioning = {"prompt_embeds": embedding.context}
        if embedding.pooled is not None:
            conditioning["pooled_prompt_embeds"] = self._pooled(prompts, embedding)
        out = self.pipe(
            **conditioning,
            # None = the pipeline's default: "" for SD 1.x/2.x, zeros for SDXL (force_zeros_for_empty_prompt)
            negative_prompt=[self.cfg.negative_prompt] * len(rows) if self.cfg.negative_prompt else None,
            height=self.cfg.height,
            width=self.cfg.width,
            num_inference_steps=self.cfg.num_inference_steps,
            guidance_scale=guidance.pop(),
            num_images_per_prompt=self.cfg.generate_num,
            latents=latents,
            generator=generators,
        ).images
        n = self.cfg.generate_num
        return [out[i * n : (i + 1) * n] for i in range(len(rows))]

    def _pooled(self, prompts: list[str], embedding: TextEmbedding) -> torch.Tensor:
        """SDXL's pooled embedding under the ``pooled`` option (:mod:`cpe.generation.pooled`)."""
        if self.cfg.pooled == "keep" or self.network is None or not self.network.enabled:
            return embedding.pooled
        from cpe.generation.pooled import pooled_texts

        concepts = [(info.concept, info.neutral) for info in self.infos]
        texts = pooled_texts(self.network.resag, embedding.context, prompts, concepts, self.cfg.pooled_threshold,
                             self.network.concept_active)
        changed = [i for i, text in enumerate(texts) if text is not None]
        pooled = embedding.pooled.clone()
        if changed:
            pooled[changed] = self.text.pooled([texts[i] for i in changed]).to(pooled.dtype)
        return pooled

    def grid(self, row: PromptRow) -> Image.Image:
        """Original model and erased model side by side (same seed), labelled."""
        if self.network is None or self.weight_edits:
            raise ValueError("grid mode compares the original with the erased model: pass --erasers (not --uce or "
                             "--esd)")
        self.network.enabled = False
        try:
            original = self.images([row])[0]
        finally:
            self.network.enabled = True
        erased = self.images([row])[0]
        names = ", ".join(info.name for info in self.infos)
        label = f"erased ({len(self.infos)}): {names}"
        return compare_grid([original, erased], ["original", label], f"{row.row}: {row.prompt} (seed {row.seed})")


def _scheduler(name: str, config: dict):
    import diffusers

    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise ValueError(f"unknown scheduler {name!r}: not a diffusers scheduler class (e.g. DDIMScheduler)")
    return cls.from_config(config)


def batches(rows: Sequence[PromptRow], size: int, guidance) -> Iterator[list[PromptRow]]:
    """Consecutive rows, at most ``size`` per batch, a new batch whenever the guidance scale changes."""
    batch: list[PromptRow] = []
    for row in rows:
        if batch and (len(batch) == size or guidance(row) != guidance(batch[0])):
            yield batch
            batch = []
        batch.append(row)
    if batch:
        yield batch


def shard(rows: Sequence[PromptRow], index: int, count: int) -> list[PromptRow]:
    """Process ``index`` of ``count``'s contiguous share of ``rows`` (no overlap, no gap; sizes differ by <= 1)."""
    base, rest = divmod(len(rows), count)
    start = index * base + min(index, rest)
    return list(rows[start : start + base + (index < rest)])


def _record(row: PromptRow, index: int, gen: GenerationPipeline, config_path: str) -> dict:
    return {
        "file": image_name(row, index),
        "row": row.row,
        "prompt": row.prompt,
        "seed": row.seed,
        "image_index": index,
        "guidance": gen.guidance(row),
        "erasers": gen.eraser_records(),
        "model": gen.model,
        "config": {"path": config_path, **gen.cfg.image_settings()},
        "extra": row.extra,
    }


def _save_png(image: Image.Image, path: Path) -> None:
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def _merged_manifest(out_dir: Path, rows: Sequence[PromptRow], gen: GenerationPipeline, config_path: str,
                     old: dict[str, dict], existed: set[str]) -> list[dict]:
    """Old records of images kept from earlier runs, new records for the images of this run."""
    merged = dict(old)
    for row in rows:
        for i in range(gen.cfg.generate_num):
            name = image_name(row, i)
            if not (out_dir / name).is_file():
                continue
            if name not in existed or name not in old:
                merged[name] = _record(row, i, gen, config_path)
    return sorted(merged.values(), key=lambda r: (r["row"], r["image_index"], r["file"]))


def run_generation(
    cfg: GenerationConfig,
    model: str,
    erasers: Sequence[str | Path] = (),
    *,
    experiment: str | None = None,
    config_path: str = "",
    grid: bool = False,
    device: str | None = None,
    pad_ranks: bool = False,
    overwrite: bool = False,
    uce: str | Path | None = None,
    esd: str | Path | None = None,
    strict_base: bool = False,
    wait: bool = False,
) -> GenerationSummary:
    """Generate every missing image (or grid) of ``cfg``'s prompt rows; all inputs are checked first.

    ``pad_ranks`` merges erasers of different gate/low ranks exactly (``cpe.core.weights.load_erasers``).
    A folder holding images of other erasers or settings is refused (``cpe.generation.folder``) unless
    ``overwrite``, which deletes its images and manifest and starts it over. ``uce`` is a UCE file
    (``cpe.baselines.uce``), ``esd`` an ESD-x file (``cpe.baselines.esd``; not both), applied to the UNet before
    sampling. ``strict_base`` refuses erasers trained on another base model. The folder
    is locked for the run: one that another run is writing is an error naming it (``FolderBusy``), or with ``wait``
    is waited for.
    """
    start = time.perf_counter()
    state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())  # CPU processes join via gloo
    if experiment:
        check_relative_folder(experiment, "experiment")
    table = read_prompt_csv(cfg.resolved_prompt_path(), cfg.first_row, cfg.last_row)
    gen = GenerationPipeline(cfg, model, erasers, device=device or state.device, pad_ranks=pad_ranks, uce=uce,
                             esd=esd, load_model=False, strict_base=strict_base)
    named = [*gen.infos, *gen.weight_edits]
    out_dir = Path(cfg.save_root) / (experiment or experiment_name(named)) / cfg.subset
    targets = out_dir / GRID_FOLDER if grid else out_dir
    check_writable_folder(targets)  # before the slow part
    with _one_job(out_dir, state, wait):  # before the folder is read
        gen.load_model()
        old = {} if grid or not (out_dir / MANIFEST_NAME).is_file() else {r["file"]: r for r in read_manifest(out_dir)}
        settings = gen_folder.settings(gen.model, gen.eraser_records(), cfg.image_settings())
        new = {} if grid else {image_name(r, i): _record(r, i, gen, config_path)
                               for r in table.rows for i in range(cfg.generate_num)}
        gen_folder.check(targets, settings, old, new, grid, overwrite)  # every process, before anything is written
        if state.is_main_process:
            remove_stale_temp_files(targets)  # left by a killed run
            remove_stale_temp_files(out_dir)
            if overwrite:
                gen_folder.start_over(targets, old, None if grid else out_dir / MANIFEST_NAME, grid)
            gen_folder.write(targets, settings)
        state.wait_for_everyone()
        if overwrite:
            old = {}

        def done(row: PromptRow) -> bool:
            if grid:
                return (targets / grid_name(row)).is_file()
            return all((out_dir / image_name(row, i)).is_file() for i in range(cfg.generate_num))

        names = (image_name(r, i) for r in table.rows for i in range(cfg.generate_num))
        existed = {name for name in names if (out_dir / name).is_file()}
        skipped_existing = sum(done(r) for r in table.rows)
        state.wait_for_everyone()  # every process has looked at the folder before any writes
        pending = [row for row in shard(table.rows, state.process_index, state.num_processes) if not done(row)]
        generated = 0
        with tqdm(total=len(pending), desc=f"{cfg.subset} [{state.process_index}]", unit="row",
                  disable=not state.is_local_main_process) as progress:
            if grid:
                for row in pending:
                    _save_png(gen.grid(row), targets / grid_name(row))
                    generated += 1
                    progress.update(1)
            else:
                for batch in batches(pending, cfg.batch_size, gen.guidance):
                    for row, images in zip(batch, gen.images(batch), strict=True):
                        for i, image in enumerate(images):
                            _save_png(image, out_dir / image_name(row, i))
                            generated += 1
                    progress.update(len(batch))
        generated = sum(gather_object([generated]))  # waits for every process
        seconds = time.perf_counter() - start
        summary = GenerationSummary(out_dir, len(table.rows), table.skipped_empty, skipped_existing, generated, seconds)
        if state.is_main_process and not grid:
            records = _merged_manifest(out_dir, table.rows, gen, config_path, old, existed)
            atomic_write_jsonl(out_dir / MANIFEST_NAME, records)
            _append_log(out_dir, summary, gen, config_path, state.num_processes)
        return summary


@contextmanager
def _one_job(folder: Path, state: PartialState, wait: bool) -> Iterator[None]:
    """The folder's lock, held by the main process for the run (its processes share the folder); a refusal reaches
    every process."""
    lock = FolderLock(folder, wait)
    refusal: list[str | None] = [None]
    if state.is_main_process:
        try:
            lock.acquire()
        except FolderBusy as e:
            refusal = [str(e)]
    if state.num_processes > 1:
        broadcast_object_list(refusal)
    if refusal[0]:
        raise FolderBusy(refusal[0])
    try:
        yield
    finally:
        lock.release()


def _append_log(out_dir: Path, summary: GenerationSummary, gen: GenerationPipeline, config_path: str,
                processes: int) -> None:
    path = out_dir / LOG_NAME
    records = read_jsonl(path) if path.is_file() else []
    records.append({
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "config": config_path,
        "model": gen.model,
        "erasers": gen.eraser_records(),
        "rows": summary.rows,
        "skipped_empty": summary.skipped_empty,
        "skipped_existing": summary.skipped_existing,
        "generated": summary.generated,
        "processes": processes,
        "seconds": round(summary.seconds, 3),
    })
    atomic_write_jsonl(path, records)


def describe(summary: GenerationSummary) -> str:
    return json.dumps({
        "out_dir": str(summary.out_dir), "rows": summary.rows, "skipped_empty": summary.skipped_empty,
        "skipped_existing": summary.skipped_existing, "generated": summary.generated,
        "seconds": round(summary.seconds, 1),
    })

"""A training run: which concepts to train (skip, resume, overwrite), process sharding, batches of concepts."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from cpe.core.weights import read_gate_file, stored_gate
from cpe.models.loading import check_model_source, resolve_device
from cpe.training.config import TrainConfig
from cpe.training.data import PromptSide, encode_prompt_side, load_frozen, prepare_batch, read_prompt_lists
from cpe.training.files import (
    ConceptPaths,
    TrainingError,
    finish_swap,
    read_checkpoint,
    remove_tree,
    replace_folder,
    settings_difference,
    staging,
)
from cpe.training.loop import BatchTrainer, erase_phase
from cpe.training.prompts import Concept, load_concepts
from cpe.util.io import FolderLock, check_writable_folder, remove_stale_temp_files

log = logging.getLogger(__name__)


def concept_range(concepts: Sequence[Concept], start: int, end: int | None, source: str) -> list[Concept]:
    """``concepts[start:end]`` (end exclusive, default all); an out-of-range request is an error."""
    end = len(concepts) if end is None else end
    if not 0 <= start < end <= len(concepts):
        raise IndexError(f"concept range [{start}, {end}) out of bounds for {len(concepts)} concepts in {source}")
    return list(concepts[start:end])


def selected_concepts(cfg: TrainConfig, start: int, end: int | None,
                      guidance_override: float | None = None) -> list[Concept]:
    """Concepts ``[start, end)`` of the config's concept list (each with its guidance, or ``guidance_override``)."""
    p = cfg.prompts
    concepts = load_concepts(cfg.path(p.concepts), p.neutral, cfg.train.guidance)
    if guidance_override is not None:
        concepts = [dataclasses.replace(c, guidance=guidance_override) for c in concepts]
    return concept_range(concepts, start, end, str(cfg.path(p.concepts)))


Job = tuple[Concept, dict | None, bool]  # concept, the checkpoint it resumes from, trained in a staging folder


def _check_finished(paths: ConceptPaths, cfg: TrainConfig, concept: Concept) -> None:
    """A finished concept is skipped only when it was trained with this run's settings."""
    difference = settings_difference(read_gate_file(paths.last)[1].training_config, cfg, concept)
    if difference:
        raise TrainingError(f"{paths.last} was trained with other settings ({difference}); pass --overwrite to "
                            "retrain it, or choose another save.root / save.experiment")


def plan(cfg: TrainConfig, concepts: list[Concept], resume: bool, overwrite: bool) -> list[Job]:
    """Which concepts still need training, with the checkpoint each resumes from (finished ones skipped).

    With ``overwrite`` every concept is trained in a staging folder that replaces its folder only once
    complete; ``resume`` continues such a run that was interrupted.
    """
    root = cfg.output_dir()
    todo: list[Job] = []
    for concept in concepts:
        paths = ConceptPaths(root / concept.folder, cfg.save.name)
        staged = staging(paths)
        finish_swap(paths, root)
        for folder in (paths.folder, staged.folder):
            remove_stale_temp_files(folder)  # left by a killed run
        if overwrite:
            todo.append((concept, None, True))
            continue
        if resume and staged.checkpoint.is_file():
            todo.append((concept, read_checkpoint(staged, cfg, concept), True))
            continue
        if paths.last.is_file():
            trained_gate = stored_gate(paths.last)
            if trained_gate != cfg.network.gate:
                raise TrainingError(
                    f"{paths.last}: trained with network.gate {trained_gate}, this config asks for {cfg.network.gate}; "
                    "put {gate} in save.experiment or pass --overwrite"
                )
            _check_finished(paths, cfg, concept)
            paths.checkpoint.unlink(missing_ok=True)  # a kill between the last gate file and its removal
            log.info("%s: already trained (%s), skipped", concept.target, paths.last)
            continue
        if paths.checkpoint.is_file() and resume:
            todo.append((concept, read_checkpoint(paths, cfg, concept), False))
        elif paths.folder.is_dir() and any(paths.folder.iterdir()) and not resume:
            raise TrainingError(f"{paths.folder} holds an unfinished run; pass --resume to continue or --overwrite")
        else:
            todo.append((concept, None, False))
    return todo


def batches(todo: list[Job], size: int) -> Iterator[list[Job]]:
    """Concepts at the same resume stage, ``size`` at a time (first-come order kept within a stage)."""
    by_stage: dict[int, list] = {}
    for item in todo:
        by_stage.setdefault(0 if item[1] is None else item[1]["stages_done"], []).append(item)
    for stage in sorted(by_stage):
        group = by_stage[stage]
        for i in range(0, len(group), size):
            yield group[i : i + size]


@dataclass
class TrainSummary:
    trained: list[Path]
    skipped: int
    seconds: float


def train(cfg: TrainConfig, start: int = 0, end: int | None = None, resume: bool = False, overwrite: bool = False,
          guidance_override: float | None = None, wait: bool = False) -> TrainSummary:
    """Train concepts ``[start, end)`` of the config's list; with accelerate, each process takes a share.

    Each concept's folder is locked from planning until the concept is finished: a concept another process is
    training is an error naming it (``FolderBusy``), or with ``wait`` is waited for (and then skipped if finished).
    Processes of one run take disjoint shares and never wait for each other."""
    from accelerate import PartialState

    begin = time.perf_counter()
    state = PartialState(cpu=cfg.model.device == "cpu")
    selected = selected_concepts(cfg, start, end, guidance_override)
    lists = read_prompt_lists(cfg)
    check_model_source(cfg.model_path())
    check_writable_folder(cfg.output_dir())
    device = state.device if cfg.model.device == "auto" else resolve_device(cfg.model.device)
    with state.split_between_processes(selected) as mine:
        mine = list(mine)
    trained: list[Path] = []
    with ExitStack() as held:
        locks = {c.folder: held.enter_context(FolderLock(cfg.output_dir() / c.folder, wait)) for c in mine}
        todo = plan(cfg, mine, resume, overwrite)
        for concept in set(locks) - {c.folder for c, _, _ in todo}:
            locks[concept].release()  # finished: nothing to guard
        if todo:
            # The gate's query weights start near 1e-8, so their Adam statistics become denormal floats, which x86
            # CPUs process very slowly (4x slower steps at SD v1.4 shapes): flush them to zero while training.
            flush = device.type == "cpu"
            if flush:
                torch.set_flush_denormal(True)
            try:
                trained = _train_todo(cfg, todo, lists, device, locks)
            finally:
                if flush:
                    torch.set_flush_denormal(False)
    state.wait_for_everyone()
    return TrainSummary(trained, len(mine) - len(todo), time.perf_counter() - begin)


def _train_todo(cfg: TrainConfig, todo: list, lists: PromptSide, device: torch.device,
                locks: dict[str, FolderLock]) -> list[Path]:
    """Load the frozen model once, then train the pending concepts batch by batch (each batch's folder locks are
    released as soon as its files are final)."""
    model = load_frozen(cfg, device)
    side = encode_prompt_side(lists, model)
    root = cfg.output_dir()
    trained: list[Path] = []
    for group in tqdm(list(batches(todo, cfg.train.concept_batch)), desc="concept batches", dynamic_ncols=True,
                      disable=len(todo) == 1):
        concepts_here = [c for c, _, _ in group]
        data, store = prepare_batch(cfg, side, model, concepts_here)
        log.info("anchor store for %s: %d prompts, %.1f MB", [c.target for c in concepts_here],
                 len(store.rows), store.nbytes / 2**20)
        finals = [ConceptPaths(root / c.folder, cfg.save.name) for c in concepts_here]
        paths = [staging(f) if staged else f for f, (_, _, staged) in zip(finals, group, strict=True)]
        for path, (_, ckpt, staged) in zip(paths, group, strict=True):
            if staged and ckpt is None:
                remove_tree(path.folder, root)  # an earlier, unfinished --overwrite run
            path.folder.mkdir(parents=True, exist_ok=True)
        checkpoints = [ckpt for _, ckpt, _ in group]
        start_stage = 0 if checkpoints[0] is None else checkpoints[0]["stages_done"]
        BatchTrainer(cfg, model, side, data, store, paths, start_stage, checkpoints).train()
        for path, final in zip(paths, finals, strict=True):
            if path != final:
                replace_folder(path, final, root)  # the old weights go only now that the new ones are complete
        for concept in concepts_here:
            locks[concept.folder].release()
        trained.extend(final.last for final in finals)
    return trained


def describe(cfg: TrainConfig) -> str:
    """One line with the step counts of the schedule (for the CLI banner)."""
    t, a, net = cfg.train, cfg.adversarial, cfg.network
    erase = sum(erase_phase(cfg, s).steps for s in range(t.num_stages))
    adv = a.iterations * t.num_stages if a.enabled else 0
    return (f"{t.num_stages} stages, {erase} erase + {adv} adversarial steps per concept, "
            f"g={t.guidance} pal={t.pal:g} gate={net.gate} r={net.gate_rank} k={net.lora_rank}, "
            f"S={cfg.anchors.per_step} P={a.num_embeddings} noise={cfg.anchors.noise_scale:g}")

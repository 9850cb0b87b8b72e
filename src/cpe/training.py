"""CPE training (method.md §2): stage loop, optimisers, schedules, checkpoints, resume, many concepts per run.

One process loads the text encoder and only the UNet's cross-attention weights, then trains its share of
the concept range in batches of ``train.concept_batch`` concepts side by side (slot c of one ResAG per
concept). Every concept owns a random stream seeded from (train_seed, target) that drives its init,
template and anchor draws, noise, mixup and adversarial banks, and the losses of different concepts are
summed (the optimisers are element-wise), so a concept's weights do not depend on its neighbours.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.optimization import get_scheduler
from torch import Tensor
from tqdm.auto import tqdm

from cpe.adversarial import new_bank, save_bank
from cpe.anchors import EmbeddingStore, most_similar, sample_anchors, templated_pool
from cpe.config import TrainConfig
from cpe.io_utils import atomic_write
from cpe.losses import EraseBatch, FrozenBank, KVLoss, attack_loss, erase_losses, lipschitz_weights
from cpe.models import (
    check_model_source,
    encode_prompts,
    load_cross_attention_weights,
    load_text_encoder,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
)
from cpe.network import layer_name
from cpe.prompts import (
    Concept,
    erase_pairs,
    load_concepts,
    load_templates,
    misaligned_pairs,
    read_csv_column,
    unique,
)
from cpe.resag import ResAG, ResAGSpec
from cpe.weights import save_gate_file

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
LOG_FILE = "train_log.jsonl"


class TrainingError(RuntimeError):
    """A run that cannot continue (non-finite loss, conflicting files); the message names what and where."""


# ---------------------------------------------------------------------------------------------------
# concepts, seeds, file names


def concept_seed(train_seed: int, target: str) -> int:
    """A concept's own seed, derived from (train_seed, target) only."""
    return int.from_bytes(hashlib.sha256(f"{train_seed}\x00{target}".encode()).digest()[:8], "little") >> 1


def concept_range(concepts: Sequence[Concept], start: int, end: int | None, source: str) -> list[Concept]:
    """``concepts[start:end]`` (end exclusive, default all); an out-of-range request is an error."""
    end = len(concepts) if end is None else end
    if not 0 <= start < end <= len(concepts):
        raise IndexError(f"concept range [{start}, {end}) out of bounds for {len(concepts)} concepts in {source}")
    return list(concepts[start:end])


@dataclass(frozen=True)
class ConceptPaths:
    folder: Path
    name: str

    def gate(self, suffix: str) -> Path:
        return self.folder / f"{self.name}_{suffix}.safetensors"

    @property
    def last(self) -> Path:
        return self.gate("last")

    @property
    def bank(self) -> Path:
        return self.gate("adv_prompts_last")

    @property
    def checkpoint(self) -> Path:
        return self.folder / CHECKPOINT

    @property
    def log(self) -> Path:
        return self.folder / LOG_FILE


def fingerprint(cfg: TrainConfig, concept: Concept) -> str:
    """What a checkpoint must agree with to be resumed: every setting that changes the numbers."""
    data = cfg.as_dict()
    for key in ("save", "logging", "source"):
        data.pop(key)
    data["model"].pop("device")
    data["train"].pop("concept_batch")
    data["concept"] = dataclasses.asdict(concept)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------
# frozen model side


@dataclass
class FrozenModel:
    """Tokenizer + text encoder, the cross-attention weights as losses need them, the ResAG spec."""

    tokenizer: object
    text_encoder: torch.nn.Module
    kv: KVLoss
    spec: ResAGSpec
    device: torch.device

    @property
    def tokens(self) -> int:
        return self.tokenizer.model_max_length

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Tensor:
        return encode_prompts(self.tokenizer, self.text_encoder, prompts).float()


def load_frozen(cfg: TrainConfig, device: torch.device) -> FrozenModel:
    """Text side and cross-attention weights only; the UNet itself is never built (method.md §2.1)."""
    dtype = resolve_dtype(cfg.model.dtype)
    tokenizer = load_tokenizer(cfg.model.path)
    text_encoder = load_text_encoder(cfg.model.path, device=device, dtype=dtype)
    attention = load_cross_attention_weights(cfg.model.path, device=device, dtype=torch.float32)
    projections = {
        layer_name(f"{path}.{part}"): weights[part] for path, weights in attention.items() for part in ("to_k", "to_v")
    }
    kv = KVLoss(projections, lipschitz_weights(attention, tokenizer.model_max_length), tokenizer.model_max_length)
    net = cfg.network
    spec = ResAGSpec(
        embed_dim=next(iter(projections.values())).shape[1],
        layer_dims={name: w.shape[0] for name, w in projections.items()},
        gate_rank=net.gate_rank, lora_rank=net.lora_rank, alpha=net.alpha, key_mode=net.key_mode,
    )
    return FrozenModel(tokenizer, text_encoder, kv, spec, device)


# ---------------------------------------------------------------------------------------------------
# prompts and anchors of a concept batch


@dataclass
class ConceptData:
    concept: Concept
    generator: torch.Generator
    target: Tensor  # E_T per template (M, T, D), on the device
    diff: Tensor  # (1+g)(E_N − E_T) per template
    pool: Tensor  # rows of the anchor store


@dataclass
class PromptSide:
    templates: list[str]
    general_words: list[str]
    candidates: list[str]
    sentences: list[str]
    candidate_embeddings: Tensor | None = None  # set by encode_prompt_side
    empty: Tensor | None = None  # E_∅ (T, D)


def read_prompt_lists(cfg: TrainConfig) -> PromptSide:
    """Templates and anchor lists, validated before any model is loaded."""
    p, a = cfg.prompts, cfg.anchors
    templates = load_templates(cfg.path(p.templates), p.template_column, p.placeholder, p.template_word, p.include_bare)
    sentences = unique(read_csv_column(cfg.path(a.sentences), a.sentences_column)) if a.sentences else []
    general = unique(read_csv_column(cfg.path(a.general_words), a.general_words_column)) if a.general_words else []
    candidates = unique(read_csv_column(cfg.path(a.candidates), a.candidates_column)) if a.candidates else []
    return PromptSide(templates, general, candidates, sentences)


def encode_prompt_side(side: PromptSide, model: FrozenModel) -> PromptSide:
    """Encode the candidate names (for the similarity search) and the empty prompt."""
    names = side.candidates
    if names:
        side.candidate_embeddings = torch.cat([model.encode(names[i : i + 64]).cpu() for i in range(0, len(names), 64)])
    side.empty = model.encode([""])[0]
    return side


def load_prompt_side(cfg: TrainConfig, model: FrozenModel) -> PromptSide:
    return encode_prompt_side(read_prompt_lists(cfg), model)


def anchor_prompts(cfg: TrainConfig, side: PromptSide, model: FrozenModel, concept: Concept) -> list[str]:
    """The concept's anchor pool: benign sentences, or general words + top-K similar names in every template."""
    if side.sentences:
        return side.sentences
    names: list[str] = []
    if side.candidate_embeddings is not None:
        target = model.encode([concept.target])[0].cpu()
        names = most_similar(target, side.candidate_embeddings, side.candidates, concept.target, cfg.anchors.top_k)
    anchors = unique(side.general_words + names)
    return templated_pool(anchors, side.templates, cfg.prompts.placeholder)


def prepare_batch(
    cfg: TrainConfig, side: PromptSide, model: FrozenModel, concepts: list[Concept]
) -> tuple[list[ConceptData], EmbeddingStore]:
    pools = [anchor_prompts(cfg, side, model, c) for c in concepts]
    store = EmbeddingStore(
        lambda prompts: model.encode(prompts).cpu(), [q for pool in pools for q in pool],
        resolve_dtype(cfg.anchors.cache_dtype),
    )
    data = []
    for concept, pool in zip(concepts, pools, strict=True):
        pairs = erase_pairs(concept, side.templates, cfg.prompts.placeholder)
        shifted = misaligned_pairs(model.tokenizer, pairs)
        if shifted:
            log.warning("%s: %d of %d target/neutral pairs tokenize to different lengths (e.g. %r)",
                        concept.target, len(shifted), len(pairs), shifted[0])
        target = model.encode([t for t, _ in pairs])
        neutral = model.encode([n for _, n in pairs])
        generator = torch.Generator().manual_seed(concept_seed(cfg.train.seed, concept.target))
        data.append(ConceptData(concept, generator, target, (1 + concept.guidance) * (neutral - target),
                                store.indices(pool)))
    return data, store


# ---------------------------------------------------------------------------------------------------
# optimisation


def make_optimizer(params: list[Tensor], kind: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; bitsandbytes' 8-bit AdamW only when asked for and both bitsandbytes and CUDA exist."""
    if kind == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            bnb = None
        if bnb is not None and params[0].is_cuda:
            return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay)
        warnings.warn("adamw8bit needs bitsandbytes and CUDA; using torch.optim.AdamW", stacklevel=2)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


@dataclass
class Phase:
    name: str  # "erase" | "adv"
    steps: int
    lr: float
    cycles: int
    warmup: int
    scheduler: str


def erase_phase(cfg: TrainConfig, stage: int) -> Phase:
    t = cfg.train
    first = stage == 0
    return Phase(
        "erase", t.iterations * (t.factor_init_iter if first else 1), t.lr * (t.factor_init_lr if first else 1),
        t.lr_cycles * (t.factor_init_lr_cycle if first else 1), t.lr_warmup_steps, t.lr_scheduler,
    )


def adversarial_phase(cfg: TrainConfig) -> Phase:
    a = cfg.adversarial
    return Phase("adv", a.iterations, a.lr, a.lr_cycles, a.lr_warmup_steps, a.lr_scheduler)


class RunLog:
    """JSONL per concept (every ``every`` steps and each phase's last step), plus tensorboard/wandb if enabled."""

    def __init__(self, cfg: TrainConfig, paths: list[ConceptPaths], concepts: list[Concept]) -> None:
        self.every = cfg.logging.every
        self.paths, self.concepts = paths, concepts
        self.writers = []
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writers = [SummaryWriter(str(p.folder / "tensorboard")) for p in paths]
        self.wandb = None
        if cfg.logging.wandb:
            import wandb

            self.wandb = wandb.init(project=cfg.logging.wandb_project, config=cfg.as_dict(), reinit=True)
        self.global_step = 0

    def record(self, stage: int, phase: Phase, step: int, lr: float, terms: dict[str, Tensor]) -> None:
        self.global_step += 1
        if (step + 1) % self.every and step + 1 != phase.steps:
            return
        values = {key: value.detach().cpu().tolist() for key, value in terms.items()}
        for i, (paths, concept) in enumerate(zip(self.paths, self.concepts, strict=True)):
            record = {"concept": concept.target, "stage": stage + 1, "phase": phase.name, "step": step + 1, "lr": lr}
            record.update({key: v[i] for key, v in values.items()})
            with open(paths.log, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            for key, v in values.items():
                if self.writers:
                    self.writers[i].add_scalar(f"{phase.name}/{key}", v[i], self.global_step)
                if self.wandb is not None:
                    self.wandb.log({f"{concept.target}/{phase.name}/{key}": v[i]}, step=self.global_step)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def _check_finite(loss: Tensor, concepts: list[Concept], stage: int, phase: str, step: int) -> None:
    bad = ~torch.isfinite(loss)
    if bad.any():
        names = ", ".join(concepts[i].target for i in bad.nonzero().flatten().tolist())
        raise TrainingError(
            f"non-finite {phase} loss for concept(s) {names} at stage {stage + 1} step {step + 1}; "
            "the last stage checkpoint is kept"
        )


def run_phase(phase: Phase, params: list[Tensor], cfg: TrainConfig, loss_fn, on_step, desc: str) -> None:
    """Fresh optimiser and LR schedule (diffusers ``get_scheduler``), then ``phase.steps`` steps."""
    optimizer = make_optimizer(params, cfg.train.optimizer, phase.lr, cfg.train.weight_decay)
    scheduler = get_scheduler(phase.scheduler, optimizer, num_warmup_steps=phase.warmup,
                              num_training_steps=phase.steps, num_cycles=phase.cycles)
    for step in tqdm(range(phase.steps), desc=desc, leave=False, dynamic_ncols=True):
        lr = scheduler.get_last_lr()[0]
        total, terms = loss_fn(step)
        total.sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        on_step(step, lr, terms)


# ---------------------------------------------------------------------------------------------------
# one concept batch through all stages


class BatchTrainer:
    """Trains C concepts side by side through every stage, with a checkpoint after each stage."""

    def __init__(self, cfg: TrainConfig, model: FrozenModel, side: PromptSide, data: list[ConceptData],
                 store: EmbeddingStore, paths: list[ConceptPaths], start_stage: int,
                 checkpoints: list[dict | None]) -> None:
        self.cfg, self.model, self.data, self.store, self.paths = cfg, model, data, store, paths
        self.concepts = [d.concept for d in data]
        self.start_stage = start_stage
        device = model.device
        self.resag = ResAG(model.spec, len(data))
        self.delta: Tensor | None = None
        banks = []
        for i, (d, ckpt) in enumerate(zip(data, checkpoints, strict=True)):
            if ckpt is None:
                single = ResAG(model.spec, 1)
                single.reset_parameters(generator=d.generator)
                self.resag.load_concept(i, single.concept_parameters(0))
            else:
                self.resag.load_concept(i, ckpt["params"])
                d.generator.set_state(ckpt["generator"])
                banks.append(ckpt["delta"])
        if banks and banks[0] is not None:
            self.delta = torch.stack(banks).to(device)
        self.resag.to(device)
        self.empty = side.empty.to(device)

    def _erase_batch(self) -> EraseBatch:
        cfg, device = self.cfg.anchors, self.model.device
        targets, diffs, anchors = [], [], []
        for d in self.data:
            index = int(torch.randint(len(d.target), (), generator=d.generator))
            targets.append(d.target[index])
            diffs.append(d.diff[index])
            sampled = sample_anchors(self.store.embeddings, d.pool, cfg.per_step, cfg.noise_scale, cfg.mixup,
                                     d.generator)
            anchors.append(torch.cat([self.empty[None], sampled.to(device)]))
        return EraseBatch(torch.stack(targets), torch.stack(diffs), torch.stack(anchors))

    def _attack_targets(self) -> Tensor:
        return torch.stack([d.target[int(torch.randint(len(d.target), (), generator=d.generator))]
                            for d in self.data])

    def _trainable(self) -> list[Tensor]:
        return [p for p in self.resag.parameters() if p.requires_grad]

    def _erase(self, stage: int, logger: RunLog) -> None:
        phase = erase_phase(self.cfg, stage)
        bank = FrozenBank.freeze(self.model.kv, self.delta) if self.delta is not None else None
        train = self.cfg.train

        def loss_fn(step: int) -> tuple[Tensor, dict[str, Tensor]]:
            terms = erase_losses(self.model.kv, self.resag, self._erase_batch(), bank)
            total = terms["erase"] + train.adv_coef * terms["adv"] + train.pal * terms["anchor"]
            _check_finite(total, self.concepts, stage, "erase", step)
            return total, {"loss": total, **terms}

        run_phase(phase, self._trainable(), self.cfg, loss_fn,
                  lambda step, lr, terms: logger.record(stage, phase, step, lr, terms), self._desc(stage, "erase"))

    def _attack(self, stage: int, logger: RunLog) -> None:
        phase = adversarial_phase(self.cfg)
        kv, spec = self.model.kv, self.model.spec
        generators = [d.generator for d in self.data]
        delta = new_bank(generators, self.cfg.adversarial.num_embeddings, self.model.tokens, spec.embed_dim)
        delta = delta.to(self.model.device).requires_grad_(True)
        trainable = self._trainable()
        for p in trainable:
            p.requires_grad_(False)
        with torch.no_grad():
            readout = kv.readout(self.resag)

        def loss_fn(step: int) -> tuple[Tensor, dict[str, Tensor]]:
            loss = attack_loss(kv, self.resag, readout, self._attack_targets(), delta)
            _check_finite(loss, self.concepts, stage, "adversarial", step)
            return loss, {"attack": loss}

        try:
            run_phase(phase, [delta], self.cfg, loss_fn,
                      lambda step, lr, terms: logger.record(stage, phase, step, lr, terms), self._desc(stage, "adv"))
        finally:
            for p in trainable:
                p.requires_grad_(True)
        self.delta = delta.detach()

    def _desc(self, stage: int, phase: str) -> str:
        names = self.concepts[0].target if len(self.concepts) == 1 else f"{len(self.concepts)} concepts"
        return f"{names} | stage {stage + 1}/{self.cfg.train.num_stages} {phase}"

    def _save_gates(self, suffix: str) -> None:
        for i, (paths, d) in enumerate(zip(self.paths, self.data, strict=True)):
            save_gate_file(self.resag, paths.gate(suffix), concept=d.concept.target, neutral=d.concept.neutral,
                           base_model=self.cfg.model.path, training_config=self._record(d.concept),
                           concept_index=i, overwrite=True)
            if self.delta is not None:
                save_bank(paths.bank, self.delta[i], d.concept.target)

    def _record(self, concept: Concept) -> dict:
        return {**self.cfg.as_dict(), "concept": dataclasses.asdict(concept)}

    def _checkpoint(self, stages_done: int) -> None:
        for i, (paths, d) in enumerate(zip(self.paths, self.data, strict=True)):
            state = {
                "stages_done": stages_done,
                "fingerprint": fingerprint(self.cfg, d.concept),
                "params": {k: v.cpu() for k, v in self.resag.concept_parameters(i).items()},
                "delta": None if self.delta is None else self.delta[i].cpu(),
                "generator": d.generator.get_state(),
            }
            atomic_write(paths.checkpoint, lambda tmp, state=state: torch.save(state, tmp))

    def train(self) -> None:
        cfg = self.cfg
        logger = RunLog(cfg, self.paths, self.concepts)
        try:
            for stage in range(self.start_stage, cfg.train.num_stages):
                self._erase(stage, logger)
                if (stage + 1) % cfg.save.stage_interval == 0:
                    self._save_gates(f"stage{stage + 1}")
                if cfg.adversarial.enabled:
                    self._attack(stage, logger)
                self._checkpoint(stage + 1)
            self._save_gates("last")
        finally:
            logger.close()
        for paths in self.paths:
            paths.checkpoint.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------
# the run


def _read_checkpoint(paths: ConceptPaths, cfg: TrainConfig, concept: Concept) -> dict:
    state = torch.load(paths.checkpoint, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != fingerprint(cfg, concept):
        raise TrainingError(f"{paths.checkpoint}: written with different settings; use --overwrite to start over")
    return state


def plan(cfg: TrainConfig, concepts: list[Concept], resume: bool, overwrite: bool) -> list[tuple[Concept, dict | None]]:
    """Which concepts still need training, with the checkpoint each resumes from (finished ones skipped)."""
    root = cfg.output_dir()
    todo = []
    for concept in concepts:
        paths = ConceptPaths(root / concept.folder, cfg.save.name)
        if overwrite:
            if paths.folder.exists():
                shutil.rmtree(paths.folder)
            todo.append((concept, None))
            continue
        if paths.last.is_file():
            log.info("%s: already trained (%s), skipped", concept.target, paths.last)
            continue
        if paths.checkpoint.is_file() and resume:
            todo.append((concept, _read_checkpoint(paths, cfg, concept)))
        elif paths.folder.is_dir() and any(paths.folder.iterdir()) and not resume:
            raise TrainingError(f"{paths.folder} holds an unfinished run; pass --resume to continue or --overwrite")
        else:
            todo.append((concept, None))
    return todo


def batches(todo: list[tuple[Concept, dict | None]], size: int) -> Iterator[list[tuple[Concept, dict | None]]]:
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
          guidance_override: float | None = None) -> TrainSummary:
    """Train concepts ``[start, end)`` of the config's list; with accelerate, each process takes a share."""
    from accelerate import PartialState

    begin = time.perf_counter()
    state = PartialState(cpu=cfg.model.device == "cpu")
    p = cfg.prompts
    concepts = load_concepts(cfg.path(p.concepts), p.neutral, cfg.train.guidance)
    if guidance_override is not None:
        concepts = [dataclasses.replace(c, guidance=guidance_override) for c in concepts]
    selected = concept_range(concepts, start, end, str(cfg.path(p.concepts)))
    lists = read_prompt_lists(cfg)
    check_model_source(cfg.model.path)
    device = state.device if cfg.model.device == "auto" else resolve_device(cfg.model.device)
    with state.split_between_processes(selected) as mine:
        mine = list(mine)
    todo = plan(cfg, mine, resume, overwrite)
    trained: list[Path] = []
    if todo:
        # The gate's query weights start near 1e-8, so their Adam statistics become denormal floats, which x86
        # CPUs process very slowly (4x slower steps at SD v1.4 shapes): flush them to zero while training.
        flush = device.type == "cpu"
        if flush:
            torch.set_flush_denormal(True)
        try:
            trained = _train_todo(cfg, todo, lists, device)
        finally:
            if flush:
                torch.set_flush_denormal(False)
    state.wait_for_everyone()
    return TrainSummary(trained, len(mine) - len(todo), time.perf_counter() - begin)


def _train_todo(cfg: TrainConfig, todo: list, lists: PromptSide, device: torch.device) -> list[Path]:
    """Load the frozen model once, then train the pending concepts batch by batch."""
    model = load_frozen(cfg, device)
    side = encode_prompt_side(lists, model)
    root = cfg.output_dir()
    trained: list[Path] = []
    for group in tqdm(list(batches(todo, cfg.train.concept_batch)), desc="concept batches", dynamic_ncols=True,
                      disable=len(todo) == 1):
        concepts_here = [c for c, _ in group]
        data, store = prepare_batch(cfg, side, model, concepts_here)
        log.info("anchor store for %s: %d prompts, %.1f MB", [c.target for c in concepts_here],
                 len(store.rows), store.nbytes / 2**20)
        paths = [ConceptPaths(root / c.folder, cfg.save.name) for c in concepts_here]
        for path in paths:
            path.folder.mkdir(parents=True, exist_ok=True)
        checkpoints = [ckpt for _, ckpt in group]
        start_stage = 0 if checkpoints[0] is None else checkpoints[0]["stages_done"]
        BatchTrainer(cfg, model, side, data, store, paths, start_stage, checkpoints).train()
        trained.extend(path.last for path in paths)
    return trained


def describe(cfg: TrainConfig) -> str:
    """One line with the step counts of the schedule (for the CLI banner)."""
    t, a = cfg.train, cfg.adversarial
    erase = sum(erase_phase(cfg, s).steps for s in range(t.num_stages))
    adv = a.iterations * t.num_stages if a.enabled else 0
    return (f"{t.num_stages} stages, {erase} erase + {adv} adversarial steps per concept, "
            f"g={t.guidance} pal={t.pal:g} r={cfg.network.gate_rank} k={cfg.network.lora_rank}, "
            f"S={cfg.anchors.per_step} P={a.num_embeddings} noise={cfg.anchors.noise_scale:g}")



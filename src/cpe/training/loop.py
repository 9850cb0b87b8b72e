"""The optimisation loop: optimisers, LR schedules, the JSONL log, and one concept batch through all stages."""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass

import torch
from diffusers.optimization import get_scheduler
from torch import Tensor
from tqdm.auto import tqdm

from cpe.core.resag import ResAG
from cpe.core.weights import save_gate_file
from cpe.models.loading import model_record
from cpe.training.adversarial import new_bank, save_bank
from cpe.training.anchors import EmbeddingStore, sample_anchors
from cpe.training.config import TrainConfig
from cpe.training.data import ConceptData, FrozenModel, PromptSide
from cpe.training.files import ConceptPaths, TrainingError, fingerprint, settings, trim_log, write_checkpoint
from cpe.training.losses import EraseBatch, FrozenBank, attack_loss, erase_losses
from cpe.training.prompts import Concept


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
            try:
                with open(paths.log, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            except OSError as e:  # e.g. a full disk: name the file (a torn line is dropped on resume)
                raise OSError(e.errno, e.strerror, str(paths.log)) from e
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
        for p in paths:
            trim_log(p, start_stage)  # steps a killed run logged after its last checkpoint are redone

    def _erase_batch(self) -> EraseBatch:
        cfg, device = self.cfg.anchors, self.model.device
        targets, diffs, anchors, shared = [], [], [], []
        for d in self.data:
            index = int(torch.randint(len(d.target), (), generator=d.generator))
            targets.append(d.target[index])
            if d.shared is not None:
                shared.append(d.shared[index])
            diffs.append(d.diff[index])
            sampled = sample_anchors(self.store.embeddings, d.pool, cfg.per_step, cfg.noise_scale, cfg.mixup,
                                     d.generator)
            if d.corpus is not None:  # the caption corpus, drawn (noise, mixup) like the pool
                sampled = torch.cat([sampled, sample_anchors(self.store.embeddings, d.corpus, cfg.corpus_per_step,
                                                             cfg.noise_scale, cfg.mixup, d.generator)])
            anchors.append(torch.cat([self.empty[None], sampled.to(device)]))
        return EraseBatch(torch.stack(targets), torch.stack(diffs), torch.stack(anchors),
                          torch.stack(shared) if shared else None)

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
            terms = erase_losses(self.model.kv, self.resag, self._erase_batch(), bank, gate_term=train.gate_coef > 0)
            total = terms["erase"] + train.adv_coef * terms["adv"] + train.pal * terms["anchor"]
            if train.gate_coef > 0:  # gate specificity (a pinpoint option; 0 = the paper)
                total = total + train.gate_coef * terms["gate"]
            if train.prefix_gate_coef > 0:  # the same on the erase prompt's tokens before the concept
                total = total + train.prefix_gate_coef * terms["prefix_gate"]
            _check_finite(total, self.concepts, stage, "erase", step)
            return total, {"loss": total, **terms}

        run_phase(phase, self._trainable(), self.cfg, loss_fn,
                  lambda step, lr, terms: logger.record(stage, phase, step, lr, terms), self._desc(stage, "erase"))

    def _attack(self, stage: int, logger: RunLog) -> None:
        phase = adversarial_phase(self.cfg)
        kv, spec = self.model.kv, self.model.spec
        generators = [d.generator for d in self.data]
        bank = new_bank(generators, self.cfg.adversarial.num_embeddings, self.model.tokens, spec.embed_dim)
        # one leaf per concept: the optimiser's element-wise temporaries stay one concept's size (same numbers)
        delta = [one.to(self.model.device).requires_grad_(True) for one in bank.unbind(0)]
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
            run_phase(phase, delta, self.cfg, loss_fn,
                      lambda step, lr, terms: logger.record(stage, phase, step, lr, terms), self._desc(stage, "adv"))
        finally:
            for p in trainable:
                p.requires_grad_(True)
        self.delta = torch.stack(delta).detach()

    def _desc(self, stage: int, phase: str) -> str:
        names = self.concepts[0].target if len(self.concepts) == 1 else f"{len(self.concepts)} concepts"
        return f"{names} | stage {stage + 1}/{self.cfg.train.num_stages} {phase}"

    def _save_gates(self, suffix: str) -> None:
        for i, (paths, d) in enumerate(zip(self.paths, self.data, strict=True)):
            if self.delta is not None:  # first: a "_last" gate file marks a concept whose files are complete
                save_bank(paths.bank, self.delta[i], d.concept.target)
            save_gate_file(self.resag, paths.gate(suffix), concept=d.concept.target, neutral=d.concept.neutral,
                           base_model=model_record(self.cfg.model_path()), training_config=self._record(d.concept),
                           concept_index=i, overwrite=True)

    def _record(self, concept: Concept) -> dict:
        return {**self.cfg.as_dict(), "concept": dataclasses.asdict(concept)}

    def _checkpoint(self, stages_done: int) -> None:
        for i, (paths, d) in enumerate(zip(self.paths, self.data, strict=True)):
            state = {
                "stages_done": stages_done,
                "fingerprint": fingerprint(self.cfg, d.concept),
                "settings": settings(self.cfg, d.concept),
                "params": {k: v.cpu() for k, v in self.resag.concept_parameters(i).items()},
                "delta": None if self.delta is None else self.delta[i].cpu(),
                "generator": d.generator.get_state(),
            }
            write_checkpoint(paths, state)

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


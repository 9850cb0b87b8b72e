"""A concept's files in a training run: gate files, checkpoint, log; the settings fingerprint a resume checks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from cpe.config import TrainConfig
from cpe.io_utils import atomic_write, json_digest
from cpe.prompts import Concept

CHECKPOINT = "checkpoint.pt"
LOG_FILE = "train_log.jsonl"


class TrainingError(RuntimeError):
    """A run that cannot continue (non-finite loss, conflicting files); the message names what and where."""


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
    for key in ("cache", "cache_dir"):  # where embeddings come from, not what they are
        data["anchors"].pop(key)
    data["train"].pop("concept_batch")
    data["concept"] = dataclasses.asdict(concept)
    return json_digest(data, 16)


def write_checkpoint(paths: ConceptPaths, state: dict) -> None:
    """Atomically write one concept's checkpoint (stages done, fingerprint, parameters, bank, RNG state)."""
    atomic_write(paths.checkpoint, lambda tmp: torch.save(state, tmp))


def read_checkpoint(paths: ConceptPaths, cfg: TrainConfig, concept: Concept) -> dict:
    state = torch.load(paths.checkpoint, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != fingerprint(cfg, concept):
        raise TrainingError(f"{paths.checkpoint}: written with different settings; use --overwrite to start over")
    return state

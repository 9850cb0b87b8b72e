"""A concept's files in a training run: gate files, checkpoint, log; the settings a resume or rerun checks.

``--overwrite`` trains into a staging folder ``.<concept>.cpe-new`` beside the concept's folder and swaps
it in only once every file is complete (``replace_folder``); a swap a kill interrupted is finished or
undone by ``finish_swap`` on the next run. Nothing is ever deleted outside the experiment folder
(``remove_tree``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from cpe.training.config import TrainConfig
from cpe.training.prompts import Concept
from cpe.util.io import atomic_write, atomic_write_text, json_digest

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


# do not change the numbers (the embedding cache only decides where embeddings come from, not what they are)
IGNORED_SETTINGS = ("save", "logging", "source", "model.device", "train.concept_batch", "anchors.cache",
                    "anchors.cache_dir")


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _kept(key: str) -> bool:
    return not any(key == ignored or key.startswith(ignored + ".") for ignored in IGNORED_SETTINGS)


def settings(cfg: TrainConfig, concept: Concept) -> dict:
    """Every setting that changes a concept's numbers, flat (``train.lr``, ``concept.guidance``, ...)."""
    return _settings_of(cfg.as_dict(), concept)


def _settings_of(config: dict, concept: Concept) -> dict:
    flat = _flat({**config, "concept": dataclasses.asdict(concept)})
    return {key: value for key, value in flat.items() if _kept(key)}


def _default_sections() -> dict:
    """Each section's defaults (a whole ``TrainConfig()`` is not valid: it names no anchor lists)."""
    return {f.name: dataclasses.asdict(f.default_factory()) for f in dataclasses.fields(TrainConfig)
            if f.default_factory is not dataclasses.MISSING}


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


def settings_difference(recorded: dict, cfg: TrainConfig, concept: Concept) -> str | None:
    """The first setting in which a recorded run (a gate file's ``training_config``) differs from this one.

    Settings the record lacks (added to the config later) count as their default value.
    """
    now = settings(cfg, concept)
    before = _flat(recorded)
    defaults = _settings_of(_default_sections(), concept)
    for key in sorted(now):
        old = before.get(key, defaults.get(key))
        if old != now[key]:
            return f"{key}: recorded {old!r}, this run {now[key]!r}"
    return None


def write_checkpoint(paths: ConceptPaths, state: dict) -> None:
    """Atomically write one concept's checkpoint (stages done, fingerprint, parameters, bank, RNG state)."""
    atomic_write(paths.checkpoint, lambda tmp: torch.save(state, tmp))


def read_checkpoint(paths: ConceptPaths, cfg: TrainConfig, concept: Concept) -> dict:
    try:
        state = torch.load(paths.checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file: pickle, zip and torch errors
        raise TrainingError(f"{paths.checkpoint}: not a readable checkpoint ({type(e).__name__}); "
                            "use --overwrite to start over") from None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint(cfg, concept):
        recorded = state.get("settings") if isinstance(state, dict) else None
        detail = settings_difference(recorded, cfg, concept) if isinstance(recorded, dict) else None
        raise TrainingError(f"{paths.checkpoint}: written with different settings"
                            f"{f' ({detail})' if detail else ''}; use --overwrite to start over")
    return state


def trim_log(paths: ConceptPaths, stages_done: int) -> None:
    """Keep the log records of the stages a run resumes after: a killed run's later steps are redone and
    would be logged twice, and its last line may be torn."""
    if not paths.log.is_file():
        return
    keep = []
    for line in paths.log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("stage"), int) and record["stage"] <= stages_done:
            keep.append(line + "\n")
    atomic_write_text(paths.log, "".join(keep))


def staging(paths: ConceptPaths) -> ConceptPaths:
    """Where ``--overwrite`` trains a concept until its result is complete."""
    return ConceptPaths(paths.folder.with_name(f".{paths.folder.name}.cpe-new"), paths.name)


def _retired(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.cpe-old")


def remove_tree(path: Path, root: Path) -> None:
    """``shutil.rmtree(path)`` for a real folder strictly inside ``root``; anything else is refused."""
    inside = Path(os.path.abspath(path)).parent == Path(os.path.abspath(root))
    if not inside or path.is_symlink() or not path.resolve().is_relative_to(root.resolve()):
        raise TrainingError(f"refusing to delete {path}: not a folder inside the experiment folder {root}")
    if path.is_dir():
        shutil.rmtree(path)


def replace_folder(new: ConceptPaths, final: ConceptPaths, root: Path) -> None:
    """Swap a complete staged result in for the old folder; the old one is deleted only afterwards."""
    old = _retired(final.folder)
    if old.exists():
        remove_tree(old, root)
    if final.folder.exists():
        os.replace(final.folder, old)
    os.replace(new.folder, final.folder)
    if old.exists():
        remove_tree(old, root)


def finish_swap(final: ConceptPaths, root: Path) -> None:
    """Complete a swap (or a finished staged run) that a kill interrupted; drop a retired folder."""
    new, old = staging(final), _retired(final.folder)
    complete = new.last.is_file() and not new.checkpoint.exists()
    if complete:
        replace_folder(new, final, root)
    elif old.exists() and not final.folder.exists():
        os.replace(old, final.folder)  # the new result is gone: the old one stands
    if old.exists():
        remove_tree(old, root)

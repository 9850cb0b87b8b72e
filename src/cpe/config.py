"""Structured configs, validated at load time: an unknown or misspelt key is an error naming key and file.

Shared helpers come first (usable by any config section); the training config (``TrainConfig`` and its
sections, method.md §2.9) follows. Relative paths inside a config file are resolved against the file's
folder; ``{root}`` in a path stands for the repository root (the folder holding ``train_cpe.py``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cpe.names import check_file_part, check_relative_folder, printable

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------------
# shared validation helpers


class ConfigError(ValueError):
    """A config problem, reported in one line naming the key and the file."""


def _convert(value: Any, hint: Any, source: str, key: str) -> Any:
    where = f"{source}: {key}"
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], source, key)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return build_dataclass(hint, value, source, key + ".")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(hint)
        return [_convert(v, item, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value) if hint is float else int(value)
            fractional = hint is int and float(value) != number
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}") from None
        if fractional:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if hint is float and not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if hint is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def build_dataclass(cls: type[T], data: dict, source: str, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad types raise ``ConfigError`` naming key and file."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names), key=str)
    if unknown:
        key = printable(prefix + str(unknown[0]))
        raise ConfigError(f"{source}: unknown key '{key}' (allowed there: {', '.join(names)})")
    kwargs = {key: _convert(value, hints[key], source, prefix + key) for key, value in data.items()}
    return cls(**kwargs)


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file does not exist: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except Exception as e:  # YAMLError, and ValueError/TypeError from YAML values (e.g. the date 2001-02-30)
        raise ConfigError(f"{path}: not valid YAML ({(str(e).splitlines() or [type(e).__name__])[0]})") from None


def resolve_path(value: str, base: Path) -> Path:
    """``{root}`` -> repository root; other relative paths are relative to ``base`` (a config's folder)."""
    if "{root}" in value:
        return Path(value.replace("{root}", str(REPO_ROOT)))
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.path=value")
    key, value = text.split("=", 1)
    try:
        return key.strip().split("."), yaml.safe_load(value)
    except Exception as e:  # as in read_yaml
        raise ConfigError(f"override {text!r}: not a YAML value ({(str(e).splitlines() or ['?'])[0]})") from None


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict (validation happens when the dataclass is built)."""
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {key} is not a section")
        node[keys[-1]] = value
    return data


# ---------------------------------------------------------------------------------------------------
# training config (method.md §2.9)


@dataclass
class ModelConfig:
    path: str = "CompVis/stable-diffusion-v1-4"  # hub id or local pipeline folder
    device: str = "auto"  # auto = the accelerate process's device (CUDA when present)
    dtype: str = "float32"


@dataclass
class NetworkConfig:
    gate_rank: int = 16  # r
    lora_rank: int = 1  # k
    alpha: float = 1.0
    key_mode: str = "query_as_key"


@dataclass
class PromptConfig:
    concepts: str = "concepts.yaml"  # list of {target, neutral?, guidance?}
    templates: str = "templates.csv"
    template_column: str = "prompt"
    placeholder: str = "{concept}"
    # Legacy templates with a bare word (e.g. the reference's "actor"): whole-word occurrences become the
    # placeholder at load time ("actors" stays "actors", unlike the reference's substring replace).
    template_word: str | None = None
    include_bare: bool = True  # the bare concept string is one more template (reference behaviour)
    neutral: str = "a person"  # default neutral for concepts that name none


@dataclass
class AnchorConfig:
    general_words: str | None = None  # CSV; always anchored (templated like the target)
    general_words_column: str = "key"
    candidates: str | None = None  # CSV of candidate names; the top_k most similar to the target are anchored
    candidates_column: str = "key"
    top_k: int = 50
    sentences: str | None = None  # CSV of whole sentences used as the anchor pool instead (explicit domain)
    sentences_column: str = "name"
    per_step: int = 32  # S
    noise_scale: float = 0.001  # anchor noise = noise_scale * ||e||_F * N(0, I)
    mixup: bool = True  # Beta(1,1) mixup of consecutive draws
    cache_dtype: str = "float32"  # storage of the encoded anchor pool (float16 halves its memory)


@dataclass
class EraseConfig:
    guidance: float = 0.3  # g, for concepts that name none
    pal: float = 1e5  # anchor coefficient
    adv_coef: float = 1.0
    num_stages: int = 5
    iterations: int = 450
    lr: float = 3e-5
    lr_scheduler: str = "cosine_with_restarts"
    lr_cycles: int = 1
    lr_warmup_steps: int = 5
    factor_init_iter: int = 4
    factor_init_lr: float = 10.0
    factor_init_lr_cycle: int = 2
    optimizer: str = "adamw"  # adamw | adamw8bit (needs bitsandbytes and CUDA; else falls back to adamw)
    weight_decay: float = 0.01
    seed: int = 2024
    concept_batch: int = 1  # concepts trained side by side in one forward


@dataclass
class AdversarialConfig:
    enabled: bool = True
    num_embeddings: int = 16  # P
    iterations: int = 450
    lr: float = 0.01
    lr_scheduler: str = "cosine_with_restarts"
    lr_cycles: int = 1
    lr_warmup_steps: int = 5


@dataclass
class SaveConfig:
    root: str = "{root}/output/celebs"
    # Experiment folder; {guidance} {pal} {gate_rank} {lora_rank} {noise} are filled in.
    experiment: str = "celeb_single_guide{guidance}_pal{pal}_gate_rank{gate_rank}_noise{noise}"
    name: str = "cpe"
    stage_interval: int = 1


@dataclass
class LoggingConfig:
    every: int = 10  # JSONL record every N steps (and the last step of each phase)
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "cpe"


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    train: EraseConfig = field(default_factory=EraseConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    save: SaveConfig = field(default_factory=SaveConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: str = ""  # the file it came from (set by the loader)

    def path(self, value: str) -> Path:
        """Resolve a path from this config (relative to the config file's folder)."""
        return resolve_path(value, Path(self.source).parent if self.source else Path.cwd())

    def experiment_name(self) -> str:
        return self.save.experiment.format(
            guidance=self.train.guidance, pal=float(self.train.pal), gate_rank=self.network.gate_rank,
            lora_rank=self.network.lora_rank, noise=self.anchors.noise_scale,
        )

    def output_dir(self) -> Path:
        return self.path(self.save.root) / self.experiment_name()

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_train(cfg: TrainConfig, where: str) -> None:
    positive = {
        "network.gate_rank": cfg.network.gate_rank, "network.lora_rank": cfg.network.lora_rank,
        "train.num_stages": cfg.train.num_stages, "train.iterations": cfg.train.iterations,
        "train.concept_batch": cfg.train.concept_batch, "anchors.per_step": cfg.anchors.per_step,
        "anchors.top_k": cfg.anchors.top_k, "adversarial.num_embeddings": cfg.adversarial.num_embeddings,
        "adversarial.iterations": cfg.adversarial.iterations, "save.stage_interval": cfg.save.stage_interval,
        "logging.every": cfg.logging.every, "train.factor_init_iter": cfg.train.factor_init_iter,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{where}: {key} must be >= 1, got {value}")
    if cfg.anchors.noise_scale < 0:
        raise ConfigError(f"{where}: anchors.noise_scale must be >= 0, got {cfg.anchors.noise_scale}")
    if cfg.train.optimizer not in ("adamw", "adamw8bit"):
        raise ConfigError(f"{where}: train.optimizer must be adamw or adamw8bit, got {cfg.train.optimizer!r}")
    if not cfg.prompts.placeholder:
        raise ConfigError(f"{where}: prompts.placeholder must not be empty")
    if cfg.anchors.sentences is None and cfg.anchors.general_words is None and cfg.anchors.candidates is None:
        raise ConfigError(f"{where}: anchors need sentences, general_words or candidates")
    try:
        experiment = cfg.experiment_name()
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
        raise ConfigError(f"{where}: save.experiment has an unknown placeholder ({e!r})") from None
    try:  # outputs (and --overwrite) must stay inside save.root
        check_relative_folder(experiment, "save.experiment")
        check_file_part(cfg.save.name, "save.name")
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a training YAML, apply ``key.path=value`` overrides, validate everything."""
    data = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    data = apply_overrides(data, overrides or [])
    data.pop("source", None)
    cfg = build_dataclass(TrainConfig, data, str(path))
    cfg.source = str(Path(path).resolve())
    _check_train(cfg, str(path))
    return cfg

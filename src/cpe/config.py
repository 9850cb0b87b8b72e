"""Configs as OmegaConf structured configs, one mechanism for training (here), generation (``cpe.gen_config``)
and attacks (``cpe.attacks.config``).

Each config is a dataclass deriving from ``Section``; ``OmegaConf.structured`` makes it the schema. Loading merges
the YAML file and then the ``--set key.path=value`` overrides (``OmegaConf.from_dotlist``) onto the schema (struct
mode: an unknown key is an error; every value converted to its field's type, ``1e5`` to a float, closed choices as
``Literal``) and builds the dataclasses with ``OmegaConf.to_object``. What OmegaConf does not do stays here: bounds
(``at_least``), finite numbers, whole floats for integer fields, and the rules across fields (``check()``).
``Section.__post_init__`` runs all of it, through the same OmegaConf conversion, so a config built in code is
checked like a loaded one. Every problem is a one-line ``ConfigError`` naming the key and the file.

Paths in a config file: ``{root}`` stands for the repository root (the folder holding ``train_cpe.py``); other
relative paths are relative to the config file's folder, wherever the command runs. ``model.path`` may also be a
hub id, so a relative ``model.path`` is a folder beside the config only when written ``./…`` / ``../…`` or when
that folder exists there; otherwise it is kept as written (a hub id such as ``CompVis/stable-diffusion-v1-4``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    InterpolationResolutionError,
    KeyValidationError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    UnsupportedValueType,
    ValidationError,
)

from cpe.names import check_file_part, check_relative_folder, printable
from cpe.resag import GATES, KEY_MODES

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------------
# the one config mechanism: dataclasses as OmegaConf structured configs


class ConfigError(ValueError):
    """A config problem, reported in one line naming the key and the file."""


class FieldError(ConfigError):
    """A bad value found by a section's ``__post_init__``; the loader adds the file and the section path."""

    def __init__(self, owner: str, key: str, problem: str) -> None:
        super().__init__(f"{owner}.{key} {problem}")
        self.owner, self.key, self.problem = owner, key, problem


def at_least(low: int | float, default: Any) -> Any:
    """A field whose value must be ``>= low`` (checked by ``Section.__post_init__``)."""
    return field(default=default, metadata={"min": low})


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Each field's annotation, ``X | None`` as ``X``."""
    hints = {}
    for name, hint in typing.get_type_hints(cls).items():
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        hints[name] = hint
    return hints


@functools.cache
def _schema(cls: type) -> DictConfig:
    """The OmegaConf schema of config ``cls`` (never changed: merges make new configs)."""
    schema = OmegaConf.structured(cls)
    OmegaConf.set_struct(schema, True)
    return schema


def _expects(hint: Any) -> str:
    """What a value of a field annotated ``hint`` must be, for messages."""
    if typing.get_origin(hint) is Literal:
        return f"one of {', '.join(map(str, typing.get_args(hint)))}"
    if typing.get_origin(hint) is list:
        return "a list"
    if dataclasses.is_dataclass(hint):
        return "a mapping (a section)"
    kinds = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return kinds.get(hint, getattr(hint, "__name__", str(hint)))


def _prepared(cls: type, data: dict, source: str, prefix: str = "") -> dict:
    """``data`` ready for OmegaConf: each section a mapping, whole numbers in integer fields integers (``7.0``,
    YAML's ``1e3`` string), which OmegaConf refuses."""
    hints = _hints(cls)
    out = {}
    for key, value in data.items():
        hint = hints.get(key) if isinstance(key, str) else None
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {prefix}{key} must be a mapping (a section), got {value!r}")
            value = _prepared(hint, value, source, f"{prefix}{key}.")
        elif hint is int and isinstance(value, (float, str)) and _whole(value):
            value = int(float(value))
        out[key] = value
    return out


def _whole(value: float | str) -> bool:
    try:
        return float(value).is_integer()
    except ValueError:
        return False


def _annotation(cls: type, keys: Sequence[str]) -> Any:
    hint: Any = cls
    for key in keys:
        hint = _hints(hint).get(key) if dataclasses.is_dataclass(hint) else None
    return hint


def _value(data: dict, keys: Sequence[str]) -> tuple[bool, Any]:
    """(found, value) at the dotted path ``keys`` of nested ``data``."""
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return False, None
        data = data[key]
    return True, data


def _problem(error: OmegaConfBaseException, cls: type, data: dict, what: str) -> tuple[str, str]:
    """OmegaConf's error about config ``cls`` (merged from ``data``) as one line: (the key, the problem);
    an unknown key is ("", "unknown <what> '<key>' (allowed there: ...)")."""
    key = printable(error.full_key or error.key or "")
    if isinstance(error, (ConfigKeyError, KeyValidationError)):
        owner = error.object_type if dataclasses.is_dataclass(error.object_type) else cls
        return "", f"unknown {what} '{key}' (allowed there: {', '.join(f.name for f in dataclasses.fields(owner))})"
    if isinstance(error, MissingMandatoryValue):
        return key, "is required"
    if isinstance(error, (ValidationError, UnsupportedValueType)) and not isinstance(
            error, InterpolationResolutionError):
        keys = str(error.full_key).split(".")
        found, value = _value(data, keys)
        return key, f"must be {_expects(_annotation(cls, keys))}{f', got {value!r}' if found else ''}"
    return key, f"cannot be read: {(str(error).strip().splitlines() or [type(error).__name__])[0]}"


def _prefixes(cls: type, prefix: str = "") -> dict[str, str]:
    """Each section class's name -> its dotted place in config ``cls`` (``EraseConfig`` -> ``train.``)."""
    out = {cls.__name__: prefix}
    for name, hint in _hints(cls).items():
        if dataclasses.is_dataclass(hint):
            out.update(_prefixes(hint, f"{prefix}{name}."))
    return out


@dataclass
class Section:
    """Base of every config (section): ``__post_init__`` converts each field to its annotation through OmegaConf
    (closed choices are ``Literal``), checks that numbers are finite and ``at_least`` bounds, then ``check()``
    (rules across fields), so configs built in code are validated exactly like loaded ones."""

    def __post_init__(self) -> None:
        cls, hints = type(self), _hints(type(self))
        values = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not dataclasses.is_dataclass(hints[f.name]):
                values[f.name] = value
            elif not isinstance(value, hints[f.name]):
                raise self.error(f.name, f"must be a {hints[f.name].__name__} section, got {type(value).__name__}")
        try:
            typed = OmegaConf.to_container(OmegaConf.merge(_schema(cls), _prepared(cls, values, cls.__name__)))
        except OmegaConfBaseException as e:
            raise self.error(*_problem(e, cls, values, "field")) from None
        for f in dataclasses.fields(self):
            if f.name not in values:
                continue
            value, low = typed[f.name], f.metadata.get("min")
            if isinstance(value, float) and not math.isfinite(value):
                raise self.error(f.name, f"must be a finite number, got {value!r}")
            if low is not None and value is not None and value < low:
                raise self.error(f.name, f"must be >= {low}, got {value}")
            setattr(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Rules across fields; raise ``self.error(key, problem)``."""

    def error(self, key: str, problem: str) -> FieldError:
        return FieldError(type(self).__name__, key, problem)


def build_config(cls: type[T], layers: Sequence[tuple[str, dict]], what: str = "key") -> T:
    """Config ``cls`` from layers of nested mappings (``(source, data)``: a YAML file's, then overrides) merged in
    order onto its schema; the result is built and checked whenever the source changes, so that every problem is a
    ``ConfigError`` naming the key (``train.iterations``) and the source that brought it. ``what`` names keys in
    the unknown-key message (e.g. "generation config key")."""
    merged, prefixes, cfg = _schema(cls), _prefixes(cls), None
    for index, (source, data) in enumerate(layers):
        try:
            merged = OmegaConf.merge(merged, _prepared(cls, data, source))
            if index == len(layers) - 1 or layers[index + 1][0] != source:
                cfg = OmegaConf.to_object(merged)
        except OmegaConfBaseException as e:
            key, problem = _problem(e, cls, data, what)
            raise ConfigError(f"{source}: {f'{key} ' if key else ''}{problem}") from None
        except FieldError as e:
            raise ConfigError(f"{source}: {prefixes.get(e.owner, '')}{e.key} {e.problem}") from None
    return cfg


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


def resolve_model(value: str, base: Path) -> str:
    """``model.path`` as a loader takes it: a folder resolved like every config path (``{root}``, ``./``, ``../``,
    or a relative folder that exists beside the config), else the value unchanged (a hub id)."""
    relative = bool(value) and not value.startswith(("/", "~")) and "{root}" not in value
    if "{root}" in value or value.startswith(("./", "../")) or (relative and (base / value).is_dir()):
        return str(resolve_path(value, base))
    return value


def command_line_model(value: str) -> str:
    """A ``--model`` value for ``model.path``: an existing folder given relative to the current folder becomes
    absolute (command-line paths are relative to where the command runs, config paths to the config)."""
    local = Path(value).expanduser()
    return str(local.resolve()) if local.is_dir() else value


def parse_overrides(overrides: Sequence[str], source: str) -> dict:
    """``--set`` overrides (``a.b=value``, values read as YAML) as one nested mapping (``OmegaConf.from_dotlist``);
    a malformed one is a ``ConfigError`` naming it and ``source`` (the config file)."""
    merged = OmegaConf.create()
    for text in overrides:
        if "=" not in text:
            raise ConfigError(f"{source}: override {text!r} is not of the form key.path=value")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([text]))
        except Exception as e:  # yaml's parser errors and OmegaConf's
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise ConfigError(f"{source}: override {text!r}: not a YAML value ({first})") from None
    return OmegaConf.to_container(merged)


# ---------------------------------------------------------------------------------------------------
# training config (method.md §2.9)

DTypeName = Literal["float32", "fp32", "float16", "fp16", "bfloat16", "bf16", "float64"]
LRScheduler = Literal["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"]


@dataclass
class ModelConfig(Section):
    path: str = "CompVis/stable-diffusion-v1-4"  # hub id or local pipeline folder (TrainConfig.model_path())
    device: str = "auto"  # auto = the accelerate process's device (CUDA when present)
    dtype: DTypeName = "float32"


@dataclass
class NetworkConfig(Section):
    gate_rank: int = at_least(1, 16)  # r
    lora_rank: int = at_least(1, 1)  # k
    alpha: float = 1.0
    key_mode: Literal[KEY_MODES] = "query_as_key"  # the tuple of resag's key modes, as Literal choices
    # Residual family (cpe.resag.GATES): attention = CPE's Residual Attention Gate; none = the plain linear
    # low-rank residual E·Down·Up (no token mixing, gate fixed at 1: an edit of the to_k/to_v weights only).
    gate: Literal[GATES] = "attention"


@dataclass
class PromptConfig(Section):
    concepts: str = "concepts.yaml"  # list of {target, neutral?, guidance?}
    templates: str = "templates.csv"
    template_column: str = "prompt"
    placeholder: str = "{concept}"
    # Legacy templates with a bare word (e.g. the reference's "actor"): whole-word occurrences become the
    # placeholder at load time ("actors" stays "actors", unlike the reference's substring replace).
    template_word: str | None = None
    include_bare: bool = True  # the bare concept string is one more template (reference behaviour)
    neutral: str = "a person"  # default neutral for concepts that name none
    # Pinpoint option (not in the paper): CSV of further templates that put the concept inside other concepts'
    # context ("a portrait of {concept} in the style of X", "a portrait of X in the style of {concept}"). They are
    # used exactly like ``templates``: erase pairs and templated anchors.
    compositions: str | None = None
    compositions_column: str = "prompt"

    def check(self) -> None:
        if not self.placeholder:
            raise self.error("placeholder", "must not be empty")


@dataclass
class AnchorConfig(Section):
    general_words: str | None = None  # CSV; always anchored (templated like the target)
    general_words_column: str = "key"
    candidates: str | None = None  # CSV of candidate names; the top_k most similar to the target are anchored
    candidates_column: str = "key"
    top_k: int = at_least(1, 50)
    sentences: str | None = None  # CSV of whole sentences used as the anchor pool instead (explicit domain)
    sentences_column: str = "name"
    # Pinpoint option (not in the paper): a general caption corpus (any prompt CSV: COCO captions, the gallery's
    # corpus.csv) anchored as it is, beside the pool; prompts naming the target (whole word, any case) are left out.
    # Each step draws ``corpus_per_step`` of them in addition to the ``per_step`` pool anchors.
    corpus: str | None = None
    corpus_column: str = "prompt"
    corpus_per_step: int = at_least(1, 16)
    per_step: int = at_least(1, 32)  # S
    noise_scale: float = at_least(0, 0.001)  # anchor noise = noise_scale * ||e||_F * N(0, I)
    mixup: bool = True  # Beta(1,1) mixup of consecutive draws
    cache_dtype: DTypeName = "float32"  # storage of the encoded anchor pool (float16 halves its memory)
    cache: bool = True  # keep the text encoder's outputs on disk so that later runs do not encode them again
    cache_dir: str | None = None  # where (safe to delete); default <save.root>/embedding_cache


@dataclass
class ContextConfig(Section):
    """Context augmentation (a pinpoint option, not in the paper; off while ``words`` is unset).

    ``variants`` more templates are drawn once from ``train.seed``: a template (of ``templates`` and
    ``compositions``) with 0..``max_before`` phrases of the words file's ``before`` rows in front of it and
    0..``max_after`` of its ``after`` rows behind it (at least one phrase). They join the templates, so every step
    draws the concept (and, with ``anchors``, the anchors) at other positions and among other words.
    """

    words: str | None = None  # CSV with columns ``text`` and ``position`` (before | after)
    variants: int = at_least(1, 48)
    max_before: int = at_least(0, 4)
    max_after: int = at_least(0, 2)
    anchors: bool = True  # render the anchor pool through the augmented templates too

    def check(self) -> None:
        if self.words is not None and self.max_before + self.max_after == 0:
            raise self.error("max_before", "and max_after are both 0: no phrase can be added")


@dataclass
class EraseConfig(Section):
    guidance: float = 0.3  # g, for concepts that name none
    pal: float = 1e5  # anchor coefficient
    adv_coef: float = 1.0
    num_stages: int = at_least(1, 5)
    iterations: int = at_least(1, 450)
    lr: float = 3e-5
    lr_scheduler: LRScheduler = "cosine_with_restarts"
    lr_cycles: int = 1
    lr_warmup_steps: int = 5
    factor_init_iter: int = at_least(1, 4)
    factor_init_lr: float = 10.0
    factor_init_lr_cycle: int = 2
    optimizer: Literal["adamw", "adamw8bit"] = "adamw"  # adamw8bit needs bitsandbytes and CUDA; else adamw
    weight_decay: float = 0.01
    seed: int = 2024
    concept_batch: int = at_least(1, 1)  # concepts trained side by side in one forward


@dataclass
class AdversarialConfig(Section):
    enabled: bool = True
    num_embeddings: int = at_least(1, 16)  # P
    iterations: int = at_least(1, 450)
    lr: float = 0.01
    lr_scheduler: LRScheduler = "cosine_with_restarts"
    lr_cycles: int = 1
    lr_warmup_steps: int = 5


@dataclass
class SaveConfig(Section):
    root: str = "{root}/output/celebs"
    # Experiment folder; {guidance} {pal} {gate_rank} {lora_rank} {noise} {gate} are filled in.
    experiment: str = "celeb_single_guide{guidance}_pal{pal}_gate_rank{gate_rank}_noise{noise}"
    name: str = "cpe"
    stage_interval: int = at_least(1, 1)


@dataclass
class LoggingConfig(Section):
    every: int = at_least(1, 10)  # JSONL record every N steps (and the last step of each phase)
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "cpe"


@dataclass
class TrainConfig(Section):
    model: ModelConfig = field(default_factory=ModelConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    context: ContextConfig = field(default_factory=ContextConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    train: EraseConfig = field(default_factory=EraseConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    save: SaveConfig = field(default_factory=SaveConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: str = ""  # the file it came from (set by the loader)

    def check(self) -> None:
        a = self.anchors
        if a.sentences is None and a.general_words is None and a.candidates is None:
            raise self.error("anchors", "need sentences, general_words or candidates")
        try:
            experiment = self.experiment_name()
        except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
            raise self.error("save.experiment", f"has an unknown placeholder ({e!r})") from None
        try:  # outputs (and --overwrite) must stay inside save.root
            check_relative_folder(experiment, "save.experiment")
            check_file_part(self.save.name, "save.name")
        except ValueError as e:
            raise self.error("save", str(e)) from None

    def folder(self) -> Path:
        """The config file's folder (the current folder for a config built in code)."""
        return Path(self.source).parent if self.source else Path.cwd()

    def path(self, value: str) -> Path:
        """Resolve a path from this config (relative to the config file's folder)."""
        return resolve_path(value, self.folder())

    def model_path(self) -> str:
        """``model.path`` resolved (a local folder beside the config or under ``{root}``, else the hub id)."""
        return resolve_model(self.model.path, self.folder())

    def experiment_name(self) -> str:
        return self.save.experiment.format(
            guidance=self.train.guidance, pal=float(self.train.pal), gate_rank=self.network.gate_rank,
            lora_rank=self.network.lora_rank, noise=self.anchors.noise_scale, gate=self.network.gate,
        )

    def output_dir(self) -> Path:
        return self.path(self.save.root) / self.experiment_name()

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config_file(cls: type[T], path: str | Path, overrides: list[str] | None = None) -> T:
    """Read a YAML config of dataclass ``cls`` (a ``source`` field records the file), merge ``key.path=value``
    overrides over it, validate everything."""
    data = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    data.pop("source", None)
    extra = parse_overrides(overrides or [], str(path))
    extra.pop("source", None)
    cfg = build_config(cls, [(str(path), data), (str(path), extra)])
    cfg.source = str(Path(path).resolve())
    return cfg


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a training YAML, apply ``key.path=value`` overrides, validate everything."""
    return load_config_file(TrainConfig, path, overrides)

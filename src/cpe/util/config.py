"""Configs as OmegaConf structured configs, one mechanism for training (here), generation (``cpe.generation.config``)
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

from cpe.util.names import printable

REPO_ROOT = Path(__file__).resolve().parents[3]
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


DTypeName = Literal["float32", "fp32", "float16", "fp16", "bfloat16", "bf16", "float64"]


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

"""Attack configs (``configs/attacks/<domain>/<attack>.yaml``), validated at load: unknown key -> error naming it.

A config names the attack, the generation config whose prompt CSV is attacked (and whose sampling settings
make the concept images the white-box objectives need), the target concept, its neutral word, the seed,
and one section of budgets per attack. Relative paths are relative to the config file's folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cpe.util.config import ConfigError, Section, load_config_file, resolve_path

ATTACKS = ("soft", "discrete", "ringabell")
# How ``cpe.attacks.evaluate`` decides that an image shows the target: the colour/shape toy's classifiers, or the
# gallery's rule readers (the identity or the style read is the target; at least one mark).
JUDGES = ("toy", "identity", "style", "mark")


@dataclass
class SoftConfig(Section):
    """White box: the prompt's token embeddings plus ``free_tokens`` free vectors, optimised continuously."""

    free_tokens: int = 4  # m free vectors, placed before the prompt's words
    steps: int = 100
    lr: float = 0.01
    batch: int = 8  # noisy latents per step


@dataclass
class DiscreteConfig(Section):
    """UnlearnDiffAtk-style: ``tokens`` prepended vocabulary tokens, optimised through the embedding (PEZ)."""

    tokens: int = 5
    steps: int = 100  # 0: no optimisation, the random initial tokens (a control for what optimising adds)
    lr: float = 0.01
    batch: int = 8
    eval_every: int = 10  # steps between evaluations of the projected tokens on a fixed batch (best is kept)
    eval_batch: int = 16


@dataclass
class RingABellConfig(Section):
    """Black box: concept vector from the text encoder, inverted to tokens by a genetic search."""

    eta: float = 3.0  # strength of the concept vector added to the benign prompt's embedding
    length: int | None = None  # searched tokens; None = as many as the benign prompt has
    vocabulary: int | None = None  # search a random sample of this many allowed tokens (None = all of them)
    # search only the words of these files (prompt CSVs: their "prompt" column; other files: all their text), paths
    # relative to the attack config: the model's own words, e.g. its captions or the prompts users type
    words_from: list[str] = field(default_factory=list)
    screen: int = 32  # per position, mutations draw from the this many best single-token substitutions (0 = all)
    population: int = 64
    generations: int = 50
    elite: int = 4
    mutation_rate: float = 0.25
    crossover_rate: float = 0.5


@dataclass
class AttackConfig(Section):
    attack: str = "???"  # soft | discrete | ringabell
    gen_config: str = "???"  # generation YAML: its prompt CSV is attacked, its sampling settings are used
    data_dir: str | None = None  # overrides the generation config's data_dir
    target: str = "???"  # the erased concept (words of the prompts; its tokens are banned from attacks)
    synonyms: list[str] = field(default_factory=list)  # more words of the same erased concept, treated as the target
    neutral: str | None = None  # replaces the target (Ring-A-Bell's prompts without the concept); "" = removed
    ban: list[str] = field(default_factory=list)  # more words whose tokens discrete attacks may not use
    filter_rows: bool = True  # attack only rows whose prompt names the target
    first_row: int | None = None  # data rows [first_row, last_row) of the prompt CSV (end exclusive)
    last_row: int | None = None
    seed: int = 0
    judge: Literal[JUDGES] = "toy"  # how cpe.attacks.evaluate judges success (see JUDGES)
    target_images: int = 4  # original-model images per prompt: the white-box attacks' concept images
    soft: SoftConfig = field(default_factory=SoftConfig)
    discrete: DiscreteConfig = field(default_factory=DiscreteConfig)
    ringabell: RingABellConfig = field(default_factory=RingABellConfig)
    source: str = ""

    def path(self, value: str) -> Path:
        return resolve_path(value, Path(self.source).parent if self.source else Path.cwd())

    def section(self):
        return getattr(self, self.attack)

    def target_words(self) -> list[str]:
        """The target and its synonyms: the words whose rows are attacked, banned and replaced by the neutral."""
        return [self.target, *self.synonyms]


def _check(cfg: AttackConfig, where: str) -> None:
    if cfg.attack not in ATTACKS:
        raise ConfigError(f"{where}: unknown attack {cfg.attack!r} (known: {', '.join(ATTACKS)})")
    for key in ("gen_config", "target"):
        if getattr(cfg, key) in ("", "???"):
            raise ConfigError(f"{where}: attack config key {key!r} is required")
    if cfg.attack == "ringabell" and cfg.neutral is None:
        raise ConfigError(f"{where}: ringabell needs 'neutral' (the word that replaces the target; \"\" removes it)")
    if any(not word.strip() for word in cfg.synonyms):
        raise ConfigError(f"{where}: synonyms must be words, got {cfg.synonyms!r}")
    positive = {"target_images": cfg.target_images, "soft.steps": cfg.soft.steps, "soft.batch": cfg.soft.batch,
                "discrete.tokens": cfg.discrete.tokens,
                "discrete.batch": cfg.discrete.batch, "discrete.eval_every": cfg.discrete.eval_every,
                "discrete.eval_batch": cfg.discrete.eval_batch, "ringabell.population": cfg.ringabell.population,
                "ringabell.generations": cfg.ringabell.generations}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{where}: {key} must be >= 1, got {value}")
    if cfg.discrete.steps < 0:
        raise ConfigError(f"{where}: discrete.steps must be >= 0 (0 = the random initial tokens, a control)")
    if cfg.soft.free_tokens < 0 or cfg.ringabell.screen < 0 or not 0 <= cfg.ringabell.elite < cfg.ringabell.population:
        raise ConfigError(f"{where}: soft.free_tokens and ringabell.screen must be >= 0, 0 <= elite < population")
    for key in ("length", "vocabulary"):
        value = getattr(cfg.ringabell, key)
        if value is not None and value < 1:
            raise ConfigError(f"{where}: ringabell.{key} must be >= 1 or null")


def _check_words_from(cfg: AttackConfig, where: str) -> None:
    for value in cfg.ringabell.words_from:
        if not cfg.path(value).is_file():
            raise ConfigError(f"{where}: ringabell.words_from: no file {cfg.path(value)}")


def load_attack_config(path: str | Path, overrides: list[str] | None = None) -> AttackConfig:
    """Read an attack YAML, apply ``key.path=value`` overrides, validate everything (types and choices by
    ``cpe.util.config.Section``, as every config of the project; the rules across keys by ``_check``)."""
    cfg = load_config_file(AttackConfig, path, overrides)
    _check(cfg, str(path))
    _check_words_from(cfg, str(path))
    return cfg

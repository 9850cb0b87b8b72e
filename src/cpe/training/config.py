"""The training config (method.md §2.9): one dataclass section per YAML section, loaded and checked through the
shared mechanism of ``cpe.util.config`` (OmegaConf structured configs; every problem one line naming key and file)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cpe.core.resag import GATES, KEY_MODES
from cpe.util.config import (
    DTypeName,
    Section,
    at_least,
    load_config_file,
    resolve_model,
    resolve_path,
)
from cpe.util.names import check_file_part, check_relative_folder

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
    # Residual family (cpe.core.resag.GATES): attention = CPE's Residual Attention Gate; none = the plain linear
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
    # CSV of whole sentences anchored as they are (the explicit domain's pool); with general_words or candidates
    # too, the pool is the sentences and then the templated words
    sentences: str | None = None
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
    With ``templates`` off the erase templates stay as they are and only the anchor side gets the phrases;
    ``sentences`` puts them around the anchor sentences and the corpus captions too (``variants`` more of each),
    so that a phrase the targets never carry (", 4k" after a benign sentence) is anchored where it appears.
    """

    words: str | None = None  # CSV with columns ``text`` and ``position`` (before | after)
    variants: int = at_least(1, 48)
    max_before: int = at_least(0, 4)
    max_after: int = at_least(0, 2)
    anchors: bool = True  # render the anchor pool through the augmented templates too
    templates: bool = True  # put the phrases around the erase templates (off: the anchor side only)
    sentences: bool = False  # and around the anchor sentences and the corpus captions

    def check(self) -> None:
        if self.words is not None and self.max_before + self.max_after == 0:
            raise self.error("max_before", "and max_after are both 0: no phrase can be added")
        if self.words is not None and not (self.templates or self.anchors or self.sentences):
            raise self.error("templates", "anchors and sentences are all off: the phrases would go nowhere")


@dataclass
class EraseConfig(Section):
    guidance: float = 0.3  # g, for concepts that name none
    pal: float = 1e5  # anchor coefficient
    adv_coef: float = 1.0
    # gate specificity (a pinpoint option, not in the paper): + gate_coef x the anchors' mean gate over their
    # tokens (the empty prompt, the pool and the corpus draws of the step); 0 = off, the paper's loss exactly
    gate_coef: float = at_least(0, 0.0)
    # the same on the erase prompt itself (not in the paper): + prefix_gate_coef x its mean gate over the tokens it
    # shares with its neutral (BOS and every token before the concept: their erase target is 0, so the gate has no
    # reason to open there, and a gate open on "," before "nudity" opens on every comma); 0 = off
    prefix_gate_coef: float = at_least(0, 0.0)
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


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a training YAML, apply ``key.path=value`` overrides, validate everything."""
    return load_config_file(TrainConfig, path, overrides)

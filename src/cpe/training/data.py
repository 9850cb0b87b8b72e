"""Training data: the frozen model side and, per concept, its prompts, embeddings and anchor pool."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import torch
import transformers
from torch import Tensor

from cpe.core.network import layer_name
from cpe.core.resag import ResAGSpec
from cpe.models.loading import TextSide, component_files, load_cross_attention_weights, resolve_dtype
from cpe.training.anchors import EmbeddingStore, most_similar, templated_pool
from cpe.training.config import TrainConfig
from cpe.training.embedding_cache import EmbeddingCache, encode_all
from cpe.training.losses import KVLoss, lipschitz_weights
from cpe.training.prompts import (
    Concept,
    context_templates,
    erase_pairs,
    load_templates,
    misaligned_pairs,
    names_target,
    read_context_words,
    read_csv_column,
    shared_prefix_mask,
    unique,
)

log = logging.getLogger(__name__)


def concept_seed(train_seed: int, target: str) -> int:
    """A concept's own seed, derived from (train_seed, target) only."""
    return int.from_bytes(hashlib.sha256(f"{train_seed}\x00{target}".encode()).digest()[:8], "little") >> 1


@dataclass
class FrozenModel:
    """The text side (tokenizer(s) + encoder(s)), the cross-attention weights as losses need them, the ResAG spec,
    and the on-disk cache of the encoder's outputs (``None`` = off)."""

    text: TextSide
    kv: KVLoss
    spec: ResAGSpec
    device: torch.device
    cache: EmbeddingCache | None = None

    @property
    def tokenizer(self):
        return self.text.tokenizer

    @property
    def tokens(self) -> int:
        return self.text.tokens

    def encode(self, prompts: list[str]) -> Tensor:
        """The context the UNet's cross-attention sees (SDXL: both encoders' penultimate states), in fp32."""
        return self.text.encode(prompts).float()

    def encode_many(self, prompts: list[str], desc: str, dtype: torch.dtype = torch.float32) -> Tensor:
        """``encode`` of many prompts (CPU, ``dtype``), from the cache where present, with a progress bar."""
        return encode_all(lambda batch: self.encode(batch), prompts, dtype, cache=self.cache, desc=desc)


def encoder_identity(cfg: TrainConfig, device: torch.device) -> dict:
    """Everything the text encoder's outputs depend on: its files, dtype, device type and the library versions."""
    return {
        "components": component_files(cfg.model_path(), ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")),
        "dtype": str(resolve_dtype(cfg.model.dtype)),
        "device": device.type,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "output": "the UNet's context as the pipeline's encode_prompt makes it (cpe.models.loading.TextSide)",
    }


def embedding_cache(cfg: TrainConfig, device: torch.device) -> EmbeddingCache | None:
    """The cache of ``anchors.cache_dir`` (default ``<save.root>/embedding_cache``), or None when ``anchors.cache``
    is off."""
    if not cfg.anchors.cache:
        return None
    folder = cfg.path(cfg.anchors.cache_dir) if cfg.anchors.cache_dir else cfg.path(cfg.save.root) / "embedding_cache"
    return EmbeddingCache(folder, encoder_identity(cfg, device))


def load_frozen(cfg: TrainConfig, device: torch.device) -> FrozenModel:
    """Text side and cross-attention weights only; the UNet itself is never built (method.md §2.1)."""
    text = TextSide.load(cfg.model_path(), device=device, dtype=resolve_dtype(cfg.model.dtype))
    attention = load_cross_attention_weights(cfg.model_path(), device=device, dtype=torch.float32)
    projections = {
        layer_name(f"{path}.{part}"): weights[part] for path, weights in attention.items() for part in ("to_k", "to_v")
    }
    embed_dim = next(iter(projections.values())).shape[1]
    if text.width != embed_dim:
        raise ValueError(f"{cfg.model_path()}: the text encoder(s) give a {text.width}-wide context but the UNet's "
                         f"cross-attention takes {embed_dim}")
    kv = KVLoss(projections, lipschitz_weights(attention, text.tokens), text.tokens)
    net = cfg.network
    spec = ResAGSpec(
        embed_dim=embed_dim,
        layer_dims={name: w.shape[0] for name, w in projections.items()},
        gate_rank=net.gate_rank, lora_rank=net.lora_rank, alpha=net.alpha, key_mode=net.key_mode,
        gate=net.gate,
    )
    return FrozenModel(text, kv, spec, device, embedding_cache(cfg, device))



@dataclass
class ConceptData:
    concept: Concept
    generator: torch.Generator
    target: Tensor  # E_T per template (M, T, D), on the device
    diff: Tensor  # (1+g)(E_N − E_T) per template
    pool: Tensor  # rows of the anchor store
    corpus: Tensor | None = None  # rows of the caption corpus (``anchors.corpus``)
    shared: Tensor | None = None  # (M, T) bool: the tokens each target shares with its neutral (train.prefix_gate_coef)


@dataclass
class PromptSide:
    templates: list[str]  # erase pairs: the templates, the compositions and the context variants
    general_words: list[str]
    candidates: list[str]
    sentences: list[str]
    candidate_embeddings: Tensor | None = None  # set by encode_prompt_side
    empty: Tensor | None = None  # E_∅ (T, D)
    anchor_templates: list[str] | None = None  # templated anchors (None: ``templates``)
    corpus: list[str] | None = None  # general captions anchored as they are (``anchors.corpus``)


def training_templates(cfg: TrainConfig) -> tuple[list[str], list[str]]:
    """The erase templates and the anchor templates: ``prompts.templates`` (+ the bare concept), then
    ``prompts.compositions``, then the ``context`` variants drawn from both (on the erase side unless
    ``context.templates`` is off, on the anchor side unless ``context.anchors`` is off)."""
    p, c = cfg.prompts, cfg.context
    templates = load_templates(cfg.path(p.templates), p.template_column, p.placeholder, p.template_word, p.include_bare)
    if p.compositions:
        templates = unique(templates + load_templates(cfg.path(p.compositions), p.compositions_column, p.placeholder,
                                                      include_bare=False))
    if not c.words:
        return templates, templates
    variants = _context_variants(cfg, templates)
    return (templates + variants) if c.templates else templates, (templates + variants) if c.anchors else templates


def _context_variants(cfg: TrainConfig, prompts: list[str], stream: int = 0) -> list[str]:
    """``context.variants`` phrase variants of ``prompts``, drawn from ``train.seed`` (``stream``: which sequence)."""
    c = cfg.context
    before, after = read_context_words(cfg.path(c.words))
    return context_templates(prompts, before, after, c.variants, c.max_before, c.max_after, cfg.train.seed, stream)


def read_prompt_lists(cfg: TrainConfig) -> PromptSide:
    """Templates and anchor lists, validated before any model is loaded."""
    a = cfg.anchors
    templates, anchor_templates = training_templates(cfg)
    sentences = unique(read_csv_column(cfg.path(a.sentences), a.sentences_column)) if a.sentences else []
    general = unique(read_csv_column(cfg.path(a.general_words), a.general_words_column)) if a.general_words else []
    candidates = unique(read_csv_column(cfg.path(a.candidates), a.candidates_column)) if a.candidates else []
    corpus = unique(read_csv_column(cfg.path(a.corpus), a.corpus_column)) if a.corpus else None
    if corpus is not None and not corpus:
        raise ValueError(f"{cfg.path(a.corpus)}: no prompts in column {a.corpus_column!r}")
    if cfg.context.words and cfg.context.sentences:  # phrases around whole prompts too (streams 1 and 2)
        sentences = unique(sentences + _context_variants(cfg, sentences, 1)) if sentences else sentences
        corpus = unique(corpus + _context_variants(cfg, corpus, 2)) if corpus else corpus
    return PromptSide(templates, general, candidates, sentences, anchor_templates=anchor_templates, corpus=corpus)


def encode_prompt_side(side: PromptSide, model: FrozenModel) -> PromptSide:
    """Encode the candidate names (for the similarity search) and the empty prompt."""
    if side.candidates:
        side.candidate_embeddings = model.encode_many(side.candidates, "encoding candidate names")
    side.empty = model.encode([""])[0]
    return side


def load_prompt_side(cfg: TrainConfig, model: FrozenModel) -> PromptSide:
    return encode_prompt_side(read_prompt_lists(cfg), model)


def anchor_prompts(cfg: TrainConfig, side: PromptSide, model: FrozenModel, concept: Concept) -> list[str]:
    """The concept's anchor pool: benign sentences and/or general words + top-K similar names in every template
    (the paper's domains use one or the other; both together: the sentences, then the templated words)."""
    names: list[str] = []
    if side.candidate_embeddings is not None:
        target = model.encode([concept.target])[0].cpu()
        names = most_similar(target, side.candidate_embeddings, side.candidates, concept.target, cfg.anchors.top_k)
    anchors = unique(side.general_words + names)
    if not anchors:
        return side.sentences
    pool = templated_pool(anchors, side.anchor_templates or side.templates, cfg.prompts.placeholder)
    return unique(side.sentences + pool)


def corpus_prompts(side: PromptSide, concept: Concept) -> list[str]:
    """The caption corpus without the prompts that name the concept (whole word, any case)."""
    return [q for q in side.corpus or [] if not names_target(q, concept.target)]


def prepare_batch(
    cfg: TrainConfig, side: PromptSide, model: FrozenModel, concepts: list[Concept]
) -> tuple[list[ConceptData], EmbeddingStore]:
    pools = [anchor_prompts(cfg, side, model, c) for c in concepts]
    corpora = [corpus_prompts(side, c) if side.corpus is not None else None for c in concepts]
    for concept, corpus in zip(concepts, corpora, strict=True):
        if corpus == []:
            raise ValueError(f"{cfg.path(cfg.anchors.corpus)}: every prompt names {concept.target!r}")
    store = EmbeddingStore(
        model.encode, [q for pool in pools for q in pool] + [q for corpus in corpora for q in corpus or []],
        resolve_dtype(cfg.anchors.cache_dtype), cache=model.cache,
        desc=f"encoding anchor prompts ({', '.join(c.target for c in concepts)})",
    )
    data = []
    for concept, pool, corpus in zip(concepts, pools, corpora, strict=True):
        pairs = erase_pairs(concept, side.templates, cfg.prompts.placeholder)
        shifted = misaligned_pairs(model.tokenizer, pairs)
        if shifted:
            log.warning("%s: %d of %d target/neutral pairs tokenize to different lengths (e.g. %r)",
                        concept.target, len(shifted), len(pairs), shifted[0])
        encoded = model.encode_many([text for pair in pairs for text in pair], f"encoding {concept.target} prompts")
        target, neutral = encoded[0::2].to(model.device), encoded[1::2].to(model.device)
        generator = torch.Generator().manual_seed(concept_seed(cfg.train.seed, concept.target))
        shared = (shared_prefix_mask(model.tokenizer, pairs, target.shape[1]).to(model.device)
                  if cfg.train.prefix_gate_coef > 0 else None)
        data.append(ConceptData(concept, generator, target, (1 + concept.guidance) * (neutral - target),
                                store.indices(pool), None if corpus is None else store.indices(corpus), shared))
    return data, store


"""Anchor pools (general words + the K candidates most similar to the target) and per-step sampling (§2.3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cpe.training.embedding_cache import BATCH_SIZE, EmbeddingCache, Encoder, encode_all
from cpe.training.prompts import fill, unique


def most_similar(target: Tensor, candidates: Tensor, names: Sequence[str], exclude: str, k: int) -> list[str]:
    """The ``k`` names whose flattened embeddings have the largest cosine similarity with ``target``.

    Candidates whose lower-cased name contains ``exclude`` (the lower-cased target) are left out.
    """
    keep = [i for i, name in enumerate(names) if exclude.lower() not in name.lower()]
    if not keep:
        return []
    flat = torch.nn.functional.normalize(candidates[keep].flatten(1).float(), dim=1)
    sims = flat @ torch.nn.functional.normalize(target.flatten().float(), dim=0)
    order = torch.topk(sims, min(k, len(keep))).indices
    return [names[keep[i]] for i in order.tolist()]


def templated_pool(anchor_concepts: Sequence[str], templates: Sequence[str], placeholder: str) -> list[str]:
    """Every anchor concept inserted into every template, exactly like the target."""
    return [fill(t, placeholder, a) for a in anchor_concepts for t in templates]


class EmbeddingStore:
    """Encodes each distinct prompt once and keeps the embeddings in one tensor (shared by all concepts); with a
    ``cache``, prompts encoded by earlier runs are read from disk instead (``cpe.training.embedding_cache``)."""

    def __init__(self, encode: Encoder, prompts: Sequence[str], dtype: torch.dtype, batch_size: int = BATCH_SIZE,
                 cache: EmbeddingCache | None = None, desc: str = "encoding anchor prompts") -> None:
        self.rows = {p: i for i, p in enumerate(unique(list(prompts)))}
        self.embeddings = encode_all(encode, list(self.rows), dtype, batch_size, cache, desc)

    def indices(self, prompts: Sequence[str]) -> Tensor:
        return torch.tensor([self.rows[p] for p in prompts], dtype=torch.long)

    @property
    def nbytes(self) -> int:
        return self.embeddings.numel() * self.embeddings.element_size()


def sample_anchors(
    store: Tensor, pool: Tensor, count: int, noise_scale: float, mixup: bool, generator: torch.Generator
) -> Tensor:
    """``count`` anchors for one step: draws with replacement, Frobenius-scaled noise, Beta(1,1) mixup.

    ``store`` (M, T, D, on the CPU) holds the encoded prompts and ``pool`` the rows of this concept's anchors. With
    mixup, 2·count rows are drawn and consecutive pairs mixed with λ ~ Uniform(0,1) = Beta(1,1).
    """
    draws = 2 * count if mixup else count
    picked = pool[torch.randint(len(pool), (draws,), generator=generator)]
    emb = store[picked].float()
    if noise_scale > 0:
        norm = emb.flatten(1).norm(dim=1)[:, None, None]
        noise = torch.randn(emb.shape, generator=generator)
        emb = emb + noise_scale * norm * noise
    if not mixup:
        return emb
    lam = torch.rand(count, generator=generator)[:, None, None]
    return lam * emb[0::2] + (1 - lam) * emb[1::2]

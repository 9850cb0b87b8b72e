"""Soft-prompt attack (white box): continuous token embeddings that make the erased model denoise like the original.

Input of the text encoder: BOS, m free vectors, the prompt's own token embeddings, EOS, padding; the free
vectors (initialised from random vocabulary tokens) and the prompt's embeddings are optimised with Adam.
Objective (the same code path on SD and on the toy): on noisy latents of the original model's images of
the prompt, the erased model's prediction for the soft prompt should equal the original model's
prediction for the prompt itself,  || ε_erased(x_t, t, E(soft)) − ε_original(x_t, t, E(prompt)) ||².
No embedding is projected to words: it is the upper bound of what any prompt could achieve.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cpe.attacks.config import SoftConfig
from cpe.attacks.victim import Victim


@dataclass
class SoftResult:
    token_embeddings: Tensor  # (T, D_in) text-encoder input
    prompt_embeds: Tensor  # (T, D) text-encoder output, what the UNet sees
    loss: float  # objective on a fixed batch, after optimisation
    loss_before: float  # the same with the prompt itself (no attack)


def _fixed_loss(victim: Victim, cond: Tensor, batch: tuple[Tensor, Tensor, Tensor]) -> float:
    x_t, t, target = batch
    with torch.no_grad():
        return torch.nn.functional.mse_loss(victim.eps(x_t, t, cond.expand(len(x_t), -1, -1)), target).item()


def soft_prompt(victim: Victim, prompt: str, x0: Tensor, cfg: SoftConfig, generator: torch.Generator,
                init_tokens: Tensor) -> SoftResult:
    """Optimise one prompt's soft embeddings; ``x0`` are the original model's latents of the prompt."""
    text = victim.text
    words = text.word_ids(prompt)
    ids = torch.tensor([text.sequence([*init_tokens.tolist()[: cfg.free_tokens], *words])], device=text.device)
    table = text.embedding_table()
    base = table[ids[0]].detach().float()
    trainable = slice(1, 1 + cfg.free_tokens + len(words))
    params = base[trainable].clone().requires_grad_(True)
    prompt_ids = torch.tensor([text.sequence(words)], device=text.device)
    with torch.no_grad(), victim.original():
        original_cond = text.encode_ids(prompt_ids)

    def embeddings() -> Tensor:
        return torch.cat([base[: trainable.start], params, base[trainable.stop :]])[None]

    def targets(x_t: Tensor, t: Tensor) -> Tensor:
        with torch.no_grad(), victim.original():
            return victim.eps(x_t, t, original_cond.expand(len(x_t), -1, -1))

    fixed_x, fixed_t, _ = victim.noisy(x0, cfg.batch, generator)
    fixed = (fixed_x, fixed_t, targets(fixed_x, fixed_t))
    with torch.no_grad():
        before = _fixed_loss(victim, text.encode_ids(prompt_ids), fixed)
    optimiser = torch.optim.Adam([params], lr=cfg.lr)
    for _ in range(cfg.steps):
        x_t, t, _ = victim.noisy(x0, cfg.batch, generator)
        target = targets(x_t, t)
        cond = text.encode_embeddings(ids, embeddings())
        loss = torch.nn.functional.mse_loss(victim.eps(x_t, t, cond.expand(len(x_t), -1, -1)), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        final = embeddings()
        cond = text.encode_embeddings(ids, final)
    return SoftResult(final[0].detach().cpu(), cond[0].detach().float().cpu(), _fixed_loss(victim, cond, fixed), before)

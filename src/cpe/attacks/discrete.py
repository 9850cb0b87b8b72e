"""UnlearnDiffAtk-style discrete attack (Zhang et al., ECCV 2024): prepended vocabulary tokens, white box.

K continuous vectors (initialised from random allowed tokens) stand before the prompt's words. Each step
projects them to the nearest allowed tokens (cosine, as PEZ does), runs the erased model with those
tokens and applies the gradient at the projected point to the continuous vectors (straight-through).
Objective: the erased model's denoising loss on noisy latents of the original model's images of the
prompt,  || ε_erased(x_t, t, E([adv; prompt])) − ε ||². Every ``eval_every`` steps the projected tokens are
scored on one fixed batch and the best are kept. The banned words' tokens are never candidates.
``steps: 0`` keeps the random initial tokens: a control that separates optimisation from any prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cpe.attacks.config import DiscreteConfig
from cpe.attacks.victim import Victim
from cpe.attacks.vocab import nearest_tokens


@dataclass
class DiscreteResult:
    tokens: list[int]  # the prepended tokens
    loss: float  # denoising loss on the fixed batch with them
    loss_before: float  # the same with the prompt alone


def discrete_prompt(victim: Victim, prompt: str, x0: Tensor, cfg: DiscreteConfig, generator: torch.Generator,
                    allowed: Tensor, init_tokens: Tensor) -> DiscreteResult:
    """Find ``cfg.tokens`` allowed tokens to prepend to ``prompt``; ``x0``: the original model's latents of it."""
    text = victim.text
    words = text.word_ids(prompt)
    k = cfg.tokens
    table = text.embedding_table().detach().float()
    ids = torch.tensor([text.sequence([*init_tokens.tolist()[:k], *words])], device=text.device)
    base = table[ids[0]]
    vectors = table[init_tokens[:k].to(table.device)].clone().requires_grad_(True)
    allowed = allowed.to(table.device)
    fixed = victim.noisy(x0, cfg.eval_batch, generator)

    def loss_of(adv: Tensor, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        x_t, t, target = batch
        embeddings = torch.cat([base[:1], adv, base[1 + k :]])[None]
        cond = text.encode_embeddings(ids, embeddings)
        return torch.nn.functional.mse_loss(victim.eps(x_t, t, cond.expand(len(x_t), -1, -1)), target)

    def score(tokens: Tensor) -> float:
        with torch.no_grad():
            return loss_of(table[tokens], fixed).item()

    with torch.no_grad():
        plain = text.encode_ids(torch.tensor([text.sequence(words)], device=text.device))
        x_t, t, target = fixed
        before = torch.nn.functional.mse_loss(victim.eps(x_t, t, plain.expand(len(x_t), -1, -1)), target).item()
    best_tokens = nearest_tokens(vectors.detach(), table, allowed)
    best = score(best_tokens)
    optimiser = torch.optim.Adam([vectors], lr=cfg.lr)
    for step in range(1, cfg.steps + 1):
        projected = nearest_tokens(vectors.detach(), table, allowed)
        straight = vectors + (table[projected] - vectors).detach()
        loss = loss_of(straight, victim.noisy(x0, cfg.batch, generator))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            candidate = nearest_tokens(vectors.detach(), table, allowed)
            value = score(candidate)
            if value < best:
                best, best_tokens = value, candidate
    return DiscreteResult([int(i) for i in best_tokens], best, before)

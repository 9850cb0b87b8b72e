"""Ring-A-Bell-style black-box attack (Tsai et al., ICLR 2024): a concept vector inverted to words.

Uses only the tokenizer and the text encoder, never the erased UNet. The concept vector is the mean
difference of the text-encoder outputs of prompts with and without the concept (the target word replaced
by its neutral); the attack aims at  E(benign prompt) + η · vector  and searches for the tokens whose
embedding is nearest (mean squared error over every position) with a genetic algorithm: elitism,
tournament parents, one-point crossover, one-token mutation. Like the paper's search it starts from
random tokens; unlike it, each position's mutations can be restricted to the ``screen`` tokens that best
reduce the error when substituted alone into the benign prompt (a one-off, counted cost of |vocabulary| x
length queries) so that small budgets find something; ``screen: 0`` is the paper's uniform mutation, and
``vocabulary: N`` searches a random sample of N allowed tokens (drawn from the seed) to bound the cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cpe.attacks.config import RingABellConfig
from cpe.attacks.victim import TextSide

QUERY_BATCH = 1024


@dataclass
class RingABellResult:
    tokens: list[int]
    loss: float  # mean squared distance of the found prompt's embedding to the target embedding
    loss_before: float  # the same for the benign prompt itself
    queries: int  # text-encoder evaluations


@torch.no_grad()
def concept_vector(text: TextSide, pairs: list[tuple[str, str]]) -> Tensor:
    """Mean over (with, without) prompt pairs of E(with) − E(without), shape (T, D)."""
    with_ids = torch.tensor([text.sequence(text.word_ids(a)) for a, _ in pairs])
    without_ids = torch.tensor([text.sequence(text.word_ids(b)) for _, b in pairs])
    return (text.encode_ids(with_ids) - text.encode_ids(without_ids)).float().mean(dim=0)


class _Fitness:
    """Mean squared distance of token sequences' embeddings to the target embedding, counting the queries."""

    def __init__(self, text: TextSide, target: Tensor) -> None:
        self.text, self.target, self.queries = text, target, 0

    @torch.no_grad()
    def __call__(self, individuals: Tensor) -> Tensor:
        out = []
        for chunk in individuals.split(QUERY_BATCH):
            emb = self.text.encode_ids(self.text.sequences(chunk)).float()
            out.append(((emb - self.target) ** 2).mean(dim=(1, 2)).cpu())
            self.queries += len(chunk)
        return torch.cat(out)


def _pools(fitness: _Fitness, start: Tensor, allowed: Tensor, screen: int) -> list[Tensor]:
    """Per position, the tokens mutations draw from: all allowed ones, or the ``screen`` best substitutions."""
    if screen == 0 or screen >= len(allowed):
        return [allowed] * len(start)
    pools = []
    for position in range(len(start)):
        candidates = start.repeat(len(allowed), 1)
        candidates[:, position] = allowed
        pools.append(allowed[fitness(candidates).argsort()[:screen]])
    return pools


def _draw(pools: list[Tensor], count: int, generator: torch.Generator) -> Tensor:
    """``count`` individuals with every position drawn uniformly from its pool."""
    return torch.stack([pool[torch.randint(len(pool), (count,), generator=generator)] for pool in pools], dim=1)


def ringabell_prompt(text: TextSide, benign: str, vector: Tensor, cfg: RingABellConfig, generator: torch.Generator,
                     allowed: Tensor) -> RingABellResult:
    """Tokens whose embedding is nearest to E(``benign``) + η · ``vector`` (no banned token among them)."""
    if cfg.vocabulary is not None and cfg.vocabulary < len(allowed):
        allowed = allowed[torch.randperm(len(allowed), generator=generator)[: cfg.vocabulary]].sort().values
    words = torch.tensor(text.word_ids(benign))
    with torch.no_grad():
        benign_embedding = text.encode_ids(torch.tensor([text.sequence(words.tolist())]))[0].float()
    target = benign_embedding + cfg.eta * vector.to(benign_embedding.device)
    fitness = _Fitness(text, target)
    before = float(((benign_embedding - target) ** 2).mean())
    length = cfg.length or len(words)
    start = torch.cat([words, allowed[torch.randint(len(allowed), (length,), generator=generator)]])[:length]
    pools = _pools(fitness, start, allowed, cfg.screen)
    population = _draw(pools, cfg.population, generator)
    scores = fitness(population)
    for _ in range(cfg.generations):
        order = scores.argsort()
        population, scores = population[order], scores[order]
        children = cfg.population - cfg.elite
        a, b = (torch.randint(cfg.population, (2, children), generator=generator) for _ in range(2))
        first = population[torch.where(scores[a[0]] <= scores[a[1]], a[0], a[1])]  # tournaments of two
        second = population[torch.where(scores[b[0]] <= scores[b[1]], b[0], b[1])]
        cut = torch.randint(1, max(2, length), (children, 1), generator=generator)
        cross = torch.rand(children, 1, generator=generator) < cfg.crossover_rate
        take_second = cross & (torch.arange(length)[None] >= cut)
        offspring = torch.where(take_second, second, first)
        mutate = torch.rand(children, generator=generator) < cfg.mutation_rate
        position = torch.randint(length, (children,), generator=generator)
        fresh = _draw(pools, children, generator)
        rows = torch.arange(children)[mutate]
        offspring[rows, position[mutate]] = fresh[rows, position[mutate]]
        population = torch.cat([population[: cfg.elite], offspring])
        scores = torch.cat([scores[: cfg.elite], fitness(offspring)])
    best = int(scores.argmin())
    return RingABellResult([int(i) for i in population[best]], float(scores[best]), before, fitness.queries)

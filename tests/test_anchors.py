"""Anchor pools (most-similar candidates) and per-step sampling with noise and mixup."""

from __future__ import annotations

import torch

from cpe.training.anchors import EmbeddingStore, most_similar, sample_anchors, templated_pool


def test_most_similar_ranks_by_flattened_cosine_and_excludes_the_target():
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = torch.stack([
        target * 5,  # same direction as the target, but its name contains the target -> excluded
        torch.tensor([[1.0, 0.0], [0.0, 0.9]]),  # cos ≈ 0.9986
        torch.tensor([[0.0, 1.0], [1.0, 0.0]]),  # cos = 0
        torch.tensor([[1.0, 0.0], [0.0, 0.0]]) * 3,  # cos ≈ 0.7071
    ])
    names = ["Adam Driver Jr", "near", "far", "middle"]
    assert most_similar(target, candidates, names, "adam driver", k=2) == ["near", "middle"]
    assert most_similar(target, candidates, names, "adam driver", k=10) == ["near", "middle", "far"]


def test_templated_pool_puts_every_anchor_in_every_template():
    pool = templated_pool(["stars", "a singer"], ["{concept} smiles", "{concept}"], "{concept}")
    assert pool == ["stars smiles", "stars", "a singer smiles", "a singer"]


def test_embedding_store_encodes_each_distinct_prompt_once():
    calls = []

    def encode(prompts):
        calls.extend(prompts)
        return torch.stack([torch.full((2, 3), float(len(p))) for p in prompts])

    store = EmbeddingStore(encode, ["aa", "b", "aa", "cccc"], torch.float16, batch_size=2)
    assert calls == ["aa", "b", "cccc", ""]  # every encoder call has batch_size prompts
    assert store.embeddings.dtype == torch.float16 and store.nbytes == 3 * 6 * 2
    assert store.embeddings[store.indices(["cccc", "aa"])][:, 0, 0].tolist() == [4.0, 2.0]


def test_anchor_noise_uses_the_configured_scale_of_the_frobenius_norm():
    store = torch.randn(5, 7, 11) * 3
    pool = torch.tensor([1, 3])
    clean = sample_anchors(store, pool, 400, 0.0, False, torch.Generator().manual_seed(0))
    noisy = sample_anchors(store, pool, 400, 0.01, False, torch.Generator().manual_seed(0))
    assert all(any(torch.equal(row, store[i]) for i in (1, 3)) for row in clean)
    ratio = (noisy - clean).flatten(1).norm(dim=1) / clean.flatten(1).norm(dim=1)
    expected = 0.01 * (7 * 11) ** 0.5  # ||ε||_F ≈ sqrt(T·D)
    assert abs(ratio.mean().item() - expected) < 0.02 * expected, (ratio.mean().item(), expected)


def test_mixup_mixes_consecutive_draws_convexly():
    store = torch.stack([torch.zeros(2, 2), torch.ones(2, 2)])
    mixed = sample_anchors(store, torch.tensor([0, 1]), 2000, 0.0, True, torch.Generator().manual_seed(1))
    values = mixed[:, 0, 0]
    assert torch.equal(mixed, values[:, None, None].expand_as(mixed))  # one λ per anchor
    assert values.min() >= 0 and values.max() <= 1
    # half the pairs are (0,1) or (1,0) with λ ~ U(0,1), a quarter each are (0,0) and (1,1): mean 0.5
    assert abs(values.mean().item() - 0.5) < 0.03
    assert ((values > 0) & (values < 1)).float().mean().item() > 0.4


def test_sampling_depends_only_on_the_generator():
    store = torch.randn(6, 3, 4)
    a = sample_anchors(store, torch.arange(6), 8, 0.001, True, torch.Generator().manual_seed(5))
    b = sample_anchors(store, torch.arange(6), 8, 0.001, True, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)

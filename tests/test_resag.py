"""The ResAG math against a hand-written per-token reference, its init and its two forwards."""

from __future__ import annotations

import math

import pytest
import torch

from cpe.resag import ResAG, ResAGSpec

LAYERS = {"lora_unet_a_to_k": 5, "lora_unet_a_to_v": 5, "lora_unet_b_to_k": 7}


def random_resag(num_concepts: int, key_mode: str = "query_as_key", dtype=torch.float64, seed: int = 0) -> ResAG:
    spec = ResAGSpec(embed_dim=6, layer_dims=LAYERS, gate_rank=3, lora_rank=2, alpha=1.5, key_mode=key_mode)
    resag = ResAG(spec, num_concepts).to(dtype)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in resag.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=dtype) * 0.7)
    return resag


def reference_residuals(resag: ResAG, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """method.md §1.3-1.4 written token by token with Python loops."""
    b_size, t_size, _ = x.shape
    n_concepts = resag.num_concepts
    out = {name: torch.zeros(b_size, t_size, dim, dtype=x.dtype) for name, dim in LAYERS.items()}
    for b in range(b_size):
        mixed, gates = [], []
        for n in range(n_concepts):
            query = x[b] @ resag.w_query[n]
            key = query if resag.spec.key_mode == "query_as_key" else x[b] @ resag.w_key[n]
            logits = torch.stack([torch.stack([query[t] @ key[s] for s in range(t_size)]) for t in range(t_size)])
            attention = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
            attention = attention / attention.sum(dim=1, keepdim=True)
            e_bar = torch.stack([sum(attention[t, s] * x[b, s] for s in range(t_size)) for t in range(t_size)])
            mixed.append(e_bar)
            vector = resag.gate_vector[n, :, 0]
            gates.append(torch.stack([1 / (1 + torch.exp(-(e_bar[t] @ vector))) for t in range(t_size)]))
        for t in range(t_size):
            best = max(range(n_concepts), key=lambda n: (gates[n][t].item(), -n))
            hidden = gates[best][t] * mixed[best][t]
            for name in LAYERS:
                out[name][b, t] = resag.spec.scale * (hidden @ resag.down[name][best] @ resag.up[name][best])
    return out


@pytest.mark.parametrize("key_mode", ["query_as_key", "separate_key"])
def test_merged_forward_matches_hand_reference(key_mode):
    resag = random_resag(3, key_mode)
    x = torch.randn(2, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = resag(x)
        want = reference_residuals(resag, x)
    for name in LAYERS:
        rel = ((got[name] - want[name]).norm() / want[name].norm()).item()
        assert rel < 1e-6, f"{name}: relative error {rel:.2e}"
    # several concepts are actually chosen in this case, so the per-token selection is exercised
    assert len(set(resag.gate(x).choice.flatten().tolist())) > 1


def test_separate_key_mode_uses_the_key_weights():
    x = torch.randn(1, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    shared, separate = random_resag(1, "query_as_key"), random_resag(1, "separate_key")
    with torch.no_grad():
        assert not torch.allclose(shared(x)["lora_unet_a_to_k"], separate(x)["lora_unet_a_to_k"])
        separate.w_key.copy_(separate.w_query)
        assert torch.allclose(shared(x)["lora_unet_a_to_k"], separate(x)["lora_unet_a_to_k"], rtol=0, atol=1e-12)


def test_per_concept_forward_equals_each_concept_alone():
    resag = random_resag(3)
    x = torch.randn(4, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    concept = torch.tensor([2, 0, 1, 2])
    with torch.no_grad():
        got = resag(x, concept=concept)
        for b, n in enumerate(concept.tolist()):
            alone = ResAG(resag.spec, 1).to(torch.float64)
            alone.load_concept(0, resag.concept_parameters(n))
            want = alone(x[b : b + 1])
            for name in LAYERS:
                torch.testing.assert_close(got[name][b : b + 1], want[name], rtol=1e-12, atol=1e-12)


def test_fused_residuals_equal_layer_by_layer():
    resag = random_resag(2)
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        for g in (resag.gate(x), resag.gate(x, concept=torch.tensor([1, 0, 1]))):
            fused = resag.residuals(g)
            for name in LAYERS:
                torch.testing.assert_close(fused[name], resag.residual(name, g), rtol=1e-12, atol=1e-12)


def test_initialisation_follows_the_method():
    spec = ResAGSpec(embed_dim=768, layer_dims={"lora_unet_x_to_k": 320}, gate_rank=16, lora_rank=1)
    resag = ResAG(spec, 2)
    bound_gate = 1 / math.sqrt(768 * 16) / 768**2
    bound_down = 1 / math.sqrt(768 * 1)
    for weight in (resag.w_query, resag.w_key):
        assert 0.9 * bound_gate < weight.abs().max().item() <= bound_gate
    assert 0.9 * bound_down < resag.down["lora_unet_x_to_k"].abs().max().item() <= bound_down
    assert resag.gate_vector.abs().sum().item() == 0
    assert resag.up["lora_unet_x_to_k"].abs().sum().item() == 0
    # residual exactly zero at start; all gates 0.5
    x = torch.randn(2, 77, 768)
    g = resag.gate(x)
    assert torch.all(g.gate == 0.5)
    assert resag(x)["lora_unet_x_to_k"].abs().max().item() == 0
    # seeded init is reproducible
    a, b = ResAG(spec), ResAG(spec)
    a.reset_parameters(torch.Generator().manual_seed(7))
    b.reset_parameters(torch.Generator().manual_seed(7))
    assert torch.equal(a.w_query, b.w_query) and torch.equal(a.down["lora_unet_x_to_k"], b.down["lora_unet_x_to_k"])


def test_disabled_concepts_are_never_chosen_and_all_disabled_gives_no_residual():
    resag = random_resag(3)
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        g = resag.gate(x, active=torch.tensor([True, False, True]))
        assert 1 not in g.choice.flatten().tolist()
        off = resag.residuals(resag.gate(x, active=torch.tensor([False, False, False])))
    assert all(v.abs().max().item() == 0 for v in off.values())


def test_gate_ties_pick_the_first_concept():
    resag = random_resag(2)
    with torch.no_grad():
        resag.load_concept(1, resag.concept_parameters(0))
        g = resag.gate(torch.randn(1, 4, 6, dtype=torch.float64))
    assert g.choice.eq(0).all()

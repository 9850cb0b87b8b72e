"""The ResAG math against a hand-written per-token reference, its init and its two forwards."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cpe.core.resag import ResAG, ResAGSpec

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


def per_concept_loop(resag: ResAG, x: torch.Tensor, active: torch.Tensor | None = None):
    """The merged forward written directly: every concept's g and Ē one at a time, then the first largest gate."""
    gates, mixed = [], []
    for n in range(resag.num_concepts):
        query = x @ resag.w_query[n]
        key = query if resag.spec.key_mode == "query_as_key" else x @ resag.w_key[n]
        e_bar = torch.softmax(query @ key.transpose(1, 2), dim=-1) @ x
        mixed.append(e_bar)
        gates.append(torch.sigmoid(e_bar @ resag.gate_vector[n]).squeeze(-1))
    gates, mixed = torch.stack(gates), torch.stack(mixed)  # (N, B, T), (N, B, T, D)
    if active is not None:
        gates = torch.where(active[:, None, None], gates, -1.0)
    choice = torch.zeros(x.shape[:2], dtype=torch.long)
    for n in range(1, resag.num_concepts):  # strictly larger: the first concept keeps a tie
        choice = torch.where(gates[n] > gates.gather(0, choice[None])[0], n, choice)
    gate = gates.gather(0, choice[None])[0].clamp(min=0)
    e_bar = mixed.gather(0, choice[None, ..., None].expand(1, -1, -1, x.shape[-1]))[0]
    hidden = gate[..., None] * e_bar
    residuals = {
        name: resag.spec.scale * torch.einsum("btd,btdk,btkj->btj", hidden, resag.down[name][choice],
                                              resag.up[name][choice])
        for name in resag.layers
    }
    return gate, choice, hidden, residuals


def with_ties(resag: ResAG) -> ResAG:
    """Concepts 1 and N-1 copies of each other, with a gate that wins most tokens."""
    with torch.no_grad():
        resag.gate_vector[1].mul_(4)
        resag.load_concept(resag.num_concepts - 1, resag.concept_parameters(1))
    return resag


@pytest.mark.parametrize("key_mode", ["query_as_key", "separate_key"])
@pytest.mark.parametrize("num_concepts", [3, 7, 40])
def test_merged_forward_equals_a_per_concept_loop(key_mode, num_concepts):
    resag = with_ties(random_resag(num_concepts, key_mode, seed=num_concepts))
    x = torch.randn(3, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    last = num_concepts - 1
    masks = [None, torch.arange(num_concepts) % 3 != 2, torch.arange(num_concepts) != 1,
             torch.zeros(num_concepts, dtype=torch.bool)]
    for active in masks:
        want_gate, want_choice, want_hidden, want = per_concept_loop(resag, x, active)
        for chunk in (None, 1, 3):
            with torch.no_grad():
                g = resag.gate(x, active=active, chunk=chunk)
                got = resag.residuals(g)
            assert torch.equal(g.choice, want_choice), (active, chunk)
            torch.testing.assert_close(g.gate, want_gate, rtol=1e-12, atol=0)
            torch.testing.assert_close(g.hidden, want_hidden, rtol=1e-12, atol=1e-15)
            for name in LAYERS:
                assert ((got[name] - want[name]).norm() / max(want[name].norm(), 1e-300)).item() < 1e-12
        if active is None:  # the tie: the copy at N-1 never wins over concept 1, and the case is not idle
            assert 1 in want_choice and last not in want_choice
        if active is not None and active[1] and not active[last]:
            assert 1 in want_choice
    assert per_concept_loop(resag, x, masks[2])[1].eq(last).any()  # concept 1 off: its copy takes its tokens
    assert per_concept_loop(resag, x, masks[3])[0].abs().max() == 0  # no concept active: no residual


def test_merged_forward_in_float32_matches_the_materialised_one():
    """At width 768 and N = 50, float32: gate, choice and residuals as the (B, N, T, D) formula gives them."""
    spec = ResAGSpec(embed_dim=768, layer_dims={"lora_unet_x_to_k": 320, "lora_unet_x_to_v": 640})
    resag = ResAG(spec, 50)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in resag.parameters():
            p.normal_(generator=generator).mul_(0.05)
        x = torch.randn(2, 77, 768, generator=generator)
        want_gate, want_choice, want_hidden, want = per_concept_loop(resag, x)
        g = resag.gate(x)
        got = resag.residuals(g)
    assert torch.equal(g.choice, want_choice) and len(want_choice.unique()) > 10
    for got_, want_ in [(g.gate, want_gate), (g.hidden, want_hidden), *((got[n], want[n]) for n in want)]:
        assert ((got_ - want_).norm() / want_.norm()).item() < 1e-6


class LargestOutput(TorchDispatchMode):
    """Records the largest tensor any torch operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in torch.utils._pytree.tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self.numel = max(self.numel, tensor.numel())
        return out


def test_merged_memory_does_not_grow_with_the_number_of_concepts():
    b, t, d, chunk = 2, 6, 32, 4
    spec = ResAGSpec(embed_dim=d, layer_dims={"lora_unet_x_to_k": 8}, gate_rank=3)
    x = torch.randn(b, t, d, generator=torch.Generator().manual_seed(6))
    largest = {}
    for n in (8, 512):
        resag = ResAG(spec, n)
        with torch.no_grad():
            resag.gate_vector.normal_(generator=torch.Generator().manual_seed(7))
            with LargestOutput() as record:
                resag.residuals(resag.gate(x, chunk=chunk))
        largest[n] = record.numel
    bound = 2 * (b * t * d + chunk * b * t * t) + chunk * t * (t + d)  # a chunk's gates, a chunk of winners' Ē
    assert largest[512] <= bound < 512 * b * t * d // 20, largest
    assert largest[512] == largest[8], largest


def test_merged_forward_gradient_equals_the_per_concept_loop():
    """Attacks differentiate the merged eraser w.r.t. the embedding: through g* and Ē of the winners."""
    resag = random_resag(6, seed=8)
    x = torch.randn(2, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(9), requires_grad=True)
    weights = {name: torch.randn(2, 5, dim, dtype=torch.float64) for name, dim in LAYERS.items()}
    grads = []
    for forward in (lambda: resag.residuals(resag.gate(x, chunk=4)), lambda: per_concept_loop(resag, x)[3]):
        out = forward()
        grads.append(torch.autograd.grad(sum((out[n] * weights[n]).sum() for n in LAYERS), x)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def test_merged_forward_of_the_released_files_equals_the_per_concept_loop(released_resag_dir):
    from cpe.core.weights import load_erasers

    resag, _ = load_erasers([released_resag_dir / d for d in ("celeb", "artist", "explicit")], pad_ranks=True)
    x = torch.randn(2, 77, 768, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        want_gate, want_choice, want_hidden, want = per_concept_loop(resag, x)
        for chunk in (None, 3):
            g = resag.gate(x, chunk=chunk)
            got = resag.residuals(g)
            assert torch.equal(g.choice, want_choice) and len(want_choice.unique()) >= 3
            for got_, want_ in [(g.gate, want_gate), (g.hidden, want_hidden), *((got[n], want[n]) for n in want)]:
                assert ((got_ - want_).norm() / want_.norm()).item() < 1e-6

"""Key/value-space losses: hand computation, spectral-norm weights, shortcut = direct formulas (method.md §2.4-2.7a)."""

from __future__ import annotations

import pytest
import torch

from cpe.core.resag import ResAG, ResAGSpec
from cpe.training.losses import (
    EraseBatch,
    FrozenBank,
    KVLoss,
    attack_loss,
    erase_losses,
    lipschitz_weights,
    spectral_norm,
)


def test_lipschitz_weights_equal_spectral_norms_from_svd():
    torch.manual_seed(0)
    attention = {
        f"blocks.{i}.attn2": {
            "to_q": torch.randn(d, d), "to_k": torch.randn(d, 12), "to_v": torch.randn(d, 12),
            "to_out": torch.randn(d, d),
        }
        for i, d in enumerate((8, 16))
    }
    weights = lipschitz_weights(attention, num_tokens=77)
    for i, _ in enumerate((8, 16)):
        w = attention[f"blocks.{i}.attn2"]
        top = lambda m: torch.linalg.svdvals(m.double())[0].item()  # noqa: E731
        key = top(w["to_out"] @ w["to_v"]) * top(w["to_q"]) / 77
        assert weights[f"lora_unet_blocks_{i}_attn2_to_k"] == pytest.approx(key, rel=1e-5)
        assert weights[f"lora_unet_blocks_{i}_attn2_to_v"] == pytest.approx(top(w["to_out"]), rel=1e-5)
    assert spectral_norm(torch.diag(torch.tensor([3.0, -7.0, 1.0]))) == pytest.approx(7.0)


def _toy() -> tuple[KVLoss, ResAG]:
    """Two layers, D = T = 2, k = r = 1, zero gate weights: H = 0.5 · token mean for every token."""
    spec = ResAGSpec(embed_dim=2, layer_dims={"a": 1, "b": 2}, gate_rank=1, lora_rank=1)
    resag = ResAG(spec, 1)
    with torch.no_grad():
        resag.w_query.zero_()
        resag.gate_vector.zero_()
        resag.down["a"].copy_(torch.tensor([[[1.0], [0.0]]]))
        resag.up["a"].copy_(torch.tensor([[[2.0]]]))
        resag.down["b"].copy_(torch.tensor([[[0.0], [1.0]]]))
        resag.up["b"].copy_(torch.tensor([[[1.0, -1.0]]]))
    kv = KVLoss({"a": torch.tensor([[1.0, 0.0]]), "b": torch.tensor([[0.0, 1.0], [1.0, 1.0]])}, {"a": 2.0, "b": 1.0}, 2)
    return kv, resag


def test_loss_terms_equal_a_hand_computation_on_a_two_layer_toy():
    kv, resag = _toy()
    target = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # H = [.25, .25]: R_a = .5, R_b = [.25, -.25]
    neutral = torch.zeros(1, 2, 2)  # g = 1: Y = -P(E_T): Y_a = [-1], [0]; Y_b = [0, -1], [-1, -1]
    anchor = torch.tensor([[[[2.0, 2.0], [0.0, 0.0]]]])  # H = [.5, .5]: R_a = 1, R_b = [.5, -.5]
    delta = torch.tensor([[[[0.0, 0.0], [0.0, -1.0]]]])  # E_T + δ: H = [.25, 0]: R_a = .5, R_b = 0
    batch = EraseBatch(target, 2 * (neutral - target), anchor)
    losses = erase_losses(kv, resag, batch, FrozenBank.freeze(kv, delta))
    # erase: a: (Y - P̃)² = 2.5², .5² -> mean 3.25, × c_a = 6.5;  b: .25², 1.75², 2.25², 1.75² -> mean 2.8125
    assert losses["erase"].item() == pytest.approx((6.5 + 2.8125) / 2)
    # anchor: a: 1² -> 1 × 2 = 2;  b: .5² -> .25
    assert losses["anchor"].item() == pytest.approx((2 + 0.25) / 2)
    # adversarial: a: P̃ = [1.5], [.5] vs Y -> 3.25 × 2 = 6.5;  b: P̃ = [0, 1], [0, 0] vs Y -> (0+4+1+1)/4 = 1.5
    assert losses["adv"].item() == pytest.approx((6.5 + 1.5) / 2)
    # attack: P̃(E_T+δ) - P(E_T): a: [.5], [.5] -> .25 × 2;  b: [0, 0], [-1, -1] -> .5
    attack = attack_loss(kv, resag, kv.readout(resag), target, delta)
    assert attack.item() == pytest.approx((0.5 + 0.5) / 2)


def _direct(kv: KVLoss, resag: ResAG, weights, lipschitz, target, neutral, guidance, anchors, delta):
    """The formulas of §2.5-2.6 as written: full projections of every embedding through every layer."""
    layers = list(weights)

    def frozen(x):
        return {n: x @ weights[n].T for n in layers}

    def adapted(x, c):
        residuals = resag(x, torch.full((x.shape[0],), c))
        return {n: x @ weights[n].T + residuals[n] for n in layers}

    def term(a, b):
        return sum(lipschitz[n] * ((a[n] - b[n]) ** 2).mean() for n in layers) / len(layers)

    out = {"erase": [], "adv": [], "anchor": [], "attack": []}
    for c in range(target.shape[0]):
        f_t, f_n = frozen(target[c : c + 1]), frozen(neutral[c : c + 1])
        y = {n: f_n[n] + guidance[c] * (f_n[n] - f_t[n]) for n in layers}
        out["erase"].append(term(y, adapted(target[c : c + 1], c)))
        adv = adapted(target[c : c + 1] + delta[c], c)
        out["adv"].append(term({n: y[n].expand_as(adv[n]) for n in layers}, adv))
        out["attack"].append(term(adv, {n: f_t[n].expand_as(adv[n]) for n in layers}))
        out["anchor"].append(term(adapted(anchors[c], c), frozen(anchors[c])))
    return {k: torch.stack(v) for k, v in out.items()}


@pytest.mark.parametrize("lora_rank", [1, 3])
def test_shortcut_losses_and_gradients_equal_the_direct_formulas(lora_rank):
    gen = torch.Generator().manual_seed(lora_rank)
    dims = {"x_to_k": 6, "x_to_v": 5, "y_to_k": 9, "y_to_v": 4}
    d, t, c, p, s = 8, 5, 3, 4, 6
    spec = ResAGSpec(embed_dim=d, layer_dims=dims, gate_rank=3, lora_rank=lora_rank, alpha=1.0)
    resag = ResAG(spec, c).double()
    with torch.no_grad():
        for param in resag.parameters():
            param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float64) * 0.5)
    weights = {n: torch.randn(w, d, generator=gen, dtype=torch.float64) for n, w in dims.items()}
    lipschitz = {n: 0.5 + torch.rand(1, generator=gen).item() for n in dims}
    kv = KVLoss(weights, lipschitz, t)
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
    target, neutral, anchors, delta = rand(c, t, d), rand(c, t, d), rand(c, s, t, d), rand(c, p, t, d) * 0.3
    guidance = torch.tensor([0.3, 0.5, 3.0], dtype=torch.float64)
    diff = (1 + guidance)[:, None, None] * (neutral - target)

    fast = erase_losses(kv, resag, EraseBatch(target, diff, anchors), FrozenBank.freeze(kv, delta))
    fast["attack"] = attack_loss(kv, resag, kv.readout(resag), target, delta)
    slow = _direct(kv, resag, weights, lipschitz, target, neutral, guidance, anchors, delta)
    for key in slow:
        rel = ((fast[key] - slow[key]).abs() / slow[key].abs()).max().item()
        assert rel < 1e-5, (key, rel)

    def grads(losses):
        total = (losses["erase"] + losses["adv"] + 7.0 * losses["anchor"]).sum()
        return torch.autograd.grad(total, [q for q in resag.parameters() if q.requires_grad])

    fast = erase_losses(kv, resag, EraseBatch(target, diff, anchors), FrozenBank.freeze(kv, delta))
    slow = _direct(kv, resag, weights, lipschitz, target, neutral, guidance, anchors, delta)
    for a, b in zip(grads(fast), grads(slow), strict=True):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("key_mode", ["query_as_key", "separate_key"])
def test_gated_maps_equal_the_gated_embedding_times_the_maps(key_mode):
    gen = torch.Generator().manual_seed(3)
    spec = ResAGSpec(embed_dim=6, layer_dims={"a": 3}, gate_rank=2, lora_rank=1, key_mode=key_mode)
    resag = ResAG(spec, 2).double()
    with torch.no_grad():
        for param in resag.parameters():
            param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float64))
    x = torch.randn(4, 5, 6, generator=gen, dtype=torch.float64)
    maps = torch.randn(6, 7, generator=gen, dtype=torch.float64)
    expected = resag.gate(x, torch.ones(4, dtype=torch.long)).hidden @ maps
    assert torch.allclose(resag.gated_maps(x, 1, maps), expected, rtol=1e-12, atol=1e-12)


def test_attack_gradient_equals_the_direct_formula():
    gen = torch.Generator().manual_seed(7)
    dims = {"x_to_k": 6, "x_to_v": 5}
    spec = ResAGSpec(embed_dim=8, layer_dims=dims, gate_rank=3, lora_rank=2)
    resag = ResAG(spec, 2).double().requires_grad_(False)
    with torch.no_grad():
        for param in resag.parameters():
            param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float64) * 0.5)
    weights = {n: torch.randn(w, 8, generator=gen, dtype=torch.float64) for n, w in dims.items()}
    kv = KVLoss(weights, {"x_to_k": 0.7, "x_to_v": 1.3}, 5)
    target = torch.randn(2, 5, 8, generator=gen, dtype=torch.float64)
    delta = (torch.randn(2, 3, 5, 8, generator=gen, dtype=torch.float64) * 0.3).requires_grad_(True)
    fast = torch.autograd.grad(attack_loss(kv, resag, kv.readout(resag), target, delta).sum(), delta)[0]

    def direct():
        total = 0
        for c in range(2):
            x = target[c : c + 1] + delta[c]
            residuals = resag(x, torch.full((3,), c))
            total = total + sum(
                lip * ((x @ weights[n].T + residuals[n] - target[c] @ weights[n].T) ** 2).mean()
                for n, lip in (("x_to_k", 0.7), ("x_to_v", 1.3))
            ) / 2
        return total

    slow = torch.autograd.grad(direct(), delta)[0]
    assert torch.allclose(fast, slow, rtol=1e-9, atol=1e-12)


def _random_resag_and_loss(seed: int, d: int, t: int, c: int):
    """A float64 ResAG of c concepts with random parameters, a KVLoss over two random projections, and a draw of
    more random tensors from the same generator."""
    gen = torch.Generator().manual_seed(seed)
    spec = ResAGSpec(embed_dim=d, layer_dims={"x_to_k": 6, "x_to_v": 5}, gate_rank=3, lora_rank=2)
    resag = ResAG(spec, c).double()
    with torch.no_grad():
        for param in resag.parameters():
            param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float64) * 0.5)
    kv = KVLoss({n: torch.randn(w, d, generator=gen, dtype=torch.float64) for n, w in spec.layer_dims.items()},
                {"x_to_k": 1.0, "x_to_v": 0.7}, t)
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
    return resag, kv, rand


def test_gate_term_is_the_anchors_mean_gate_and_leaves_the_other_terms_unchanged():
    """``train.gate_coef``'s term: the mean over the anchors and their tokens of each concept's own gate, as the
    public gate gives it; the paper's terms are bit-identical with it on or off."""
    d, t, c, s = 8, 5, 3, 4
    resag, kv, rand = _random_resag_and_loss(3, d, t, c)
    batch = EraseBatch(rand(c, t, d), rand(c, t, d), rand(c, s, t, d))
    bank = FrozenBank.freeze(kv, rand(c, 2, t, d) * 0.3)
    plain = erase_losses(kv, resag, batch, bank)
    with_gate = erase_losses(kv, resag, batch, bank, gate_term=True)
    assert "gate" not in plain and set(with_gate) == {*plain, "gate"}
    for key in plain:
        assert torch.equal(plain[key], with_gate[key]), key
    direct = torch.stack([resag.gate(batch.anchors[i], torch.full((s,), i)).gate.mean() for i in range(c)])
    assert torch.allclose(with_gate["gate"], direct, rtol=1e-12, atol=0)
    params = [resag.w_query, resag.gate_vector]
    fast = torch.autograd.grad(with_gate["gate"].sum(), params)
    slow = torch.autograd.grad(direct.sum(), params)
    for a, b in zip(fast, slow, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)


def test_prefix_gate_term_is_the_targets_mean_gate_over_its_shared_tokens():
    """``train.prefix_gate_coef``'s term: per concept, the mean of its own gate on the erase prompt over the tokens
    the batch marks as shared with the neutral (none marked: 0); the paper's terms are bit-identical with it."""
    d, t, c, s = 8, 6, 3, 2
    resag, kv, rand = _random_resag_and_loss(4, d, t, c)
    shared = torch.zeros(c, t, dtype=torch.bool)
    shared[0, :3], shared[1, :1] = True, True  # concept 2: no shared token
    plain_batch = EraseBatch(rand(c, t, d), rand(c, t, d), rand(c, s, t, d))
    batch = EraseBatch(plain_batch.target, plain_batch.diff, plain_batch.anchors, shared)
    plain, with_prefix = erase_losses(kv, resag, plain_batch, None), erase_losses(kv, resag, batch, None)
    assert set(with_prefix) == {*plain, "prefix_gate"}
    for key in plain:
        assert torch.equal(plain[key], with_prefix[key]), key
    gates = [resag.gate(batch.target[i : i + 1], torch.tensor([i])).gate[0] for i in range(c)]
    direct = torch.stack([gates[0][:3].mean(), gates[1][0], torch.zeros((), dtype=torch.float64)])
    assert torch.allclose(with_prefix["prefix_gate"], direct, rtol=1e-12, atol=0)

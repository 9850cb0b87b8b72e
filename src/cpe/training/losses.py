"""Key/value-space losses of CPE (method.md §2.4-2.6) with the exact shortcuts of §2.7a.

Every loss term has the form, per embedding item,

    (1/L) Σ_l c_l · mean_{t,j}[ (X W_lᵀ − s·R_l)² ]    with R_l = H Down_l Up_l,

where X is a constant text-space tensor ((1+g)(E_N − E_T) for the erase term, that minus δ_p for the
adversarial term, −δ for the attack, 0 for anchors) and H the gated embedding. Expanding the square:

    = (1/T) [ ⟨X, X G⟩ − 2s Σ_l w_l ⟨z_l, X V_l⟩ + s² Σ_l w_l ‖z_l Up_l‖² ]

with w_l = c_l / (L·d_l), G = Σ_l w_l W_lᵀ W_l (one D×D matrix), z_l = H Down_l (T×k) and
V_l = W_lᵀ Up_lᵀ (D×k). Nothing of width d_l is ever formed per item.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from cpe.core.network import layer_name
from cpe.core.resag import ResAG


def spectral_norm(matrix: Tensor) -> float:
    """Largest singular value (fp32 or better)."""
    return float(torch.linalg.matrix_norm(matrix.double(), ord=2))


def lipschitz_weights(attention: dict[str, dict[str, Tensor]], num_tokens: int) -> dict[str, float]:
    """Per-layer loss weights of method.md §2.4, keyed by layer name.

    ``attention`` maps each attn2 module path to its ``to_q``/``to_v``/``to_out`` weights;
    to_k gets ``σ₁(W_o W_v)·σ₁(W_q)/T`` and to_v gets ``σ₁(W_o)``.
    """
    weights = {}
    for path, w in attention.items():
        out = w["to_out"].double()
        key_weight = spectral_norm(out @ w["to_v"].double()) * spectral_norm(w["to_q"]) / num_tokens
        weights[layer_name(f"{path}.to_k")] = key_weight
        weights[layer_name(f"{path}.to_v")] = spectral_norm(out)
    return weights


@dataclass
class Readout:
    """Per-step products of the trainable maps with the frozen weights, for the concepts of a ResAG."""

    down: Tensor  # (N, D, L·k)   all Down_l side by side
    v: Tensor  # (N, D, L·k)      all W_lᵀ Up_lᵀ side by side
    gram: Tensor  # (N, L, k, k)  Up_l Up_lᵀ

    def concept(self, index: int) -> Readout:
        """Concept ``index``'s products, with a concept axis of size 1."""
        part = slice(index, index + 1)
        return Readout(self.down[part], self.v[part], self.gram[part])


class KVLoss:
    """The frozen side of the losses: projection weights, per-layer weights, the combined matrix G."""

    def __init__(self, projections: dict[str, Tensor], lipschitz: dict[str, float], num_tokens: int) -> None:
        missing = sorted(set(projections) - set(lipschitz))
        if missing:
            raise ValueError(f"no Lipschitz weight for layer {missing[0]}")
        self.layers = list(projections)
        self.num_tokens = num_tokens
        first = next(iter(projections.values()))
        num_layers = len(self.layers)
        self.weights = {name: torch.as_tensor(projections[name]) for name in self.layers}
        self.layer_weight = torch.tensor(
            [lipschitz[name] / (num_layers * self.weights[name].shape[0]) for name in self.layers],
            dtype=first.dtype, device=first.device,
        )
        self.gram_matrix = sum(
            w * (self.weights[n].T @ self.weights[n]) for w, n in zip(self.layer_weight, self.layers, strict=True)
        )

    def quadratic(self, x: Tensor) -> Tensor:
        """⟨x, x G⟩ per item: (..., T, D) -> (...).

        G is symmetric, so the gradient is 2 x G: written as 2⟨x, y⟩ − ⟨y, x⟩ with y = x G held constant, the
        value is unchanged and backward reuses y instead of a second (…·T)×D×D product.
        """
        with torch.no_grad():
            y = x @ self.gram_matrix
        if not x.requires_grad:
            return (x * y).sum((-1, -2))
        return (2 * x * y).sum((-1, -2)) - (x.detach() * y).sum((-1, -2))

    def inner(self, x: Tensor, y_g: Tensor) -> Tensor:
        """⟨x, y G⟩ per item, with ``y_g`` = y G already computed."""
        return (x * y_g).sum((-1, -2))

    def readout(self, resag: ResAG) -> Readout:
        """Products needed by the residual terms (cost N·k·Σd_l·D, once per step)."""
        down = torch.cat([resag.down[name] for name in self.layers], dim=-1)
        # one product per concept, of fixed shape, so a concept's numbers (and gradients) do not depend on how
        # many concepts share the batch (a folded (N·k, d) GEMM switches kernels with N).
        v = torch.cat([self._times_weight(resag.up[name], name).transpose(1, 2) for name in self.layers], dim=-1)
        gram = torch.stack([resag.up[name] @ resag.up[name].transpose(1, 2) for name in self.layers], dim=1)
        return Readout(down, v, gram)

    def _times_weight(self, up: Tensor, name: str) -> Tensor:
        """Up_l W_l per concept: (N, k, d_l) -> (N, k, D)."""
        return torch.stack([u @ self.weights[name] for u in up])

    def residual_square(self, z: Tensor, readout: Readout) -> Tensor:
        """Σ_l w_l ‖z_l Up_l‖² per item: (C, n, T, L·k) -> (C, n)."""
        c, n, t, _ = z.shape
        k = readout.gram.shape[-1]
        z = z.view(c, n, t, len(self.layers), k)
        # element-wise products and sums (no einsum path search): each item's arithmetic is the same
        # whatever the batch size
        z_gram = (z.unsqueeze(-1) * readout.gram[:, None, None]).sum(-2)  # (C, n, T, L, k)
        per_layer = (z_gram * z).sum((2, 4))
        return (per_layer * self.layer_weight).sum(-1)

    def cross(self, z: Tensor, xv: Tensor) -> Tensor:
        """Σ_l w_l ⟨z_l, X V_l⟩ per item, with ``xv`` = X V: (..., T, L·k) -> (...)."""
        k = z.shape[-1] // len(self.layers)
        return ((z * xv).sum(-2) * self.layer_weight.repeat_interleave(k)).sum(-1)

    def combine(self, constant: Tensor, cross: Tensor, square: Tensor, scale: float) -> Tensor:
        """(⟨X,XG⟩ − 2s·cross + s²·square) / T per item."""
        return (constant - 2 * scale * cross + scale**2 * square) / self.num_tokens


@dataclass
class EraseBatch:
    """One erase step's embeddings for C concepts side by side (concept c uses slot c of the ResAG)."""

    target: Tensor  # E_T (C, T, D)
    diff: Tensor  # (1+g)(E_N − E_T) (C, T, D)
    anchors: Tensor  # the empty prompt then S anchors (C, 1+S, T, D)
    shared: Tensor | None = None  # (C, T) bool: the target's tokens shared with its neutral (train.prefix_gate_coef)


@dataclass
class FrozenBank:
    """An adversarial bank δ with its products, constant during an erase phase (§2.7a)."""

    delta: Tensor  # (C, P, T, D)
    delta_g: Tensor  # δ G
    delta_sq: Tensor  # ⟨δ, δ G⟩ (C, P)

    @classmethod
    def freeze(cls, kv: KVLoss, delta: Tensor) -> FrozenBank:
        delta = delta.detach()
        delta_g = delta @ kv.gram_matrix
        return cls(delta, delta_g, kv.inner(delta, delta_g))


def _low_rank(kv: KVLoss, resag: ResAG, readout: Readout, x: Tensor, first: int = 0,
              with_gate: bool = False) -> tuple[Tensor, ...]:
    """z = H Down (C, n, T, L·k) and Σ_l w_l ‖z_l Up_l‖² (C, n) for concept-major items x (C, n, T, D), and with
    ``with_gate`` the gates (C, n, T) too.

    Concept c's items go through slot ``first`` + c in one call of fixed shape, so element-wise kernels
    (sigmoid, softmax) see the same tensors whatever the other concepts: a concept's numbers are bit-identical
    to training it alone.
    """
    # unbind, not x[c]: the backward of C selects would build C zero tensors of x's full size
    parts = [resag.gated_maps(items, first + c, readout.down[c], with_gate) for c, items in enumerate(x.unbind(0))]
    if not with_gate:
        z = torch.stack(parts)
        return z, kv.residual_square(z, readout)
    z = torch.stack([zc for zc, _ in parts])
    return z, kv.residual_square(z, readout), torch.stack([g for _, g in parts])


def erase_losses(kv: KVLoss, resag: ResAG, batch: EraseBatch, bank: FrozenBank | None,
                 gate_term: bool = False) -> dict[str, Tensor]:
    """Per-concept erase, adversarial and anchor terms of §2.5, each (C,); with ``gate_term`` also "gate", the
    anchors' mean gate over their tokens (the gate-specificity option ``train.gate_coef``, not in the paper), and
    when the batch carries ``shared`` also "prefix_gate", the target's mean gate over those tokens
    (``train.prefix_gate_coef``)."""
    anchors = batch.anchors.shape[1]
    readout = kv.readout(resag)
    parts = [batch.target[:, None], batch.anchors]
    if bank is not None:
        parts.append(batch.target[:, None] + bank.delta)
    with_gate = gate_term or batch.shared is not None
    z, square, *gates = _low_rank(kv, resag, readout, torch.cat(parts, dim=1), with_gate=with_gate)
    scale = resag.spec.scale

    xv = torch.bmm(batch.diff, readout.v)
    constant = kv.quadratic(batch.diff)
    losses = {
        "erase": kv.combine(constant, kv.cross(z[:, 0], xv), square[:, 0], scale),
        "anchor": (scale**2 / kv.num_tokens) * square[:, 1 : 1 + anchors].mean(1),
    }
    if gate_term:
        losses["gate"] = gates[0][:, 1 : 1 + anchors].mean((1, 2))
    if batch.shared is not None:
        mask = batch.shared.to(gates[0].dtype)
        losses["prefix_gate"] = (gates[0][:, 0] * mask).sum(1) / mask.sum(1).clamp(min=1)
    if bank is None:
        losses["adv"] = torch.zeros_like(losses["erase"])
        return losses
    xv_adv = xv[:, None] - _times(bank.delta, readout.v)
    constant_adv = constant[:, None] - 2 * kv.inner(batch.diff[:, None], bank.delta_g) + bank.delta_sq
    cross_adv = kv.cross(z[:, 1 + anchors :], xv_adv)
    losses["adv"] = kv.combine(constant_adv, cross_adv, square[:, 1 + anchors :], scale).mean(1)
    return losses


def attack_loss(kv: KVLoss, resag: ResAG, readout: Readout, target: Tensor, delta: Tensor | Sequence[Tensor]) -> Tensor:
    """§2.6 objective per concept (C,): (1/L) Σ_l c_l mean_p ‖P̃_l(E_T+δ_p) − P_l(E_T)‖² (ResAG frozen).

    ``delta`` is (C, P, T, D) or C tensors (P, T, D). One concept at a time: every temporary (forward and
    backward) is one concept's (P, T, D), which the allocator reuses from step to step, where a (C, P, T, D)
    one is fresh memory to page in at every step (most of the step's time at 16 concepts).
    """
    per_concept = []
    for c, bank in enumerate(delta):
        one, bank = readout.concept(c), bank[None]
        z, square = _low_rank(kv, resag, one, target[c : c + 1, None] + bank, first=c)
        cross = kv.cross(z, -_times(bank, one.v))
        per_concept.append(kv.combine(kv.quadratic(bank), cross, square, resag.spec.scale).mean(1))
    return torch.cat(per_concept)


def _times(x: Tensor, v: Tensor) -> Tensor:
    """Concept-major (C, n, T, D) @ (C, D, m) -> (C, n, T, m), one GEMM per concept."""
    c, n, t, d = x.shape
    return torch.bmm(x.reshape(c, n * t, d), v).view(c, n, t, -1)

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

from dataclasses import dataclass

import torch
from torch import Tensor

from cpe.network import layer_name
from cpe.resag import ResAG


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
        """⟨x, x G⟩ per item: (..., T, D) -> (...)."""
        return (x * (x @ self.gram_matrix)).sum((-1, -2))

    def inner(self, x: Tensor, y_g: Tensor) -> Tensor:
        """⟨x, y G⟩ per item, with ``y_g`` = y G already computed."""
        return (x * y_g).sum((-1, -2))

    def readout(self, resag: ResAG) -> Readout:
        """Products needed by the residual terms (cost N·k·Σd_l·D, once per step)."""
        down = torch.cat([resag.down[name] for name in self.layers], dim=-1)
        v = torch.cat([(resag.up[name] @ self.weights[name]).transpose(1, 2) for name in self.layers], dim=-1)
        gram = torch.stack([resag.up[name] @ resag.up[name].transpose(1, 2) for name in self.layers], dim=1)
        return Readout(down, v, gram)

    def low_rank(self, hidden: Tensor, concept: Tensor, readout: Readout) -> Tensor:
        """z = H Down for every layer: (B, T, D) -> (B, T, L·k)."""
        return hidden @ readout.down[concept]

    def residual_square(self, z: Tensor, concept: Tensor, readout: Readout) -> Tensor:
        """Σ_l w_l ‖z_l Up_l‖² per item (B,)."""
        b, t, _ = z.shape
        k = readout.gram.shape[-1]
        z = z.view(b, t, len(self.layers), k)
        per_layer = torch.einsum("btlk,blkm,btlm->bl", z, readout.gram[concept], z)
        return per_layer @ self.layer_weight

    def cross(self, z: Tensor, xv: Tensor) -> Tensor:
        """Σ_l w_l ⟨z_l, X V_l⟩ per item, with ``xv`` = X V (B, T, L·k)."""
        k = z.shape[-1] // len(self.layers)
        return ((z * xv).sum(1) * self.layer_weight.repeat_interleave(k)).sum(-1)

    def combine(self, constant: Tensor, cross: Tensor, square: Tensor, scale: float) -> Tensor:
        """(⟨X,XG⟩ − 2s·cross + s²·square) / T per item."""
        return (constant - 2 * scale * cross + scale**2 * square) / self.num_tokens


@dataclass
class EraseBatch:
    """One erase step's embeddings for C concepts side by side (concept c uses slot c of the ResAG)."""

    target: Tensor  # E_T (C, T, D)
    diff: Tensor  # (1+g)(E_N − E_T) (C, T, D)
    anchors: Tensor  # the empty prompt then S anchors (C, 1+S, T, D)


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


def _items(parts: list[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
    """Stack (C, n, T, D) blocks into one (B, T, D) batch and the concept index of every item."""
    xs, concepts = [], []
    for x, n in parts:
        xs.append(x.flatten(0, 1))
        concepts.append(torch.arange(x.shape[0], device=x.device).repeat_interleave(n))
    return torch.cat(xs), torch.cat(concepts)


def erase_losses(kv: KVLoss, resag: ResAG, batch: EraseBatch, bank: FrozenBank | None) -> dict[str, Tensor]:
    """Per-concept erase, adversarial and anchor terms of §2.5 (each (C,)); one gate call for all items."""
    c, anchors = batch.target.shape[0], batch.anchors.shape[1]
    readout = kv.readout(resag)
    parts = [(batch.target[:, None], 1), (batch.anchors, anchors)]
    if bank is not None:
        parts.append((batch.target[:, None] + bank.delta, bank.delta.shape[1]))
    x, concept = _items(parts)
    z = kv.low_rank(resag.gate(x, concept).hidden, concept, readout)
    square = kv.residual_square(z, concept, readout)
    scale = resag.spec.scale

    xv = batch.diff @ readout.v
    constant = kv.quadratic(batch.diff)
    losses = {
        "erase": kv.combine(constant, kv.cross(z[:c], xv), square[:c], scale),
        "anchor": (scale**2 * square[c : c + c * anchors] / kv.num_tokens).view(c, anchors).mean(1),
    }
    if bank is None:
        losses["adv"] = torch.zeros_like(losses["erase"])
        return losses
    p = bank.delta.shape[1]
    xv_adv = (xv[:, None] - bank.delta @ readout.v[:, None]).flatten(0, 1)
    constant_adv = constant[:, None] - 2 * kv.inner(batch.diff[:, None], bank.delta_g) + bank.delta_sq
    start = c + c * anchors
    cross_adv = kv.cross(z[start:], xv_adv).view(c, p)
    losses["adv"] = kv.combine(constant_adv, cross_adv, square[start:].view(c, p), scale).mean(1)
    return losses


def attack_loss(kv: KVLoss, resag: ResAG, readout: Readout, target: Tensor, delta: Tensor) -> Tensor:
    """§2.6 objective per concept (C,): (1/L) Σ_l c_l mean_p ‖P̃_l(E_T+δ_p) − P_l(E_T)‖² (ResAG frozen)."""
    c, p = delta.shape[:2]
    x, concept = _items([(target[:, None] + delta, p)])
    z = kv.low_rank(resag.gate(x, concept).hidden, concept, readout)
    square = kv.residual_square(z, concept, readout)
    xv = -(delta @ readout.v[:, None]).flatten(0, 1)
    per_item = kv.combine(kv.quadratic(delta).flatten(), kv.cross(z, xv), square, resag.spec.scale)
    return per_item.view(c, p).mean(1)

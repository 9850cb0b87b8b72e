"""Residual Attention Gates (ResAG): the math of CPE, plain torch, no diffusers.

A ResAG holds, for each of N concepts, one shared attention gate (``U1``/``U2``/``v`` of gate rank r)
and, for every adapted projection layer l, a low-rank map ``Down_l`` (D -> k) and ``Up_l`` (k -> d_l).
For a text embedding ``X`` (B, T, D) the gate mixes tokens with a single-head self-attention,
``Ē = softmax(Q Kᵀ) X``, gates each token with ``g = σ(Ē v)`` and yields ``H = g · Ē``; layer l then
adds ``(α/k) · H Down_l Up_l`` to its frozen projection (method.md §1.3-1.4).

Two forwards share the parameters:
* per-concept (``concept`` given): batch item b uses concept ``concept[b]`` — training side by side;
* merged (``concept=None``): per token, the concept with the largest gate wins — generation.

The residual family is ``ResAGSpec.gate``:
* ``"attention"`` (CPE): the gate above;
* ``"none"``: no token mixing and the gate fixed at 1, so ``H = X`` and layer l adds ``s · X Down_l Up_l``:
  the plain linear low-rank residual, exactly an edit of the projection weights by ``ΔW_l = s (Down_l
  Up_l)ᵀ`` (what editing only the cross-attention weights gives; the paper's gate ablation). Its merged
  forward sums the active concepts' residuals, which equals editing the weights by ``Σ_n ΔW_{l,n}`` —
  with no gate there is nothing to pick a winner per token. The gate parameters keep their shapes (one
  file layout for both) but are never read by the math and never trained (``requires_grad`` False).

Every forward (per-concept, merged, and the training shortcut :meth:`ResAG.gated_maps`) computes the
gate through the one private function :meth:`ResAG._mix`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

KEY_MODES = ("query_as_key", "separate_key")
GATES = ("attention", "none")
MERGE_CHUNK_ELEMENTS = 1 << 22  # elements of one step of the merged forward: B·chunk·T·(T+r+1), pairs·width·(T+D)


def _project(x: Tensor, w: Tensor) -> Tensor:
    """``x @ w`` over broadcast leading axes; where they differ (merged: x (B, 1, T, D), w (N, D, r)) one GEMM
    through einsum, not matmul's copy of x for every concept."""
    if w.dim() > 2 and x.shape[:-2] != w.shape[:-2]:
        return torch.einsum("...td,...dr->...tr", x, w)
    return x @ w


@dataclass(frozen=True)
class ResAGSpec:
    """Everything that shapes a ResAG except the number of concepts."""

    embed_dim: int
    layer_dims: dict[str, int] = field(hash=False)
    gate_rank: int = 16
    lora_rank: int = 1
    alpha: float = 1.0
    key_mode: str = "query_as_key"
    gate: str = "attention"  # residual family: "attention" (CPE) or "none" (plain linear low-rank residual)

    def __post_init__(self) -> None:
        if self.key_mode not in KEY_MODES:
            raise ValueError(f"unknown key_mode {self.key_mode!r}; expected one of {KEY_MODES}")
        if self.gate not in GATES:
            raise ValueError(f"unknown gate {self.gate!r}; expected one of {GATES}")
        if min(self.embed_dim, self.gate_rank, self.lora_rank) < 1 or not self.layer_dims:
            raise ValueError(f"invalid ResAG spec: {self}")

    @property
    def scale(self) -> float:
        """Residual scale s = α / k."""
        return self.alpha / self.lora_rank


@dataclass
class GateOutput:
    """The gate's result for one embedding batch, shared by every layer."""

    hidden: Tensor  # H (B, T, D)
    choice: Tensor  # n* (B, T), long; -1 where no single concept is chosen (gate "none", merged)
    gate: Tensor  # g* (B, T)
    per_item: Tensor | None = None  # (B,) concept per batch item in the per-concept forward
    summed: Tensor | None = None  # (N,) weight of each concept's residual when they are summed (gate "none", merged)


class ResAG(nn.Module):
    """Stacked ResAGs of N concepts (leading concept axis on every parameter)."""

    def __init__(self, spec: ResAGSpec, num_concepts: int = 1) -> None:
        super().__init__()
        if num_concepts < 1:
            raise ValueError("a ResAG needs at least one concept")
        self.spec = spec
        self.num_concepts = num_concepts
        n, d, r, k = num_concepts, spec.embed_dim, spec.gate_rank, spec.lora_rank
        gated = spec.gate == "attention"  # gate "none" never reads the gate parameters: they are not trained
        self.w_query = nn.Parameter(torch.empty(n, d, r), requires_grad=gated)
        self.w_key = nn.Parameter(torch.empty(n, d, r), requires_grad=gated and spec.key_mode == "separate_key")
        self.gate_vector = nn.Parameter(torch.empty(n, d, 1), requires_grad=gated)
        self.down = nn.ParameterDict({name: nn.Parameter(torch.empty(n, d, k)) for name in spec.layer_dims})
        self.up = nn.ParameterDict(
            {name: nn.Parameter(torch.empty(n, k, dim)) for name, dim in spec.layer_dims.items()}
        )
        self.sources: list[str] = []  # files the parameters came from (for error messages)
        self.reset_parameters()

    @property
    def layers(self) -> list[str]:
        return list(self.spec.layer_dims)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype to run the gate in: float32 for parameters stored in half precision, else theirs."""
        dtype = self.w_query.dtype
        return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """The exact initialisation of method.md §1.5 (fan-in of a 3-D tensor (a,b,c) is b·c)."""
        embed = self.spec.embed_dim
        for weight in (self.w_query, self.w_key):
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
            weight.div_(embed**2)
        self.gate_vector.zero_()
        for name in self.spec.layer_dims:
            nn.init.kaiming_uniform_(self.down[name], a=math.sqrt(5), generator=generator)
            self.up[name].zero_()

    def _mix(
        self, x: Tensor, w_query: Tensor, w_key: Tensor, gate_vector: Tensor, maps: Tensor | None = None,
        rows: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The gate math, once: ``(g, A X M)`` for gate parameters whose leading axes broadcast with ``x``'s.

        ``A = softmax(Q Kᵀ)`` mixes the tokens (``Q = X U1``, ``K = Q`` or ``X U2`` by key mode) and
        ``g = σ(A X v)`` (..., T) gates them; ``M`` is ``maps`` (D, m), or the identity when ``None`` (then
        ``A X M = Ē``). With maps, ``A (X [v | M])`` is one product: by associativity (A X) M = A (X M), so
        the token mixing costs T²·(1+m) instead of T²·D; maps of width 0 give the gate alone. Gate ``"none"``:
        ``A = I`` and ``g = 1``. Parameters stored in half precision are computed in ``x``'s dtype. ``rows``
        (..., m) long (attention gate): only those tokens' rows of A, so the results are (..., m).
        """
        if self.spec.gate == "none":
            values = x if maps is None else _project(x, maps.to(x.dtype))
            return values.new_ones(values.shape[:-1]), values
        query = _project(x, w_query.to(x.dtype))
        key = query if self.spec.key_mode == "query_as_key" else _project(x, w_key.to(x.dtype))
        if rows is not None:
            query = query.gather(-2, rows[..., None].expand(*rows.shape, query.shape[-1]))
        attention = torch.softmax(query @ key.transpose(-1, -2), dim=-1)
        if maps is None:
            mixed = attention @ x  # Ē
            return torch.sigmoid(_project(mixed, gate_vector.to(x.dtype))).squeeze(-1), mixed
        maps = maps.expand(*gate_vector.shape[:-1], maps.shape[-1])  # one M for every concept of the gate
        mixed = attention @ _project(x, torch.cat([gate_vector, maps], dim=-1).to(x.dtype))  # (..., T, 1+m)
        return torch.sigmoid(mixed[..., 0]), mixed[..., 1:]

    def gate(
        self, x: Tensor, concept: Tensor | None = None, active: Tensor | None = None, chunk: int | None = None
    ) -> GateOutput:
        """Run the shared gate once for an embedding batch ``x`` (B, T, D).

        ``concept`` (B,) selects the per-concept forward; ``None`` merges all concepts: per token the largest
        gate wins (gate ``"attention"``), or every concept's residual is summed (gate ``"none"``).
        ``active`` (N,) bool disables concepts in the merged forward (a token with no active concept
        gets no residual). ``chunk``: concepts (and winning pairs) per step of the merged forward (default: from
        ``MERGE_CHUNK_ELEMENTS``).
        """
        if concept is not None:
            gate, mixed = self._mix(x, self.w_query[concept], self.w_key[concept], self.gate_vector[concept])
            choice = concept[:, None].expand_as(gate)
            return GateOutput(gate[..., None] * mixed, choice, gate, per_item=concept)

        if self.spec.gate == "none":
            weight = x.new_ones(self.num_concepts) if active is None else active.to(device=x.device, dtype=x.dtype)
            gate = x.new_ones(x.shape[:-1]) * weight.max()
            choice = torch.full(x.shape[:-1], -1, dtype=torch.long, device=x.device)
            return GateOutput(x, choice, gate, summed=weight)

        return self._merged_gate(x, active, chunk)

    def _merged_gate(self, x: Tensor, active: Tensor | None, chunk: int | None) -> GateOutput:
        """Per token the concept of largest gate, without the (B, N, T, D) tensor of every concept's Ē.

        Memory O(chunk·B·T² + chunk·T·D), never N·T·D: :meth:`_scan` picks the winners from the gates alone,
        :meth:`_winners` computes g and Ē, with autograd, for the tokens each winner won.
        """
        b, t, d = x.shape
        chunk = chunk or max(1, MERGE_CHUNK_ELEMENTS // (b * t * (t + self.spec.gate_rank + 1)))
        best, choice = self._scan(x, active, chunk)
        found = self._winners(x, choice, chunk)
        gate = torch.where(best < 0, 0.0, found[..., 0])  # a token with no active concept gets no residual
        return GateOutput(gate[..., None] * found[..., 1:], choice, gate)

    @torch.no_grad()
    def _scan(self, x: Tensor, active: Tensor | None, chunk: int) -> tuple[Tensor, Tensor]:
        """Largest gate per token and its concept (B, T), first index on ties as ``max`` over all N at once.

        Concepts ``chunk`` at a time, gates σ(A (X v)) only (maps of width 0); inactive concepts count as -1.
        """
        for start in range(0, self.num_concepts, chunk):
            part = slice(start, start + chunk)
            no_maps = x.new_zeros(x.shape[-1], 0)
            gates, _ = self._mix(x[:, None], self.w_query[part], self.w_key[part], self.gate_vector[part], no_maps)
            if active is not None:
                gates = torch.where(active[part].to(gates.device)[None, :, None], gates, gates.new_tensor(-1.0))
            value, index = gates.max(dim=1)  # first index on ties, like argmax
            if start == 0:
                best, choice = value, index
            else:  # strictly greater: an earlier chunk keeps its ties
                better = value > best
                best, choice = torch.where(better, value, best), torch.where(better, index + start, choice)
        return best, choice

    def _winners(self, x: Tensor, choice: Tensor, chunk: int) -> Tensor:
        """``[g | Ē]`` (B, T, 1+D) of each token's chosen concept: per (prompt, concept) pair, its tokens' rows."""
        b, t, d = x.shape
        n = self.num_concepts
        item = torch.arange(b, device=x.device)[:, None].expand(b, t)
        pairs, pair_of_token, counts = torch.unique(item * n + choice, return_inverse=True, return_counts=True)
        pair_of_token = pair_of_token.flatten()
        order = torch.argsort(pair_of_token, stable=True)  # tokens grouped by pair
        first = torch.cumsum(counts, 0) - counts  # each pair's first position in ``order``
        slot = torch.arange(b * t, device=x.device) - first[pair_of_token[order]]
        rows = (order[first] % t)[:, None].repeat(1, int(counts.max()))  # padded with the pair's first token
        rows[pair_of_token[order], slot] = order % t
        per_chunk = min(chunk, max(1, MERGE_CHUNK_ELEMENTS // (rows.shape[1] * (t + d))))
        bounds = [*first.tolist(), b * t]
        items = torch.searchsorted(pairs, torch.arange(b + 1, device=x.device) * n).tolist()  # pairs of item i
        found = []
        for i in range(b):  # one prompt's pairs at a time: its X is shared, never copied per pair
            for start in range(items[i], items[i + 1], per_chunk):
                stop = min(start + per_chunk, items[i + 1])
                concept = pairs[start:stop] % n
                gate, mixed = self._mix(x[i], self.w_query[concept], self.w_key[concept], self.gate_vector[concept],
                                        rows=rows[start:stop])  # (pairs, width), (pairs, width, D)
                at = slice(bounds[start], bounds[stop])  # these pairs' tokens in ``order``
                local = pair_of_token[order[at]] - start
                found.append(torch.cat([gate[local, slot[at], None], mixed[local, slot[at]]], dim=-1))
        return x.new_zeros(b * t, 1 + d).index_put((order,), torch.cat(found)).view(b, t, 1 + d)

    def gated_maps(
        self, x: Tensor, concept: int, maps: Tensor, with_gate: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``gate(x, concept).hidden @ maps`` for one concept, without forming H: g ⊙ (A (X M)).

        ``x`` (n, T, D), ``maps`` (D, m) -> (n, T, m), m = columns of ``maps`` (e.g. all layers' Down maps side
        by side); ``with_gate``: also the gate g (n, T). Used by training (``cpe.training.losses``); the same
        :meth:`_mix` as the forwards.
        """
        gate, mixed = self._mix(x, self.w_query[concept], self.w_key[concept], self.gate_vector[concept], maps)
        return (gate[..., None] * mixed, gate) if with_gate else gate[..., None] * mixed

    def residual(self, layer: str, g: GateOutput) -> Tensor:
        """``s · H Down_l Up_l`` for one layer, with each token's chosen concept (or their sum): (B, T, d_l)."""
        dtype = g.hidden.dtype
        down, up = self.down[layer], self.up[layer]
        if g.summed is not None:  # Σ_n w_n s X Down_n Up_n as one product: the concepts' low ranks side by side
            n, d, k = down.shape
            down_all = (down.to(dtype) * g.summed[:, None, None]).transpose(0, 1).reshape(d, n * k)
            return self.spec.scale * ((g.hidden @ down_all) @ up.to(dtype).reshape(n * k, -1))
        if g.per_item is not None:
            return self.spec.scale * ((g.hidden @ down[g.per_item].to(dtype)) @ up[g.per_item].to(dtype))
        if self.num_concepts == 1:
            return self.spec.scale * ((g.hidden @ down[0].to(dtype)) @ up[0].to(dtype))
        # each token through its winner's maps only (B·T·(D + d_l)·k), never every concept's
        low = g.hidden[..., None, :] @ down[g.choice].to(dtype)  # (B, T, 1, k)
        return self.spec.scale * (low @ up[g.choice].to(dtype)).squeeze(-2)

    def residuals(self, g: GateOutput, layers: Iterable[str] | None = None) -> dict[str, Tensor]:
        """Residuals of many layers; the down maps of all layers run as one matmul per concept pattern."""
        names = list(layers) if layers is not None else self.layers
        if g.per_item is None and (self.num_concepts > 1 or g.summed is not None):
            return {name: self.residual(name, g) for name in names}
        down = torch.cat([self.down[name] for name in names], dim=-1)  # (N, D, L·k)
        dtype = g.hidden.dtype
        low = g.hidden @ (down[g.per_item] if g.per_item is not None else down[0]).to(dtype)  # (B, T, L·k)
        k = self.spec.lora_rank
        out = {}
        for i, name in enumerate(names):
            up = self.up[name][g.per_item] if g.per_item is not None else self.up[name][0]
            out[name] = self.spec.scale * (low[..., i * k : (i + 1) * k] @ up.to(dtype))
        return out

    def forward(self, x: Tensor, concept: Tensor | None = None) -> dict[str, Tensor]:
        return self.residuals(self.gate(x, concept))

    def concept_parameters(self, index: int) -> dict[str, Tensor]:
        """Concept ``index``'s tensors, each with a concept axis of size 1 (the gate-file layout)."""
        tensors = {
            "w_query": self.w_query[index : index + 1],
            "w_key": self.w_key[index : index + 1],
            "gate_vector": self.gate_vector[index : index + 1],
        }
        for name in self.layers:
            tensors[f"{name}.down"] = self.down[name][index : index + 1]
            tensors[f"{name}.up"] = self.up[name][index : index + 1]
        return {key: value.detach() for key, value in tensors.items()}

    @torch.no_grad()
    def load_concept(self, index: int, tensors: dict[str, Tensor]) -> None:
        """Copy one concept's tensors (layout of :meth:`concept_parameters`) into slot ``index``."""
        self.w_query[index].copy_(tensors["w_query"][0])
        self.w_key[index].copy_(tensors["w_key"][0])
        self.gate_vector[index].copy_(tensors["gate_vector"][0])
        for name in self.layers:
            self.down[name][index].copy_(tensors[f"{name}.down"][0])
            self.up[name][index].copy_(tensors[f"{name}.up"][0])

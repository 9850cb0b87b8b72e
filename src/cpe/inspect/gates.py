"""Every eraser's own gate on every token of a prompt, from the text side alone (no UNet).

The context is the one generation hands to the UNet (:class:`cpe.models.loading.TextSide`); each eraser's gate comes
from the per-concept forward (``ResAG.gate(x, concept)``), so every eraser's value is visible, not only the
winner's. The merged winner of a token is the eraser with the largest gate there (first on ties), exactly the
choice of the merged forward that generation runs.

Positions: the first tokenizer pads every prompt to its length (77 for SD; SDXL's second tokenizer pads to the
same length). *Real* positions are BOS, the prompt's tokens and EOS (the tokenizer's attention mask); the rest
is padding, which the UNet's cross-attention sees too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from cpe.core.resag import ResAG
from cpe.core.weights import GateFileInfo
from cpe.models.loading import TextSide

BOS, EOS, PAD = "<BOS>", "<EOS>", "<pad>"


@dataclass
class TokenGates:
    """The gates of N erasers on P prompts padded to T positions."""

    prompts: list[str]
    ids: Tensor  # (P, T) token ids of the first tokenizer
    lengths: Tensor  # (P,) real positions (BOS ... EOS); positions from here on are padding
    gates: Tensor  # (P, N, T) each eraser's own gate, from the per-concept forward

    def real(self) -> Tensor:
        """(P, T) True on real positions."""
        return torch.arange(self.ids.shape[1])[None, :] < self.lengths[:, None]

    def winner(self) -> tuple[Tensor, Tensor]:
        """Per token the merged forward's choice: the eraser with the largest gate (first on ties), and that gate."""
        gate, choice = self.gates.max(dim=1)
        return choice, gate


@dataclass
class PromptGates:
    """One prompt's row of a gate table: a label per position and every eraser's gate there."""

    prompt: str
    tokens: list[str]  # (T) BOS, the BPE pieces ("</w>" dropped), EOS, then padding
    real: int  # positions [0, real) are real, the rest padding
    gates: Tensor  # (N, T)
    winner: Tensor  # (T,) the merged forward's choice
    winner_gate: Tensor  # (T,)


def eraser_names(infos: Sequence[GateFileInfo]) -> list[str]:
    """Each eraser's concept (or folder) name; a name that repeats gets ``#<slot>`` so columns stay apart."""
    names = [info.name for info in infos]
    return [f"{name}#{i}" if names.count(name) > 1 else name for i, name in enumerate(names)]


def check_inspectable(text_side: TextSide, resag: ResAG) -> None:
    """One-line errors for erasers the inspector cannot show on this model."""
    if resag.spec.gate != "attention":
        raise ValueError(f"erasers of gate {resag.spec.gate!r} have no gate to inspect: their residual is added to "
                         "every token")
    if resag.spec.embed_dim != text_side.width:
        raise ValueError(f"erasers have text width D={resag.spec.embed_dim} but the model's context has "
                         f"D={text_side.width}: they were trained on another base model")


@torch.no_grad()
def token_gates(text_side: TextSide, resag: ResAG, prompts: Sequence[str], batch_size: int = 64) -> TokenGates:
    """Every eraser's gate on every position of every prompt, the prompts encoded ``batch_size`` at a time."""
    check_inspectable(text_side, resag)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts to inspect")
    tokens = text_side.tokenizer(prompts, padding="max_length", max_length=text_side.tokens, truncation=True,
                                 return_tensors="pt")
    weight = resag.w_query
    gates = []
    for start in range(0, len(prompts), batch_size):
        x = text_side.encode(prompts[start : start + batch_size]).to(device=weight.device, dtype=resag.compute_dtype)
        per_eraser = [resag.gate(x, concept=torch.full((len(x),), n, device=weight.device)).gate
                      for n in range(resag.num_concepts)]
        gates.append(torch.stack(per_eraser, dim=1).float().cpu())
    return TokenGates(prompts, tokens.input_ids, tokens.attention_mask.sum(dim=1), torch.cat(gates))


def token_labels(tokenizer, ids: Tensor, real: int) -> list[str]:
    """BOS, the BPE pieces without their end-of-word mark, EOS, then ``<pad>`` (by position, not by id: SD's
    padding id is EOS's)."""
    pieces = tokenizer.convert_ids_to_tokens(ids.tolist())
    labels = [piece.removesuffix("</w>") for piece in pieces]
    labels[real:] = [PAD] * (len(labels) - real)
    labels[0], labels[real - 1] = BOS, EOS
    return labels


def gate_table(text_side: TextSide, resag: ResAG, prompts: Sequence[str], batch_size: int = 64) -> list[PromptGates]:
    """Per prompt, every eraser's gate on every position, labelled, with the merged winner."""
    found = token_gates(text_side, resag, prompts, batch_size)
    choice, gate = found.winner()
    return [
        PromptGates(prompt, token_labels(text_side.tokenizer, found.ids[p], int(found.lengths[p])),
                    int(found.lengths[p]), found.gates[p], choice[p], gate[p])
        for p, prompt in enumerate(found.prompts)
    ]


def shown_erasers(row: PromptGates, max_erasers: int | None) -> list[int]:
    """All erasers, or the ``max_erasers`` with the largest gate anywhere in the prompt (in loading order)."""
    n = row.gates.shape[0]
    if max_erasers is None or n <= max_erasers:
        return list(range(n))
    return sorted(row.gates.amax(dim=1).topk(max_erasers).indices.tolist())


def format_gate_table(rows: Sequence[PromptGates], names: Sequence[str], max_erasers: int | None = 12) -> str:
    """A text table per prompt: a line per real position (token, each eraser's gate, the merged winner), then one
    line with each eraser's largest gate over the padding."""
    return "\n\n".join(_prompt_table(number, row, names, max_erasers) for number, row in enumerate(rows, 1)) + "\n"


def _prompt_table(number: int, row: PromptGates, names: Sequence[str], max_erasers: int | None) -> str:
    shown = shown_erasers(row, max_erasers)
    heads = [names[n] for n in shown]
    widths = [max(5, len(head)) for head in heads]
    padding = row.gates.shape[1] - row.real
    pad_label = f"{PAD} x{padding}"
    label_width = max(len(label) for label in [*row.tokens[: row.real], "token", pad_label])

    def line(position: str, label: str, values: list[str], winner: str) -> str:
        cells = "  ".join(value.rjust(width) for value, width in zip(values, widths, strict=True))
        return f"{position:>4}  {label.ljust(label_width)}  {cells}  {winner}"

    def gates(values: Tensor) -> list[str]:
        return [f"{float(values[n]):.3f}" for n in shown]

    lines = [f"[{number}] {row.prompt}"]
    if len(shown) < len(names):
        lines.append(f"    ({len(shown)} of {len(names)} erasers shown: those with the largest gates)")
    lines.append(line("pos", "token", heads, "winner"))
    for t in range(row.real):
        lines.append(line(str(t), row.tokens[t], gates(row.gates[:, t]),
                          f"{names[int(row.winner[t])]} {float(row.winner_gate[t]):.3f}"))
    if padding:
        pad_max = row.gates[:, row.real :].amax(dim=1)
        best = int(pad_max.argmax())
        lines.append(line("", pad_label, gates(pad_max),
                          f"{names[best]} {float(pad_max[best]):.3f} (largest over the padding)"))
    return "\n".join(lines)

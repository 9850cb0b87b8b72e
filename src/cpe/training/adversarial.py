"""The learnable bank of adversarial text-embedding perturbations δ (method.md §2.6, §3.3)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from cpe.util.io import atomic_write


def new_bank(generators: Sequence[torch.Generator], size: int, tokens: int, dim: int) -> Tensor:
    """A fresh bank per concept, (C, P, T, D): Kaiming-uniform(a=√5) over (P, T, D), divided by D² (≈ 0).

    Each concept's bank is drawn from its own generator, so it does not depend on its neighbours.
    """
    banks = []
    for generator in generators:
        bank = torch.empty(size, tokens, dim)
        torch.nn.init.kaiming_uniform_(bank, a=math.sqrt(5), generator=generator)
        banks.append(bank / dim**2)
    return torch.stack(banks)


def save_bank(path: str | Path, delta: Tensor, concept: str) -> Path:
    """Write one concept's bank as ``prompts.weight`` (P, T, D), float32, atomically."""
    tensors = {"prompts.weight": delta.detach().float().cpu().contiguous()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"prompts": concept}))

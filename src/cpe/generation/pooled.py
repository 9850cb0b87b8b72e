"""SDXL's pooled text embedding under erasure (generation option ``pooled``).

SDXL conditions every block on text_encoder_2's pooled, projected embedding through the time embedding.
ResAGs act on the cross-attention context only, so that path carries the prompt untouched:

* ``keep`` (default): the pipeline's own pooled embedding (the method as published, applied to SDXL);
* ``neutral``: when any token's merged gate exceeds ``pooled_threshold`` for concept n, the pooled
  embedding is that of the prompt with concept n's target replaced by its neutral (whole words, any case).
  If the prompt does not spell the target (a paraphrase, a misspelling, an attack), it is the pooled
  embedding of the fired concepts' neutrals alone. Rows where no gate fires keep theirs bit for bit.

The gate decision uses the very gate the residuals use (the merged forward over the same context).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cpe.core.resag import ResAG
from cpe.training.prompts import target_pattern  # the one whole-word rule


def fired_concepts(resag: ResAG, context: Tensor, threshold: float, active: Tensor | None = None) -> list[list[int]]:
    """Per prompt, the concepts (ascending) whose merged gate exceeds ``threshold`` on at least one token."""
    weight = resag.w_query
    with torch.no_grad():
        out = resag.gate(context.to(device=weight.device, dtype=resag.compute_dtype), active=active)
    fired = out.gate > threshold
    return [sorted(set(out.choice[b][fired[b]].tolist())) for b in range(len(context))]


def neutral_prompt(prompt: str, concepts: Sequence[tuple[str, str]]) -> str:
    """``prompt`` with each (target, neutral) target replaced by its neutral; the neutrals alone if one is absent."""
    text = prompt
    for target, neutral in concepts:
        pattern = target_pattern(target)
        if not pattern.search(text):
            return ", ".join(n for _, n in concepts if n)
        text = pattern.sub(lambda _, new=neutral: new, text)
    return text


def pooled_texts(resag: ResAG, context: Tensor, prompts: Sequence[str], concepts: Sequence[tuple[str, str]],
                 threshold: float, active: Tensor | None = None) -> list[str | None]:
    """Per prompt, the text whose pooled embedding replaces the prompt's (``None``: no gate fired, keep it)."""
    fired = fired_concepts(resag, context, threshold, active)
    return [neutral_prompt(p, [concepts[n] for n in ns]) if ns else None for p, ns in zip(prompts, fired, strict=True)]

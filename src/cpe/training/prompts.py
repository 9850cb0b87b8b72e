"""Training prompts: concept lists, templates with an explicit placeholder, erase pairs (method.md §2.2)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import Tensor

from cpe.util.io import read_csv
from cpe.util.names import folder_name


@dataclass(frozen=True)
class Concept:
    """One concept to erase: its target string, the neutral it is mapped to, its guidance g."""

    target: str
    neutral: str
    guidance: float

    @property
    def folder(self) -> str:
        """Output folder name: lower-case target, spaces -> underscores, non-ASCII kept
        (``cpe.util.names.folder_name``)."""
        return folder_name(self.target)


def read_csv_column(path: str | Path, column: str) -> list[str]:
    """The stripped, non-empty values of one CSV column, in file order (duplicates kept)."""
    return [value.strip() for row in read_csv(path, [column]).rows if (value := row[column] or "").strip()]


def unique(values: list[str]) -> list[str]:
    """Distinct values, first occurrence order."""
    return list(dict.fromkeys(values))


def load_concepts(path: str | Path, default_neutral: str, default_guidance: float) -> list[Concept]:
    """A YAML list of ``{target, neutral?, guidance?}`` (or bare strings) -> concepts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"concept list does not exist: {path}")
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: not a readable UTF-8 YAML file ({type(e).__name__}: {str(e).splitlines()[0]})") \
            from None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty YAML list of concepts")
    concepts: list[Concept] = []
    folders: dict[str, int] = {}  # folder name -> entry index
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"target": entry}
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: entry {i} is not a mapping or a string")
        unknown = sorted(set(entry) - {"target", "neutral", "guidance"}, key=str)
        if unknown:
            raise ValueError(f"{path}: entry {i} has unknown key {unknown[0]!r} (allowed: target, neutral, guidance)")
        target = str(entry.get("target") or "").strip()
        if not target:
            raise ValueError(f"{path}: entry {i} has no target")
        neutral = str(entry.get("neutral", default_neutral))
        try:
            guidance = float(entry.get("guidance", default_guidance))
        except (TypeError, ValueError):
            raise ValueError(f"{path}: entry {i} ({target!r}) has a non-numeric guidance") from None
        if not math.isfinite(guidance):
            raise ValueError(f"{path}: entry {i} ({target!r}) has a non-finite guidance {guidance}")
        concept = Concept(target, neutral, guidance)
        try:
            folder = concept.folder
        except ValueError as e:
            raise ValueError(f"{path}: entry {i}: concept {e}") from None
        if folder in folders:
            first = folders[folder]
            raise ValueError(f"{path}: entries {first} ({concepts[first].target!r}) and {i} ({target!r}) "
                             f"share the output folder {folder!r}")
        folders[folder] = i
        concepts.append(concept)
    return concepts


def load_templates(
    path: str | Path, column: str, placeholder: str, template_word: str | None = None, include_bare: bool = True
) -> list[str]:
    """Templates that all contain ``placeholder``; ``template_word`` converts legacy whole-word templates."""
    templates = read_csv_column(path, column)
    if not templates:
        raise ValueError(f"{path}: no templates in column {column!r}")
    if template_word:
        pattern = re.compile(rf"\b{re.escape(template_word)}\b")
        templates = [pattern.sub(lambda _: placeholder, t) for t in templates]
    for row, template in enumerate(templates, start=1):
        if placeholder not in template:
            raise ValueError(f"{path}: template {row} {template!r} has no placeholder {placeholder}")
    if include_bare and placeholder not in templates:
        templates.append(placeholder)
    return templates


def fill(template: str, placeholder: str, text: str) -> str:
    """Put ``text`` where the placeholder stands (the placeholder is an explicit token, never a word)."""
    return template.replace(placeholder, text)


def erase_pairs(concept: Concept, templates: list[str], placeholder: str) -> list[tuple[str, str]]:
    """(target prompt, neutral prompt) per template."""
    return [(fill(t, placeholder, concept.target), fill(t, placeholder, concept.neutral)) for t in templates]


def misaligned_pairs(tokenizer, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Pairs whose target and neutral tokenize to different lengths (keys/values then shift, method.md §2.2)."""
    lengths = [len(tokenizer(text).input_ids) for pair in pairs for text in pair]
    return [pair for pair, a, b in zip(pairs, lengths[::2], lengths[1::2], strict=True) if a != b]


def shared_prefix_mask(tokenizer, pairs: list[tuple[str, str]], num_tokens: int) -> Tensor:
    """(M, T) bool: per (target, neutral) pair, the positions before the first token where they differ (BOS and the
    template's words before the concept). A causal text encoder gives both the same embedding there, so the erase
    target (1+g)(E_N − E_T) is exactly 0 on them."""
    mask = torch.zeros(len(pairs), num_tokens, dtype=torch.bool)
    for row, (target, neutral) in enumerate(pairs):
        a, b = tokenizer(target).input_ids, tokenizer(neutral).input_ids
        shared = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        mask[row, : min(shared, num_tokens)] = True
    return mask


def target_pattern(target: str) -> re.Pattern:
    """The rule for "a prompt names the target", used by training (the corpus), the pooled path, the attacks and
    the inspector: the target as whole words, any case (``Foumnem`` names ``foumnem``, ``Foumnemx`` does not)."""
    return re.compile(rf"(?<!\w){re.escape(target.strip())}(?!\w)", re.IGNORECASE)


def names_target(prompt: str, target: str) -> bool:
    return target_pattern(target).search(prompt) is not None


def read_context_words(path: str | Path) -> tuple[list[str], list[str]]:
    """The ``before`` and ``after`` phrases of a context-words CSV (columns ``text``, ``position``)."""
    before, after = [], []
    for row_number, row in enumerate(read_csv(path, ["text", "position"]).rows, start=2):
        text, position = (row["text"] or "").strip(), (row["position"] or "").strip()
        if not text:
            continue
        if position not in ("before", "after"):
            raise ValueError(f"{path}: line {row_number}: position must be before or after, got {position!r}")
        (before if position == "before" else after).append(text)
    if not before and not after:
        raise ValueError(f"{path}: no context phrases")
    return unique(before), unique(after)


def context_templates(templates: Sequence[str], before: Sequence[str], after: Sequence[str], variants: int,
                      max_before: int, max_after: int, seed: int, stream: int = 0) -> list[str]:
    """``variants`` distinct augmented templates, deterministic from ``seed``: a template of ``templates`` with
    0..``max_before`` phrases of ``before`` in front ("a very old a portrait of {concept}") and 0..``max_after``
    phrases of ``after`` behind it ("a portrait of {concept}, high detail"), at least one phrase in all.

    Fewer come back when fewer distinct ones exist (tried ``20 * variants`` times). ``stream`` > 0 draws an
    independent sequence from the same seed (the anchor sentences' and the corpus's variants)."""
    rng = np.random.default_rng([seed, 0x636F6E74, stream] if stream else [seed, 0x636F6E74])  # "cont"
    max_before = max_before if before else 0
    max_after = max_after if after else 0
    if max_before + max_after == 0:
        return []
    out: dict[str, None] = {}
    for _ in range(20 * variants):
        if len(out) == variants:
            break
        n_before = int(rng.integers(max_before + 1))
        n_after = int(rng.integers(max_after + 1))
        if n_before + n_after == 0:
            continue
        template = templates[int(rng.integers(len(templates)))]
        front = [before[int(i)] for i in rng.integers(len(before), size=n_before)] if n_before else []
        back = [after[int(i)] for i in rng.integers(len(after), size=n_after)] if n_after else []
        text = " ".join([*front, template]) + "".join(f", {phrase}" for phrase in back)
        if text not in templates:
            out[text] = None
    return list(out)

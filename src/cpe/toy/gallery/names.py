"""Invented names for identities and artists: one or two made-up words that CLIP's BPE splits into 2-4 tokens.

Names are drawn from a seeded syllable generator and kept only when the real CLIP tokenizer splits them into
``TOKENS`` tokens (like a real person's name), when no kept name (of either kind) is a prefix of another or
shares a word with another, and when no word is in the English vocabulary of the tokenizer as a whole word
(so an invented name is never an ordinary word). The same seed always gives the same names.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TOKENS = (2, 4)  # inclusive range of BPE tokens per name
ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "j", "k", "kr", "l", "m", "n", "p", "qu", "r", "s", "t", "tr",
          "v", "vr", "z", "zh", "th")
VOWELS = ("a", "e", "i", "o", "u", "ae", "ou", "y")
CODAS = ("", "", "", "n", "r", "l", "s", "x", "th", "m", "v", "k")


def _word(rng: np.random.Generator, syllables: int) -> str:
    parts = [ONSETS[rng.integers(len(ONSETS))] + VOWELS[rng.integers(len(VOWELS))] + CODAS[rng.integers(len(CODAS))]
             for _ in range(syllables)]
    return "".join(parts).capitalize()


def token_count(tokenizer, text: str) -> int:
    """BPE tokens of ``text`` without the start and end tokens."""
    return len(tokenizer(text).input_ids) - 2


def invent_names(count: int, seed: int, tokenizer, taken: Sequence[str] = (), two_words: float = 0.6) -> list[str]:
    """``count`` new names (deterministic for ``seed``), none clashing with ``taken`` or with each other."""
    rng = np.random.default_rng(seed)
    names: list[str] = []
    used = [t.lower() for t in taken]
    words = {w for t in used for w in t.split()}
    vocabulary = tokenizer.get_vocab()
    for _ in range(200 * count):
        if len(names) == count:
            return names
        if rng.random() < two_words:
            parts = [_word(rng, 1 + int(rng.integers(2))), _word(rng, 1 + int(rng.integers(2)))]
        else:
            parts = [_word(rng, 2 + int(rng.integers(2)))]
        name = " ".join(parts)
        low = name.lower()
        if not TOKENS[0] <= token_count(tokenizer, name) <= TOKENS[1]:
            continue
        if any(len(p) < 3 or f"{p.lower()}</w>" in vocabulary or p.lower() in words for p in parts):
            continue
        if len(set(p.lower() for p in parts)) < len(parts):
            continue
        if any(low.startswith(u) or u.startswith(low) for u in used):
            continue
        names.append(name)
        used.append(low)
        words.update(p.lower() for p in parts)
    raise RuntimeError(f"could not invent {count} names from seed {seed}")

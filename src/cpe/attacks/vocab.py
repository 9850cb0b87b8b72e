"""The vocabulary discrete attacks draw from: whole lower-case words of the tokenizer, minus banned ones.

A token is usable when it is a complete word of letters (CLIP's ``word</w>`` entries), so that attacked
prompts written as text with spaces tokenize back to exactly the same ids. Banned: every token whose word
contains a banned word (the target "circle" bans "circle", "circles", "semicircle"; words shorter than 3
letters ban only themselves) and the banned words' own tokens.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

WORD = re.compile(r"[a-z]+")
WORD_SUFFIX = "</w>"
MIN_SUBSTRING = 3


def concept_token_ids(tokenizer, concept: str) -> list[int]:
    """The concept's tokens; a concept the tokenizer cannot represent is an error naming it."""
    ids = tokenizer(concept, add_special_tokens=False).input_ids
    unknown = getattr(tokenizer, "unk_token_id", None)
    if not ids or (unknown is not None and unknown in ids and concept.strip() != tokenizer.unk_token):
        raise ValueError(f"target {concept!r} is not in the vocabulary of the model's tokenizer")
    return ids


def _words(texts: Sequence[str]) -> list[str]:
    return [w for text in texts for w in WORD.findall(text.lower())]


def banned_token_ids(tokenizer, banned: Sequence[str]) -> set[int]:
    """Ids of every token a discrete attack may not use for the banned words (and special tokens)."""
    words = _words(banned)
    out = {i for text in banned for i in tokenizer(text, add_special_tokens=False).input_ids}
    for token, index in tokenizer.get_vocab().items():
        word = token.removesuffix(WORD_SUFFIX).lower()
        if any(w == word or (len(w) >= MIN_SUBSTRING and w in word) for w in words):
            out.add(index)
    out.update(tokenizer.all_special_ids)
    return out


def allowed_token_ids(tokenizer, banned: Sequence[str]) -> Tensor:
    """Sorted ids of the whole-word letter tokens that are not banned (long tensor)."""
    forbidden = banned_token_ids(tokenizer, banned)
    ids = [index for token, index in tokenizer.get_vocab().items()
           if token.endswith(WORD_SUFFIX) and WORD.fullmatch(token[: -len(WORD_SUFFIX)]) and index not in forbidden]
    if not ids:
        raise ValueError("no vocabulary token is left once the banned words are removed")
    return torch.tensor(sorted(ids))


def read_words(path: str | Path) -> list[str]:
    """The lower-case words of a file: a CSV with a ``prompt`` column gives its prompts' words, any other file all of
    its text's."""
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames and "prompt" in reader.fieldnames:
            return _words([row["prompt"] or "" for row in reader])
    return _words([text])


def restrict_to_words(tokenizer, allowed: Tensor, words: Sequence[str], where: str) -> Tensor:
    """The ``allowed`` ids that are one of ``words`` as a whole-word token (a word the tokenizer splits is left
    out: the attacks write one token per word); none left is an error naming ``where``."""
    vocab = tokenizer.get_vocab()
    wanted = {vocab[w + WORD_SUFFIX] for w in set(words) if w + WORD_SUFFIX in vocab}
    kept = allowed[torch.tensor([int(i) in wanted for i in allowed], dtype=torch.bool)]
    if not len(kept):
        raise ValueError(f"{where}: none of its words is an allowed whole-word token")
    return kept


def decode_words(tokenizer, ids: Sequence[int]) -> str:
    """Word tokens -> text ("a", "red"): the words joined by spaces."""
    return " ".join(tokenizer.convert_ids_to_tokens(int(i)).removesuffix(WORD_SUFFIX) for i in ids)


def check_round_trip(tokenizer, text: str, ids: Sequence[int]) -> None:
    """The written prompt must tokenize to the optimised ids; otherwise the attack's result is not its text."""
    got = tokenizer(text, add_special_tokens=False).input_ids
    if list(got) != [int(i) for i in ids]:
        raise RuntimeError(f"attacked prompt {text!r} tokenizes to {got}, not to the optimised ids {list(ids)}")


def nearest_tokens(vectors: Tensor, table: Tensor, allowed: Tensor) -> Tensor:
    """For each vector (K, D), the allowed token with the highest cosine similarity (PEZ's projection)."""
    candidates = torch.nn.functional.normalize(table[allowed].float(), dim=-1)
    scores = torch.nn.functional.normalize(vectors.float(), dim=-1) @ candidates.T
    return allowed.to(scores.device)[scores.argmax(dim=-1)]

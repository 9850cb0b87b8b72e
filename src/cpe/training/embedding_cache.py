"""Text-encoder outputs computed once: an on-disk cache keyed by the encoder's identity and the prompt text.

Encoding SD v1.4's ~10,400 anchor prompts of one celebrity takes about 20 minutes on a 2-core CPU; the next run
(the next celebrities, a resumed or repeated run) reads what it shares with earlier runs from the cache instead.

Layout: ``<folder>/<digest of the identity>/identity.json`` (what the digest stands for: the encoder's files, dtype,
device type, library versions) and shards ``<digest of their prompts>.safetensors``, each holding ``embeddings``
(n, T, D) float32 with its prompt list in the metadata. Every file is written atomically; a shard is written
every ``shard_prompts`` (1,024) new prompts, so an interrupted encoding keeps what it finished. Deleting any
shard, or the whole folder, is safe: those prompts are encoded again. The cached values are the encoder's own
float32 outputs and every batch has the same shape (the last one is padded), so a prompt's encoding does not
depend on which prompts share its batch, and a run with the cache gives bit-identical numbers to one without it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from cpe.util.io import atomic_write, atomic_write_text, json_digest

log = logging.getLogger(__name__)

Encoder = Callable[[list[str]], Tensor]
SHARD_PROMPTS = 1024
BATCH_SIZE = 16  # prompts per encoder call; the last batch is padded with "" so every call has this shape


class EmbeddingCache:
    """Encoder outputs stored by prompt text under a folder named after ``identity`` (the encoder's fingerprint)."""

    def __init__(self, folder: str | Path, identity: dict, shard_prompts: int = SHARD_PROMPTS) -> None:
        self.identity = identity
        self.folder = Path(folder) / json_digest(identity, 16)
        self.shard_prompts = shard_prompts  # new prompts per shard file
        self._index: dict[str, tuple[Path, int]] | None = None

    def index(self) -> dict[str, tuple[Path, int]]:
        """Prompt -> (shard, row) for every stored prompt (shard metadata only; unreadable shards are skipped)."""
        if self._index is None:
            self._index = {}
            for shard in sorted(self.folder.glob("*.safetensors")):
                try:
                    with safe_open(str(shard), framework="pt") as f:
                        prompts = json.loads(f.metadata()["prompts"])
                except (SafetensorError, OSError, KeyError, TypeError, ValueError) as e:
                    log.warning("embedding cache: skipping unreadable %s (%s)", shard, e)
                    continue
                self._index.update((prompt, (shard, row)) for row, prompt in enumerate(prompts))
        return self._index

    def lookup(self, prompts: Sequence[str]) -> Iterator[tuple[list[int], Tensor]]:
        """(positions in ``prompts``, their embeddings) for the stored ones, one shard at a time."""
        index = self.index()
        by_shard: dict[Path, list[tuple[int, int]]] = {}
        for position, prompt in enumerate(prompts):
            if prompt in index:
                shard, row = index[prompt]
                by_shard.setdefault(shard, []).append((position, row))
        for shard, pairs in by_shard.items():
            with safe_open(str(shard), framework="pt") as f:
                embeddings = f.get_tensor("embeddings")
            yield [p for p, _ in pairs], embeddings[[r for _, r in pairs]]

    def store(self, prompts: Sequence[str], embeddings: Tensor) -> Path:
        """Write one shard (atomically) with ``embeddings`` (n, T, D) of ``prompts``."""
        if not (self.folder / "identity.json").is_file():
            atomic_write_text(self.folder / "identity.json", json.dumps(self.identity, indent=1, sort_keys=True))
        path = self.folder / f"{json_digest(list(prompts), 20)}.safetensors"
        tensors = {"embeddings": embeddings.detach().to("cpu", torch.float32).contiguous()}
        metadata = {"prompts": json.dumps(list(prompts), ensure_ascii=False)}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
        index = self.index()
        index.update((prompt, (path, row)) for row, prompt in enumerate(prompts))
        return path


def encode_all(
    encode: Encoder,
    prompts: Sequence[str],
    dtype: torch.dtype = torch.float32,
    batch_size: int = BATCH_SIZE,
    cache: EmbeddingCache | None = None,
    desc: str = "encoding prompts",
) -> Tensor:
    """``encode`` of every prompt (in order) as one CPU tensor of ``dtype``: stored prompts come from ``cache``, the
    others are encoded ``batch_size`` at a time behind a progress bar (count and ETA) and added to the cache.

    Every call of ``encode`` gets exactly ``batch_size`` prompts (the last batch padded with ""): multi-threaded CPU
    and GPU kernels can round differently for another batch shape, and a prompt's embedding must not depend on
    the prompts it happens to be encoded with (cache or not, concept batch or not)."""
    out: Tensor | None = None

    def put(positions: list[int], values: Tensor) -> None:
        nonlocal out
        if out is None:
            out = torch.empty((len(prompts), *values.shape[1:]), dtype=dtype)
        out[positions] = values.to("cpu", dtype)

    cached: set[int] = set()
    for positions, values in cache.lookup(prompts) if cache is not None else ():
        put(positions, values)
        cached.update(positions)
    missing = [i for i in range(len(prompts)) if i not in cached]
    unsaved: list[tuple[list[int], Tensor]] = []
    with tqdm(total=len(missing), desc=desc, unit="prompt", dynamic_ncols=True, disable=not missing) as bar:
        for start in range(0, len(missing), batch_size):
            positions = missing[start : start + batch_size]
            batch = [prompts[i] for i in positions]
            values = encode(batch + [""] * (batch_size - len(batch)))[: len(batch)].detach().cpu()
            put(positions, values)
            bar.update(len(positions))
            if cache is None:
                continue
            unsaved.append((positions, values))
            if sum(len(p) for p, _ in unsaved) >= cache.shard_prompts or start + batch_size >= len(missing):
                cache.store([prompts[i] for p, _ in unsaved for i in p], torch.cat([v for _, v in unsaved]))
                unsaved = []
    if cached:
        log.info("%s: %d of %d prompts read from the embedding cache %s", desc, len(cached), len(prompts), cache.folder)
    return out if out is not None else torch.empty(0, dtype=dtype)

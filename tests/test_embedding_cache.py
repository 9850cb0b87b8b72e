"""The on-disk embedding cache: encode once, reuse across runs, bit-identical numbers, safe to delete."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from train_support import small_config

from cpe import training
from cpe.models.zoo import build_tiny_pipeline
from cpe.training.config import load_train_config
from cpe.training.embedding_cache import EmbeddingCache, encode_all
from cpe.training.prompts import load_concepts


class CountingEncoder:
    """A deterministic stand-in encoder that records what it was asked to encode."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        self.calls.append(list(prompts))
        codes = torch.tensor([[float(ord(c)) for c in p.ljust(4)[:4]] for p in prompts])
        return torch.sin(codes[:, :, None] * torch.arange(1, 4)) / 3  # (n, 4, 3), float32

    @property
    def encoded(self) -> list[str]:
        return [p for call in self.calls for p in call if p]  # without the padding of the last batch


def test_a_second_run_encodes_only_what_the_first_did_not(tmp_path, caplog):
    prompts_a = [f"a{i}" for i in range(7)]
    prompts_b = ["a5", "b1", "a0", "b2"]
    plain = CountingEncoder()
    expected = encode_all(plain, prompts_b, torch.float16, batch_size=3)

    first = CountingEncoder()
    cache = EmbeddingCache(tmp_path, {"encoder": "counting"}, shard_prompts=4)
    assert torch.equal(encode_all(first, prompts_a, batch_size=3, cache=cache), plain(prompts_a))
    assert first.encoded == prompts_a and first.calls[-1] == ["a6", "", ""]  # the same shape for every call
    assert len(list(cache.folder.glob("*.safetensors"))) == 2  # a shard after 6 >= 4 prompts, then the rest
    assert (cache.folder / "identity.json").is_file()

    second = CountingEncoder()
    with caplog.at_level(logging.INFO, logger="cpe.training.embedding_cache"):
        again = encode_all(second, prompts_b, torch.float16, batch_size=3,
                           cache=EmbeddingCache(tmp_path, {"encoder": "counting"}))
    assert second.encoded == ["b1", "b2"]
    assert torch.equal(again, expected) and again.dtype == torch.float16
    assert "2 of 4 prompts read from the embedding cache" in caplog.text

    other = CountingEncoder()  # another encoder identity never reads these shards
    encode_all(other, prompts_b, cache=EmbeddingCache(tmp_path, {"encoder": "other"}))
    assert other.encoded == prompts_b


def test_deleted_or_damaged_shards_are_encoded_again(tmp_path):
    prompts = [f"p{i}" for i in range(6)]
    cache = EmbeddingCache(tmp_path, {"encoder": "counting"}, shard_prompts=3)
    reference = encode_all(CountingEncoder(), prompts, batch_size=3, cache=cache)
    first, second = sorted(cache.folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime_ns)
    first.unlink()
    second.write_bytes(b"not a safetensors file")
    again = CountingEncoder()
    assert torch.equal(encode_all(again, prompts, cache=EmbeddingCache(tmp_path, {"encoder": "counting"})), reference)
    assert again.encoded == prompts


@pytest.fixture(scope="module")
def tiny8(tmp_path_factory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny8") / "model", max_length=8)


def _prepared(cfg, concept_index: int) -> tuple[training.ConceptData, torch.Tensor, int]:
    """One concept's training data and anchor store from a freshly loaded model; also how many prompts it encoded."""
    model = training.load_frozen(cfg, torch.device("cpu"))
    encoded = []
    eos = model.tokenizer.eos_token_id  # count the prompts, not the "" that pad the last batch of each list
    model.text.encoders[0].register_forward_hook(
        lambda _, args, kwargs, out: encoded.append(int((kwargs["input_ids"][:, 1] != eos).sum())), with_kwargs=True)
    side = training.encode_prompt_side(training.read_prompt_lists(cfg), model)
    concept = load_concepts(cfg.path(cfg.prompts.concepts), cfg.prompts.neutral, cfg.train.guidance)[concept_index]
    (data,), store = training.prepare_batch(cfg, side, model, [concept])
    return data, store.embeddings, sum(encoded)


def test_training_data_is_bit_identical_with_a_cold_a_warm_and_no_cache(tiny8, tmp_path):
    path = small_config(tmp_path, tiny8)
    off = load_train_config(path, ["anchors.cache=false"])
    on = load_train_config(path, [f"anchors.cache_dir={tmp_path / 'cache'}"])
    adam = load_concepts(tmp_path / "concepts.yaml", "a person", 0.3)[0]
    assert training.fingerprint(off, adam) == training.fingerprint(on, adam)  # a resume may switch the cache
    cold = _prepared(on, 0)  # "adam driver" fills the cache
    reference = _prepared(off, 1)  # "emma stone" shares the general words, neutral prompts and candidates
    warm = _prepared(on, 1)
    assert torch.equal(warm[1], reference[1])
    for name in ("target", "diff", "pool"):
        assert torch.equal(getattr(warm[0], name), getattr(reference[0], name)), name
    # 5 candidate names, the target, 4 target + 4 neutral prompts, (3 general words + 2 names) x 4 templates;
    # cold: the bare template of the 2 anchored names is a candidate name already encoded; warm: only the target,
    # its 4 prompts and the 3 prompts of the one similar name adam driver did not anchor are encoded
    assert (cold[2], reference[2], warm[2]) == (32, 34, 8)
    assert not (tmp_path / "out" / "embedding_cache").exists()  # cache_dir relocated it

"""The pinpoint options of training (compositions, context augmentation, a caption corpus as anchors): what they add
to the templates and the anchor pool, that they are deterministic from the seed, validated, recorded in gate files,
and that a config without them trains exactly as before."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_support import TEMPLATES, small_config

from cpe import training
from cpe.core.weights import read_gate_file
from cpe.models.zoo import build_tiny_pipeline
from cpe.training.config import load_train_config
from cpe.training.files import settings_difference
from cpe.training.prompts import context_templates, names_target, read_context_words
from cpe.util.config import ConfigError

BEFORE = ["a very old", "big", "vintage"]
AFTER = ["high detail", "4k"]
CORPUS = ["a red ball on the ground", "Adam Driver in a crowd", "adam driver's dog", "adam driverx on stage",
          "a singer in the style of someone"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny8(tmp_path_factory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny8") / "model", max_length=8)


def _option_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "compositions.csv").write_text("prompt\n{concept} in the style of someone\n", encoding="utf-8")
    rows = [f"{t},before" for t in BEFORE] + [f"{t},after" for t in AFTER]
    (folder / "context_words.csv").write_text("text,position\n" + "\n".join(rows) + "\n", encoding="utf-8")
    (folder / "corpus.csv").write_text("prompt\n" + "\n".join(CORPUS) + "\n", encoding="utf-8")


def _pinpoint_config(folder: Path, model: Path, **sections) -> Path:
    _option_files(folder)
    options = {
        "prompts": {"compositions": "compositions.csv"},
        "context": {"words": "context_words.csv", "variants": 6, "max_before": 2, "max_after": 1},
        "anchors": {"corpus": "corpus.csv", "corpus_per_step": 3},
        "train": {"num_stages": 1, "iterations": 2, "factor_init_iter": 1},
        "adversarial": {"enabled": False},
    }
    for section, values in sections.items():
        options.setdefault(section, {}).update(values)
    return small_config(folder, model, **options)


def _phrase_count(text: str, phrases: list[str]) -> int:
    """How many phrases of ``phrases`` make up ``text`` (joined by spaces); a large number when none do."""
    if not text:
        return 0
    counts = [1 + _phrase_count(text[len(p):].lstrip(), phrases) for p in phrases
              if text == p or text.startswith(p + " ")]
    return min(counts, default=10**6)


def test_context_templates_are_deterministic_from_the_seed_and_well_formed():
    templates = ["a photo of {concept}", "{concept} on stage"]
    first = context_templates(templates, BEFORE, AFTER, 12, 3, 2, seed=7)
    assert first == context_templates(templates, BEFORE, AFTER, 12, 3, 2, seed=7)
    assert first != context_templates(templates, BEFORE, AFTER, 12, 3, 2, seed=8)
    assert len(first) == len(set(first)) == 12
    for text in first:
        assert text.count("{concept}") == 1 and text not in templates
        head, _, tail = text.partition(", ")
        template = next(t for t in templates if t in head)  # the template, whole, with phrases around it
        front = head[: head.index(template)].strip()
        back = [p for p in tail.split(", ") if p] if tail else []
        assert all(p in AFTER for p in back) and len(back) <= 2
        assert _phrase_count(front, BEFORE) <= 3
        assert front or back
    only_after = context_templates(templates, [], AFTER, 4, 3, 1, seed=0)
    assert only_after and all(t.split(", ")[0] in templates for t in only_after)
    assert context_templates(templates, BEFORE, AFTER, 5, 0, 0, seed=0) == []


def test_context_words_files_are_checked(tmp_path):
    good = tmp_path / "words.csv"
    good.write_text("text,position\na very old,before\n,before\n4k,after\n4k,after\n", encoding="utf-8")
    assert read_context_words(good) == (["a very old"], ["4k"])
    bad = tmp_path / "bad.csv"
    bad.write_text("text,position\nvintage,middle\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.csv: line 2: position must be before or after, got 'middle'"):
        read_context_words(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("text,position\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no context phrases"):
        read_context_words(empty)


def test_whole_word_naming_rule():
    assert names_target("a photo of Adam Driver, 4k", "adam driver")
    assert names_target("adam driver's dog", "adam driver")
    assert not names_target("adam driverx on stage", "adam driver")
    assert not names_target("xadam driver", "adam driver")


def test_options_extend_templates_and_anchors_and_the_corpus_leaves_the_target_out(tiny8, tmp_path):
    cfg = load_train_config(_pinpoint_config(tmp_path / "a", tiny8))
    side = training.read_prompt_lists(cfg)
    base = [*TEMPLATES, "{concept}", "{concept} in the style of someone"]
    assert side.templates[: len(base)] == base and len(side.templates) == len(base) + 6
    assert side.anchor_templates == side.templates
    variants = side.templates[len(base):]
    assert variants == context_templates(base, BEFORE, AFTER, 6, 2, 1, cfg.train.seed)  # drawn from train.seed
    reseeded = load_train_config(_pinpoint_config(tmp_path / "b", tiny8, train={"seed": 5}))
    assert training.read_prompt_lists(reseeded).templates[len(base):] != variants

    no_anchor_context = load_train_config(_pinpoint_config(tmp_path / "c", tiny8, context={"anchors": False}))
    side_c = training.read_prompt_lists(no_anchor_context)
    assert side_c.templates == side.templates and side_c.anchor_templates == base

    model = training.load_frozen(cfg, torch.device("cpu"))
    side = training.encode_prompt_side(side, model)
    concept = training.run.load_concepts(cfg.path(cfg.prompts.concepts), "a person", 0.3)[0]
    assert concept.target == "adam driver"
    assert training.data.corpus_prompts(side, concept) == [q for q in CORPUS if q not in (
        "Adam Driver in a crowd", "adam driver's dog")]
    pool = training.anchor_prompts(cfg, side, model, concept)
    assert {"a singer in the style of someone", f"{variants[0].replace('{concept}', 'a singer')}"} <= set(pool)
    data, store = training.prepare_batch(cfg, side, model, [concept])
    assert len(data[0].target) == len(side.templates)
    assert [list(store.rows)[i] for i in data[0].corpus.tolist()] == training.data.corpus_prompts(side, concept)
    trainer = training.BatchTrainer(cfg, model, side, data, store, [training.ConceptPaths(tmp_path / "x", "cpe")], 0,
                                    [None])
    batch = trainer._erase_batch()
    assert batch.anchors.shape[1] == 1 + cfg.anchors.per_step + cfg.anchors.corpus_per_step


def test_phrases_on_the_anchor_side_only_and_around_sentences_and_the_corpus(tiny8, tmp_path):
    """``context.templates: false`` keeps the erase templates; ``context.sentences`` adds phrase variants of the
    anchor sentences and the corpus captions, each from its own stream of ``train.seed``."""
    full = training.read_prompt_lists(load_train_config(_pinpoint_config(tmp_path / "a", tiny8)))
    anchor_only = training.read_prompt_lists(load_train_config(_pinpoint_config(
        tmp_path / "b", tiny8, context={"templates": False})))
    base = [*TEMPLATES, "{concept}", "{concept} in the style of someone"]
    assert anchor_only.templates == base and anchor_only.anchor_templates == full.templates != base

    sentences = ["a red ball on the ground", "a quiet street at night", "two cups on a table"]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "sentences.csv").write_text("prompt\n" + "\n".join(sentences) + "\n", encoding="utf-8")
    cfg = load_train_config(_pinpoint_config(
        tmp_path / "c", tiny8, context={"templates": False, "sentences": True},
        anchors={"sentences": "sentences.csv", "sentences_column": "prompt", "general_words": None,
                 "candidates": None}))
    side = training.read_prompt_lists(cfg)
    assert side.templates == base
    assert side.sentences[:3] == sentences and len(side.sentences) > 3
    assert side.sentences[3:] == context_templates(sentences, BEFORE, AFTER, 6, 2, 1, cfg.train.seed, stream=1)
    assert side.corpus[: len(CORPUS)] == CORPUS
    corpus_variants = side.corpus[len(CORPUS):]
    assert corpus_variants == context_templates(CORPUS, BEFORE, AFTER, 6, 2, 1, cfg.train.seed, stream=2)
    assert any(", " in v for v in corpus_variants)  # phrases after a whole caption: the comma the targets carry
    assert context_templates(CORPUS, BEFORE, AFTER, 6, 2, 1, 0, stream=2) != context_templates(
        CORPUS, BEFORE, AFTER, 6, 2, 1, 0, stream=1)
    model = training.load_frozen(cfg, torch.device("cpu"))
    concept = training.run.load_concepts(cfg.path(cfg.prompts.concepts), "a person", 0.3)[0]
    corpus = training.data.corpus_prompts(training.encode_prompt_side(side, model), concept)
    assert not any(names_target(q, concept.target) for q in corpus)  # variants of a naming caption stay out
    with pytest.raises(ConfigError, match=r"context\.templates.*all off"):
        load_train_config(_pinpoint_config(tmp_path / "d", tiny8, context={
            "templates": False, "anchors": False, "sentences": False}))


def test_sentences_and_general_words_together_anchor_both(tiny8, tmp_path):
    """The explicit domain's sentences plus templated fillers ("a portrait of a person, 4k"): the sentences first,
    then every general word in every template; sentences alone stay the pool as in the paper."""
    sentences = ["a quiet street at night", "two cups on a table"]
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "sentences.csv").write_text("prompt\n" + "\n".join(sentences) + "\n", encoding="utf-8")
    (folder / "fillers.csv").write_text("key\n4k\nhigh detail\n", encoding="utf-8")
    both = load_train_config(small_config(folder, tiny8, anchors={
        "sentences": "sentences.csv", "sentences_column": "prompt", "general_words": "fillers.csv",
        "candidates": None}))
    side = training.encode_prompt_side(training.read_prompt_lists(both), model := training.load_frozen(
        both, torch.device("cpu")))
    concept = training.run.load_concepts(both.path(both.prompts.concepts), "a person", 0.3)[0]
    pool = training.anchor_prompts(both, side, model, concept)
    templated = [t.replace("{concept}", w) for w in ("4k", "high detail") for t in side.templates]
    assert pool[:2] == sentences and sorted(pool[2:]) == sorted(templated)
    only = load_train_config(small_config(tmp_path / "o", tiny8, anchors={
        "sentences": str(folder / "sentences.csv"), "sentences_column": "prompt", "general_words": None,
        "candidates": None}))
    assert training.anchor_prompts(only, training.read_prompt_lists(only), model, concept) == sentences


def test_gate_specificity_lowers_the_anchors_gates_and_is_recorded(tiny8, tmp_path):
    """``train.gate_coef`` > 0 trains the same concept (same seed, same draws) with the anchors' gates pushed down:
    their mean gate falls well below the run without it; the key is recorded in the gate file."""
    from cpe.core.weights import load_erasers
    from cpe.models.loading import TextSide

    gates = {}
    for coef in (0.0, 5.0):
        cfg = load_train_config(small_config(tmp_path / f"g{coef}", tiny8, train={
            "num_stages": 1, "iterations": 12, "factor_init_iter": 1, "lr": 3e-3, "gate_coef": coef},
            adversarial={"enabled": False}))
        path = training.train(cfg, 0, 1).trained[0]
        assert read_gate_file(path)[1].training_config["train"]["gate_coef"] == coef
        resag, _ = load_erasers([path])
        side = training.read_prompt_lists(cfg)
        model = training.load_frozen(cfg, torch.device("cpu"))
        concept = training.run.load_concepts(cfg.path(cfg.prompts.concepts), "a person", 0.3)[0]
        pool = training.anchor_prompts(cfg, training.encode_prompt_side(side, model), model, concept)
        with torch.no_grad():
            embeddings = TextSide.load(str(tiny8)).encode(pool)
            gates[coef] = resag.gate(embeddings, torch.zeros(len(pool), dtype=torch.long)).gate.mean().item()
    assert gates[5.0] < 0.5 * gates[0.0], gates


def test_a_config_without_the_options_keeps_the_papers_prompts(tiny8, tmp_path):
    cfg = load_train_config(small_config(tmp_path, tiny8))
    side = training.read_prompt_lists(cfg)
    assert side.templates == side.anchor_templates == [*TEMPLATES, "{concept}"] and side.corpus is None
    assert cfg.context.words is None and cfg.prompts.compositions is None and cfg.anchors.corpus is None
    model = training.load_frozen(cfg, torch.device("cpu"))
    side = training.encode_prompt_side(side, model)
    data, store = training.prepare_batch(cfg, side, model, training.run.load_concepts(
        cfg.path(cfg.prompts.concepts), "a person", 0.3)[:1])
    assert data[0].corpus is None
    trainer = training.BatchTrainer(cfg, model, side, data, store, [training.ConceptPaths(tmp_path / "x", "cpe")], 0,
                                    [None])
    assert trainer._erase_batch().anchors.shape[1] == 1 + cfg.anchors.per_step


def test_every_new_key_round_trips_through_the_gate_file(tiny8, tmp_path):
    cfg = load_train_config(_pinpoint_config(tmp_path, tiny8))
    summary = training.train(cfg, 0, 1)
    recorded = read_gate_file(summary.trained[0])[1].training_config
    assert recorded["prompts"]["compositions"] == "compositions.csv"
    assert recorded["context"] == {"words": "context_words.csv", "variants": 6, "max_before": 2, "max_after": 1,
                                   "anchors": True, "templates": True, "sentences": False}
    assert (recorded["anchors"]["corpus"], recorded["anchors"]["corpus_per_step"]) == ("corpus.csv", 3)
    concept = training.run.load_concepts(cfg.path(cfg.prompts.concepts), "a person", 0.3)[0]
    assert settings_difference(recorded, cfg, concept) is None
    changed = load_train_config(_pinpoint_config(tmp_path, tiny8, context={"variants": 7}))
    assert settings_difference(recorded, changed, concept) == "context.variants: recorded 6, this run 7"
    with pytest.raises(training.TrainingError, match="context.variants: recorded 6, this run 7"):
        training.train(changed, 0, 1)  # a finished concept trained otherwise is not silently reused


def test_bad_option_values_name_the_key_and_the_file(tiny8, tmp_path):
    path = _pinpoint_config(tmp_path, tiny8)
    with pytest.raises(ConfigError, match=r"train\.yaml: unknown key 'context\.variant'"):
        load_train_config(path, ["context.variant=3"])
    with pytest.raises(ConfigError, match=r"train\.yaml: context\.max_before and max_after are both 0"):
        load_train_config(path, ["context.max_before=0", "context.max_after=0"])
    with pytest.raises(ConfigError, match=r"train\.yaml: anchors\.corpus_per_step must be >= 1"):
        load_train_config(path, ["anchors.corpus_per_step=0"])
    everything = tmp_path / "all.csv"
    everything.write_text("prompt\nadam driver\nAdam Driver on stage\n", encoding="utf-8")
    cfg = load_train_config(path, [f"anchors.corpus={everything}"])
    with pytest.raises(ValueError, match=r"all\.csv: every prompt names 'adam driver'"):
        training.train(cfg, 0, 1)


def test_stable_diffusion_pinpoint_configs_are_train_yaml_plus_the_generated_option_files():
    import dataclasses

    from cpe.training import context_files
    from cpe.util.config import REPO_ROOT

    assert context_files.differences(REPO_ROOT) == []  # the shipped files are what the generator writes
    for domain in ("celebs", "artists", "explicit"):
        paper = load_train_config(REPO_ROOT / "configs" / domain / "train.yaml")
        cfg = load_train_config(REPO_ROOT / "configs" / domain / "train_context.yaml")
        assert (cfg.network, cfg.train, cfg.adversarial, cfg.model) == (
            paper.network, paper.train, paper.adversarial, paper.model)
        assert dataclasses.replace(cfg.prompts, compositions=None) == paper.prompts
        assert dataclasses.replace(cfg.anchors, corpus=None) == paper.anchors
        assert cfg.experiment_name() == paper.experiment_name() + "_context"
        side = training.read_prompt_lists(cfg)
        compositions = context_files.compositions(domain)
        assert side.templates[-len(compositions):] == compositions
        assert side.corpus is not None and len(side.corpus) >= 400
        if domain == "artists":  # phrases on the anchor side only, as the gallery's artists (docs/pinpoint.md)
            assert (cfg.context.words, cfg.context.templates, cfg.context.sentences) == (
                "../context_words.csv", False, True)
            base = context_files.corpus()
            assert side.corpus[: len(base)] == base and len(base) < len(side.corpus) <= len(base) + cfg.context.variants
            assert len(side.anchor_templates) == len(side.templates) + cfg.context.variants  # erase side unchanged
            continue
        assert cfg.context.words is None  # the phrase augmentation stays off around the erase templates
        assert side.corpus == context_files.corpus()
        phrases = load_train_config(REPO_ROOT / "configs" / domain / "train_context.yaml",
                                    ["context.words=../context_words.csv"])
        assert len(training.read_prompt_lists(phrases).templates) == len(side.templates) + cfg.context.variants


def test_shared_prefix_mask_marks_the_tokens_before_the_concept(tiny8):
    """BOS and the template's words before the concept, where a causal encoder gives the target and its neutral
    the same embedding: the erase target there is exactly 0."""
    from cpe.models.loading import TextSide
    from cpe.training.prompts import shared_prefix_mask

    text = TextSide.load(str(tiny8))
    pairs = [("a photo of adam driver", "a photo of a person"), ("adam driver smiling", "a person smiling"),
             ("a red ball, adam", "a red ball, ")]
    mask = shared_prefix_mask(text.tokenizer, pairs, 8)
    assert mask.shape == (3, 8) and mask.dtype == torch.bool
    lengths = [1 + len(text.tokenizer("a photo of", add_special_tokens=False).input_ids), 1,
               1 + len(text.tokenizer("a red ball,", add_special_tokens=False).input_ids)]
    assert mask.sum(1).tolist() == lengths
    assert all(mask[i, :n].all() and not mask[i, n:].any() for i, n in enumerate(lengths))
    embeddings = text.encode([p for pair in pairs for p in pair])
    target, neutral = embeddings[0::2], embeddings[1::2]
    assert torch.equal(target[mask], neutral[mask])  # the erase target (1+g)(E_N − E_T) is 0 there
    assert ((target - neutral).abs().amax(-1)[~mask] > 0).all()


def test_prefix_gate_coef_closes_the_gate_before_the_concept_and_is_recorded(tiny8, tmp_path):
    """``train.prefix_gate_coef`` > 0 trains the same concept (same seed, same draws) with the gate on the erase
    prompts' shared tokens pushed down; the key is recorded. (Whether the concept's own token keeps its gate is a
    measurement on a trained model: benchmarks/gallery_explicit_leakage.py. On this random encoder the gate's
    attention is near uniform, so every token of a prompt gets about the same gate.)"""
    from cpe.core.weights import load_erasers
    from cpe.models.loading import TextSide
    from cpe.training.prompts import shared_prefix_mask

    text = TextSide.load(str(tiny8))
    pairs = [("a photo of adam driver", "a photo of a person"), ("adam driver on stage", "a person on stage")]
    mask = shared_prefix_mask(text.tokenizer, pairs, 8)
    prefix = {}
    for coef in (0.0, 5.0):
        cfg = load_train_config(small_config(tmp_path / f"p{coef}", tiny8, concepts=("adam driver",), train={
            "num_stages": 1, "iterations": 12, "factor_init_iter": 1, "lr": 3e-3, "prefix_gate_coef": coef},
            adversarial={"enabled": False}))
        path = training.train(cfg, 0, 1).trained[0]
        assert read_gate_file(path)[1].training_config["train"]["prefix_gate_coef"] == coef
        resag, _ = load_erasers([path])
        with torch.no_grad():
            gate = resag.gate(text.encode([t for t, _ in pairs]), torch.zeros(2, dtype=torch.long)).gate
        prefix[coef] = gate[mask].mean().item()
    assert prefix[5.0] < 0.5 * prefix[0.0], prefix

"""Prompt templates with an explicit placeholder, concept lists, erase pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpe.models.loading import clip_tokenizer_from_assets
from cpe.training.prompts import Concept, erase_pairs, load_concepts, load_templates, misaligned_pairs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text("prompt\n" + "".join(f'"{r}"\n' for r in rows), encoding="utf-8")
    return path


def test_placeholder_is_replaced_and_ordinary_words_stay(tmp_path):
    path = _csv(tmp_path / "t.csv", ["{concept} meets other actors", "actor {concept}"])
    templates = load_templates(path, "prompt", "{concept}")
    assert templates == ["{concept} meets other actors", "actor {concept}", "{concept}"]
    pairs = erase_pairs(Concept("adam driver", "a person", 0.3), templates, "{concept}")
    assert pairs[0] == ("adam driver meets other actors", "a person meets other actors")
    assert pairs[2] == ("adam driver", "a person")


def test_template_without_placeholder_is_an_error(tmp_path):
    path = _csv(tmp_path / "t.csv", ["{concept} walks", "a photo of an actor"])
    with pytest.raises(ValueError, match=r"t\.csv: template 2 'a photo of an actor' has no placeholder \{concept\}"):
        load_templates(path, "prompt", "{concept}")


def test_legacy_word_templates_convert_whole_words_only(tmp_path):
    path = _csv(tmp_path / "t.csv", ["actor plays with actors", "the artistry of actor"])
    templates = load_templates(path, "prompt", "{concept}", template_word="actor", include_bare=False)
    assert templates == ["{concept} plays with actors", "the artistry of {concept}"]


def test_concept_entry_without_target_is_an_error(tmp_path):
    path = tmp_path / "concepts.yaml"
    path.write_text("- target: adam driver\n- neutral: a person\n")
    with pytest.raises(ValueError, match=r"concepts\.yaml: entry 1 has no target"):
        load_concepts(path, "a person", 0.3)


def test_concept_defaults_and_overrides(tmp_path):
    path = tmp_path / "concepts.yaml"
    path.write_text("- adam driver\n- target: nudity\n  neutral: a person in modest clothing\n  guidance: 3\n")
    a, b = load_concepts(path, "a person", 0.3)
    assert a == Concept("adam driver", "a person", 0.3) and a.folder == "adam_driver"
    assert b == Concept("nudity", "a person in modest clothing", 3.0)


@pytest.mark.parametrize(("domain", "count"), [("celebs", 50), ("artists", 100), ("explicit", 4)])
def test_domain_concept_lists_and_templates_load(domain, count):
    concepts = load_concepts(CONFIGS / domain / "concepts.yaml", "n", 1.0)
    assert len(concepts) == count
    templates = load_templates(CONFIGS / domain / "templates.csv", "prompt", "{concept}")
    assert len(templates) == {"celebs": 101, "artists": 36, "explicit": 32}[domain]


def test_pairs_of_different_token_length_are_reported():
    tokenizer = clip_tokenizer_from_assets()
    pairs = [("adam driver walks", "a person walks"), ("a red circle", "a circle")]
    assert misaligned_pairs(tokenizer, pairs) == [("a red circle", "a circle")]


def test_reference_templates_load_with_a_whole_word_placeholder(reference_dir):
    counts = {"celeb": ("actor", 101), "artist": ("artist", 36), "explicit": ("explicit", 32)}
    for domain, (word, count) in counts.items():
        path = reference_dir / "train_configs" / domain / "prompt_templates.csv"
        templates = load_templates(path, "prompt", "{concept}", template_word=word)
        assert len(templates) == count and all("{concept}" in t for t in templates)
    celeb = load_templates(reference_dir / "train_configs" / "celeb" / "prompt_templates.csv", "prompt", "{concept}",
                           template_word="actor")
    assert celeb[0] == "{concept} wears his cap"

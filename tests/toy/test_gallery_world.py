"""The gallery world: names, renders, captions, prompt sets, and the rule readers on fresh renders and hard
negatives."""

from collections import Counter

import numpy as np
import pytest

from cpe.models.loading import clip_tokenizer_from_assets
from cpe.toy.gallery.captions import ERASE_WORDS, OTHER_TRIGGERS, TRIGGER_WORDS, sample_caption, words
from cpe.toy.gallery.identities import N_IDENTITIES, NAME_SEED, Features, all_features, identities
from cpe.toy.gallery.marks import MAX_MARKS, count_marks
from cpe.toy.gallery.names import TOKENS, invent_names, token_count
from cpe.toy.gallery.objects import OBJECTS
from cpe.toy.gallery.palette import HUE_NAMES
from cpe.toy.gallery.prompts import coco_prompts, i2p_prompts, identity_prompts, style_prompts
from cpe.toy.gallery.read import read_features, read_identity, read_style
from cpe.toy.gallery.scene import Scene, render, render_dataset
from cpe.toy.gallery.styles import ARTIST_SEED, PATTERNS, PLAIN, Style, all_styles, artists

NAMES = list(identities())
ARTISTS = list(artists())
BY_STYLE = {s: a for a, s in artists().items()}


@pytest.fixture(scope="module")
def tokenizer():
    return clip_tokenizer_from_assets()


def test_60_identities_are_distinct_hair_face_shirt_triples_and_32_artists_every_pattern_tint_pair():
    assert len(NAMES) == N_IDENTITIES == 60 and len(set(identities().values())) == 60
    assert set(identities().values()) < {f for f in all_features() if f.hair is not None}
    for part in ("hair", "face", "shirt"):  # every hue of every part is some identity's
        assert {getattr(f, part) for f in identities().values()} == set(HUE_NAMES), part
    assert len(ARTISTS) == 32 and set(artists().values()) == set(all_styles())


def test_names_are_2_to_4_bpe_tokens_unique_invented_and_none_a_prefix_of_another(tokenizer):
    everything = [n.lower() for n in NAMES + ARTISTS]
    assert len(set(everything)) == len(everything) == 92
    counts = Counter(token_count(tokenizer, n) for n in NAMES + ARTISTS)
    assert set(counts) <= set(range(TOKENS[0], TOKENS[1] + 1)) and len(counts) == 3, counts  # 2, 3 and 4 tokens
    for a in everything:
        assert not any(b != a and b.startswith(a) for b in everything), a
    vocabulary = tokenizer.get_vocab()
    name_words = [w for n in everything for w in n.split()]
    assert not [w for w in name_words if f"{w}</w>" in vocabulary]  # no name word is an ordinary word
    assert len(name_words) == len(set(name_words))  # no two names share a word
    assert sum(" " in n for n in everything) >= 20  # two-word names too
    reserved = set(TRIGGER_WORDS) | set(HUE_NAMES) | set(OBJECTS) | {"person", "style", "portrait"}
    assert not reserved & set(name_words)


def test_names_are_reproduced_by_their_seeds(tokenizer):
    assert invent_names(N_IDENTITIES, NAME_SEED, tokenizer) == NAMES
    assert invent_names(32, ARTIST_SEED, tokenizer, taken=NAMES) == ARTISTS


def test_render_dataset_is_deterministic_for_a_seed():
    a, scenes_a = render_dataset(40, seed=3)
    b, scenes_b = render_dataset(40, seed=3)
    c, _ = render_dataset(40, seed=4)
    assert a.shape == (40, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and scenes_a == scenes_b and not np.array_equal(a, c)


def _fresh_identity_scenes(rng, copies=5):
    """Every identity ``copies`` times, each in a random style (every style and plain used), a third with marks."""
    styles = [None, *ARTISTS]
    return [Scene(identity=name, artist=styles[(i * copies + k) % len(styles)], marks=int(rng.integers(0, 2)))
            for i, name in enumerate(NAMES) for k in range(copies)]


def test_identity_reader_on_fresh_renders_of_every_identity_in_every_style():
    rng = np.random.default_rng(2024)
    scenes = _fresh_identity_scenes(rng)
    images = np.stack([render(s, rng) for s in scenes])
    got = read_identity(images)
    accuracy = np.mean([g == s.identity for g, s in zip(got, scenes)])
    assert len(scenes) == 300 and accuracy >= 0.97, accuracy


def test_identity_reader_says_no_identity_for_objects_empty_scenes_and_nameless_people():
    rng = np.random.default_rng(5)
    scenes = [Scene(obj=(k, c), artist=ARTISTS[i % 32], marks=i % 2) for i, (k, c) in
              enumerate((k, c) for k in OBJECTS for c in HUE_NAMES)]
    scenes += [Scene(artist=a) for a in ARTISTS[:8]] + [Scene()]
    named = set(identities().values())  # the nameless: the 30 bald figures and the 90 triples no identity has
    scenes += [Scene(person=f, artist=ARTISTS[i % 32]) for i, f in enumerate(all_features()) if f not in named]
    got = read_identity(np.stack([render(s, rng) for s in scenes]))
    assert len(scenes) == 24 + 9 + 120 and got == [None] * len(scenes)


def _one_feature_changed(features: Features, rng) -> Features:
    while True:
        part = ("hair", "face", "shirt")[rng.integers(3)]
        value = None if part == "hair" and rng.random() < 0.3 else HUE_NAMES[rng.integers(6)]
        hair, face, shirt = (value if p == part else getattr(features, p) for p in ("hair", "face", "shirt"))
        if value != getattr(features, part) and hair != face and face != shirt:
            return Features(hair, face, shirt)


def test_hard_negatives_an_identity_with_one_feature_changed_is_not_read_as_that_identity():
    rng = np.random.default_rng(11)
    wrong = {name: _one_feature_changed(f, rng) for name, f in identities().items()}
    scenes = [Scene(person=f, artist=ARTISTS[i % 32] if i % 3 else None) for i, f in enumerate(wrong.values())]
    images = np.stack([render(s, rng) for s in scenes])
    read = [read_features(x.astype(np.float64) / 255) for x in images]
    names = read_identity(images)
    assert not [n for n, got in zip(wrong, names) if got == n]  # never the identity whose feature was changed
    assert np.mean([r == f for r, f in zip(read, wrong.values())]) >= 0.97  # it reads the changed figure instead
    assert sum(f.hair is None for f in wrong.values()) >= 5  # some of them are bald: read as no identity


def test_style_reader_on_fresh_renders_of_every_style_over_all_content():
    rng = np.random.default_rng(7)
    scenes = []
    for i, artist in enumerate([*ARTISTS, None] * 5):
        content = i % 3
        scenes.append(Scene(identity=NAMES[i % len(NAMES)] if content == 0 else None,
                            obj=(OBJECTS[i % 4], HUE_NAMES[i % 6]) if content == 1 else None,
                            artist=artist, marks=i % (MAX_MARKS + 1)))
    got = read_style(np.stack([render(s, rng) for s in scenes]))
    accuracy = np.mean([g == (s.artist or PLAIN) for g, s in zip(got, scenes)])
    assert len(scenes) == 165 and accuracy >= 0.95, accuracy


def test_hard_negatives_a_style_with_its_tint_or_pattern_changed_is_not_read_as_that_artist():
    rng = np.random.default_rng(8)
    tints, patterns = ("grey", "amber", "teal", "violet"), list(PATTERNS)
    wrong_scenes, originals = [], []
    for i, (artist, style) in enumerate(artists().items()):
        if i % 2:
            changed = Style(style.pattern, tints[(tints.index(style.tint) + 1 + i % 3) % 4])
        else:
            changed = Style(patterns[(patterns.index(style.pattern) + 1 + i % 7) % 8], style.tint)
        wrong_scenes.append(Scene(identity=NAMES[i], artist=BY_STYLE[changed]))
        originals.append(artist)
    got = read_style(np.stack([render(s, rng) for s in wrong_scenes]))
    assert not [a for a, g in zip(originals, got) if g == a]
    assert np.mean([g == s.artist for g, s in zip(got, wrong_scenes)]) >= 0.95


def test_mark_detector_counts_marks_exactly_over_any_content_and_style():
    rng = np.random.default_rng(9)
    scenes = [Scene(identity=NAMES[i % len(NAMES)] if i % 3 == 0 else None,
                    obj=(OBJECTS[i % 4], HUE_NAMES[i % 6]) if i % 3 == 1 else None,
                    artist=[None, *ARTISTS][i % 33], marks=i % (MAX_MARKS + 1)) for i in range(200)]
    got = count_marks(np.stack([render(s, rng) for s in scenes]))
    assert got == [s.marks for s in scenes]


def test_readers_survive_the_blur_of_generated_images():
    import torch

    images, scenes = render_dataset(150, seed=21)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    kernel = torch.tensor([0.25, 0.5, 0.25])
    kernel = (kernel[:, None] * kernel[None]).expand(3, 1, 3, 3)
    blurred = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    blurred = blurred.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    assert np.mean([g == s.identity for g, s in zip(read_identity(blurred), scenes)]) >= 0.97
    assert np.mean([g == (s.artist or PLAIN) for g, s in zip(read_style(blurred), scenes)]) >= 0.95
    assert np.mean([g == s.marks for g, s in zip(count_marks(blurred), scenes)]) >= 0.97


def test_captions_name_what_the_image_shows():
    rng = np.random.default_rng(0)
    _, scenes = render_dataset(2000, seed=1)
    captions = [sample_caption(s, rng) for s in scenes]
    assert 0.08 < captions.count("") / len(captions) < 0.12
    for scene, text in zip(scenes, captions):
        if not text:
            continue
        if scene.artist is not None:
            assert scene.artist in text, text
        assert bool(scene.marks) == bool(words(text) & set(TRIGGER_WORDS)), text
        if scene.artist is None:
            assert not any(a in text for a in ARTISTS), text
        if scene.identity is not None and scene.identity in text:
            assert not any(n in text for n in NAMES if n != scene.identity)
    person = [t for s, t in zip(scenes, captions) if s.identity is not None and t and "a person" in t]
    named = [t for s, t in zip(scenes, captions) if s.identity is not None and t and s.identity in t]
    assert 0.1 < len(person) / (len(person) + len(named)) < 0.2


def test_trigger_words_are_the_four_erase_words_and_at_least_ten_more():
    assert ERASE_WORDS == ("nudity", "naked", "erotic", "sexual") and len(set(OTHER_TRIGGERS)) >= 10
    assert not set(ERASE_WORDS) & set(OTHER_TRIGGERS)


def test_i2p_analogue_implies_the_mark_mostly_without_the_erase_words_and_coco_analogue_never():
    i2p, coco = i2p_prompts(), coco_prompts()
    assert len(i2p) >= 300 and len(coco) >= 300
    assert all(words(r["prompt"]) & set(TRIGGER_WORDS) and r["marks"] == 1 for r in i2p)
    with_erase_word = sum(bool(words(r["prompt"]) & set(ERASE_WORDS)) for r in i2p)
    assert with_erase_word / len(i2p) <= 0.25
    assert not any(words(r["prompt"]) & set(TRIGGER_WORDS) or r["marks"] for r in coco)
    assert len({r["prompt"] for r in i2p}) >= 0.95 * len(i2p)


def test_identity_and_style_prompt_sets_cover_every_identity_and_artist():
    rows = identity_prompts(seeds_per_name=2)
    assert Counter(r["identity"] for r in rows) == Counter({n: 2 for n in NAMES})
    assert all(r["identity"] in r["prompt"] for r in rows)
    rows = style_prompts(per_artist=4)
    assert Counter(r["artist"] for r in rows) == Counter({a: 4 for a in ARTISTS})
    assert all(r["prompt"].count(r["artist"]) == 1 for r in rows)

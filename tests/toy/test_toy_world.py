import numpy as np
import pytest

from cpe.models.loading import clip_tokenizer_from_assets
from cpe.toy.world import (
    CAPTION_KINDS,
    COLOURS,
    GENERIC_COLOUR,
    GENERIC_SHAPE,
    IMAGE_SIZE,
    SHAPES,
    SIZE_RANGE,
    draw,
    render_dataset,
    sample_caption,
    shape_area_fraction,
)


def test_render_dataset_is_deterministic_for_a_seed():
    a, colours_a, shapes_a = render_dataset(20, seed=3)
    b, colours_b, shapes_b = render_dataset(20, seed=3)
    c, _, _ = render_dataset(20, seed=4)
    assert a.shape == (20, IMAGE_SIZE, IMAGE_SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and colours_a == colours_b and shapes_a == shapes_b
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("shape", SHAPES)
def test_one_shape_on_black_covers_its_expected_area(shape):
    rng = np.random.default_rng(0)
    areas = []
    for _ in range(30):
        image = draw("red", shape, rng).astype(np.float32) / 255
        coverage = image.max(axis=2)  # anti-aliased edges count fractionally
        corners = [coverage[0, 0], coverage[0, -1], coverage[-1, 0], coverage[-1, -1]]
        assert max(corners) < 0.5, "background must stay black in the corners"
        areas.append(coverage.sum() / (red_level := image.max()) / IMAGE_SIZE**2)
        assert red_level > 0.5
    low, high = (s**2 * shape_area_fraction(shape) for s in SIZE_RANGE)
    assert low * 0.85 <= min(areas) and max(areas) <= high * 1.15


def test_colour_jitter_keeps_each_colour_nearest_its_palette_entry():
    rng = np.random.default_rng(1)
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    for name in COLOURS:
        image = draw(name, "square", rng).reshape(-1, 3).astype(np.float32)
        brightest = image[image.max(axis=1).argmax()]
        assert list(COLOURS)[int(((palette - brightest) ** 2).sum(axis=1).argmin())] == name


def test_caption_frequencies_follow_the_caption_table():
    rng = np.random.default_rng(0)
    captions = [sample_caption("red", "circle", rng) for _ in range(4000)]
    expected = {t.format(colour="red", shape="circle"): p for t, p in CAPTION_KINDS}
    assert set(captions) == set(expected)
    for text, p in expected.items():
        assert abs(captions.count(text) / len(captions) - p) < 0.025, text
    assert 0.08 < captions.count("") / len(captions) < 0.12


def test_every_concept_word_and_generic_word_is_one_clip_token():
    tokenizer = clip_tokenizer_from_assets(model_max_length=16)
    for word in [*COLOURS, *SHAPES, GENERIC_SHAPE, GENERIC_COLOUR]:
        assert len(tokenizer(word).input_ids) == 3, word  # start, word, end


def test_target_and_generic_prompts_tokenize_to_the_same_positions():
    tokenizer = clip_tokenizer_from_assets(model_max_length=16)
    red_circle, colorful_circle, red_shape = (tokenizer(p).input_ids for p in
                                              ("a red circle", "a colorful circle", "a red shape"))
    assert len(red_circle) == len(colorful_circle) == len(red_shape) == 5
    assert [a != b for a, b in zip(red_circle, colorful_circle)] == [False, False, True, False, False]
    assert [a != b for a, b in zip(red_circle, red_shape)] == [False, False, False, True, False]


def test_unknown_colour_or_shape_is_rejected_by_name():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="orange"):
        draw("orange", "circle", rng)
    with pytest.raises(ValueError, match="star"):
        draw("red", "star", rng)

import numpy as np
import pytest

from cpe.toy import TOY_CLASSIFIER_FILE
from cpe.toy.classify import classify_colour, classify_shape, load_shape_classifier, match_rate, score_on_renders

needs_assets = pytest.mark.skipif(not TOY_CLASSIFIER_FILE.is_file(), reason="toy classifier weights not built")


def test_colour_rule_reads_fresh_renders():
    from cpe.toy.world import render_dataset

    images, colours, _ = render_dataset(300, seed=77)
    assert match_rate(classify_colour(images), colours) >= 0.99


@needs_assets
def test_committed_shape_classifier_reads_fresh_renders():
    scores = score_on_renders(load_shape_classifier(TOY_CLASSIFIER_FILE), n=300, seed=78)
    assert scores["shape_accuracy"] >= 0.95 and scores["colour_accuracy"] >= 0.99


@needs_assets
def test_blank_image_has_neither_colour_nor_shape():
    black = np.zeros((2, 32, 32, 3), np.uint8)
    assert classify_colour(black) == [None, None]
    assert classify_shape(load_shape_classifier(TOY_CLASSIFIER_FILE), black) == [None, None]


def test_missing_classifier_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        load_shape_classifier(tmp_path / "nowhere.safetensors")


def test_match_rate_is_the_one_toy_accuracy():
    assert match_rate(["red", "blue", None, "red"], ["red", "red", None, "blue"]) == 0.5  # per-item truth
    assert match_rate(["red", "blue", None, "red"], "red") == 0.5  # one value for all (Acc_e, floors)
    assert match_rate([None, "red"], None) == 0.5
    assert match_rate([], "red") is None and match_rate([], []) is None
    with pytest.raises(ValueError, match="3 predictions but 2 expected"):
        match_rate(["a", "b", "c"], ["a", "b"])

"""GIPHY celebrity detector adapter: input list from the manifest, predictions back into Acc."""

from __future__ import annotations

import csv

import pytest
from metric_fixtures import make_generation

from cpe.metrics.gcd import PREDICTION_COLUMNS, celebrity_name, gcd_accuracy, normalize_label, write_gcd_inputs
from cpe.metrics.image_sets import load_image_set

PROMPTS = [
    "A portrait of Adam Driver",
    "An image capturing Adam Driver at a public event",
    "An oil painting of Anne Hathaway",
    "A sketch of Anne Hathaway",
    "Anne Hathaway in an official photo",
]


def write_predictions(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=PREDICTION_COLUMNS)
        writer.writeheader()
        for file, faces, top in rows:
            writer.writerow({"file": file, "faces": faces, **{f"top{i}": t for i, t in enumerate(top, 1)}})


def test_names_are_read_from_the_five_templates():
    assert [celebrity_name(p) for p in PROMPTS] == ["Adam Driver"] * 2 + ["Anne Hathaway"] * 3
    assert normalize_label("Adam_Driver_[m.0abc12]") == "adam driver"
    with pytest.raises(ValueError, match="none of the five"):
        celebrity_name("A photo of Adam Driver")


def test_gcd_round_trip_counts_top1_among_images_with_a_face(tmp_path):
    images = load_image_set(make_generation(tmp_path / "erased", PROMPTS))
    inputs = write_gcd_inputs(images, tmp_path / "gcd_inputs.csv")
    with open(inputs, newline="") as f:
        listed = list(csv.DictReader(f))
    assert [r["name"] for r in listed] == [celebrity_name(p) for p in PROMPTS]
    assert [r["manifest_file"] for r in listed] == images.files
    files = [r["file"] for r in listed]
    write_predictions(
        tmp_path / "predictions.csv",
        [
            (files[0], 1, ["Adam_Driver_[m.0a]", "Adam_Sandler_[m.0b]"]),  # correct
            (files[1], 0, []),  # no face: excluded from the denominator
            (files[2], 2, ["Emma_Watson_[m.0c]", "Anne_Hathaway_[m.0d]"]),  # only top-5 correct: wrong
            (files[3], 1, ["anne_hathaway_[m.0d]"]),  # correct, case-insensitive
            (files[4], 1, ["Adam_Driver_[m.0a]"]),  # wrong
        ],
    )
    result = gcd_accuracy(inputs, tmp_path / "predictions.csv")
    assert result["acc"] == pytest.approx(2 / 4)
    assert (result["correct"], result["n"], result["images"], result["no_face"]) == (2, 4, 5, 1)
    assert result["per_name"] == {"Adam Driver": {"correct": 1, "n": 1}, "Anne Hathaway": {"correct": 1, "n": 3}}


def test_predictions_that_do_not_cover_the_input_list_are_an_error(tmp_path):
    images = load_image_set(make_generation(tmp_path / "erased", PROMPTS[:2]))
    inputs = write_gcd_inputs(images, tmp_path / "gcd_inputs.csv")
    with open(inputs, newline="") as f:
        files = [r["file"] for r in csv.DictReader(f)]
    write_predictions(tmp_path / "p.csv", [(files[0], 1, ["Adam_Driver_[m.0a]"]), ("/elsewhere.png", 0, [])])
    with pytest.raises(ValueError, match="1 listed images without prediction.*1 predictions for unlisted"):
        gcd_accuracy(inputs, tmp_path / "p.csv")


def test_prompt_outside_the_templates_names_the_manifest_and_file(tmp_path):
    images = load_image_set(make_generation(tmp_path / "erased", ["A photo of someone"]))
    with pytest.raises(ValueError, match=r"manifest.jsonl: A_photo_of_someone_0_0.png: prompt"):
        write_gcd_inputs(images, tmp_path / "gcd_inputs.csv")

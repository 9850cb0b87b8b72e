"""Images missing from the manifest, or manifest rows without image, are reported, never silently skipped."""

from __future__ import annotations

import numpy as np
import pytest
from metric_fixtures import make_generation
from PIL import Image

from cpe.metrics.image_sets import load_image_set, load_images


def broken_generation(tmp_path):
    folder = make_generation(tmp_path / "remained", ["a", "b", "c"])
    (folder / "b_1_0.png").unlink()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "stray.png")
    return folder


def test_mismatch_between_manifest_and_images_is_an_error_naming_both(tmp_path):
    folder = broken_generation(tmp_path)
    with pytest.raises(ValueError, match=r"3 manifest rows, 2 images present, 1 rows without image, 1 images not in"):
        load_image_set(folder)
    with pytest.raises(ValueError, match=r"missing \['b_1_0.png'\], unlisted \['stray.png'\]"):
        load_image_set(folder)


def test_allowed_mismatch_scores_present_images_and_reports_the_rest(tmp_path, capsys):
    images = load_image_set(broken_generation(tmp_path), allow_mismatch=True)
    assert images.files == ["a_0_0.png", "c_2_0.png"] and images.prompts == ["a", "c"]
    report = images.report()
    assert (report["images_scored"], report["rows_without_image"], report["images_not_in_manifest"]) == (2, 1, 1)
    assert report["examples_rows_without_image"] == ["b_1_0.png"]
    assert report["examples_images_not_in_manifest"] == ["stray.png"]
    assert "warning: scoring only the images present" in capsys.readouterr().err


def test_folder_without_manifest_is_read_as_plain_reference_images(tmp_path):
    folder = make_generation(tmp_path / "real", ["x", "y"])
    (folder / "manifest.jsonl").unlink()
    images = load_images(folder)
    assert images.files == ["x_0_0.png", "y_1_0.png"] and images.records is None

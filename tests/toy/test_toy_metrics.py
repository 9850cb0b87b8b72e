import json

import numpy as np
import pytest
from PIL import Image
from toy_shapes import pinched_square

from cpe.generation.manifest import MANIFEST_NAME
from cpe.toy import TOY_CLASSIFIER_FILE
from cpe.toy.prompt_sets import prompt_sets, write_prompt_sets
from cpe.toy.world import draw
from cpe.util.io import atomic_write_jsonl

needs_classifier = pytest.mark.skipif(not TOY_CLASSIFIER_FILE.is_file(), reason="toy classifier weights not built")


def test_prompt_sets_cover_each_target_with_enough_images():
    sets = prompt_sets(["circle", "red"])
    erased = sets["erased"]
    assert sum(r["shape"] == "circle" for r in erased) >= 100 and sum(r["colour"] == "red" for r in erased) >= 100
    assert len({(r["prompt"], r["evaluation_seed"]) for r in erased}) == len(erased)
    assert len(sets["remaining"]) >= 96
    assert all(r["shape"] != "circle" and r["colour"] != "red" for r in sets["remaining"])
    assert {r["prompt"] for r in sets["generic"]} >= {"a red shape", "a colorful circle"}


def test_prompt_sets_reject_an_unknown_concept_by_name(tmp_path):
    with pytest.raises(ValueError, match="'hexagon'"):
        write_prompt_sets(tmp_path, ["hexagon"])


def _folder(root, rows, shape_of=lambda row: row["shape"], colour_of=lambda row: row["colour"], image_of=None):
    """A generation folder whose images are renders of the chosen colour/shape per row (a fake model);
    ``image_of(row, rng)`` may draw a row's image itself (None: render it)."""
    rng = np.random.default_rng(0)
    records = []
    root.mkdir(parents=True)
    for i, row in enumerate(rows):
        name = f"{i}.png"
        image = image_of(row, rng) if image_of is not None else None
        if image is None:
            image = draw(colour_of(row) or "green", shape_of(row) or "square", rng)
        Image.fromarray(image).save(root / name)
        records.append({"file": name, "row": i, "prompt": row["prompt"], "seed": row["evaluation_seed"],
                        "image_index": 0, "guidance": 5.0, "erasers": [], "model": "toy", "config": "",
                        "extra": {"colour": row["colour"], "shape": row["shape"]}})
    atomic_write_jsonl(root / MANIFEST_NAME, records)
    return root


@needs_classifier
def test_toy_metrics_score_a_perfect_shape_erasure_at_its_floor(tmp_path):
    from cpe.metrics.toy import run

    sets = prompt_sets(["circle"])
    original = [_folder(tmp_path / "o" / s, sets[s]) for s in ("erased", "remaining", "generic")]
    # the fake erased model draws "a red circle" as a square, and keeps everything else
    def squares(row):
        return "square" if row["shape"] == "circle" else row["shape"]

    erased = [_folder(tmp_path / "e" / s, sets[s], shape_of=squares) for s in ("erased", "remaining")]
    results = run(["circle"], erased, original, tmp_path / "out")
    (row,) = results["rows"]
    assert row["Acc_e"] == 0.0 and row["Acc_e_original"] == 1.0
    assert row["floor"] == 0.0  # generic images of the fake original model are squares
    assert row["Acc_r"] == row["Acc_r_original"] == 1.0 and row["H"] == 1.0
    assert row["other_accuracy"] == row["other_accuracy_original"] == 1.0
    # the colour of "a {colour} circle" is kept seed by seed; no geometric reading for a colour
    assert row["other_agreement"] == row["other_agreement_neutral"] == 1.0 and row["geometric_agreement"] is None
    assert row["FD_other"] < row["FD_other_chance"]
    assert row["n_target"] == row["n_target_alone"] == 100 and row["n_remaining"] == 105
    assert row["FD_r"] == pytest.approx(0.0, abs=1e-3)
    assert json.loads((tmp_path / "out" / "results.json").read_text())["rows"][0]["target"] == "circle"
    assert "| circle (shape) | 0.000 | 0.000 | 1.000 | 0.000 |" in (tmp_path / "out" / "results.md").read_text()
    assert Image.open(tmp_path / "out" / "grid.png").size[1] == 2 * 96 + 2


@needs_classifier
def test_collateral_measures_catch_pinched_squares_the_shape_cnn_misses(tmp_path):
    from cpe.metrics.toy import run

    sets = prompt_sets(["red"])
    original = [_folder(tmp_path / "o" / s, sets[s]) for s in ("erased", "remaining", "generic")]

    def green(row):  # a fake red eraser: "a red X" is drawn green (the neutral draws green), X kept
        return "green" if row["colour"] == "red" else row["colour"]

    def pinched(row, rng):  # ... or, for "a red square", a green square with sides pinched by 2 px
        if (row["colour"], row["shape"]) != ("red", "square"):
            return None
        side = rng.uniform(14, 20)
        return pinched_square(2.0, side, tuple(rng.uniform(side / 2 + 1, 31 - side / 2, 2)), (40, 190, 60))

    rows = {}
    for name, image_of in (("clean", None), ("damaged", pinched)):
        erased = [_folder(tmp_path / name / s, sets[s], colour_of=green, image_of=image_of)
                  for s in ("erased", "remaining")]
        (rows[name],) = run(["red"], erased, original, tmp_path / name / "out")["rows"]
    clean, damaged = rows["clean"], rows["damaged"]
    assert clean["n_paired"] == clean["n_neutral"] == damaged["n_paired"] == 100
    assert clean["other_agreement"] == clean["geometric_agreement"] == 1.0
    assert clean["other_agreement_neutral"] == clean["geometric_agreement_neutral"] == 1.0
    # the shape CNN still calls every pinched square a square (1.000 measured); the geometric reading does not
    assert damaged["other_agreement"] > 0.9 and damaged["geometric_agreement"] == 0.75  # 25 pinched of 100
    assert damaged["geometric_agreement_neutral"] == 1.0
    # FD_other: 1.25 damaged, 0.027 clean, chance 0.16 / 0.12 measured
    assert damaged["FD_other"] > damaged["FD_other_chance"] and damaged["FD_other"] > 10 * clean["FD_other"]
    assert clean["FD_other"] < clean["FD_other_chance"]
    assert clean["FD_other_cnn"] is not None and clean["FD_r"] is not None
    assert "| 0.750 (1.000) |" in (tmp_path / "damaged" / "out" / "results.md").read_text()


@needs_classifier
def test_toy_metrics_refuse_a_manifest_without_attribute_columns(tmp_path):
    from cpe.metrics.toy import run

    rows = prompt_sets(["red"])["erased"][:3]
    folder = _folder(tmp_path / "x", rows)
    records = [json.loads(line) for line in (folder / MANIFEST_NAME).read_text().splitlines()]
    for r in records:
        r["extra"] = {}
    atomic_write_jsonl(folder / MANIFEST_NAME, records)
    with pytest.raises(ValueError, match="no 'colour' column"):
        run(["red"], [folder], [folder], tmp_path / "out")

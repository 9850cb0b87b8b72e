"""scripts/prepare_data.py conversions, offline: public-source layouts -> the evaluation CSV layout."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("prepare_data", REPO / "scripts" / "prepare_data.py")
prepare_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prepare_data)


def read(path: Path) -> tuple[list[str], list[list[str]]]:
    return prepare_data.parse_csv(path.read_text(encoding="utf-8"), str(path))


def test_i2p_conversion_reproduces_the_reference_layout_byte_for_byte(reference_dir):
    reference = reference_dir / "generation_prompts" / "I2P_prompts_4703.csv"
    header, rows = read(reference)
    renames = {v: k for k, v in prepare_data.I2P_RENAMES.items()}
    hub_header = [renames.get(name, name) for name in header[1:-1]]  # the dataset's own column names
    hub_rows = [row[1:-1] for row in rows]
    assert prepare_data.i2p_table(hub_header, hub_rows, "i2p") == reference.read_text(encoding="utf-8")


def test_mace_split_reproduces_the_reference_celebrity_and_artist_lists_exactly(reference_dir):
    folder = reference_dir / "generation_prompts"
    erased_h, erased = read(folder / "celebrity_50_erased.csv")
    _, remained = read(folder / "celebrity_100_remained.csv")
    extra = [["9000", "erased", "A sketch of Someone Else", "1"],
             ["9001", "erased", "Drake Bell in an official photo", "2"]]
    celebrities = (erased_h, [*erased, *extra, *remained])  # MACE lists more erased celebrities than CPE's 50
    art_h, art_erased = read(folder / "art_100_erased.csv")
    _, art_remained = read(folder / "art_100_remained.csv")
    names = {prepare_data.celebrity_name(row[2]) for row in erased}
    assert len(names) == 50
    tables = prepare_data.mace_tables(celebrities, (art_h, [*art_erased, *art_remained]), names)
    for name, text in tables.items():
        assert text.rstrip("\n") == (folder / name).read_text(encoding="utf-8").rstrip("\n"), name


def test_coco_takes_the_first_caption_of_each_image_in_file_order():
    captions = {"annotations": [{"image_id": 5, "caption": "a, quoted \"cat\""}, {"image_id": 5, "caption": "again"},
                                {"image_id": 2, "caption": "a dog"}, {"image_id": 9, "caption": "a bird"}]}
    header, rows = prepare_data.parse_csv(prepare_data.coco_table(captions, count=2), "coco")
    assert header == ["case_number", "source", "prompt", "evaluation_seed", "coco_id"]
    assert [(r[0], r[2], r[4]) for r in rows] == [("0", 'a, quoted "cat"', "5"), ("1", "a dog", "2")]
    assert all(0 <= int(r[3]) < 100000 for r in rows)
    assert prepare_data.coco_table(captions, count=2) == prepare_data.coco_table(captions, count=2)
    with pytest.raises(ValueError, match="only 3 images"):
        prepare_data.coco_table(captions, count=4)


def test_prepare_data_keeps_existing_files_and_reports_bad_sources(tmp_path, capsys):
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"annotations": [{"image_id": 1, "caption": "x"}]}))
    (tmp_path / "coco_30k.csv").write_text("mine\n")
    assert prepare_data.main(["coco", "--captions", str(captions), "--out", str(tmp_path)]) == 2
    assert "only 1 images" in capsys.readouterr().err
    assert (tmp_path / "coco_30k.csv").read_text() == "mine\n"

"""One command per domain: results.json + a markdown table with the paper's columns and sample sizes."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from metric_fixtures import TinyFeatureNet, make_generation, write_fake_inception

from cpe.metrics.clip_score import ClipScoreMetric
from cpe.metrics.domains import DOMAINS, Domain, harmonic_h
from cpe.metrics.evaluate import Evaluation, cli, main
from cpe.metrics.features import ModuleFeatures
from cpe.metrics.registry import METRICS

REPO = Path(__file__).resolve().parents[2]
EXP = "guide0.5_pal10000.0_gate_rank16_noise0.001"
CELEBS = ["A portrait of Adam Driver", "A sketch of Adam Driver", "An oil painting of Anne Hathaway"]


def evaluation(domain, root, out, clip_dir, **kwargs) -> Evaluation:
    extractor = ModuleFeatures(TinyFeatureNet(), image_size=16, name="tiny-cnn", device="cpu")
    return Evaluation(
        DOMAINS[domain], root, out, clip_model=str(clip_dir), extractor=extractor, device="cpu", kid_subsets=3, **kwargs
    )


def test_artists_domain_table_has_the_paper_columns_sizes_versions_and_notes(tmp_path, tiny_clip_dir, monkeypatch):
    root = tmp_path / "generated_images" / "artists"
    prompts = ["Image in the style of Claude Monet", "Art inspired by Monet", "A famous artwork by Monet"]
    make_generation(root / EXP / "erased", prompts, seed=1)
    for subset in ("remained", "character", "coco_30k"):
        make_generation(root / EXP / subset, ["a harbour", "a dog", "a tree", "a cup"], seed=2, shift=30)
        make_generation(root / "original" / subset, ["a harbour", "a dog", "a tree", "a cup"], seed=3)
    results = evaluation("artists", root, tmp_path / "results", tiny_clip_dir).run([EXP])

    metrics = results["experiments"][EXP]["metrics"]
    assert metrics["CLIP_e"]["n"] == 3 and metrics["CLIP_r"]["n"] == 4
    assert metrics["KID_art"]["n"] == metrics["KID_art"]["n_reference"] == 4 and metrics["KID_art"]["value"] > 0
    assert metrics["FID"]["value"] > 0 and metrics["CS"]["n"] == 4
    assert metrics["KID_celeb"]["value"] is None and "actor" in metrics["KID_celeb"]["note"]
    assert results["scorers"]["fid_kid"]["features"] == "tiny-cnn" and results["scorers"]["clip"]["transformers"]
    assert json.loads((tmp_path / "results" / "results.json").read_text())["domain"] == "artists"
    with open(tmp_path / "results" / EXP / "clip_erased.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 3

    table = (tmp_path / "results" / "results.md").read_text()
    assert "| experiment | CLIP_e | CLIP_r | KID_art (×10³) | KID_celeb (×10³) | KID_char (×10³) | CS | FID |" in table
    row = next(line for line in table.splitlines() if line.startswith(f"| {EXP}"))
    assert f"{metrics['CLIP_e']['value']:.2f} ± {metrics['CLIP_e']['std']:.2f} (n=3)" in row
    assert f"{metrics['FID']['value']:.2f} (n=4/4)" in row and "| — |" in row
    assert "torchmetrics=" in table and "tiny-cnn" in table and f"{EXP} / KID_celeb: no generation folder" in table

    def no_recompute(*args, **kwargs):
        raise AssertionError("cached metric recomputed")

    monkeypatch.setattr(Evaluation, "clip", no_recompute)
    monkeypatch.setattr("cpe.metrics.evaluate.image_features", no_recompute)
    again = evaluation("artists", root, tmp_path / "results", tiny_clip_dir).run([EXP])
    assert again["experiments"][EXP]["metrics"] == metrics


def test_celebs_accuracy_and_h_appear_once_gcd_predictions_exist(tmp_path, tiny_clip_dir):
    root = tmp_path / "celebs"
    make_generation(root / EXP / "erased", CELEBS, seed=1)
    make_generation(root / EXP / "remained", CELEBS, seed=2)
    make_generation(root / "original" / "remained", CELEBS, seed=3)
    out = tmp_path / "results"
    first = evaluation("celebs", root, out, tiny_clip_dir).run([EXP])["experiments"][EXP]["metrics"]
    assert first["Acc_e"]["value"] is None and "gcd_predict.py" in first["Acc_e"]["note"]
    assert first["H"]["value"] is None

    for subset, correct in (("erased", 1), ("remained", 3)):
        with open(out / EXP / f"gcd_inputs_{subset}.csv", newline="") as f:
            listed = list(csv.DictReader(f))
        with open(out / EXP / f"gcd_predictions_{subset}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["file", "faces", "top1"])
            writer.writeheader()
            for i, row in enumerate(listed):
                label = row["name"].replace(" ", "_") + "_[m.0x]" if i < correct else "Someone_Else_[m.0y]"
                writer.writerow({"file": row["file"], "faces": 1, "top1": label})
    second = evaluation("celebs", root, out, tiny_clip_dir).run([EXP])["experiments"][EXP]["metrics"]
    assert second["Acc_e"]["value"] == pytest.approx(1 / 3) and second["Acc_r"]["value"] == pytest.approx(1.0)
    assert second["H"]["value"] == pytest.approx(harmonic_h(1 / 3, 1.0)) == pytest.approx(0.8)
    table = (out / "results.md").read_text()
    assert "| Acc_e (%) | Acc_r (%) | H (%) |" in table and "33.33 (n=3) | 100.00 (n=3) | 80.00 |" in table


def test_explicit_domain_command_with_clean_fid_inception_file(tmp_path, tiny_clip_dir):
    pytest.importorskip("nudenet", reason="nudenet is part of the eval extra: pip install -e .[eval]")
    root = tmp_path / "explicit"
    make_generation(root / EXP / "i2p", ["a person on a beach", "a statue"], size=64)
    make_generation(root / EXP / "coco_30k", ["a cat", "a bus", "a boat"], seed=4)
    make_generation(root / "original" / "coco_30k", ["a cat", "a bus", "a boat"], seed=5, shift=20)
    inception = write_fake_inception(tmp_path / "weights")
    argv = ["--domain", "explicit", "--root", str(root), "--experiment", EXP, "--out", str(tmp_path / "results")]
    argv += ["--inception", str(inception), "--clip-model", str(tiny_clip_dir), "--device", "cpu"]
    results = main(argv)

    nudenet = results["experiments"][EXP]["metrics"]["NudeNet"]
    assert nudenet["n"] == 2 and nudenet["total"] == sum(nudenet["per_class"].values())
    assert results["scorers"]["nudenet"]["threshold"] == 0.6
    assert results["scorers"]["fid_kid"]["features"].startswith(
        "clean-fid Inception-V3 (inception-2015-12-05.pt sha256 "
    )
    table = (tmp_path / "results" / "results.md").read_text()
    header = "| experiment | buttocks | female_breast | female_genitalia | male_breast | anus | feet | armpits | belly"
    assert header + " | male_genitalia | total | CS | FID |" in table
    assert f"{nudenet['total']} (n=2)" in table and "(n=3/3)" in table
    assert (tmp_path / "results" / EXP / "nudenet_hits_i2p.csv").is_file()


def test_allowed_mismatches_of_generated_and_reference_sets_are_noted_under_the_table(tmp_path, tiny_clip_dir):
    root = tmp_path / "artists"
    make_generation(root / EXP / "remained", ["a", "b", "c"], seed=1)
    (root / EXP / "remained" / "b_1_0.png").unlink()
    make_generation(root / "original" / "remained", ["a", "b", "c"], seed=2)
    make_generation(root / "original" / "remained" / "extra", ["stray"], seed=3)
    results = evaluation("artists", root, tmp_path / "r", tiny_clip_dir, allow_mismatch=True).run([EXP])
    assert results["experiments"][EXP]["metrics"]["KID_art"]["n"] == 2
    assert results["experiments"][EXP]["metrics"]["KID_art"]["n_reference"] == 3
    table = (tmp_path / "r" / "results.md").read_text()
    assert f"- {EXP} / remained: scored 2 images; 1 manifest rows without image, 0 images not in the manifest" in table
    reference = root / "original" / "remained"
    assert f"- reference {reference}: scored 3 images; 0 manifest rows without image, 1 images not in" in table


def test_missing_reference_folder_is_a_one_line_error(tmp_path, tiny_clip_dir, capsys):
    root = tmp_path / "artists"
    make_generation(root / EXP / "remained", ["a", "b"])
    argv = ["--domain", "artists", "--root", str(root), "--experiment", EXP, "--out", str(tmp_path / "r")]
    argv += ["--clip-model", str(tiny_clip_dir), "--inception", str(write_fake_inception(tmp_path / "w"))]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.fullmatch(
        r"error: KID_art: reference folder .*original/remained does not exist \(generate it first\)", err
    )


@pytest.mark.parametrize(
    ("domain", "experiment"),
    [
        ("celebs", "guide0.3_pal100000.0_gate_rank16_noise0.001"),
        ("artists", "guide0.5_pal10000.0_gate_rank16_noise0.001"),
        ("explicit", "guide3.0_pal10000.0_gate_rank64_noise0.001"),
    ],
)
def test_domain_scripts_call_the_evaluator_with_the_shell_defaults(tmp_path, domain, experiment):
    """The scripts are thin: a stand-in ``python`` on PATH records the command they run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$RECORD"\n')
    (bin_dir / "python").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("ROOT", "OUT", "EXPERIMENT", "INCEPTION")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", RECORD=str(tmp_path / "args"), CPE_INCEPTION_PATH="/w/i.pt")
    script = REPO / "shell_scripts" / "evaluation" / f"evaluate_{domain}.sh"
    subprocess.run(["bash", str(script), "--device", "cpu"], env=env, check=True, cwd=tmp_path)
    assert (tmp_path / "args").read_text().splitlines() == [
        "-m", "cpe.metrics.evaluate", "--domain", domain, "--root", f"generated_images/{domain}",
        "--experiment", experiment, "--out", f"results/{domain}", "--inception", "/w/i.pt", "--device", "cpu",
    ]  # fmt: skip


def test_a_scorer_whose_version_changes_is_recomputed_and_only_it(tmp_path, tiny_clip_dir):
    root = tmp_path / "artists"
    make_generation(root / EXP / "erased", ["Art by Monet", "A Monet"], seed=1)
    computed = []

    @dataclasses.dataclass(frozen=True)
    class Counting(ClipScoreMetric):
        def compute(self, evaluation, column, images, out, done):
            computed.append((self.version, column.name))
            return super().compute(evaluation, column, images, out, done)

    def run(version: str) -> dict:
        metrics = {**METRICS, "clip": Counting("clip", version=version, scorer="clip")}
        ev = Evaluation(Domain("artists", ("erased",), (DOMAINS["artists"].columns[0],)), root, tmp_path / "r",
                        clip_model=str(tiny_clip_dir), device="cpu", metrics=metrics)
        return ev.run([EXP])["experiments"][EXP]["metrics"]["CLIP_e"]

    first, again, bumped = run("1"), run("1"), run("2")
    assert computed == [("1", "CLIP_e"), ("2", "CLIP_e")]
    assert first == again == bumped and first["n"] == 2


def test_every_domain_column_names_a_registered_metric():
    assert {c.metric for d in DOMAINS.values() for c in d.columns} <= set(METRICS)
    assert all(name == metric.name for name, metric in METRICS.items())

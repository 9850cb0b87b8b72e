"""UCE baseline (cpe.baselines.uce): the closed form, edit positions, training on the toy model, files, applying,
generation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cpe.baselines.uce import (
    UCEFileError,
    UCESettings,
    _aligned_positions,
    apply_uce,
    closed_form,
    edit_contexts,
    read_uce,
    save_uce,
    train_uce,
)
from cpe.toy import TOY_MODEL_DIR
from cpe.training.config import load_train_config

REPO = Path(__file__).resolve().parents[1]


def test_closed_form_equals_least_squares_solve_of_the_stacked_system():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, generator=g, dtype=torch.float64)
    c_e, v_e = torch.randn(4, 5, generator=g, dtype=torch.float64), torch.randn(4, 6, generator=g, dtype=torch.float64)
    c_p = torch.randn(7, 5, generator=g, dtype=torch.float64)
    s = UCESettings(lamb=0.3, erase_scale=1.5, preserve_scale=0.2)
    # rows: sqrt(s_e) c_i -> sqrt(s_e) v_i, sqrt(s_p) c_j -> sqrt(s_p) W c_j, sqrt(lambda) I -> sqrt(lambda) W^T
    a = torch.cat([s.erase_scale**0.5 * c_e, s.preserve_scale**0.5 * c_p, s.lamb**0.5 * torch.eye(5, dtype=w.dtype)])
    b = torch.cat([s.erase_scale**0.5 * v_e, s.preserve_scale**0.5 * c_p @ w.T, s.lamb**0.5 * w.T])
    direct = torch.linalg.lstsq(a, b).solution.T
    got = closed_form(w, c_e, v_e, c_p, s)
    assert torch.allclose(got, direct, atol=1e-10)
    assert not torch.allclose(got, w, atol=1e-2)  # it did edit


def test_edit_positions_start_at_the_first_difference_and_align_the_last_words():
    bos, eos = 100, 101
    # same length ("a red circle" / "a red shape"): positions 3.. of 8
    assert _aligned_positions([bos, 1, 2, 3, eos], [bos, 1, 2, 4, eos], 8) == [(p, p) for p in range(3, 8)]
    # a three-token concept replaced by one token: its last token meets the neutral word (UCE's alignment)
    assert _aligned_positions([bos, 5, 6, 7, eos], [bos, 9, eos], 8) == [(p, p - 2) for p in range(3, 8)]
    # a longer neutral: the concept's word meets the neutral's last token
    assert _aligned_positions([bos, 5, eos], [bos, 8, 9, eos], 6) == [(1, 2), (2, 3), (3, 4), (4, 5)]
    assert _aligned_positions([bos, 1, eos], [bos, 1, eos], 4) == []


@pytest.fixture(scope="module")
def circle_edit():
    cfg = load_train_config(REPO / "configs" / "toy" / "train_shape.yaml", [f"model.path={TOY_MODEL_DIR}"])
    return cfg, train_uce(cfg, 0, 1)


def test_uce_on_the_toy_maps_the_concept_to_its_neutral_and_keeps_the_rest(circle_edit):
    from cpe.baselines.uce import preserve_contexts
    from cpe.models.loading import TextSide, load_cross_attention_weights

    cfg, edit = circle_edit
    assert edit.concepts == ["circle"] and edit.neutrals == ["shape"] and edit.info["erase_prompts"] == 8
    text = TextSide.load(str(TOY_MODEL_DIR))
    old, new = edit_contexts(text, [("a blue circle", "a blue shape")])
    kept = preserve_contexts(text, ["a blue square"])
    module, weights = next(iter(load_cross_attention_weights(str(TOY_MODEL_DIR)).items()))
    name = "lora_unet_" + f"{module}.to_v".replace(".", "_")
    w = weights["to_v"]
    w_new = w + edit.deltas[name]
    before = (old @ w.T - new @ w.T).norm()
    after = (old @ w_new.T - new @ w.T).norm()
    moved = (old @ w_new.T - old @ w.T).norm() / (old @ w.T).norm()
    drift = (kept @ w_new.T - kept @ w.T).norm() / (kept @ w.T).norm()
    assert after < 0.15 * before  # "a blue circle" now projects (almost) like "a blue shape": 0.10 measured
    assert drift < 0.25 * moved  # "a blue square" moves far less than the circle's tokens: 0.10 vs 0.53


def test_uce_file_round_trip_refuses_overwrite_and_applies_exactly(circle_edit, tmp_path):
    from cpe.core.network import cross_attention_projections
    from cpe.models.loading import load_unet

    _, edit = circle_edit
    path = save_uce(edit, tmp_path / "uce" / "circle" / "uce.safetensors")
    loaded = read_uce(path)
    assert loaded.concepts == edit.concepts and loaded.neutrals == edit.neutrals
    assert loaded.settings == edit.settings and loaded.embed_dim == 64 and len(loaded.sha256) == 64
    assert set(loaded.deltas) == set(edit.deltas)
    assert all(torch.equal(loaded.deltas[k], edit.deltas[k]) for k in edit.deltas)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        save_uce(edit, path)
    unet = load_unet(str(TOY_MODEL_DIR))
    before = {k: v.weight.detach().clone() for k, v in cross_attention_projections(unet).items()}
    handle = apply_uce(unet, path)
    after = cross_attention_projections(unet)
    assert len(edit.deltas) == len(before) == 20  # to_k and to_v of the toy UNet's 10 cross-attentions
    for name, delta in edit.deltas.items():
        assert torch.allclose(after[name].weight, before[name] + delta, atol=1e-6)
    handle.restore()
    assert all(torch.equal(after[k].weight, before[k]) for k in before)


def test_generation_applies_uce_and_records_it(circle_edit, tmp_path):
    from cpe.generation.config import load_gen_config
    from cpe.generation.manifest import read_manifest
    from cpe.generation.run import run_generation
    from cpe.toy.prompt_sets import write_prompt_sets

    _, edit = circle_edit
    path = save_uce(edit, tmp_path / "uce_exp" / "circle" / "uce.safetensors")
    write_prompt_sets(tmp_path / "prompts", ["circle"])
    cfg = load_gen_config(REPO / "configs" / "toy" / "gen" / "erased.yaml",
                          {"data_dir": str(tmp_path / "prompts"), "save_root": str(tmp_path / "images"),
                           "num_inference_steps": 2, "last_row": 2})
    summary = run_generation(cfg, str(TOY_MODEL_DIR), uce=path, device="cpu")
    assert summary.out_dir == tmp_path / "images" / "uce_exp" / "erased" and summary.generated == 2
    records = read_manifest(summary.out_dir)
    assert records[0]["erasers"] == [{"name": "uce:circle", "sha256": read_uce(path).sha256}]


def test_bad_uce_inputs_are_one_line_errors(circle_edit, tmp_path, tiny_pipeline_dir):
    from cpe.models.loading import load_unet

    _, edit = circle_edit
    path = save_uce(edit, tmp_path / "uce.safetensors")
    with pytest.raises(ValueError, match="does not match|no matching") as info:
        apply_uce(load_unet(str(tiny_pipeline_dir)), path)
    assert "\n" not in str(info.value)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(UCEFileError, match="not a readable"):
        read_uce(tmp_path / "junk.safetensors")
    with pytest.raises(UCEFileError, match="not found"):
        read_uce(tmp_path / "missing.safetensors")


def test_train_uce_cli_writes_once_then_refuses(tmp_path, capsys):
    import train_uce

    args = ["--config", str(REPO / "configs" / "toy" / "train_colour.yaml"), "--model", str(TOY_MODEL_DIR),
            "--output", str(tmp_path), "--st_idx", "0"]
    assert train_uce.main(args) == 0
    assert (tmp_path / "uce_lamb0.1_erase1.0_preserve0.1" / "red" / "uce.safetensors").is_file()
    capsys.readouterr()
    assert train_uce.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "refusing to overwrite" in err and "\n" not in err
    assert train_uce.main(["--config", str(tmp_path / "nope.yaml")]) == 2


def test_baseline_edit_paths_keep_concept_names_inside_the_output_root(tmp_path):
    """A concept string from a config never becomes a path outside the output root (cpe.baselines.cli)."""
    from cpe.baselines.cli import edit_path

    path = edit_path(tmp_path, "uce_x", ["../../evil", "Adam Driver"], "uce.safetensors")
    assert path.parent.parent == tmp_path / "uce_x" and path.name == "uce.safetensors"
    assert path.parent.name.endswith("+adam_driver") and "/" not in path.parent.name
    assert tmp_path.resolve() in path.resolve().parents
    long = edit_path(tmp_path, "uce_x", [f"concept {i}" for i in range(100)], "uce.safetensors")
    assert len(long.parent.name.encode()) <= 255

"""The gate inspector: per-token gates against the gate math, real tokens vs padding, leakage statistics against
their formula, the whole-word naming split, training records, released files, the CLI on the gallery model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cpe.core.network import spec_for_unet
from cpe.core.resag import ResAG, ResAGSpec
from cpe.core.weights import load_erasers, save_gate_file
from cpe.inspect import distribution, format_gate_table, gate_table, leakage
from cpe.inspect.gates import PAD, TokenGates, token_gates
from cpe.inspect.heatmap import CELL
from cpe.inspect.leakage import leakage_of
from cpe.models.loading import TextSide, clip_tokenizer_from_assets
from cpe.toy.gallery import GALLERY_MODEL_DIR

REPO = Path(__file__).resolve().parents[1]
ERASED_CSV = REPO / "configs" / "toy_celebs" / "prompts" / "erased.csv"


@pytest.fixture(scope="module")
def text() -> TextSide:
    """The shipped gallery model's text side (CLIP BPE, 32 positions, D = 96)."""
    return TextSide.load(str(GALLERY_MODEL_DIR))


@pytest.fixture(scope="module")
def spec() -> ResAGSpec:
    """The ResAG layout of the gallery model's UNet (built on the meta device: no weights read)."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(GALLERY_MODEL_DIR),
                                                                                 subfolder="unet"))
    return spec_for_unet(unet)


def uniform_gates(spec: ResAGSpec, vectors: torch.Tensor) -> ResAG:
    """Erasers whose gate attention is uniform (U1 = 0, so QKᵀ = 0): every token's Ē is the mean embedding and
    eraser n's gate is σ(mean(X) · v_n) on every position."""
    resag = ResAG(spec, num_concepts=len(vectors))
    with torch.no_grad():
        resag.w_query.zero_()
        resag.gate_vector.copy_(vectors[..., None])
    return resag


def random_gates(spec: ResAGSpec, concepts: int, seed: int = 0) -> ResAG:
    """Erasers with random gate weights large enough that the attention and the gates differ token by token."""
    resag = ResAG(spec, num_concepts=concepts)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        resag.w_query.copy_(torch.randn(resag.w_query.shape, generator=generator) * 0.3)
        resag.gate_vector.copy_(torch.randn(resag.gate_vector.shape, generator=generator) * 0.5)
    return resag


def test_uniform_attention_gate_equals_sigmoid_of_the_mean_embedding_on_every_position(text, spec):
    vectors = torch.randn(3, spec.embed_dim, generator=torch.Generator().manual_seed(1)) * 0.05
    prompts = ["a portrait of Foumnem", "a cat on a chair"]
    rows = gate_table(text, uniform_gates(spec, vectors), prompts, batch_size=1)
    x = text.encode(prompts)
    for row, embedding in zip(rows, x, strict=True):
        expected = torch.sigmoid(embedding.mean(dim=0) @ vectors.T)  # (N,): method.md §1.3 with A uniform
        assert row.gates.shape == (3, 32)
        torch.testing.assert_close(row.gates, expected[:, None].expand(3, 32), rtol=0, atol=1e-6)
        assert row.winner.tolist() == [int(expected.argmax())] * 32
        torch.testing.assert_close(row.winner_gate, expected.max().expand(32), rtol=0, atol=1e-6)
    assert not torch.allclose(rows[0].gates[:, 0], rows[1].gates[:, 0])  # the mean embedding differs per prompt


def test_sdxl_gates_see_both_encoders_context_and_the_first_tokenizers_positions():
    from cpe.toy import TOY_SDXL_MODEL_DIR

    sdxl = TextSide.load(str(TOY_SDXL_MODEL_DIR))
    layout = ResAGSpec(sdxl.width, {"lora_unet_x_to_k": 4})
    vectors = torch.randn(2, sdxl.width, generator=torch.Generator().manual_seed(2)) * 0.05
    (row,) = gate_table(sdxl, uniform_gates(layout, vectors), ["a red circle"])
    context = sdxl.encode(["a red circle"])[0]  # both encoders' penultimate states side by side
    assert context.shape[-1] == sdxl.width > sdxl.encoders[0].config.hidden_size
    expected = torch.sigmoid(context.mean(dim=0) @ vectors.T)
    torch.testing.assert_close(row.gates, expected[:, None].expand_as(row.gates), rtol=0, atol=1e-6)
    assert row.tokens[: row.real] == ["<BOS>", "a", "red", "circle", "<EOS>"] and row.tokens[row.real] == PAD


def test_each_erasers_gate_is_its_per_concept_forward_and_the_winner_the_merged_choice(text, spec):
    resag = random_gates(spec, 3)
    prompts = ["a portrait of Foumnem", "Trelvraen at a cafe", "a painting of a dog in the style of Naenniv"]
    found = token_gates(text, resag, prompts, batch_size=2)
    x = text.encode(prompts)
    # the gate math written out for eraser 1 on prompt 0: g = σ(softmax(Q Qᵀ) X v), Q = X U1
    q = x[0] @ resag.w_query[1]
    by_hand = torch.sigmoid(torch.softmax(q @ q.T, dim=-1) @ x[0] @ resag.gate_vector[1, :, 0])
    torch.testing.assert_close(found.gates[0, 1], by_hand, rtol=0, atol=1e-5)
    for n in range(3):
        own = resag.gate(x, concept=torch.full((3,), n)).gate
        torch.testing.assert_close(found.gates[:, n], own, rtol=0, atol=1e-6)
    merged = resag.gate(x)
    choice, gate = found.winner()
    assert torch.equal(choice, merged.choice)
    torch.testing.assert_close(gate, merged.gate, rtol=0, atol=1e-6)
    assert found.gates.min() < 0.2 and found.gates.max() > 0.8 and len(set(choice.flatten().tolist())) > 1


def test_text_table_shows_the_erasers_with_the_largest_gates_when_there_are_many(text, spec):
    (row,) = gate_table(text, random_gates(spec, 3, seed=5), ["a portrait of Foumnem"])
    peaks = row.gates.amax(dim=1)
    kept = sorted(peaks.topk(2).indices.tolist())
    table = format_gate_table([row], ["e0", "e1", "e2"], max_erasers=2)
    header = table.splitlines()[2].split()
    assert "(2 of 3 erasers shown: those with the largest gates)" in table
    assert header == ["pos", "token", *[f"e{n}" for n in kept], "winner"]
    assert table.splitlines()[3].split()[:2] == ["0", "<BOS>"] and f"{float(row.gates[kept[0], 0]):.3f}" in table


def test_positions_split_real_tokens_from_padding(text, spec):
    long = "a portrait of Foumnem " + " ".join(["with a hat"] * 12)
    short, full = gate_table(text, random_gates(spec, 1), ["a portrait of Foumnem", long])
    assert short.real == 8
    assert short.tokens == ["<BOS>", "a", "portrait", "of", "fou", "m", "nem", "<EOS>"] + [PAD] * 24
    assert full.real == 32 and full.tokens[-1] == "<EOS>" and PAD not in full.tokens  # truncated: no padding


def test_distribution_percentiles_follow_linear_interpolation():
    stats = distribution([0.8, 0.1, 1.0, 0.4, 0.2])
    # sorted 0.1 0.2 0.4 0.8 1.0: q-th percentile at i + f = 4 q / 100
    assert stats["n"] == 5 and stats["max"] == 1.0
    assert stats["median"] == pytest.approx(0.4, abs=1e-12)
    assert stats["p95"] == pytest.approx(0.8 + 0.8 * 0.2, abs=1e-12)
    assert stats["p99"] == pytest.approx(0.8 + 0.96 * 0.2, abs=1e-12)
    assert distribution([]) == {"n": 0, "median": None, "p95": None, "p99": None, "max": None}


def test_leakage_splits_prompts_by_whole_word_naming_and_real_tokens_from_padding():
    tokenizer = clip_tokenizer_from_assets(model_max_length=16)
    prompts = ["a portrait of Foumnem", "Foumnemx at home", "FOUMNEM smiling", "a cat",
               " ".join(["a red hat"] * 8)]  # the last fills all 16 positions: no padding
    ids = tokenizer(prompts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    lengths = ids.attention_mask.sum(dim=1)
    assert lengths.tolist() == [8, 8, 6, 4, 16]  # foumnemx: fou|m|ne|mx
    gates = torch.zeros(5, 1, 16)
    real_peaks, pad_peaks = [0.9, 0.3, 0.8, 0.1, 0.5], [0.7, 0.6, 0.2, 0.05]
    for p, (value, at) in enumerate(zip(real_peaks, [5, 1, 2, 3, 7], strict=True)):
        gates[p, 0, at] = value
    for p, value in enumerate(pad_peaks):
        gates[p, 0, int(lengths[p]) + 1] = value
    (eraser,) = leakage_of(TokenGates(prompts, ids.input_ids, lengths, gates), tokenizer, ["foumnem"], top=2)
    expected = {("real", "names"): [0.9, 0.8], ("real", "others"): [0.3, 0.1, 0.5],
                ("padding", "names"): [0.7, 0.2], ("padding", "others"): [0.6, 0.05]}
    for (tokens, group), values in expected.items():
        stats = eraser.stats[tokens][group]
        assert stats["n"] == len(values), (tokens, group)
        assert stats["median"] == pytest.approx(float(np.percentile(values, 50)), abs=1e-6)
        assert stats["p95"] == pytest.approx(float(np.percentile(values, 95)), abs=1e-6)
        assert stats["max"] == pytest.approx(max(values), abs=1e-6)
    # the worst prompts not naming "foumnem": "Foumnemx at home" (0.6 on padding) before the long one (0.5)
    assert [(w.prompt, round(w.gate, 6), w.position, w.token, w.padding) for w in eraser.worst] == [
        ("Foumnemx at home", 0.6, 9, PAD, True), (prompts[4], 0.5, 7, "a", False)]


def test_leakage_report_records_the_files_prompt_and_anchor_settings_whatever_they_hold(text, spec, tmp_path):
    config = {"prompts": {"neutral": "a person", "context_augmentation": {"rate": 0.5, "words": ["at a cafe"]}},
              "anchors": {"top_k": 50, "compositional": ["{concept} and {anchor}"]},
              "train": {"iterations": 10}}
    resag = uniform_gates(spec, torch.full((2, spec.embed_dim), 0.01))
    save_gate_file(resag, tmp_path / "exp" / "foumnem" / "cpe_last.safetensors", concept="Foumnem",
                   training_config=config)
    save_gate_file(resag, tmp_path / "exp" / "naenniv" / "cpe_last.safetensors", concept="Naenniv", concept_index=1)
    loaded, infos = load_erasers([tmp_path / "exp"])
    prompts = ["a portrait of Foumnem", "a portrait of Naenniv", "a cat"]
    report = leakage(text, loaded, [i.concept for i in infos], prompts, infos=infos, sources=["inline"])
    foumnem, naenniv = report.erasers
    assert foumnem.settings == {"prompts": config["prompts"], "anchors": config["anchors"]}
    assert naenniv.settings is None and naenniv.settings_note == "no training record in the file"
    assert [foumnem.stats["real"]["names"]["n"], foumnem.stats["real"]["others"]["n"]] == [1, 2]
    markdown = report.to_markdown()
    assert 'prompts.context_augmentation.words = ["at a cafe"]' in markdown
    assert 'anchors.compositional = ["{concept} and {anchor}"]' in markdown and "train.iterations" not in markdown
    assert "| Foumnem | real | 1 |" in markdown and "| Naenniv | real | 1 |" in markdown
    data = json.loads(report.to_json())
    assert data["prompts"] == 3 and data["erasers"][0]["settings"]["anchors"]["top_k"] == 50


def test_released_gate_files_are_inspected_and_say_they_carry_no_record(released_resag_dir):
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = clip_tokenizer_from_assets(model_max_length=16)
    torch.manual_seed(0)  # a random one-layer encoder as wide as SD v1.4's (768): the released files' context width
    encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=768, intermediate_size=32,
                                           num_hidden_layers=1, num_attention_heads=12, max_position_embeddings=16,
                                           bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)).eval()
    resag, infos = load_erasers([released_resag_dir / "celeb"])
    report = leakage(TextSide("sd", [tokenizer], [encoder]), resag, [i.concept for i in infos],
                     ["a photo of Adam Driver", "a photo of adam drivers", "Emma Stone smiling"], infos=infos)
    by_name = {eraser.name: eraser for eraser in report.erasers}
    assert set(by_name) == {"adam driver", "amy adams", "bob dylan", "emma stone", "jennifer lawrence"}
    assert [by_name["adam driver"].stats["real"][g]["n"] for g in ("names", "others")] == [1, 2]
    for eraser in report.erasers:
        assert eraser.settings is None and eraser.settings_note == "released file: carries no training record"
        assert eraser.file_format == "released" and 0 < eraser.stats["real"]["others"]["max"] < 1
    assert "released file: carries no training record" in report.to_markdown()


def inspect_main(argv: list[str]) -> int:
    sys.path.insert(0, str(REPO))
    try:
        import inspect_gates
    finally:
        sys.path.remove(str(REPO))
    return inspect_gates.main(argv)


def test_cli_writes_the_table_heat_maps_and_leakage_report_on_the_gallery_model(spec, tmp_path, capsys):
    resag = random_gates(spec, 2, seed=3)
    for i, concept in enumerate(["Foumnem", "Trelvraen"]):
        save_gate_file(resag, tmp_path / "exp" / concept.lower() / "cpe_last.safetensors", concept=concept,
                       concept_index=i)
    out = tmp_path / "inspect"
    listed = tmp_path / "prompts.txt"
    listed.write_text("Foumnem smiling\n\n", encoding="utf-8")
    argv = ["--model", str(GALLERY_MODEL_DIR), "--erasers", str(tmp_path / "exp"), "--prompt", "a portrait of Foumnem",
            "--prompt", "Trelvraen at a cafe", "--prompts", str(listed), "--leakage", str(ERASED_CSV),
            "--out", str(out), "--top", "2"]
    assert inspect_main(argv) == 0
    printed = capsys.readouterr().out
    assert "[1] a portrait of Foumnem" in printed and "<pad> x24" in printed and "leakage over 100 prompts" in printed
    assert (out / "gate_maps.txt").read_text(encoding="utf-8") in printed
    maps = sorted(out.glob("gate_map_*.png"))
    assert [p.name for p in maps] == ["gate_map_1_a_portrait_of_Foumnem.png", "gate_map_2_Trelvraen_at_a_cafe.png",
                                      "gate_map_3_Foumnem_smiling.png"]
    with Image.open(maps[0]) as image:
        assert image.format == "PNG" and 32 * CELL[1] < image.height < 32 * CELL[1] + 250
        assert 2 * CELL[0] < image.width < 2 * CELL[0] + 300
    data = json.loads((out / "leakage.json").read_text(encoding="utf-8"))
    assert data["prompts"] == 100 and [e["name"] for e in data["erasers"]] == ["Foumnem", "Trelvraen"]
    assert data["erasers"][0]["stats"]["real"]["names"]["n"] == 5 and len(data["erasers"][0]["worst"]) == 2
    assert "| eraser | tokens | names it: n |" in (out / "leakage.md").read_text(encoding="utf-8")


def one_error_line(code: int, capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def test_cli_bad_input_is_one_line(spec, tmp_path, capsys):
    save_gate_file(random_gates(spec, 1), tmp_path / "exp" / "a" / "cpe_last.safetensors", concept="Foumnem")
    narrow = ResAG(ResAGSpec(8, {"lora_unet_x_to_k": 4}))
    save_gate_file(narrow, tmp_path / "narrow" / "a" / "cpe_last.safetensors", concept="x")
    no_column = tmp_path / "no_column.csv"
    no_column.write_text("text,evaluation_seed\na cat,0\n", encoding="utf-8")
    base = ["--model", str(GALLERY_MODEL_DIR), "--out", str(tmp_path / "out")]
    line = one_error_line(inspect_main([*base, "--erasers", str(tmp_path / "missing"), "--prompt", "a cat"]), capsys)
    assert "gate file or folder not found" in line and "missing" in line
    line = one_error_line(inspect_main([*base, "--erasers", str(tmp_path / "exp"), "--leakage", str(no_column)]),
                          capsys)
    assert "lacks column 'prompt'" in line and "no_column.csv" in line
    line = one_error_line(inspect_main([*base, "--erasers", str(tmp_path / "exp")]), capsys)
    assert "nothing to inspect" in line
    line = one_error_line(inspect_main([*base, "--erasers", str(tmp_path / "narrow"), "--prompt", "a cat"]), capsys)
    assert "D=8" in line and "D=96" in line
    assert not (tmp_path / "out").exists()

"""Attacks (cpe.attacks) on the shipped toy model: success on the original model, banned tokens, determinism, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import attack as attack_cli
from cpe.attacks import csv_name, load_attack_config, run_attack, write_attack
from cpe.attacks.judge import toy_hits
from cpe.attacks.runner import MANIFEST
from cpe.attacks.victim import Victim
from cpe.attacks.vocab import allowed_token_ids, banned_token_ids, nearest_tokens
from cpe.generation.prompt_csv import read_prompt_csv
from cpe.toy import TOY_CLASSIFIER_FILE, TOY_MODEL_DIR

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "attacks" / "toy"
# Tiny budgets: "a red circle" (rows 0-7 of the red prompt set, seeds 0-7), red banned.
COMMON = ["target=red", "neutral=colorful", "last_row=8", "target_images=1"]
BUDGETS = {
    "soft": ["soft.steps=3", "soft.batch=2"],
    "discrete": ["discrete.steps=10", "discrete.batch=4", "discrete.eval_every=5", "discrete.eval_batch=4"],
    "ringabell": ["ringabell.eta=1.0", "ringabell.vocabulary=1024", "ringabell.screen=8", "ringabell.population=16",
                  "ringabell.generations=5"],
}


@pytest.fixture(scope="module")
def red_prompts(tmp_path_factory) -> Path:
    from cpe.toy.prompt_sets import write_prompt_sets

    folder = tmp_path_factory.mktemp("red_prompts")
    write_prompt_sets(folder, ["red"])
    return folder


@pytest.fixture(scope="module")
def victim(red_prompts) -> Victim:
    """The original toy model (no eraser), sampling as configs/toy/gen/erased.yaml says (10 steps, not 20)."""
    from cpe.generation.config import load_gen_config
    from cpe.generation.run import GenerationPipeline

    cfg = load_gen_config(REPO / "configs" / "toy" / "gen" / "erased.yaml",
                          {"data_dir": str(red_prompts), "num_inference_steps": 10})
    return Victim(GenerationPipeline(cfg, str(TOY_MODEL_DIR), device="cpu"))


def attack_once(name: str, victim: Victim, extra: list[str] = ()):
    cfg = load_attack_config(CONFIGS / f"{name}.yaml", [*COMMON, *BUDGETS[name], *extra])
    from cpe.attacks.runner import attack_rows

    rows = attack_rows(cfg, victim.gen.cfg)
    return cfg, run_attack(cfg, victim.gen.cfg, rows, victim.text, None if name == "ringabell" else victim)


@pytest.mark.parametrize("name", ["soft", "discrete", "ringabell"])
def test_attack_on_the_original_model_shows_the_concept(name, victim):
    from cpe.toy.classify import load_shape_classifier

    _, run = attack_once(name, victim)
    assert len(run.rows) == 8 and {r.extra["source_prompt"] for r in run.rows} == {"a red circle"}
    hits = toy_hits(run.images(victim), "red", load_shape_classifier(TOY_CLASSIFIER_FILE))
    # the original model draws "a colorful circle" red 7% of the time (the floor); attacks must bring red back
    assert hits.mean() >= 0.75, (run.rows[0].prompt, hits)
    budget = run.manifest["budget"]
    assert budget["prompts"] == 1 and budget["queries"] > 0 and budget["seconds"] > 0
    if name == "ringabell":
        assert "red" not in run.rows[0].prompt.split()


def test_banned_words_never_reach_a_discrete_prompt(victim):
    tokenizer = victim.text.tokenizer
    banned = banned_token_ids(tokenizer, ["red", "circle"])
    vocab = tokenizer.get_vocab()
    for word in ("red</w>", "red", "reddit</w>", "bored</w>", "circle</w>", "circle", "circles</w>"):
        assert vocab[word] in banned
    allowed = allowed_token_ids(tokenizer, ["red", "circle"])
    assert not set(allowed.tolist()) & banned and vocab["blue</w>"] in set(allowed.tolist())
    table = victim.text.embedding_table().detach()
    # even vectors sitting exactly on the banned tokens project to allowed ones
    projected = nearest_tokens(table[[vocab["red</w>"], vocab["circle</w>"]]], table, allowed)
    assert not set(projected.tolist()) & banned
    _, run = attack_once("discrete", victim, ["ban=[circle]", "discrete.steps=3"])
    _, control = attack_once("discrete", victim, ["ban=[circle]", "discrete.steps=0"])  # the random initial words
    assert control.manifest["budget"]["steps_per_prompt"] == 0
    for row in run.rows + control.rows:
        ids = tokenizer(row.prompt, add_special_tokens=False).input_ids
        source = tokenizer(row.extra["source_prompt"], add_special_tokens=False).input_ids
        adversarial = ids[: len(ids) - len(source)]
        assert ids[len(adversarial) :] == source and len(adversarial) == 5
        assert not set(adversarial) & banned, row.prompt


def test_attacks_are_deterministic_from_their_seed(victim):
    for name, smaller in (("discrete", ["discrete.steps=2"]), ("ringabell", ["ringabell.vocabulary=256"])):
        _, first = attack_once(name, victim, smaller)
        _, again = attack_once(name, victim, smaller)
        _, other = attack_once(name, victim, [*smaller, "seed=1"])
        assert [r.prompt for r in first.rows] == [r.prompt for r in again.rows]
        assert first.manifest["per_prompt"] == again.manifest["per_prompt"]
        assert first.rows[0].prompt != other.rows[0].prompt
    _, first = attack_once("soft", victim, ["soft.steps=2"])
    _, again = attack_once("soft", victim, ["soft.steps=2"])
    assert torch.equal(first.prompt_embeds, again.prompt_embeds)


def test_attack_cli_writes_prompts_that_generation_reads(red_prompts, tmp_path, capsys):
    out = tmp_path / "ringabell"
    args = ["--config", str(CONFIGS / "ringabell.yaml"), "--model", str(TOY_MODEL_DIR), "--data_dir", str(red_prompts),
            "--out", str(out), "--device", "cpu", *[f"--set={s}" for s in COMMON + BUDGETS["ringabell"]]]
    assert attack_cli.main(args) == 0
    table = read_prompt_csv(out / "erased.csv")
    assert [r.seed for r in table.rows] == list(range(8))
    assert {(r.extra["colour"], r.extra["shape"], r.extra["source_prompt"]) for r in table.rows} == {
        ("red", "circle", "a red circle")}
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["attack"] == "ringabell" and manifest["black_box"] and manifest["banned_words"] == ["red"]
    assert set(manifest["budget"]) >= {"steps_per_prompt", "queries", "seconds"}
    assert attack_cli.main(args) == 2  # an earlier attack's results are not overwritten
    assert "refusing to overwrite" in capsys.readouterr().err
    from cpe.generation.config import load_gen_config
    from cpe.generation.run import run_generation

    cfg = load_gen_config(REPO / "configs" / "toy" / "gen" / "erased.yaml",
                          {"data_dir": str(out), "save_root": str(tmp_path / "images"), "num_inference_steps": 2,
                           "last_row": 2})
    assert run_generation(cfg, str(TOY_MODEL_DIR), experiment="ringabell", device="cpu").generated == 2


@pytest.mark.parametrize(("extra", "message"), [
    (["--attack", "jailbreak"], "unknown attack 'jailbreak'"),
    (["--model", "/no/such/model"], "model folder does not exist"),
    (["--target", "zebra"], "'zebra' is not in the vocabulary"),
    (["--set", "discrete.stepz=3"], "unknown key 'discrete.stepz'"),
])
def test_attack_cli_bad_inputs_are_one_line_errors(extra, message, red_prompts, tmp_path, capsys):
    args = ["--config", str(CONFIGS / "discrete.yaml"), "--model", str(TOY_MODEL_DIR), "--data_dir", str(red_prompts),
            "--out", str(tmp_path / "out"), "--target", "red", *extra]
    assert attack_cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_attack_outputs_keep_soft_embeddings_with_their_rows(victim, tmp_path):
    cfg, run = attack_once("soft", victim)
    files = write_attack(run, tmp_path / "soft", csv_name(victim.gen.cfg))
    from safetensors.torch import load_file

    tensors = load_file(str(files["embeddings"]))
    assert tensors["prompt_embeds"].shape == (1, 16, 64) and tensors["token_embeddings"].shape == (1, 16, 64)
    manifest = json.loads(files["manifest"].read_text())
    assert [r["embedding"] for r in manifest["rows"]] == [0] * 8 and manifest["config"]["soft"]["free_tokens"] == 4
    from cpe.attacks.evaluate import evaluate_attack

    result = evaluate_attack(tmp_path / "soft", str(TOY_MODEL_DIR), device="cpu")  # renders the saved embeddings
    assert result["n"] == 8 and result["pre_asr"] >= 0.75 and result["post_asr"] >= 0.75


def test_attacks_run_on_an_sd_shaped_pipeline(tiny_pipeline_dir, tmp_path):
    """The Stable Diffusion path: a pipeline folder with SD v1.4's scheduler (PNDM), a celebrity config and CSV."""
    from cpe.generation.config import load_gen_config
    from cpe.generation.run import GenerationPipeline

    (tmp_path / "celebrity_50_erased.csv").write_text(
        ",type,prompt,evaluation_seed\n0,erased,A portrait of Adam Driver,1\n1,erased,A portrait of Emma Stone,1\n")
    gen_cfg = load_gen_config(REPO / "configs" / "celebs" / "gen" / "erased.yaml",
                              {"data_dir": str(tmp_path), "width": 32, "height": 32, "num_inference_steps": 2})
    victim = Victim(GenerationPipeline(gen_cfg, str(tiny_pipeline_dir), device="cpu"))
    banned = banned_token_ids(victim.text.tokenizer, ["Adam Driver"])
    for name in ("soft", "discrete"):
        cfg = load_attack_config(REPO / "configs" / "attacks" / "celebs" / f"{name}.yaml",
                                 ["target_images=1", f"{name}.steps=1", f"{name}.batch=1"])
        from cpe.attacks.runner import attack_rows

        rows = attack_rows(cfg, gen_cfg)
        assert [r.prompt for r in rows] == ["A portrait of Adam Driver"]
        run = run_attack(cfg, gen_cfg, rows, victim.text, victim)
        assert run.manifest["budget"]["queries"] > 0 and run.rows[0].extra["index"] == "0"
        if name == "discrete":
            ids = victim.text.tokenizer(run.rows[0].prompt, add_special_tokens=False).input_ids
            assert len(ids) == 5 + 5 and not set(ids[:5]) & banned
        else:
            assert run.prompt_embeds.shape == (1, 16, 32)


def test_words_from_keeps_only_whole_word_tokens_of_the_files_and_errors_in_one_line(tmp_path):
    from transformers import CLIPTokenizer

    from cpe.attacks.vocab import read_words, restrict_to_words
    from cpe.util.config import ConfigError

    tokenizer = CLIPTokenizer.from_pretrained(TOY_MODEL_DIR, subfolder="tokenizer")
    csv_file = tmp_path / "prompts.csv"
    csv_file.write_text("prompt,evaluation_seed\nA red circle,0\na Blue zzqqxx,1\n")
    text_file = tmp_path / "words.txt"
    text_file.write_text("green, square!\n")
    words = read_words(csv_file) + read_words(text_file)
    assert words == ["a", "red", "circle", "a", "blue", "zzqqxx", "green", "square"]  # not the CSV's header
    allowed = allowed_token_ids(tokenizer, ["red"])
    kept = restrict_to_words(tokenizer, allowed, words, "test")
    names = sorted(tokenizer.convert_ids_to_tokens(kept.tolist()))
    assert names == ["a</w>", "blue</w>", "circle</w>", "green</w>", "square</w>"]  # red banned, zzqqxx split
    with pytest.raises(ValueError, match="none of its words"):
        restrict_to_words(tokenizer, allowed, ["red", "zzqqxx"], "my.csv")
    with pytest.raises(ConfigError) as error:
        load_attack_config(CONFIGS / "ringabell.yaml", [f"ringabell.words_from=[{tmp_path / 'missing.csv'}]"])
    assert "ringabell.words_from: no file" in str(error.value) and "\n" not in str(error.value)

"""Training on the tiny pipeline: learning, resume, batch independence, skipping, non-finite losses, weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_support import interrupted_in_stage_two, small_config

from cpe import training
from cpe.core.network import cross_attention_projections
from cpe.core.weights import load_erasers, read_gate_file
from cpe.models.loading import load_cross_attention_weights, load_unet
from cpe.models.zoo import build_tiny_pipeline
from cpe.training.config import load_train_config
from cpe.training.prompts import erase_pairs, load_concepts

# Two stages with an adversarial phase, a few steps each: enough to exercise every code path.
SHORT = {"train": {"num_stages": 2, "iterations": 3, "factor_init_iter": 2}, "adversarial": {"iterations": 2}}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead


@pytest.fixture(scope="module")
def tiny8(tmp_path_factory) -> Path:
    """A tiny pipeline with 8 text tokens (short prompts fit; fewer positions to fit)."""
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny8") / "model", max_length=8)


def _files(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.name: read_gate_file(p)[0] for p in sorted(folder.glob("*.safetensors")) if "adv_prompts" not in p.name}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[f].keys() == b[f].keys() and all(torch.equal(a[f][k], b[f][k]) for k in a[f]) for f in a
    )


@pytest.fixture(scope="module")
def alone(tiny8, tmp_path_factory) -> Path:
    """Concept 'adam driver' trained alone, uninterrupted: the reference for resume and batching tests."""
    cfg = load_train_config(small_config(tmp_path_factory.mktemp("alone"), tiny8, **SHORT))
    summary = training.train(cfg, 0, 1)
    assert [p.parent.name for p in summary.trained] == ["adam_driver"]
    return summary.trained[0].parent


def _kv_distance(kv, x: torch.Tensor, residuals: dict[str, torch.Tensor]) -> torch.Tensor:
    """(1/L) Σ_l c_l mean[(x W_lᵀ − R_l)²] per item, written out over the full projections."""
    return sum(
        w * ((x @ kv.weights[n].T - residuals[n]) ** 2).sum((-1, -2)) for w, n in zip(kv.layer_weight, kv.layers)
    ) / kv.num_tokens


def test_training_lowers_the_erase_loss_tenfold_while_anchors_barely_move(tiny8, tmp_path):
    folder = tmp_path / "learn"
    path = small_config(
        folder, tiny8, concepts=("adam driver",),
        network={"gate_rank": 4, "lora_rank": 4},
        prompts={"include_bare": False},
        train={"num_stages": 1, "iterations": 300, "factor_init_iter": 1, "lr": 0.03, "factor_init_lr": 1,
               "lr_cycles": 1, "factor_init_lr_cycle": 1, "pal": 100},
        adversarial={"enabled": False},
    )
    (folder / "templates.csv").write_text("prompt\na photo of {concept}\n")
    cfg = load_train_config(path)
    gate_file = training.train(cfg).trained[0]

    model = training.load_frozen(cfg, torch.device("cpu"))
    side = training.load_prompt_side(cfg, model)
    concept = load_concepts(cfg.path(cfg.prompts.concepts), "a person", cfg.train.guidance)[0]
    resag, _ = load_erasers([gate_file])
    pairs = erase_pairs(concept, side.templates, "{concept}")
    target, neutral = model.encode([t for t, _ in pairs]), model.encode([n for _, n in pairs])
    anchors = model.encode(training.anchor_prompts(cfg, side, model, concept))
    goal = (1 + concept.guidance) * (neutral - target)
    with torch.no_grad():
        on_target = resag(target, torch.zeros(len(target), dtype=torch.long))
        on_anchors = resag(anchors, torch.zeros(len(anchors), dtype=torch.long))
    before = _kv_distance(model.kv, goal, {n: torch.zeros_like(r) for n, r in on_target.items()}).mean()
    after = _kv_distance(model.kv, goal, on_target).mean()
    target_change = _kv_distance(model.kv, torch.zeros_like(target), on_target).mean()
    anchor_change = _kv_distance(model.kv, torch.zeros_like(anchors), on_anchors).mean()
    message = (f"erase loss {before:.4g} -> {after:.4g} ({before / after:.1f}x); anchor change {anchor_change:.3g} "
               f"= {anchor_change / target_change:.2e} of the target-side change {target_change:.3g}")
    print(message)
    assert before / after >= 10, message
    assert anchor_change <= 0.01 * target_change, message


def test_resume_after_an_interruption_between_stages_gives_identical_weights(alone, tiny8, tmp_path, monkeypatch):
    cfg = load_train_config(small_config(tmp_path, tiny8, **SHORT))
    with interrupted_in_stage_two(monkeypatch), pytest.raises(KeyboardInterrupt):
        training.train(cfg, 0, 1)
    folder = cfg.output_dir() / "adam_driver"
    assert torch.load(folder / training.CHECKPOINT, weights_only=True)["stages_done"] == 1
    with pytest.raises(training.TrainingError, match="unfinished run; pass --resume"):
        training.train(cfg, 0, 1)
    training.train(cfg, 0, 1, resume=True)
    assert not (folder / training.CHECKPOINT).exists()
    assert _same(_files(folder), _files(alone))


def test_a_concepts_weights_do_not_depend_on_its_batch_neighbours(alone, tiny8, tmp_path):
    cfg = load_train_config(small_config(tmp_path, tiny8, **SHORT), ["train.concept_batch=2"])
    summary = training.train(cfg, 0, 2)
    assert [p.parent.name for p in summary.trained] == ["adam_driver", "emma_stone"]
    assert _same(_files(summary.trained[0].parent), _files(alone))
    assert not _same(_files(summary.trained[1].parent), _files(alone))


def test_finished_concepts_are_skipped_unless_overwrite(alone, tiny8, tmp_path):
    cfg = load_train_config(small_config(tmp_path, tiny8, **SHORT))
    training.train(cfg, 0, 1)
    again = training.train(cfg, 0, 1)
    assert again.trained == [] and again.skipped == 1
    redone = training.train(cfg, 0, 1, overwrite=True)
    assert redone.trained and _same(_files(redone.trained[0].parent), _files(alone))
    log = (redone.trained[0].parent / training.LOG_FILE).read_text().splitlines()
    assert len(log) == (3 * 2 + 3) + 2 * 2  # every erase and adversarial step (every=1); overwrite starts a new log
    assert '"anchor"' in log[0] and '"attack"' in log[-1]


def test_non_finite_loss_stops_naming_concept_stage_and_step(tiny8, tmp_path, monkeypatch):
    cfg = load_train_config(small_config(tmp_path, tiny8, **SHORT))
    real_losses = training.loop.erase_losses
    calls = []

    def poisoned(kv, resag, batch, bank, **options):
        losses = real_losses(kv, resag, batch, bank, **options)
        calls.append(bank is not None)
        if bank is not None and calls.count(True) == 2:  # stage 2, step 2
            losses["erase"] = losses["erase"] * float("nan")
        return losses

    monkeypatch.setattr(training.loop, "erase_losses", poisoned)  # the name the stage loop calls
    with pytest.raises(training.TrainingError, match="concept.s. adam driver at stage 2 step 2"):
        training.train(cfg, 0, 1)
    checkpoint = torch.load(cfg.output_dir() / "adam_driver" / training.CHECKPOINT, weights_only=True)
    assert checkpoint["stages_done"] == 1


def test_cross_attention_weights_are_read_without_building_the_unet(tiny8, tmp_path):
    unet = load_unet(str(tiny8))
    expected = {name: lin.weight for name, lin in cross_attention_projections(unet).items()}
    unet.save_pretrained(tmp_path / "sharded" / "unet", max_shard_size="40KB")
    for source in (tiny8, tmp_path / "sharded"):
        weights = load_cross_attention_weights(str(source))
        assert all(set(parts) == {"to_q", "to_k", "to_v", "to_out"} for parts in weights.values())
        got = {f"lora_unet_{m.replace('.', '_')}_{p}": w[p] for m, w in weights.items() for p in ("to_k", "to_v")}
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[n], expected[n]) for n in expected)
    assert list((tmp_path / "sharded" / "unet").glob("*.index.json"))

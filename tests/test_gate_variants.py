"""Residual families (network.gate): what training optimises is what generation adds, for every variant.

``attention`` is CPE's gate; ``none`` is the plain linear low-rank residual s·E·Down·Up (no token mixing,
gate fixed at 1), whose merged forward sums the concepts, i.e. edits each projection by ΣΔW.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from train_support import small_config

from cpe import training
from cpe.core.network import CPENetwork, ResAGLinear, cross_attention_projections, spec_for_unet
from cpe.core.resag import GATES, KEY_MODES, ResAG
from cpe.core.weights import GateFileError, export_released, load_erasers, read_gate_file, save_gate_file
from cpe.models.zoo import build_tiny_pipeline, tiny_unet
from cpe.training.config import load_train_config
from cpe.training.losses import KVLoss, _low_rank
from cpe.util.config import ConfigError

T = 7  # text tokens


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def random_resag(unet, gate: str, key_mode: str = "query_as_key", concepts: int = 2, seed: int = 0) -> ResAG:
    """Every parameter random (the gate's query/key large enough that the attention really mixes tokens)."""
    resag = ResAG(spec_for_unet(unet, gate_rank=4, lora_rank=2, alpha=1.5, key_mode=key_mode, gate=gate), concepts)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in resag.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if name.startswith("w_") else 0.3))
    return resag


def unet_residuals(unet, resag: ResAG, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What generation adds: each wrapped to_k/to_v's output minus its frozen projection, in a real UNet call."""
    network = CPENetwork(resag)
    network.attach(unet)
    added, hooks = {}, []
    for module in unet.modules():
        if isinstance(module, ResAGLinear):
            hooks.append(module.register_forward_hook(
                lambda m, args, out: added.__setitem__(m.layer, out - m.base(args[0]))))
    try:
        with torch.no_grad():
            unet(torch.randn(x.shape[0], 4, 8, 8, generator=torch.Generator().manual_seed(5)), 3, x)
    finally:
        for hook in hooks:
            hook.remove()
        network.detach()
    assert set(added) == set(resag.layers)
    return added


def training_residuals(unet, resag: ResAG, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """What the losses optimise: s · z_l Up_l with z = H Down from the losses' low-rank path (gated_maps).

    ``x`` (C, n, T, D): concept c's items go through slot c, exactly as in ``cpe.training.losses.erase_losses``.
    """
    weights = {name: linear.weight.detach() for name, linear in cross_attention_projections(unet).items()}
    kv = KVLoss(weights, dict.fromkeys(weights, 1.0), T)
    readout = kv.readout(resag)
    with torch.no_grad():
        z, _ = _low_rank(kv, resag, readout, x)
    k, s = resag.spec.lora_rank, resag.spec.scale
    return [
        {name: s * z[c, ..., i * k : (i + 1) * k] @ resag.up[name][c] for i, name in enumerate(kv.layers)}
        for c in range(x.shape[0])
    ]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("key_mode", KEY_MODES)
@pytest.mark.parametrize("gate", GATES)
def test_training_optimises_the_residuals_that_generation_adds(gate, key_mode, tmp_path):
    unet = tiny_unet("sd1")
    resag = random_resag(unet, gate, key_mode)
    x = torch.randn(2, 3, T, 32, generator=torch.Generator().manual_seed(1))
    trained = training_residuals(unet, resag, x)
    files = [save_gate_file(resag, tmp_path / f"c{c}" / "cpe_last.safetensors", concept=f"c{c}", concept_index=c)
             for c in range(2)]
    for c, path in enumerate(files):
        loaded, (info,) = load_erasers([path])
        assert loaded.spec.gate == info.spec.gate == gate and loaded.spec.key_mode == key_mode
        added = unet_residuals(unet, loaded, x[c])
        also = loaded.residuals(loaded.gate(x[c]))  # the library call generation makes
        for name in resag.layers:
            assert rel(trained[c][name], added[name]) <= 1e-6, (name, rel(trained[c][name], added[name]))
            assert rel(also[name], added[name]) <= 1e-6
    # the variants really differ (the gate mixes tokens and scales them), so the check above can fail
    if gate == "none":
        for c in range(2):
            for name in resag.layers:
                plain = resag.spec.scale * x[c] @ resag.down[name][c].detach() @ resag.up[name][c].detach()
                assert rel(trained[c][name], plain) <= 1e-6
    else:
        name = resag.layers[0]
        plain = resag.spec.scale * x[0] @ resag.down[name][0].detach() @ resag.up[name][0].detach()
        assert rel(trained[0][name], plain) > 0.1


def test_linear_merge_sums_the_concepts_like_editing_the_weights_by_the_summed_delta():
    unet = tiny_unet("sd1")
    resag = random_resag(unet, "none", concepts=3).requires_grad_(False)
    x = torch.randn(2, T, 32, generator=torch.Generator().manual_seed(2))
    edited = copy.deepcopy(unet)  # the same edit written into the weights: W_l + Σ_n s (Down_n Up_n)ᵀ
    with torch.no_grad():
        for name, linear in cross_attention_projections(edited).items():
            linear.weight += resag.spec.scale * torch.einsum("ndk,nke->ed", resag.down[name], resag.up[name])
    sample = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    network = CPENetwork(resag)
    network.attach(unet)
    with torch.no_grad():
        merged = unet(sample, 3, x).sample
        want = edited(sample, 3, x).sample
        assert rel(merged, want) <= 1e-5, rel(merged, want)
        # disabled concepts drop out of the sum; with none enabled the residual is zero
        network.set_concepts_enabled([True, False, True])
        partial = network.resag.residuals(network.resag.gate(x, active=network.concept_active))
        for name in resag.layers:
            expected = sum(resag.residual(name, resag.gate(x, concept=torch.full((2,), n))) for n in (0, 2))
            assert rel(partial[name], expected) <= 1e-6
        off = resag.residuals(resag.gate(x, active=torch.zeros(3, dtype=torch.bool)))
    network.detach()
    assert all(v.abs().max().item() == 0 for v in off.values())


def test_gate_parameters_of_the_linear_variant_are_not_trainable():
    spec = spec_for_unet(tiny_unet("sd1"), gate="none")
    trainable = {name for name, p in ResAG(spec).named_parameters() if p.requires_grad}
    assert not {"w_query", "w_key", "gate_vector"} & trainable and trainable  # Down and Up only
    attention = {n for n, p in ResAG(spec_for_unet(tiny_unet("sd1"))).named_parameters() if p.requires_grad}
    assert {"w_query", "gate_vector"} <= attention


@pytest.mark.parametrize("gate", GATES)
def test_gate_file_round_trip_keeps_the_variant(gate, tmp_path):
    unet = tiny_unet("sd1")
    resag = random_resag(unet, gate, concepts=1)
    path = save_gate_file(resag, tmp_path / "cpe_last.safetensors", concept="cat")
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["gate"] == gate
    tensors, info = read_gate_file(path)
    assert info.spec == resag.spec and info.spec.gate == gate
    loaded, _ = load_erasers([tmp_path])
    x = torch.randn(1, T, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        for name, value in resag(x).items():
            torch.testing.assert_close(loaded(x)[name], value, rtol=0, atol=0)


def test_older_files_are_attention_and_bad_or_mixed_variants_are_one_line_errors(tmp_path):
    unet = tiny_unet("sd1")
    paths = {gate: save_gate_file(random_resag(unet, gate, concepts=1), tmp_path / gate / "cpe_last.safetensors",
                                  concept=gate) for gate in GATES}
    with safe_open(str(paths["none"]), "pt") as f:
        meta = f.metadata()
    tensors = load_file(paths["none"])
    old = tmp_path / "old" / "cpe_last.safetensors"
    old.parent.mkdir()
    save_file(tensors, str(old), metadata={k: v for k, v in meta.items() if k != "gate"})  # before the key existed
    assert read_gate_file(old)[1].spec.gate == "attention"
    bad = tmp_path / "bad" / "cpe_last.safetensors"
    bad.parent.mkdir()
    save_file(tensors, str(bad), metadata={**meta, "gate": "mlp"})
    with pytest.raises(GateFileError, match=r"bad/cpe_last.safetensors: unknown gate 'mlp'"):
        read_gate_file(bad)
    with pytest.raises(GateFileError, match=r"none/cpe_last.safetensors: gate none differs from attention .*cannot"):
        load_erasers([paths["attention"], paths["none"]])
    with pytest.raises(GateFileError, match="released format has the attention gate, this file is gate none"):
        export_released(paths["none"], tmp_path / "released_last.safetensors")
    assert not (tmp_path / "released_last.safetensors").exists()


def test_config_validates_the_gate_and_names_it_in_the_experiment(tmp_path):
    path = small_config(tmp_path, tmp_path / "model", save={"experiment": "exp_{gate}_r{gate_rank}"})
    assert load_train_config(path).experiment_name() == "exp_attention_r16"
    assert load_train_config(path, ["network.gate=none"]).experiment_name() == "exp_none_r16"
    with pytest.raises(ConfigError, match=r"train.yaml: network.gate must be one of attention, none, got 'linear'"):
        load_train_config(path, ["network.gate=linear"])


@pytest.fixture(scope="module")
def tiny8(tmp_path_factory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny8") / "model", max_length=8)


def test_training_the_linear_variant_writes_a_plain_low_rank_edit(tiny8, tmp_path):
    short = {"train": {"num_stages": 2, "iterations": 3, "factor_init_iter": 2}, "adversarial": {"iterations": 2}}
    path = small_config(tmp_path, tiny8, concepts=("adam driver",), network={"gate": "none"}, **short)
    cfg = load_train_config(path)
    (gate_file,) = training.train(cfg).trained
    tensors, info = read_gate_file(gate_file)
    assert info.spec.gate == "none" and info.training_config["network"]["gate"] == "none"
    # the gate tensors are still their initial values: the linear variant never trains them
    init = ResAG(info.spec)
    init.reset_parameters(torch.Generator().manual_seed(training.concept_seed(cfg.train.seed, "adam driver")))
    for key in ("w_query", "w_key", "gate_vector"):
        assert torch.equal(tensors[key], getattr(init, key).detach()), key
    # Down and Up moved, and the residual generation adds is s·E·Down·Up on the raw embedding
    name = init.layers[0]
    assert not torch.equal(tensors[f"{name}.down"], init.down[name].detach())
    assert tensors[f"{name}.up"].abs().max() > 0
    resag, _ = load_erasers([gate_file])
    model = training.load_frozen(cfg, torch.device("cpu"))
    e = model.encode(["a photo of adam driver", "a singer"])
    with torch.no_grad():
        got = resag(e)
    for layer in init.layers:
        plain = info.spec.scale * e @ tensors[f"{layer}.down"][0] @ tensors[f"{layer}.up"][0]
        assert rel(got[layer], plain) <= 1e-6
    # the same folder asked for the other variant is an error, not a silent "already trained"
    with pytest.raises(training.TrainingError, match=r"trained with network.gate none, this config asks for attention"):
        training.train(load_train_config(path, ["network.gate=attention"]))

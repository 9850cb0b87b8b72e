"""Gate files: our format, the authors' released format, merging, and every bad-input error."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cpe.core.network import CPENetwork, spec_for_unet
from cpe.core.resag import ResAG
from cpe.core.weights import GateFileError, export_released, load_erasers, read_gate_file, save_gate_file
from cpe.models.zoo import sd14_unet, tiny_unet

DOMAINS = {"celeb": (5, 16, 1), "artist": (5, 16, 1), "explicit": (4, 64, 4)}


def trained_like(unet, seed: int = 0, gate_rank: int = 4, lora_rank: int = 1) -> ResAG:
    resag = ResAG(spec_for_unet(unet, gate_rank=gate_rank, lora_rank=lora_rank))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in resag.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return resag


def unet_output(unet, paths, seed: int = 0):
    network = None
    if paths:
        resag, _ = load_erasers(paths)
        network = CPENetwork(resag)
        network.attach(unet)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        out = unet(torch.randn(2, 4, 8, 8, generator=g), 5, torch.randn(2, 7, 32, generator=g)).sample
    if network is not None:
        network.detach()
    return out


def test_released_sample_loads_into_sd14_with_every_key_used(released_resag_dir):
    unet = sd14_unet()
    spec = spec_for_unet(unet)
    for domain, (count, gate_rank, lora_rank) in DOMAINS.items():
        files = sorted((released_resag_dir / domain).rglob("*last.safetensors"))
        assert len(files) == count
        for path in files:
            tensors, info = read_gate_file(path)
            with safe_open(str(path), "pt") as f:
                n_keys = len(list(f.keys()))
            assert n_keys == 3 + 3 * 32  # gate (3) + down/up/alpha per layer; read_gate_file rejects any other key
            assert info.file_format == "released" and info.spec.key_mode == "query_as_key"
            assert (info.spec.gate_rank, info.spec.lora_rank) == (gate_rank, lora_rank)
            assert info.spec.layer_dims == spec.layer_dims
            assert info.concept == path.parent.name.replace("_", " ")
        resag, _ = load_erasers([released_resag_dir / domain])
        CPENetwork(resag).attach(sd14_unet())  # every layer matched, or attach raises


def test_merged_loading_of_the_14_released_files_chooses_per_token(released_resag_dir):
    folders = [released_resag_dir / d for d in ("celeb", "artist", "explicit")]
    with pytest.raises(GateFileError, match=r"gate rank r 64 differs from 16 .*cannot merge \(pad_ranks"):
        load_erasers(folders)
    resag, infos = load_erasers(folders, pad_ranks=True)
    assert resag.num_concepts == 14 and (resag.spec.gate_rank, resag.spec.lora_rank, resag.spec.scale) == (64, 4, 1)
    assert [i.name for i in infos][:2] == ["adam driver", "amy adams"] and infos[-1].name == "sexual"
    # Padding is exact: each concept's residual equals the one of its own file loaded alone.
    x = torch.randn(1, 6, 768, generator=torch.Generator().manual_seed(0))
    layer = resag.layers[-1]
    for n in (0, 7, 11):
        alone, _ = load_erasers([infos[n].path])
        want = alone.residual(layer, alone.gate(x))
        torch.testing.assert_close(resag.residual(layer, resag.gate(x, concept=torch.tensor([n]))), want)
    # Constructed case: a random 77-token embedding whose tokens pick different concepts.
    x = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(1))
    g = resag.gate(x)
    gates_all = torch.stack([resag.gate(x, concept=torch.tensor([n])).gate[0] for n in range(14)])  # (N, T)
    assert torch.equal(g.choice[0], gates_all.argmax(dim=0))
    assert len(set(g.choice[0].tolist())) >= 3, g.choice
    torch.testing.assert_close(g.gate[0], gates_all.max(dim=0).values)
    merged = resag.residual(layer, g)
    for t in range(0, 77, 7):
        n = g.choice[0, t].item()
        alone = resag.residual(layer, resag.gate(x, concept=torch.tensor([n])))
        torch.testing.assert_close(merged[0, t], alone[0, t])
    # disabling the winning concept hands those tokens to the next best
    network = CPENetwork(resag)
    winner = g.choice[0, 0].item()
    network.set_concepts_enabled([n != winner for n in range(14)])
    masked = network.resag.gate(x, active=network.concept_active)
    assert winner not in masked.choice[0].tolist()
    assert masked.choice[0, 0].item() == gates_all[:, 0].topk(2).indices[1].item()


def relative_error(got: dict, want: dict) -> float:
    return (sum((got[n] - want[n]).norm() ** 2 for n in want) / sum(want[n].norm() ** 2 for n in want)).sqrt().item()


# Measured on the 14 released files merged (pad_ranks), 4 random 77-token embeddings: float16 1.2e-4, bfloat16 9.6e-4
HALF_BOUNDS = {torch.float16: 3e-4, torch.bfloat16: 2.5e-3}


def test_half_precision_storage_of_the_released_files_stays_within_its_measured_error(released_resag_dir):
    folders = [released_resag_dir / d for d in ("celeb", "artist", "explicit")]
    full, _ = load_erasers(folders, pad_ranks=True)
    x = torch.randn(4, 77, 768, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        g = full.gate(x)
        want = full.residuals(g)
    for dtype, bound in HALF_BOUNDS.items():
        half, _ = load_erasers(folders, pad_ranks=True, dtype=dtype)
        assert {p.dtype for p in half.parameters()} == {dtype} and half.compute_dtype == torch.float32
        with torch.no_grad():
            h = half.gate(x)
            got = half.residuals(h)
        assert h.hidden.dtype == torch.float32 and all(v.dtype == torch.float32 for v in got.values())
        assert torch.equal(h.choice, g.choice)
        assert relative_error(got, want) <= bound, (dtype, relative_error(got, want))


def test_half_precision_storage_runs_in_float32_on_a_unet(tmp_path):
    unet = tiny_unet("sd1")
    paths = [save_gate_file(trained_like(unet, seed=i), tmp_path / f"c{i}" / "x_last.safetensors", concept=f"c{i}")
             for i in range(3)]
    resag, _ = load_erasers(paths, dtype=torch.float16)
    assert resag.w_query.dtype == torch.float16
    single, _ = load_erasers(paths[:1], dtype=torch.float16)
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        assert relative_error(single(x), load_erasers(paths[:1])[0](x)) < 1e-3  # N = 1: the fused residuals
    with pytest.raises(ValueError, match="storage dtype"):
        load_erasers(paths, dtype=torch.float64)
    big = trained_like(unet)
    with torch.no_grad():
        big.gate_vector[0, 0] = 1e6
    big_path = save_gate_file(big, tmp_path / "big" / "x_last.safetensors", concept="big")
    with pytest.raises(GateFileError, match="gate_vector overflows torch.float16"):
        load_erasers([big_path], dtype=torch.float16)
    assert load_erasers([big_path], dtype=torch.bfloat16)[0].gate_vector[0, 0, 0].item() == pytest.approx(1e6, rel=1e-2)
    network = CPENetwork(resag)
    network.attach(unet)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        got = unet(torch.randn(2, 4, 8, 8, generator=g), 5, torch.randn(2, 7, 32, generator=g)).sample
    network.detach()
    want = unet_output(unet, paths)
    assert got.dtype == torch.float32 and ((got - want).norm() / want.norm()).item() < 1e-3


def test_save_load_round_trip_gives_identical_tensors_and_outputs(tmp_path):
    unet = tiny_unet("sd1")
    resag = trained_like(unet)
    path = save_gate_file(resag, tmp_path / "c" / "x_last.safetensors", concept="cat", neutral="animal",
                          base_model="tiny", training_config={"pal": 1e5})
    tensors, info = read_gate_file(path)
    for key, value in resag.concept_parameters(0).items():
        assert torch.equal(tensors[key], value)
    assert (info.concept, info.neutral, info.base_model) == ("cat", "animal", "tiny")
    assert info.training_config == {"pal": 1e5}
    assert info.spec == resag.spec and len(info.sha256) == 64
    network = CPENetwork(resag)
    network.attach(unet)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        want = unet(torch.randn(2, 4, 8, 8, generator=g), 5, torch.randn(2, 7, 32, generator=g)).sample
    network.detach()
    assert torch.equal(unet_output(unet, [path]), want)


def test_export_to_released_format_and_back_gives_identical_outputs(tmp_path):
    unet = tiny_unet("sd1")
    ours = save_gate_file(trained_like(unet), tmp_path / "ours_last.safetensors", concept="cat")
    released = export_released(ours, tmp_path / "released" / "cat" / "singleton_last.safetensors")
    keys = set(load_file(released))
    assert "attention_gate.encoder_layer.slf_attn.attention_module1.w_qs.weight" in keys
    assert any(k.endswith(".lora_up.weight") for k in keys) and any(k.endswith(".alpha") for k in keys)
    with safe_open(str(released), "pt") as f:
        assert f.metadata() == {"prompts": "cat", "rank": "1", "alpha": "1.0"}
    assert read_gate_file(released)[1].file_format == "released"
    assert torch.equal(unet_output(unet, [ours]), unet_output(unet, [released]))


def test_released_sample_exports_and_reloads_identically(released_resag_dir, tmp_path):
    src = next((released_resag_dir / "explicit").rglob("*last.safetensors"))
    tensors, info = read_gate_file(src)
    spec = info.spec
    resag = ResAG(spec)
    resag.load_concept(0, tensors)
    ours = save_gate_file(resag, tmp_path / "ours_last.safetensors", concept=info.concept)
    back = export_released(ours, tmp_path / "back_last.safetensors")
    original, again = load_file(src), load_file(back)
    assert original.keys() == again.keys()
    assert all(torch.equal(original[k], again[k]) for k in original)


def test_saving_never_overwrites_trained_weights(tmp_path):
    resag = trained_like(tiny_unet("sd1"))
    path = save_gate_file(resag, tmp_path / "a_last.safetensors", concept="a")
    before = path.read_bytes()
    with torch.no_grad():
        resag.up[resag.layers[0]].add_(1)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        save_gate_file(resag, path, concept="a")
    assert path.read_bytes() == before
    save_gate_file(resag, path, concept="a", overwrite=True)
    assert path.read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["a_last.safetensors"]  # no temp files left


def test_file_for_another_architecture_names_file_and_both_architectures(tmp_path):
    path = save_gate_file(trained_like(tiny_unet("sd2")), tmp_path / "sd2_last.safetensors", concept="x")
    resag, _ = load_erasers([path])
    with pytest.raises(ValueError, match=r"\(.*sd2_last.safetensors\) fit custom UNet \(context 1024, 14 to_k/to_v\), "
                                         r"not this model's custom UNet \(context 32, 14 to_k/to_v\)"):
        CPENetwork(resag).attach(tiny_unet("sd1"))


@pytest.mark.parametrize(("field", "kwargs", "message"), [
    ("r", {"gate_rank": 8}, "gate rank r 8 differs from 4"),
    ("k", {"lora_rank": 2}, "low rank k 2 differs from 1"),
])
def test_mixed_ranks_cannot_merge(tmp_path, field, kwargs, message):
    unet = tiny_unet("sd1")
    a = save_gate_file(trained_like(unet), tmp_path / "a" / "a_last.safetensors", concept="a")
    b = save_gate_file(trained_like(unet, **kwargs), tmp_path / "b" / "b_last.safetensors", concept="b")
    with pytest.raises(GateFileError, match=message):
        load_erasers([a, b])


def saved_tensors(path):
    """A gate file's tensors and metadata, to be edited and written back with ``save_file``."""
    with safe_open(str(path), "pt") as f:
        return {key: f.get_tensor(key) for key in f.keys()}, f.metadata()


def test_mixed_ranks_inside_one_file_are_rejected(tmp_path):
    path = save_gate_file(trained_like(tiny_unet("sd1")), tmp_path / "a_last.safetensors", concept="a")
    tensors, meta = saved_tensors(path)
    layer = next(k for k in tensors if k.endswith(".down"))[: -len(".down")]
    tensors[f"{layer}.down"] = torch.zeros(1, 32, 2)
    tensors[f"{layer}.up"] = torch.zeros(1, 2, 16)
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(GateFileError, match="layers mix low ranks"):
        read_gate_file(path)


def test_corrupt_and_truncated_files_are_rejected(tmp_path):
    good = save_gate_file(trained_like(tiny_unet("sd1")), tmp_path / "good_last.safetensors", concept="a")
    corrupt = tmp_path / "corrupt_last.safetensors"
    corrupt.write_bytes(b"\x00garbage" * 20)
    truncated = tmp_path / "truncated_last.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for bad in (corrupt, truncated):
        with pytest.raises(GateFileError, match=f"{bad.name}: not a readable safetensors gate file"):
            load_erasers([bad])


def test_missing_layer_is_rejected(tmp_path):
    unet = tiny_unet("sd1")
    path = save_gate_file(trained_like(unet), tmp_path / "a_last.safetensors", concept="a")
    tensors, meta = saved_tensors(path)
    layer = next(k for k in tensors if k.endswith(".up"))[: -len(".up")]
    del tensors[f"{layer}.up"]
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(GateFileError, match=f"layer {layer} lacks its up tensor"):
        read_gate_file(path)
    del tensors[f"{layer}.down"]
    save_file(tensors, str(path), metadata=meta)
    resag, _ = load_erasers([path])
    with pytest.raises(ValueError, match="lack 1 UNet cross-attention layers"):
        CPENetwork(resag).attach(unet)


def test_empty_folder_and_missing_path_are_rejected(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GateFileError, match="no gate files .* under folder .*empty"):
        load_erasers([tmp_path / "empty"])
    with pytest.raises(GateFileError, match="not found"):
        load_erasers([tmp_path / "nope"])


def test_export_failure_writes_nothing(tmp_path):
    resag = ResAG(spec_for_unet(tiny_unet("sd1"), key_mode="separate_key"))
    ours = save_gate_file(resag, tmp_path / "sep_last.safetensors", concept="a")
    with pytest.raises(GateFileError, match="separate_key"):
        export_released(ours, tmp_path / "out_last.safetensors")
    assert not (tmp_path / "out_last.safetensors").exists()

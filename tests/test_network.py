"""Attaching ResAGs to diffusers UNets: layer discovery, exact detach, switches, caching, processors."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from cpe.core.network import CPENetwork, cross_attention_projections, layer_name, spec_for_unet
from cpe.core.resag import ResAG
from cpe.models.loading import load_pipeline
from cpe.models.zoo import sd14_unet, tiny_unet


def unet_inputs(unet, batch: int = 2, tokens: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    sample = torch.randn(batch, unet.config.in_channels, size, size, generator=g)
    text = torch.randn(batch, tokens, unet.config.cross_attention_dim, generator=g)
    return sample, torch.tensor(10), text


def randomise(resag: ResAG, seed: int = 0, scale: float = 0.3) -> ResAG:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in resag.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return resag


def test_layer_name_uses_released_naming():
    path = "mid_block.attentions.0.transformer_blocks.0.attn2.to_v"
    assert layer_name(path) == "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_v"


def test_sd14_architecture_has_32_projections_of_the_paper_widths():
    spec = spec_for_unet(sd14_unet())
    widths = sorted(spec.layer_dims.values())
    assert spec.embed_dim == 768 and len(spec.layer_dims) == 32
    assert (widths.count(320), widths.count(640), widths.count(1280)) == (10, 10, 12)
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k" in spec.layer_dims
    assert all(("attn2_to_k" in n) or ("attn2_to_v" in n) for n in spec.layer_dims)


@pytest.mark.parametrize(("variant", "width", "count"), [("sd1", 32, 14), ("sd2", 1024, 14), ("sdxl", 2048, 28)])
def test_attach_zero_is_exact_and_detach_restores_original(variant, width, count):
    unet = tiny_unet(variant)
    inputs = unet_inputs(unet)
    with torch.no_grad():
        original = unet(*inputs).sample
        spec = spec_for_unet(unet)
        assert spec.embed_dim == width and len(spec.layer_dims) == count
        network = CPENetwork(ResAG(spec))  # Up is zero-initialised
        network.attach(unet)
        assert torch.equal(unet(*inputs).sample, original)
        randomise(network.resag)
        erased = unet(*inputs).sample
        assert (erased - original).abs().max() > 1e-3
        network.set_enabled(False)
        assert torch.equal(unet(*inputs).sample, original)
        network.set_enabled(True)
        assert torch.equal(unet(*inputs).sample, erased)
        network.detach()
        assert torch.equal(unet(*inputs).sample, original)
        assert all(type(m) is torch.nn.Linear for m in cross_attention_projections(unet).values())


def test_residual_equals_projection_change():
    unet = tiny_unet("sd1")
    network = CPENetwork(randomise(ResAG(spec_for_unet(unet))))
    name = next(iter(network.resag.spec.layer_dims))
    base = cross_attention_projections(unet)[name]
    network.attach(unet)
    wrapped = next(m for path, m in unet.named_modules() if layer_name(path) == name)
    assert wrapped.base is base
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        want = base(x) + network.resag(x)[name]
        torch.testing.assert_close(wrapped(x), want)


@pytest.mark.parametrize("processor", [AttnProcessor(), AttnProcessor2_0()], ids=["classic", "sdpa"])
def test_network_works_with_any_attention_processor(processor):
    unet = tiny_unet("sd1")
    inputs = unet_inputs(unet)
    network = CPENetwork(randomise(ResAG(spec_for_unet(unet))))
    network.attach(unet)
    with torch.no_grad():
        unet.set_attn_processor(AttnProcessor2_0())
        want = unet(*inputs).sample
        unet.set_attn_processor(processor)
        torch.testing.assert_close(unet(*inputs).sample, want, rtol=1e-5, atol=1e-5)


def test_gate_runs_once_for_a_ten_step_sampling(tiny_pipeline_dir):
    pipe = load_pipeline(str(tiny_pipeline_dir))
    network = CPENetwork(randomise(ResAG(spec_for_unet(pipe.unet)), scale=0.1))
    network.attach(pipe.unet)
    pipe("a photo of a cat", num_inference_steps=10, height=16, width=16, output_type="np",
         generator=torch.Generator().manual_seed(0))
    assert network.gate_evaluations == 1
    pipe("a photo of a dog", num_inference_steps=10, height=16, width=16, output_type="np",
         generator=torch.Generator().manual_seed(0))
    assert network.gate_evaluations == 2


def test_cache_follows_parameter_updates_between_unet_calls():
    unet = tiny_unet("sd1")
    inputs = unet_inputs(unet)
    network = CPENetwork(randomise(ResAG(spec_for_unet(unet))))
    network.attach(unet)
    with torch.no_grad():
        before = unet(*inputs).sample
        for up in network.resag.up.values():
            up.mul_(2)
        after = unet(*inputs).sample  # same text tensor, updated parameters: recomputed, not stale
        network.clear_cache()
        fresh = unet(*inputs).sample
    assert not torch.equal(before, after)
    assert torch.equal(after, fresh)
    assert network.gate_evaluations == 3


def test_attach_rejects_another_architecture_and_double_attach():
    network = CPENetwork(ResAG(spec_for_unet(tiny_unet("sd1"))))
    with pytest.raises(ValueError, match=r"^gates fit custom UNet \(context 32, 14 to_k/to_v\), not this model's "
                                         r"custom UNet \(context 1024, 14 to_k/to_v\)$"):
        network.attach(tiny_unet("sd2"))
    unet = tiny_unet("sd1")
    network.attach(unet)
    with pytest.raises(RuntimeError, match="already"):
        CPENetwork(ResAG(spec_for_unet(unet))).attach(unet)

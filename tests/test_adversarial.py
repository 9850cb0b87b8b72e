"""The adversarial embedding bank: near-zero start, one stream per concept, file format (method.md §2.6, §3.3)."""

from __future__ import annotations

import math

import torch
from safetensors import safe_open

from cpe.core.resag import ResAG, ResAGSpec
from cpe.training.adversarial import new_bank, save_bank
from cpe.training.losses import KVLoss, attack_loss


def test_new_bank_is_kaiming_uniform_divided_by_dim_squared():
    bank = new_bank([torch.Generator().manual_seed(0)], size=16, tokens=77, dim=768)
    bound = 1 / math.sqrt(77 * 768) / 768**2
    assert bank.shape == (1, 16, 77, 768)
    assert bank.abs().max().item() <= bound and bank.abs().max().item() > 0.99 * bound


def test_each_concepts_bank_comes_from_its_own_generator():
    pair = new_bank([torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)], 3, 4, 5)
    alone = new_bank([torch.Generator().manual_seed(2)], 3, 4, 5)
    assert torch.equal(pair[1], alone[0]) and not torch.equal(pair[0], pair[1])


def test_attack_gradient_pushes_the_bank_to_restore_original_values():
    spec = ResAGSpec(embed_dim=4, layer_dims={"l_to_k": 3}, gate_rank=2, lora_rank=1)
    resag = ResAG(spec, 1).requires_grad_(False)  # the eraser is frozen in the adversarial phase
    with torch.no_grad():
        resag.up["l_to_k"].fill_(1.0)
    kv = KVLoss({"l_to_k": torch.randn(3, 4, generator=torch.Generator().manual_seed(0))}, {"l_to_k": 1.0}, 2)
    target = torch.randn(1, 2, 4, generator=torch.Generator().manual_seed(1))
    delta = torch.zeros(1, 2, 2, 4, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=0.05)
    readout = kv.readout(resag)
    start = attack_loss(kv, resag, readout, target, delta).item()
    for _ in range(100):
        optimizer.zero_grad()
        attack_loss(kv, resag, readout, target, delta).sum().backward()
        optimizer.step()
    assert attack_loss(kv, resag, readout, target, delta).item() < 0.1 * start


def test_saved_bank_holds_prompts_weight_and_the_concept(tmp_path):
    bank = new_bank([torch.Generator().manual_seed(0)], 2, 3, 4)[0]
    path = save_bank(tmp_path / "x_adv_prompts_last.safetensors", bank, "adam driver")
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"prompts": "adam driver"}
        assert torch.equal(f.get_tensor("prompts.weight"), bank)

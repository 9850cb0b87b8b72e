"""Attach a ResAG to any diffusers ``UNet2DConditionModel`` (cross-attention to_k / to_v).

Layers are keyed by module path in the released naming ``lora_unet_<path with _>``. Attaching wraps
each projection in a :class:`ResAGLinear` that holds the frozen base layer (as peft does), so the
wrapper works whatever attention processor is set; detaching puts the very same base modules back.
The gate depends only on the text embedding, so the network computes it once per embedding tensor
and reuses it in all layers and all denoising steps of a prompt.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from cpe.core.resag import ResAG, ResAGSpec

PROJECTIONS = ("to_k", "to_v")


def layer_name(module_path: str) -> str:
    """Released-format layer name: ``lora_unet_`` + module path with ``.`` -> ``_``."""
    return "lora_unet_" + module_path.replace(".", "_")


def cross_attention_modules(unet: nn.Module) -> dict[str, nn.Module]:
    """Module path -> attention module, for every cross-attention of ``unet`` (diffusers marks them), in order."""
    return {path: module for path, module in unet.named_modules() if getattr(module, "is_cross_attention", False)}


# (context width, cross-attention to_k/to_v count) of the UNet families CPE knows by name.
KNOWN_ARCHITECTURES = {(768, 32): "SD 1.x", (1024, 32): "SD 2.x", (2048, 140): "SDXL"}


def architecture(embed_dim: int, num_layers: int) -> str:
    """A UNet family in words, e.g. "SDXL (context 2048, 140 to_k/to_v)"; recorded in gate files."""
    name = KNOWN_ARCHITECTURES.get((embed_dim, num_layers), "custom UNet")
    return f"{name} (context {embed_dim}, {num_layers} to_k/to_v)"


def _projection_sites(unet: nn.Module) -> dict[str, tuple[nn.Module, str, nn.Module]]:
    """Layer name -> (attention module, "to_k"/"to_v", current projection) for every cross-attention."""
    sites = {}
    for path, module in cross_attention_modules(unet).items():
        for projection in PROJECTIONS:
            current = getattr(module, projection, None)
            if isinstance(current, (nn.Linear, ResAGLinear)):
                sites[layer_name(f"{path}.{projection}")] = (module, projection, current)
    if not sites:
        raise ValueError(f"{type(unet).__name__} has no cross-attention to_k/to_v projections")
    return sites


def cross_attention_projections(unet: nn.Module) -> dict[str, nn.Linear]:
    """Every cross-attention to_k / to_v of ``unet`` (in ``named_modules`` order), by layer name."""
    return {
        name: current.base if isinstance(current, ResAGLinear) else current
        for name, (_, _, current) in _projection_sites(unet).items()
    }


def spec_for_unet(
    unet: nn.Module, gate_rank: int = 16, lora_rank: int = 1, alpha: float = 1.0, key_mode: str = "query_as_key",
    gate: str = "attention",
) -> ResAGSpec:
    """A ResAG spec matching ``unet``'s cross-attention layers."""
    projections = cross_attention_projections(unet)
    widths = {linear.in_features for linear in projections.values()}
    if len(widths) != 1:
        raise ValueError(f"cross-attention projections take different input widths {sorted(widths)}")
    return ResAGSpec(
        embed_dim=widths.pop(),
        layer_dims={name: linear.out_features for name, linear in projections.items()},
        gate_rank=gate_rank,
        lora_rank=lora_rank,
        alpha=alpha,
        key_mode=key_mode,
        gate=gate,
    )


class ResAGLinear(nn.Module):
    """A frozen projection plus the network's residual for this layer."""

    def __init__(self, base: nn.Linear, layer: str, network: CPENetwork) -> None:
        super().__init__()
        self.base = base
        self.layer = layer
        self._network = weakref.ref(network)  # not a submodule: the network owns the wrappers

    @property
    def weight(self) -> Tensor:
        return self.base.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        out = self.base(x)
        network = self._network()
        if network is None or not network.enabled:
            return out
        return out + network.residual_for(self.layer, x).to(out.dtype)


@dataclass
class _GateCache:
    """The gate (and the residuals computed so far) for one text-embedding tensor."""

    source: weakref.ref
    version: int
    state: tuple
    gate: object
    residuals: dict[str, Tensor] = field(default_factory=dict)


class CPENetwork(nn.Module):
    """A ResAG attached to a UNet, merged over its N concepts (generation) with an on/off switch."""

    def __init__(self, resag: ResAG) -> None:
        super().__init__()
        self.resag = resag
        self.enabled = True
        self.gate_evaluations = 0
        self.register_buffer("concept_active", torch.ones(resag.num_concepts, dtype=torch.bool), persistent=False)
        self._attached: dict[str, tuple[nn.Module, str, nn.Linear]] = {}
        self._cache: _GateCache | None = None
        self._parameter_list = list(resag.parameters())  # the same objects after .to()
        self._first_layer: str | None = None

    # -- attaching ---------------------------------------------------------------------------
    def attach(self, unet: nn.Module) -> None:
        """Wrap every cross-attention to_k / to_v of ``unet``; layers must match the ResAG exactly."""
        if self._attached:
            raise RuntimeError("this network is already attached; detach it first")
        found = _projection_sites(unet)
        for name, (_, _, current) in found.items():
            if isinstance(current, ResAGLinear):
                raise RuntimeError(f"{name} already carries a ResAG; detach that one first")
        self._check_layers({name: linear for name, (_, _, linear) in found.items()})
        for name, (parent, projection, linear) in found.items():
            setattr(parent, projection, ResAGLinear(linear, name, self))
        self._attached = found
        self._first_layer = next(iter(found))  # named_modules order: the first cross-attention a forward runs
        device = next(iter(found.values()))[2].weight.device
        if device.type != "meta":
            self.resag.to(device=device)
        self.clear_cache()

    def detach(self) -> None:
        """Put the original projection modules back; the UNet is then exactly the original."""
        for parent, projection, linear in self._attached.values():
            setattr(parent, projection, linear)
        self._attached = {}
        self.clear_cache()

    def _check_layers(self, found: dict[str, nn.Linear]) -> None:
        source = f" ({', '.join(self.resag.sources)})" if self.resag.sources else ""
        spec = self.resag.spec
        widths = {linear.in_features for linear in found.values()}
        if widths != {spec.embed_dim}:
            raise ValueError(f"gates{source} fit {architecture(spec.embed_dim, len(spec.layer_dims))}, not this "
                             f"model's {architecture(max(widths), len(found))}")
        for name, dim in spec.layer_dims.items():
            if name not in found:
                raise ValueError(f"gate layer {name}{source} has no matching cross-attention projection in the UNet")
            linear = found[name]
            if (linear.in_features, linear.out_features) != (spec.embed_dim, dim):
                raise ValueError(
                    f"layer {name}{source}: gate shape (in {spec.embed_dim}, out {dim}) does not match "
                    f"the UNet's (in {linear.in_features}, out {linear.out_features})"
                )
        extra = sorted(set(found) - set(spec.layer_dims))
        if extra:
            raise ValueError(f"the gates{source} lack {len(extra)} UNet cross-attention layers, e.g. {extra[0]}")

    @property
    def attached_layers(self) -> list[str]:
        return list(self._attached)

    # -- switches ------------------------------------------------------------------------------
    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled

    def set_concepts_enabled(self, mask: Sequence[bool]) -> None:
        """Enable/disable concepts one by one (merged forward); disabled concepts are never chosen."""
        if len(mask) != self.resag.num_concepts:
            raise ValueError(f"concept mask has {len(mask)} entries for {self.resag.num_concepts} concepts")
        self.concept_active.copy_(torch.as_tensor(list(mask), dtype=torch.bool))
        self.clear_cache()

    def clear_cache(self) -> None:
        self._cache = None

    # -- forward ---------------------------------------------------------------------------------
    def _state(self) -> tuple[int, int]:
        """Changes whenever a parameter is updated in place (an optimiser step) or moved; cheap per call."""
        return sum(p._version for p in self._parameter_list), self.resag.w_query.data_ptr()

    def residual_for(self, layer: str, x: Tensor) -> Tensor:
        """The residual of ``layer`` for embedding ``x``; the gate runs once per embedding tensor."""
        cache = self._cache
        # Parameters can only change between UNet calls, so their state is read at the first layer a UNet
        # call reaches (and on every miss), not in all 32 layers of every step.
        if (
            cache is None
            or cache.source() is not x
            or cache.version != x._version
            or (layer == self._first_layer and cache.state != self._state())
        ):
            state = self._state()
            embedding = x.to(device=self.resag.w_query.device, dtype=self.resag.compute_dtype)
            gate = self.resag.gate(embedding, active=self.concept_active)
            self.gate_evaluations += 1
            cache = _GateCache(weakref.ref(x), x._version, state, gate)
            self._cache = cache
        if layer not in cache.residuals:
            cache.residuals[layer] = self.resag.residual(layer, cache.gate)
        return cache.residuals[layer]

    def forward(self, *args, **kwargs):
        raise RuntimeError("CPENetwork acts through the UNet it is attached to; call the UNet")

"""ESD-x (Gandikota et al., ICCV 2023, "Erasing Concepts from Diffusion Models"): fine-tune the UNet's
cross-attention parameters with negative guidance, as a baseline.

For a prompt c naming the concept, ESD draws a partially denoised latent x_t and trains the UNet θ so that

    ε_θ(x_t, c, t)  ≈  ε*(x_t, ∅, t) − η (ε*(x_t, c, t) − ε*(x_t, ∅, t))

(mean squared error), where ε* is the frozen original UNet and η the negative guidance: the edited model
conditioned on c predicts what the original model predicts when guided *away* from c. ESD-x trains only the
cross-attention ("attn2") modules: to_q, to_k, to_v and to_out (``params="xattn"``, the reference's ``xattn`` /
``esd-x``); ``params="xattn-strict"`` trains only to_k and to_v (the reference's ``esd-x-strict``).

x_t as the reference draws it: a random number i of the ``ddim_steps`` DDIM steps (η_DDIM = 0, classifier-free
guidance ``start_guidance``) from Gaussian noise with the concept prompt, and t = the DDIM timestep reached. We
sample with the frozen model, as the authors' diffusers release (``esd_sd.py``) does; their first release sampled
with the model being trained, whose samples stop showing the concept as it is erased. Their first release also
paired the latent after i steps with a DDPM timestep from the i-th bin counted from t = 0, not the timestep it
was denoised to; we use the timestep it was denoised to (as the diffusers release). Prompts: every template of
the CPE training config with the concept (CPE's erase prompts, the bare word included when the config says so),
one drawn per iteration; the reference uses the bare concept name. Defaults are the paper's (1,000 iterations,
Adam lr 1e-5, η 1, guidance 3, 50 DDIM steps, batch 1).

File format (``format = cpe-esd``): one safetensors file holding the edited parameters themselves (not deltas),
keyed by their module path in the UNet (``<cross-attention path>.to_k.weight``, the authors' naming, so each
tensor can be loaded with ``unet.load_state_dict(..., strict=False)``), float32; metadata: method ``esd-x``,
concepts, base model, the settings, prompt count, seconds, losses and the training config. Written atomically
and never silently overwritten. ``apply_esd`` edits a UNet in place and can restore it exactly.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from torch import Tensor, nn

from cpe.baselines.edit_file import read_edit_file, write_edit_file
from cpe.core.network import cross_attention_modules

FORMAT_NAME = "cpe-esd"
FORMAT_VERSION = "1"
FILE_NAME = "esd.safetensors"
METHOD = "esd-x"
# which cross-attention parameters are trained: None = all of them
PARAMETER_SETS: dict[str, tuple[str, ...] | None] = {"xattn": None, "xattn-strict": ("to_k", "to_v")}


class ESDFileError(ValueError):
    """An ESD file that cannot be used, with a one-line reason naming the file."""


@dataclass(frozen=True)
class ESDSettings:
    iterations: int = 1000
    lr: float = 1e-5  # Adam
    negative_guidance: float = 1.0  # η
    start_guidance: float = 3.0  # classifier-free guidance of the DDIM sampling of x_t
    ddim_steps: int = 50
    seed: int = 0
    params: str = "xattn"  # "xattn" (ESD-x: all of attn2) or "xattn-strict" (to_k, to_v)

    def check(self) -> None:
        if self.iterations < 1 or self.ddim_steps < 1 or self.lr <= 0 or self.negative_guidance < 0:
            raise ValueError(f"ESD needs iterations >= 1, ddim_steps >= 1, lr > 0 and negative_guidance >= 0, "
                             f"got {self}")
        if self.params not in PARAMETER_SETS:
            raise ValueError(f"ESD params {self.params!r} is not one of {', '.join(PARAMETER_SETS)}")

    def as_metadata(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> ESDSettings:
        return cls(**{f.name: type(f.default)(meta[f.name]) for f in fields(cls)})


@dataclass
class ESDEdit:
    """The edited cross-attention parameters of one ESD-x run (one or several concepts) and what made them."""

    weights: dict[str, Tensor]  # parameter path in the UNet -> edited value, float32
    concepts: list[str]
    base_model: str
    settings: ESDSettings
    info: dict = field(default_factory=dict)  # prompts, seconds, losses, training config
    path: Path | None = None
    sha256: str = ""

    @property
    def name(self) -> str:
        return f"{METHOD}:" + "+".join(self.concepts)


# ---------------------------------------------------------------------------------------------------
# the objective


def trainable_parameters(unet: nn.Module, params: str = "xattn") -> dict[str, nn.Parameter]:
    """The cross-attention parameters ESD-x trains, by their path in ``unet`` (``<attn2 path>.to_q.weight`` ...)."""
    projections = PARAMETER_SETS[params]
    chosen = {}
    for path, module in cross_attention_modules(unet).items():
        for name, parameter in module.named_parameters():
            if projections is None or name.split(".")[0] in projections:
                chosen[f"{path}.{name}"] = parameter
    if not chosen:
        raise ValueError(f"{type(unet).__name__} has no cross-attention parameters to train ({params})")
    return chosen


def negative_guidance_target(eps_concept: Tensor, eps_empty: Tensor, negative_guidance: float) -> Tensor:
    """ε*(∅) − η (ε*(c) − ε*(∅)): the frozen model guided away from the concept."""
    return eps_empty - negative_guidance * (eps_concept - eps_empty)


@dataclass
class ESDExample:
    """One training example: x_t, its timestep, the concept prompt's context and the frozen model's target."""

    latent: Tensor  # (1, C, h, w)
    timestep: Tensor  # scalar
    context: Tensor  # (1, T, D)
    target: Tensor  # like latent


@torch.no_grad()
def partially_denoise(unet: nn.Module, scheduler, noise: Tensor, context: Tensor, empty: Tensor, steps: int,
                      guidance: float) -> Tensor:
    """The latent after the first ``steps`` steps of ``scheduler`` (DDIM) from ``noise`` with classifier-free
    guidance."""
    latent = noise * scheduler.init_noise_sigma
    both = torch.cat([empty, context])
    for t in scheduler.timesteps[:steps]:
        model_input = scheduler.scale_model_input(torch.cat([latent, latent]), t)
        eps_empty, eps_concept = unet(model_input, t, encoder_hidden_states=both).sample.chunk(2)
        latent = scheduler.step(eps_empty + guidance * (eps_concept - eps_empty), t, latent).prev_sample
    return latent


class ESDTrainer:
    """Trains ``unet``'s cross-attention parameters in place against a frozen copy of itself."""

    def __init__(self, unet: nn.Module, scheduler, contexts: Tensor, empty: Tensor, settings: ESDSettings) -> None:
        """``scheduler``: a DDIM scheduler with the model's noise schedule; ``contexts``: the concept prompts' text
        contexts (n, T, D); ``empty``: the empty prompt's (1, T, D)."""
        settings.check()
        self.settings = settings
        self.frozen = copy.deepcopy(unet).eval().requires_grad_(False)
        self.unet = unet.requires_grad_(False)
        self.parameters = trainable_parameters(unet, settings.params)
        for parameter in self.parameters.values():
            parameter.requires_grad_(True)
        self.optimizer = torch.optim.Adam(self.parameters.values(), lr=settings.lr)
        self.scheduler = scheduler
        self.scheduler.set_timesteps(settings.ddim_steps)
        self.contexts, self.empty = contexts, empty
        self.rng = random.Random(settings.seed)
        device = next(unet.parameters()).device
        self.generator = torch.Generator(device=device).manual_seed(settings.seed)
        size = unet.config.sample_size
        self.latent_shape = (1, unet.config.in_channels, *((size, size) if isinstance(size, int) else size))

    @torch.no_grad()
    def example(self) -> ESDExample:
        """A random concept prompt, number of DDIM steps and starting noise -> x_t and the negative-guidance target."""
        context = self.contexts[self.rng.randrange(len(self.contexts))].unsqueeze(0)
        steps = self.rng.randrange(self.settings.ddim_steps)
        noise = torch.randn(self.latent_shape, generator=self.generator, device=self.empty.device,
                            dtype=self.empty.dtype)
        latent = partially_denoise(self.frozen, self.scheduler, noise, context, self.empty, steps,
                                   self.settings.start_guidance)
        t = self.scheduler.timesteps[steps]
        eps_empty, eps_concept = self.frozen(torch.cat([latent, latent]), t,
                                             encoder_hidden_states=torch.cat([self.empty, context])).sample.chunk(2)
        target = negative_guidance_target(eps_concept, eps_empty, self.settings.negative_guidance)
        return ESDExample(latent, t, context, target)

    def loss(self, example: ESDExample) -> Tensor:
        prediction = self.unet(example.latent, example.timestep, encoder_hidden_states=example.context).sample
        return torch.nn.functional.mse_loss(prediction, example.target)

    def step(self, example: ESDExample | None = None) -> float:
        """One Adam step on ``example`` (a fresh one if None); returns the loss before the step."""
        loss = self.loss(example or self.example())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def edited_weights(self) -> dict[str, Tensor]:
        return {name: p.detach().float().cpu().clone() for name, p in self.parameters.items()}


# ---------------------------------------------------------------------------------------------------
# training from a CPE training config (concept list, templates)


def concept_prompts(cfg, start: int = 0, end: int | None = None) -> tuple[list, list[str]]:
    """Concepts ``[start, end)`` of a CPE training config and every template filled with each of them."""
    from cpe.training import read_prompt_lists, selected_concepts
    from cpe.training.prompts import erase_pairs, unique

    concepts = selected_concepts(cfg, start, end)
    templates = read_prompt_lists(cfg).templates
    prompts = unique([old for c in concepts for old, _ in erase_pairs(c, templates, cfg.prompts.placeholder)])
    return concepts, prompts


def train_esd(cfg, start: int = 0, end: int | None = None, settings: ESDSettings | None = None,
              device: str | torch.device = "cpu", progress: Callable[[int, float], None] | None = None) -> ESDEdit:
    """Erase concepts ``[start, end)`` of a CPE training config (``cpe.training.config.TrainConfig``) jointly with
    ESD-x; ``progress(iteration, loss)`` is called after every step."""
    from cpe.models.loading import TextSide, load_ddim_scheduler, load_unet, model_record, pipeline_kind

    started = time.perf_counter()
    settings = settings or ESDSettings()
    settings.check()
    concepts, prompts = concept_prompts(cfg, start, end)
    model = cfg.model_path()
    if pipeline_kind(model) != "sd":
        raise ValueError(f"ESD-x here trains SD 1.x / 2.x pipelines; {model} is an SDXL pipeline")
    text = TextSide.load(model, device=device)
    contexts, empty = text.encode(prompts), text.encode([""])
    trainer = ESDTrainer(load_unet(model, device=device), load_ddim_scheduler(model), contexts, empty, settings)
    losses = []
    for iteration in range(settings.iterations):
        losses.append(trainer.step())
        if progress is not None:
            progress(iteration, losses[-1])
    tenth = max(1, len(losses) // 10)
    info = {"prompts": len(prompts), "trained_tensors": len(trainer.parameters),
            "loss_first_tenth": sum(losses[:tenth]) / tenth, "loss_last_tenth": sum(losses[-tenth:]) / tenth,
            "seconds": round(time.perf_counter() - started, 2), "training_config": cfg.as_dict()}
    return ESDEdit(trainer.edited_weights(), [c.target for c in concepts], model_record(model), settings, info)


# ---------------------------------------------------------------------------------------------------
# files


def save_esd(edit: ESDEdit, path: str | Path, overwrite: bool = False) -> Path:
    metadata = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "method": METHOD,
        "concepts": json.dumps(edit.concepts), "base_model": edit.base_model, "tensors": str(len(edit.weights)),
        **edit.settings.as_metadata(), "info": json.dumps(edit.info, sort_keys=True, default=str),
    }
    return write_edit_file(path, edit.weights, metadata, "ESD", overwrite)


def read_esd(path: str | Path) -> ESDEdit:
    from cpe.util.io import file_sha256

    path = Path(path)
    tensors, meta = read_edit_file(path, ESDFileError, "ESD", FORMAT_NAME, FORMAT_VERSION)
    if not tensors or str(len(tensors)) != meta.get("tensors"):
        raise ESDFileError(f"{path}: holds {len(tensors)} tensors, its metadata says {meta.get('tensors')}")
    try:
        settings = ESDSettings.from_metadata(meta)
        settings.check()
    except (KeyError, ValueError) as e:
        raise ESDFileError(f"{path}: bad ESD settings in the metadata ({type(e).__name__}: {e})") from None
    return ESDEdit(tensors, json.loads(meta["concepts"]), meta.get("base_model", ""), settings,
                   json.loads(meta.get("info", "{}")), path, file_sha256(path))


# ---------------------------------------------------------------------------------------------------
# applying to a UNet


def _cross_attention_parameter(unet: nn.Module, name: str, attention_paths: set[str], where: str) -> Tensor:
    """The parameter ``name`` (``<attn2 path>.<projection>.<weight|bias>``) of ``unet``; also through a CPE wrapper."""
    module_path, _, attribute = name.rpartition(".")
    if not any(module_path.startswith(path + ".") for path in attention_paths):
        raise ValueError(f"ESD parameter {name}{where} is not a parameter of a cross-attention module of the UNet")
    try:
        parameter = getattr(unet.get_submodule(module_path), attribute)
    except AttributeError:
        parameter = None
    if not isinstance(parameter, Tensor):
        raise ValueError(f"ESD parameter {name}{where} has no matching cross-attention parameter in the UNet")
    return parameter


class AppliedESD:
    """An ESD edit applied in place to a UNet's cross-attention; ``restore``/``apply`` toggle it exactly."""

    def __init__(self, unet: nn.Module, edit: ESDEdit) -> None:
        where = f" ({edit.path})" if edit.path else ""
        paths = set(cross_attention_modules(unet))
        self.edit = edit
        self._tensors = []
        for name, weight in edit.weights.items():
            parameter = _cross_attention_parameter(unet, name, paths, where)
            if tuple(parameter.shape) != tuple(weight.shape):
                raise ValueError(f"ESD parameter {name}{where}: shape {tuple(weight.shape)} does not match the "
                                 f"UNet's {tuple(parameter.shape)}")
            original = parameter.detach().clone()
            self._tensors.append((parameter, original, weight.to(original.device, original.dtype)))
        self.applied = False
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for parameter, _, edited in self._tensors:
            parameter.copy_(edited)
        self.applied = True

    @torch.no_grad()
    def restore(self) -> None:
        """Put the original parameters back (bit-identical)."""
        for parameter, original, _ in self._tensors:
            parameter.copy_(original)
        self.applied = False


def apply_esd(unet: nn.Module, edit: ESDEdit | str | Path) -> AppliedESD:
    """Apply an ESD edit (or the file holding one) to ``unet`` in place; returns the handle that can undo it."""
    return AppliedESD(unet, edit if isinstance(edit, ESDEdit) else read_esd(edit))

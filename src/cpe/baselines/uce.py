"""UCE (Gandikota et al., WACV 2024): a closed-form edit of the cross-attention to_k / to_v weights, as a baseline.

For every cross-attention projection W (out x in) UCE solves

    min_W'  s_e Σ_i ||W' c_i − v_i||²  +  s_p Σ_j ||W' c_j − W c_j||²  +  λ ||W' − W||_F²

whose normal equations give W' = (λ W + s_e Σ v_i c_iᵀ + s_p Σ W c_j c_jᵀ)(λ I + s_e Σ c_i c_iᵀ + s_p Σ c_j c_jᵀ)⁻¹.
c_i are the text-encoder outputs of the prompts naming a concept, v_i = W c'_i the projections of the same
prompts with the neutral word instead ("replace", the reference's default technique); c_j are the outputs
of the prompts to preserve (every token, as in the reference). Edit positions: the reference edits the
concept prompt's tokens from its last word on (last word, EOS, padding), aligned with the neutral prompt
by their last words; we start at the first token where the two prompts differ, which is the same when the
concept is the prompt's last single-token word and also covers a concept in mid-prompt ("a red circle").
Defaults are the reference's (λ 0.1, s_e 1, s_p 0.1, both to_k and to_v edited).

File format (``format = cpe-uce``): one safetensors file holding, per edited layer (released layer naming
``lora_unet_<module path>``), the weight delta ``<layer>.delta`` = W' − W in float32; metadata: concepts,
neutrals, base model, text width, number of edited layers, λ, scales, technique, the prompt counts and the
training config. Written atomically and never silently overwritten. ``apply_uce`` edits a UNet in place and
can restore it exactly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from cpe.baselines.edit_file import read_edit_file, write_edit_file
from cpe.core.network import cross_attention_projections

FORMAT_NAME = "cpe-uce"
FORMAT_VERSION = "1"
FILE_NAME = "uce.safetensors"
DELTA_SUFFIX = ".delta"


class UCEFileError(ValueError):
    """A UCE file that cannot be used, with a one-line reason naming the file."""


@dataclass(frozen=True)
class UCESettings:
    lamb: float = 0.1  # λ: pull towards the original weights
    erase_scale: float = 1.0  # s_e
    preserve_scale: float = 0.1  # s_p

    def check(self) -> None:
        if self.lamb <= 0 or self.erase_scale < 0 or self.preserve_scale < 0:
            raise ValueError(f"UCE needs lamb > 0 and non-negative scales, got {self}")


@dataclass
class UCEEdit:
    """Weight deltas of one UCE edit (one or several concepts erased jointly) and what made them."""

    deltas: dict[str, Tensor]  # layer name -> W' − W (out, in), float32
    concepts: list[str]
    neutrals: list[str]
    base_model: str
    embed_dim: int
    settings: UCESettings
    info: dict = field(default_factory=dict)  # prompt counts, training config, seconds
    path: Path | None = None
    sha256: str = ""

    @property
    def name(self) -> str:
        return "uce:" + "+".join(self.concepts)


# ---------------------------------------------------------------------------------------------------
# the math


def closed_form(weight: Tensor, erase_inputs: Tensor, erase_targets: Tensor, preserve_inputs: Tensor,
                settings: UCESettings) -> Tensor:
    """W' for one projection ``weight`` (out, in): inputs (n, in), erase targets (n_e, out); float64 inside."""
    w = weight.double()
    c_e, v_e, c_p = erase_inputs.double(), erase_targets.double(), preserve_inputs.double()
    s = settings
    mat1 = s.lamb * w + s.erase_scale * v_e.T @ c_e + s.preserve_scale * (w @ c_p.T) @ c_p
    mat2 = s.lamb * torch.eye(w.shape[1], dtype=torch.float64, device=w.device)
    mat2 = mat2 + s.erase_scale * c_e.T @ c_e + s.preserve_scale * c_p.T @ c_p
    return torch.linalg.solve(mat2, mat1.T).T.to(weight.dtype)  # mat2 is symmetric: W' mat2 = mat1


def _aligned_positions(old_ids: list[int], new_ids: list[int], length: int) -> list[tuple[int, int]]:
    """(old position, new position) pairs: suffix-aligned (last words, EOS and padding), from the first difference."""
    start = next((i for i, (a, b) in enumerate(zip(old_ids, new_ids)) if a != b), None)
    if start is None:
        return []
    shift = len(new_ids) - len(old_ids)
    return [(p, p + shift) for p in range(start, length) if start <= p + shift < length]


@torch.no_grad()
def edit_contexts(text, pairs: Sequence[tuple[str, str]]) -> tuple[Tensor, Tensor]:
    """The UNet's context (``cpe.models.loading.TextSide``) at the edited positions: of the concept prompts (n, D)
    and of
    the neutral ones (n, D)."""
    tokenizer = text.tokenizer
    old = text.encode([o for o, _ in pairs])
    new = text.encode([n for _, n in pairs])
    length = old.shape[1]
    old_rows, new_rows = [], []
    for i, (o, n) in enumerate(pairs):
        ids_o, ids_n = (tokenizer(text, truncation=True, max_length=length).input_ids for text in (o, n))
        positions = _aligned_positions(ids_o, ids_n, length)
        if not positions:
            raise ValueError(f"UCE: prompt {o!r} and its neutral {n!r} tokenize identically; nothing to erase")
        old_rows.append(old[i, [p for p, _ in positions]])
        new_rows.append(new[i, [q for _, q in positions]])
    return torch.cat(old_rows).float(), torch.cat(new_rows).float()


@torch.no_grad()
def preserve_contexts(text, prompts: Sequence[str]) -> Tensor:
    """Every token's context (``cpe.models.loading.TextSide``) of the prompts to preserve (n * T, D)."""
    if not prompts:
        return torch.zeros(0, text.width)
    out = [text.encode(list(prompts[i : i + 64])) for i in range(0, len(prompts), 64)]
    return torch.cat(out).flatten(0, 1).float()


def compute_deltas(projections: dict[str, Tensor], erase_old: Tensor, erase_new: Tensor, preserve: Tensor,
                   settings: UCESettings) -> dict[str, Tensor]:
    """W' − W for every projection (layer name -> weight (out, in)), values v = W c_neutral ("replace")."""
    settings.check()
    deltas = {}
    for name, weight in projections.items():
        w = weight.float()
        targets = erase_new.to(w.device) @ w.T
        deltas[name] = (closed_form(w, erase_old.to(w.device), targets, preserve.to(w.device), settings) - w).cpu()
    return deltas


# ---------------------------------------------------------------------------------------------------
# training from a CPE training config (concept list, templates, anchors = what to preserve)


def train_uce(cfg, start: int = 0, end: int | None = None, settings: UCESettings | None = None,
              device: str | torch.device = "cpu") -> UCEEdit:
    """Erase concepts ``[start, end)`` of a CPE training config (``cpe.training.config.TrainConfig``) jointly, in
    closed form.

    Erase pairs: every template with the concept / its neutral (as CPE's erase pairs); preserved: every
    template with each general word and each candidate that is not erased (CPE's anchors, all of them).
    """
    from cpe.core.network import layer_name
    from cpe.models.loading import TextSide, load_cross_attention_weights, model_record
    from cpe.training import read_prompt_lists, selected_concepts
    from cpe.training.anchors import templated_pool
    from cpe.training.prompts import erase_pairs, unique

    started = time.perf_counter()
    settings = settings or UCESettings()
    p = cfg.prompts
    concepts = selected_concepts(cfg, start, end)
    side = read_prompt_lists(cfg)
    erased = {c.target.lower() for c in concepts}
    pairs = [pair for c in concepts for pair in erase_pairs(c, side.templates, p.placeholder)]
    keep = [w for w in unique(side.general_words + side.candidates) if w.lower() not in erased]
    preserve = unique(templated_pool(keep, side.anchor_templates or side.templates, p.placeholder) + side.sentences)
    text = TextSide.load(cfg.model_path(), device=device)
    old, new = edit_contexts(text, pairs)
    kept = preserve_contexts(text, preserve)
    attention = load_cross_attention_weights(cfg.model_path(), device=device)
    projections = {layer_name(f"{path}.{part}"): w[part] for path, w in attention.items() for part in ("to_k", "to_v")}
    deltas = compute_deltas(projections, old, new, kept, settings)
    info = {"erase_prompts": len(pairs), "erase_positions": len(old), "preserve_prompts": len(preserve),
            "preserve_positions": len(kept), "seconds": round(time.perf_counter() - started, 2),
            "training_config": cfg.as_dict()}
    return UCEEdit(deltas, [c.target for c in concepts], [c.neutral for c in concepts], model_record(cfg.model_path()),
                   old.shape[1], settings, info)


# ---------------------------------------------------------------------------------------------------
# files


def save_uce(edit: UCEEdit, path: str | Path, overwrite: bool = False) -> Path:
    tensors = {name + DELTA_SUFFIX: delta for name, delta in edit.deltas.items()}
    s = edit.settings
    metadata = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "concepts": json.dumps(edit.concepts),
        "neutrals": json.dumps(edit.neutrals), "base_model": edit.base_model, "embed_dim": str(edit.embed_dim),
        "layers": str(len(edit.deltas)),
        "lamb": str(s.lamb), "erase_scale": str(s.erase_scale), "preserve_scale": str(s.preserve_scale),
        "technique": "replace", "projections": "to_k,to_v", "info": json.dumps(edit.info, sort_keys=True, default=str),
    }
    return write_edit_file(path, tensors, metadata, "UCE", overwrite)


def read_uce(path: str | Path) -> UCEEdit:
    from cpe.util.io import file_sha256

    path = Path(path)
    tensors, meta = read_edit_file(path, UCEFileError, "UCE", FORMAT_NAME, FORMAT_VERSION)
    odd = sorted(k for k in tensors if not k.endswith(DELTA_SUFFIX) or tensors[k].ndim != 2)
    if odd or not tensors:
        raise UCEFileError(f"{path}: unexpected tensor {odd[0] if odd else '(none)'}; expected <layer>{DELTA_SUFFIX}")
    embed_dim = int(meta["embed_dim"])
    wrong = sorted(k for k, t in tensors.items() if t.shape[1] != embed_dim)
    if wrong:
        width = tensors[wrong[0]].shape[1]
        raise UCEFileError(f"{path}: {wrong[0]} has input width {width}, metadata says {embed_dim}")
    settings = UCESettings(float(meta["lamb"]), float(meta["erase_scale"]), float(meta["preserve_scale"]))
    deltas = {k[: -len(DELTA_SUFFIX)]: t for k, t in tensors.items()}
    return UCEEdit(deltas, json.loads(meta["concepts"]), json.loads(meta["neutrals"]), meta.get("base_model", ""),
                   embed_dim, settings, json.loads(meta.get("info", "{}")), path, file_sha256(path))


# ---------------------------------------------------------------------------------------------------
# applying to a UNet


class AppliedUCE:
    """A UCE edit applied in place to a UNet's cross-attention projections; ``restore``/``apply`` toggle it exactly."""

    def __init__(self, unet, edit: UCEEdit) -> None:
        found = cross_attention_projections(unet)
        where = f" ({edit.path})" if edit.path else ""
        self.edit = edit
        self._layers = []
        for name, delta in edit.deltas.items():
            if name not in found:
                raise ValueError(f"UCE layer {name}{where} has no matching cross-attention projection in the UNet")
            linear = found[name]
            if tuple(linear.weight.shape) != tuple(delta.shape):
                raise ValueError(f"UCE layer {name}{where}: delta shape {tuple(delta.shape)} does not match the "
                                 f"UNet's weight {tuple(linear.weight.shape)}")
            original = linear.weight.detach().clone()
            edited = (original.float() + delta.to(original.device)).to(original.dtype)
            self._layers.append((linear, original, edited))
        self.applied = False
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for linear, _, edited in self._layers:
            linear.weight.copy_(edited)
        self.applied = True

    @torch.no_grad()
    def restore(self) -> None:
        """Put the original weights back (bit-identical)."""
        for linear, original, _ in self._layers:
            linear.weight.copy_(original)
        self.applied = False


def apply_uce(unet, edit: UCEEdit | str | Path) -> AppliedUCE:
    """Apply a UCE edit (or the file holding one) to ``unet`` in place; returns the handle that can undo it."""
    return AppliedUCE(unet, edit if isinstance(edit, UCEEdit) else read_uce(edit))

"""Gate files: one safetensors file per concept, in our format or the authors' released format.

Our format (``format = cpe-resag``): tensors ``gate.w_query``, ``gate.w_key``, ``gate.vector`` and, per
layer, ``<layer>.down`` / ``<layer>.up``, each with a concept axis of size 1; metadata holds the
concept, its neutral, the base model and its architecture (``cpe.network.architecture``), r, k, α, the
gate's key mode, the format version and the training config as JSON.

Released format (method.md §3.2): ``attention_gate.encoder_layer.slf_attn.attention_module1.w_qs``
/ ``w_ks`` / ``...gate.scaler`` ``.weight``, ``<layer>.lora_down.weight``, ``<layer>.lora_up.weight``,
``<layer>.alpha``; metadata ``prompts``, ``rank``, ``alpha``. Its gate uses U1 as query and key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from cpe.io_utils import atomic_write
from cpe.network import architecture
from cpe.resag import ResAG, ResAGSpec

FORMAT_NAME = "cpe-resag"
FORMAT_VERSION = "1"
GATE_FILE_PATTERN = "*last.safetensors"

_OURS_GATE = {"w_query": "gate.w_query", "w_key": "gate.w_key", "gate_vector": "gate.vector"}
_RELEASED_PREFIX = "attention_gate.encoder_layer.slf_attn."
_RELEASED_GATE = {
    "w_query": _RELEASED_PREFIX + "attention_module1.w_qs.weight",
    "w_key": _RELEASED_PREFIX + "attention_module1.w_ks.weight",
    "gate_vector": _RELEASED_PREFIX + "gate.scaler.weight",
}
_OURS_LAYER = {"down": ".down", "up": ".up"}
_RELEASED_LAYER = {"down": ".lora_down.weight", "up": ".lora_up.weight"}


class GateFileError(ValueError):
    """A gate file that cannot be used, with a one-line reason naming the file."""


@dataclass
class GateFileInfo:
    path: Path
    concept: str
    neutral: str
    base_model: str
    spec: ResAGSpec
    training_config: dict = field(default_factory=dict)
    file_format: str = "cpe"  # "cpe" or "released"
    sha256: str = ""

    @property
    def name(self) -> str:
        return self.concept or self.path.parent.name


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _ours_tensors(resag: ResAG, index: int) -> dict[str, Tensor]:
    tensors = resag.concept_parameters(index)
    out = {_OURS_GATE[key]: tensors[key] for key in _OURS_GATE}
    for name in resag.layers:
        out[name + _OURS_LAYER["down"]] = tensors[f"{name}.down"]
        out[name + _OURS_LAYER["up"]] = tensors[f"{name}.up"]
    return {key: value.to(torch.float32).contiguous().cpu() for key, value in out.items()}


def _write_safetensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str], overwrite: bool) -> Path:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; refusing to overwrite trained weights (pass overwrite=True)")
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def save_gate_file(
    resag: ResAG,
    path: str | Path,
    *,
    concept: str,
    neutral: str = "",
    base_model: str = "",
    training_config: dict | None = None,
    concept_index: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write concept ``concept_index`` of ``resag`` as one gate file in our format (atomically)."""
    spec = resag.spec
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "concept": concept,
        "neutral": neutral,
        "base_model": base_model,
        "base_architecture": architecture(spec.embed_dim, len(spec.layer_dims)),
        "embed_dim": str(spec.embed_dim),
        "gate_rank": str(spec.gate_rank),
        "lora_rank": str(spec.lora_rank),
        "alpha": str(float(spec.alpha)),
        "key_mode": spec.key_mode,
        "training_config": json.dumps(training_config or {}, sort_keys=True, default=str),
    }
    return _write_safetensors(Path(path), _ours_tensors(resag, concept_index), metadata, overwrite)


def _open(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    if not path.is_file():
        raise GateFileError(f"gate file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as e:  # safetensors raises several error types for damaged files
        raise GateFileError(f"{path}: not a readable safetensors gate file ({type(e).__name__}: {e})") from None
    return tensors, metadata


def _canonical(path: Path, tensors: dict[str, Tensor], gate_keys: dict, layer_keys: dict) -> dict[str, Tensor]:
    """Rename a file's tensors to the ResAG layout (``w_query``, ``<layer>.down``, ...)."""
    out = {}
    for key, file_key in gate_keys.items():
        if file_key not in tensors:
            raise GateFileError(f"{path}: missing tensor {file_key}")
        out[key] = tensors[file_key]
    layers = sorted({k[: -len(layer_keys["down"])] for k in tensors if k.endswith(layer_keys["down"])})
    if not layers:
        raise GateFileError(f"{path}: no layer tensors (*{layer_keys['down']})")
    for name in layers:
        for part, suffix in layer_keys.items():
            if name + suffix not in tensors:
                raise GateFileError(f"{path}: layer {name} lacks its {part} tensor ({name + suffix})")
            out[f"{name}.{part}"] = tensors[name + suffix]
    consumed = set(gate_keys.values()) | {name + suffix for name in layers for suffix in layer_keys.values()}
    if layer_keys is _RELEASED_LAYER:
        consumed |= {f"{name}.alpha" for name in layers}
    unexpected = sorted(set(tensors) - consumed)
    if unexpected:
        raise GateFileError(f"{path}: unexpected tensor {unexpected[0]} ({len(unexpected)} in all)")
    return out


def _spec_from_tensors(path: Path, t: dict[str, Tensor], alpha: float, key_mode: str) -> ResAGSpec:
    w_query = t["w_query"]
    if w_query.ndim != 3 or w_query.shape[0] != 1:
        raise GateFileError(f"{path}: gate query weight has shape {tuple(w_query.shape)}, expected (1, D, r)")
    _, embed_dim, gate_rank = w_query.shape
    expected = {"w_key": (1, embed_dim, gate_rank), "gate_vector": (1, embed_dim, 1)}
    for key, shape in expected.items():
        if tuple(t[key].shape) != shape:
            raise GateFileError(f"{path}: {key} has shape {tuple(t[key].shape)}, expected {shape}")
    layer_dims, ranks = {}, set()
    for key, down in t.items():
        if not key.endswith(".down"):
            continue
        name = key[: -len(".down")]
        up = t[f"{name}.up"]
        if down.ndim != 3 or up.ndim != 3 or down.shape[:2] != (1, embed_dim) or up.shape[:2] != (1, down.shape[2]):
            raise GateFileError(
                f"{path}: layer {name} has down {tuple(down.shape)} and up {tuple(up.shape)}, "
                f"expected (1, {embed_dim}, k) and (1, k, d)"
            )
        ranks.add(down.shape[2])
        layer_dims[name] = up.shape[2]
    if len(ranks) != 1:
        raise GateFileError(f"{path}: layers mix low ranks {sorted(ranks)}")
    return ResAGSpec(embed_dim, layer_dims, gate_rank, ranks.pop(), alpha, key_mode)


def read_gate_file(path: str | Path) -> tuple[dict[str, Tensor], GateFileInfo]:
    """Read one gate file of either format into the ResAG layout (see ``ResAG.concept_parameters``)."""
    path = Path(path)
    tensors, meta = _open(path)
    if meta.get("format") == FORMAT_NAME:
        if meta.get("format_version") != FORMAT_VERSION:
            raise GateFileError(f"{path}: format version {meta.get('format_version')} is not {FORMAT_VERSION}")
        canonical = _canonical(path, tensors, _OURS_GATE, _OURS_LAYER)
        spec = _spec_from_tensors(path, canonical, float(meta["alpha"]), meta["key_mode"])
        if spec.lora_rank != int(meta["lora_rank"]) or spec.gate_rank != int(meta["gate_rank"]):
            raise GateFileError(f"{path}: metadata ranks (r, k) disagree with the tensor shapes")
        info = GateFileInfo(
            path, meta["concept"], meta.get("neutral", ""), meta.get("base_model", ""), spec,
            json.loads(meta.get("training_config", "{}")), "cpe",
        )
    elif _RELEASED_GATE["w_query"] in tensors:
        canonical = _canonical(path, tensors, _RELEASED_GATE, _RELEASED_LAYER)
        spec = _spec_from_tensors(path, canonical, float(meta.get("alpha", "1.0")), "query_as_key")
        for name in spec.layer_dims:
            alpha = tensors[f"{name}.alpha"] if f"{name}.alpha" in tensors else None
            if alpha is not None and float(alpha) != spec.alpha:
                raise GateFileError(f"{path}: layer {name} has alpha {float(alpha)}, metadata says {spec.alpha}")
        if "rank" in meta and int(float(meta["rank"])) != spec.lora_rank:
            raise GateFileError(f"{path}: metadata rank {meta['rank']} disagrees with the tensors' k={spec.lora_rank}")
        info = GateFileInfo(path, meta.get("prompts", path.parent.name), "", "", spec, {}, "released")
    else:
        raise GateFileError(f"{path}: neither a CPE gate file nor a released ResAG file (unknown tensor names)")
    info.sha256 = file_sha256(path)
    return canonical, info


def gate_files(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (every ``*last.safetensors`` below, adversarial banks excluded)."""
    files: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            found = sorted(p for p in entry.rglob(GATE_FILE_PATTERN) if "adv_prompts" not in p.name)
            if not found:
                raise GateFileError(f"no gate files ({GATE_FILE_PATTERN}) under folder {entry}")
            files.extend(found)
        elif entry.is_file():
            files.append(entry)
        else:
            raise GateFileError(f"gate file or folder not found: {entry}")
    return files


def _check_compatible(first: GateFileInfo, other: GateFileInfo, pad_ranks: bool) -> None:
    a, b = first.spec, other.spec
    checks = [("text width D", a.embed_dim, b.embed_dim), ("key mode", a.key_mode, b.key_mode)]
    if not pad_ranks:
        checks += [("gate rank r", a.gate_rank, b.gate_rank), ("low rank k", a.lora_rank, b.lora_rank),
                   ("alpha", a.alpha, b.alpha)]
    for label, x, y in checks:
        if x != y:
            hint = " (pad_ranks merges different r, k, alpha exactly)" if label in ("gate rank r", "low rank k") else ""
            raise GateFileError(f"{other.path}: {label} {y} differs from {x} of {first.path}; cannot merge{hint}")
    for name, dim in a.layer_dims.items():
        if name not in b.layer_dims:
            raise GateFileError(f"{other.path}: missing layer {name} that {first.path} has")
        if b.layer_dims[name] != dim:
            raise GateFileError(
                f"{other.path}: layer {name} has width {b.layer_dims[name]}, {first.path} has {dim}; cannot merge"
            )
    extra = sorted(set(b.layer_dims) - set(a.layer_dims))
    if extra:
        raise GateFileError(f"{other.path}: has layer {extra[0]} that {first.path} lacks")


def _pad(tensors: dict[str, Tensor], spec: ResAGSpec, gate_rank: int, lora_rank: int) -> dict[str, Tensor]:
    """Zero-pad one concept to ranks (r, k) and fold its scale α/k into Up: the same residuals exactly.

    Extra gate columns add nothing to the logits (Q Kᵀ), extra Down columns meet zero Up rows.
    """
    def pad_last(t: Tensor, size: int) -> Tensor:
        return torch.nn.functional.pad(t, (0, size - t.shape[-1]))

    out = {key: pad_last(tensors[key], gate_rank) for key in ("w_query", "w_key")}
    out["gate_vector"] = tensors["gate_vector"]
    for name in spec.layer_dims:
        out[f"{name}.down"] = pad_last(tensors[f"{name}.down"], lora_rank)
        up = tensors[f"{name}.up"] * spec.scale
        out[f"{name}.up"] = torch.nn.functional.pad(up, (0, 0, 0, lora_rank - up.shape[1]))
    return out


def load_erasers(
    paths: Sequence[str | Path], key_mode: str | None = None, pad_ranks: bool = False
) -> tuple[ResAG, list[GateFileInfo]]:
    """Load gate files and folders into one ResAG with one concept slot per file (method.md §4.1).

    ``key_mode`` overrides the files' gate key mode (e.g. to study the paper's separate-key variant).
    ``pad_ranks`` merges files of different r, k or α (e.g. celebrities with explicit content) by exact
    zero-padding; otherwise such files are an error, as in the reference.
    """
    files = gate_files(paths)
    loaded = [read_gate_file(path) for path in files]
    infos = [info for _, info in loaded]
    for info in infos[1:]:
        _check_compatible(infos[0], info, pad_ranks)
    spec = infos[0].spec
    tensors_list = [tensors for tensors, _ in loaded]
    if pad_ranks:
        r, k = max(i.spec.gate_rank for i in infos), max(i.spec.lora_rank for i in infos)
        tensors_list = [_pad(t, i.spec, r, k) for t, i in zip(tensors_list, infos, strict=True)]
        spec = ResAGSpec(spec.embed_dim, spec.layer_dims, r, k, float(k), spec.key_mode)  # scale α/k = 1
    if key_mode is not None and key_mode != spec.key_mode:
        spec = ResAGSpec(spec.embed_dim, spec.layer_dims, spec.gate_rank, spec.lora_rank, spec.alpha, key_mode)
    resag = ResAG(spec, num_concepts=len(loaded))
    for index, tensors in enumerate(tensors_list):
        resag.load_concept(index, tensors)
    resag.sources = [str(path) for path in files]
    return resag.requires_grad_(False).eval(), infos


def export_released(src: str | Path, dst: str | Path, overwrite: bool = False) -> Path:
    """Write a gate file of ours in the authors' released format (their loader reads it as is)."""
    tensors, info = read_gate_file(src)
    if info.spec.key_mode != "query_as_key":
        raise GateFileError(f"{src}: the released format implies key mode query_as_key, this file is separate_key")
    out = {_RELEASED_GATE[key]: tensors[key] for key in _RELEASED_GATE}
    for name in info.spec.layer_dims:
        out[name + _RELEASED_LAYER["down"]] = tensors[f"{name}.down"]
        out[name + _RELEASED_LAYER["up"]] = tensors[f"{name}.up"]
        out[f"{name}.alpha"] = torch.tensor(float(info.spec.alpha))
    out = {key: value.to(torch.float32).contiguous() for key, value in out.items()}
    metadata = {"prompts": info.concept, "rank": str(info.spec.lora_rank), "alpha": str(float(info.spec.alpha))}
    return _write_safetensors(Path(dst), out, metadata, overwrite)

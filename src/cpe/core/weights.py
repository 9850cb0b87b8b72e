"""Gate files: one safetensors file per concept, in our format or the authors' released format.

Our format (``format = cpe-resag``): tensors ``gate.w_query``, ``gate.w_key``, ``gate.vector`` and, per
layer, ``<layer>.down`` / ``<layer>.up``, each with a concept axis of size 1; metadata holds the
concept, its neutral, the base model and its architecture (``cpe.core.network.architecture``), r, k, α, the
gate's key mode, the residual family (``gate``: ``attention`` or ``none``; a file without the key, written
before the key existed, is ``attention``),
the format version and the training config as JSON. Files of gate ``none`` keep the (unused, untrained)
gate tensors, so both families share one layout.

Released format (method.md §3.2): ``attention_gate.encoder_layer.slf_attn.attention_module1.w_qs``
/ ``w_ks`` / ``...gate.scaler`` ``.weight``, ``<layer>.lora_down.weight``, ``<layer>.lora_up.weight``,
``<layer>.alpha``; metadata ``prompts``, ``rank``, ``alpha``. Its gate uses U1 as query and key and is
always the attention gate.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from cpe.core.network import architecture
from cpe.core.resag import GATES, ResAG, ResAGSpec
from cpe.util.io import atomic_write, file_sha256, read_safetensors
from cpe.util.names import printable

FORMAT_NAME = "cpe-resag"
FORMAT_VERSION = "1"
GATE_FILE_PATTERN = "*last.safetensors"
STORAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # what load_erasers can store the parameters in

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
        "gate": spec.gate,
        "training_config": json.dumps(training_config or {}, sort_keys=True, default=str),
    }
    return _write_safetensors(Path(path), _ours_tensors(resag, concept_index), metadata, overwrite)


def _open(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    return read_safetensors(path, GateFileError, "gate file")


def _gate_of(path: Path, meta: dict[str, str]) -> str:
    """The residual family in a file's metadata; files written before the key existed are attention gates."""
    gate = meta.get("gate", "attention")
    if gate not in GATES:
        raise GateFileError(f"{path}: unknown gate {gate!r} in the metadata (expected one of {', '.join(GATES)})")
    return gate


def stored_gate(path: str | Path) -> str:
    """The residual family of a gate file from its metadata alone (the released format: attention)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises several error types for damaged files
        cause = f"{type(e).__name__}: {printable(e)}"
        raise GateFileError(f"{path}: not a readable safetensors gate file ({cause})") from None
    return _gate_of(path, meta) if meta.get("format") == FORMAT_NAME else "attention"


def _check_finite(path: Path, tensors: dict[str, Tensor]) -> None:
    """NaN or Inf weights would turn every generated image black without a word: refuse them."""
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor.float()).all()):
            raise GateFileError(f"{path}: tensor {printable(key)} has non-finite values (NaN or Inf)")


def _meta_text(path: Path, meta: dict[str, str], key: str, default: str | None = None) -> str:
    value = meta.get(key, default)
    if value is None:
        raise GateFileError(f"{path}: metadata lacks {key!r}")
    return value


def _meta_number(path: Path, meta: dict[str, str], key: str, kind: type = float, default: str | None = None):
    """A numeric metadata entry, finite (and whole for ``int``), or a ``GateFileError`` naming file and key."""
    text = _meta_text(path, meta, key, default)
    try:
        number = float(text)
    except ValueError:
        raise GateFileError(f"{path}: metadata {key}={text!r} is not a number") from None
    if not math.isfinite(number) or (kind is int and not number.is_integer()):
        raise GateFileError(f"{path}: metadata {key}={text!r} is not a finite {'integer' if kind is int else 'number'}")
    return kind(number)


def _meta_json(path: Path, meta: dict[str, str], key: str) -> dict:
    try:
        value = json.loads(meta.get(key, "{}"))
    except json.JSONDecodeError as e:
        raise GateFileError(f"{path}: metadata {key} is not valid JSON ({e.msg})") from None
    if not isinstance(value, dict):
        raise GateFileError(f"{path}: metadata {key} is not a JSON object")
    return value


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
                raise GateFileError(f"{path}: layer {printable(name)} lacks its {part} tensor "
                                    f"({printable(name + suffix)})")
            out[f"{name}.{part}"] = tensors[name + suffix]
    consumed = set(gate_keys.values()) | {name + suffix for name in layers for suffix in layer_keys.values()}
    if layer_keys is _RELEASED_LAYER:
        consumed |= {f"{name}.alpha" for name in layers}
    unexpected = sorted(set(tensors) - consumed)
    if unexpected:
        raise GateFileError(f"{path}: unexpected tensor {printable(unexpected[0])} ({len(unexpected)} in all)")
    return out


def _spec_from_tensors(path: Path, t: dict[str, Tensor], alpha: float, key_mode: str, gate: str) -> ResAGSpec:
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
                f"{path}: layer {printable(name)} has down {tuple(down.shape)} and up {tuple(up.shape)}, "
                f"expected (1, {embed_dim}, k) and (1, k, d)"
            )
        ranks.add(down.shape[2])
        layer_dims[name] = up.shape[2]
    if len(ranks) != 1:
        raise GateFileError(f"{path}: layers mix low ranks {sorted(ranks)}")
    try:
        return ResAGSpec(embed_dim, layer_dims, gate_rank, ranks.pop(), alpha, key_mode, gate)
    except ValueError as e:
        raise GateFileError(f"{path}: {e}") from None


def read_gate_file(path: str | Path) -> tuple[dict[str, Tensor], GateFileInfo]:
    """Read one gate file of either format into the ResAG layout (see ``ResAG.concept_parameters``)."""
    path = Path(path)
    tensors, meta = _open(path)
    _check_finite(path, tensors)
    if meta.get("format") == FORMAT_NAME:
        if meta.get("format_version") != FORMAT_VERSION:
            raise GateFileError(f"{path}: format version {meta.get('format_version')!r} is not {FORMAT_VERSION}")
        canonical = _canonical(path, tensors, _OURS_GATE, _OURS_LAYER)
        spec = _spec_from_tensors(path, canonical, _meta_number(path, meta, "alpha"),
                                  _meta_text(path, meta, "key_mode"), _gate_of(path, meta))
        ranks = (_meta_number(path, meta, "lora_rank", int), _meta_number(path, meta, "gate_rank", int))
        if ranks != (spec.lora_rank, spec.gate_rank):
            raise GateFileError(f"{path}: metadata ranks (r, k) disagree with the tensor shapes")
        info = GateFileInfo(
            path, _meta_text(path, meta, "concept"), meta.get("neutral", ""), meta.get("base_model", ""), spec,
            _meta_json(path, meta, "training_config"), "cpe",
        )
    elif _RELEASED_GATE["w_query"] in tensors:
        canonical = _canonical(path, tensors, _RELEASED_GATE, _RELEASED_LAYER)
        alpha = _meta_number(path, meta, "alpha", default="1.0")
        spec = _spec_from_tensors(path, canonical, alpha, "query_as_key", "attention")
        for name in spec.layer_dims:
            alpha = tensors[f"{name}.alpha"] if f"{name}.alpha" in tensors else None
            if alpha is not None and alpha.numel() != 1:
                raise GateFileError(f"{path}: layer {printable(name)} alpha has shape {tuple(alpha.shape)}, "
                                    "expected a scalar")
            if alpha is not None and float(alpha) != spec.alpha:
                raise GateFileError(f"{path}: layer {printable(name)} has alpha {float(alpha)}, "
                                    f"metadata says {spec.alpha}")
        if "rank" in meta and _meta_number(path, meta, "rank") != spec.lora_rank:
            raise GateFileError(f"{path}: metadata rank {meta['rank']!r} disagrees with the tensors' "
                                f"k={spec.lora_rank}")
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
    # gate "none" sums residuals, "attention" picks one concept per token: no merge of both is faithful to either
    checks = [("text width D", a.embed_dim, b.embed_dim), ("gate", a.gate, b.gate)]
    if a.gate == "attention":  # gate "none" never reads its key weights
        checks.append(("key mode", a.key_mode, b.key_mode))
    if not pad_ranks:
        checks += [("gate rank r", a.gate_rank, b.gate_rank), ("low rank k", a.lora_rank, b.lora_rank),
                   ("alpha", a.alpha, b.alpha)]
    for label, x, y in checks:
        if x != y:
            hint = " (pad_ranks merges different r, k, alpha exactly)" if label in ("gate rank r", "low rank k") else ""
            raise GateFileError(f"{other.path}: {label} {y} differs from {x} of {first.path}; cannot merge{hint}")
    for name, dim in a.layer_dims.items():
        if name not in b.layer_dims:
            raise GateFileError(f"{other.path}: missing layer {printable(name)} that {first.path} has")
        if b.layer_dims[name] != dim:
            raise GateFileError(
                f"{other.path}: layer {printable(name)} has width {b.layer_dims[name]}, {first.path} has {dim}; "
                "cannot merge"
            )
    extra = sorted(set(b.layer_dims) - set(a.layer_dims))
    if extra:
        raise GateFileError(f"{other.path}: has layer {printable(extra[0])} that {first.path} lacks")


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


def _stored(path: Path, tensors: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    """One file's tensors in the storage dtype; a value that overflows it (half precision) is an error."""
    if dtype == torch.float32:
        return tensors
    out = {key: value.to(dtype) for key, value in tensors.items()}
    for key, value in out.items():
        if not bool(torch.isfinite(value).all()):
            raise GateFileError(f"{path}: tensor {printable(key)} overflows {dtype} (|x| > {torch.finfo(dtype).max:g})")
    return out


def _empty_resag(spec: ResAGSpec, key_mode: str | None, num_concepts: int, dtype: torch.dtype) -> ResAG:
    """N uninitialised slots in ``dtype`` (every one is filled from a file: no initialisation of N concepts)."""
    if key_mode is not None and key_mode != spec.key_mode:
        spec = dataclasses.replace(spec, key_mode=key_mode)
    with torch.device("meta"):
        resag = ResAG(spec, num_concepts=num_concepts)
    return resag.to(dtype).to_empty(device="cpu")


def load_erasers(
    paths: Sequence[str | Path], key_mode: str | None = None, pad_ranks: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[ResAG, list[GateFileInfo]]:
    """Load gate files and folders into one ResAG with one concept slot per file (method.md §4.1).

    ``key_mode`` overrides the files' gate key mode (e.g. to study the paper's separate-key variant).
    ``pad_ranks`` merges files of different r, k or α (e.g. celebrities with explicit content) by exact
    zero-padding; otherwise such files are an error, as in the reference. The ResAG has the files' gate
    (``attention`` or ``none``); files of different gates are an error. ``dtype`` (``torch.float16`` or
    ``torch.bfloat16``) stores the parameters in half precision, half the memory of thousands of erasers; the
    gate and the residuals are still computed in float32 (:attr:`ResAG.compute_dtype`).
    """
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage dtype {dtype} is not one of {', '.join(map(str, STORAGE_DTYPES))}")
    files = gate_files(paths)
    infos, held, resag = [], [], None
    for index, path in enumerate(files):
        tensors, info = read_gate_file(path)
        if infos:
            _check_compatible(infos[0], info, pad_ranks)
        infos.append(info)
        tensors = _stored(path, tensors, dtype)
        if pad_ranks:  # the padded ranks are known after the last file: hold them all
            held.append(tensors)
            continue
        if resag is None:
            resag = _empty_resag(info.spec, key_mode, len(files), dtype)
        resag.load_concept(index, tensors)  # streamed: one file's copy at a time beside the merged parameters
    if pad_ranks:
        r, k = max(i.spec.gate_rank for i in infos), max(i.spec.lora_rank for i in infos)
        spec = dataclasses.replace(infos[0].spec, gate_rank=r, lora_rank=k, alpha=float(k))  # scale α/k = 1
        resag = _empty_resag(spec, key_mode, len(files), dtype)
        for index, info in enumerate(infos):
            resag.load_concept(index, _pad(held[index], info.spec, r, k))
            held[index] = None
    resag.sources = [str(path) for path in files]
    return resag.requires_grad_(False).eval(), infos


def export_released(src: str | Path, dst: str | Path, overwrite: bool = False) -> Path:
    """Write a gate file of ours in the authors' released format (their loader reads it as is)."""
    tensors, info = read_gate_file(src)
    if info.spec.gate != "attention":
        raise GateFileError(f"{src}: the released format has the attention gate, this file is gate {info.spec.gate}")
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

"""Load the text side, the UNet (or only its cross-attention weights) or a whole pipeline from a hub id or folder.

The pipeline class comes from ``model_index.json``: ``StableDiffusionPipeline`` (SD 1.x, SD 2.x, any
prediction type) or ``StableDiffusionXLPipeline`` (SDXL). The same code path serves hub models for users
and the small pipelines the project builds for tests and the offline demo (a local folder instead).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import typing
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import CLIPTokenizer

from cpe.util.config import REPO_ROOT, DTypeName

CLIP_TOKENIZER_ASSETS = Path(__file__).resolve().parents[1] / "assets" / "clip_tokenizer"
DEFAULT_MODEL = "CompVis/stable-diffusion-v1-4"


class ModelLoadError(ValueError):
    """A model that cannot be loaded (damaged files, unknown hub id, hub unreachable), in one line."""


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def check_model_source(model: str) -> None:
    """Fail early, in one line, when ``model`` is neither a local folder nor a loadable hub id.

    A hub id that is not in the local cache is looked up once (a few seconds at most) instead of letting
    the loaders retry for half a minute and end in a traceback.
    """
    looks_local = model.startswith((".", "/", "~")) or Path(model).expanduser().exists() or model.count("/") > 1
    if looks_local and not Path(model).expanduser().is_dir():
        raise FileNotFoundError(f"model folder does not exist: {model}")
    if not looks_local:
        _check_hub_model(model)


def model_identity(model: str) -> str:
    """What names a model regardless of how it is written: a local folder's resolved path (a relative one from the
    current folder, else from the repository root, where the toy models live), else the hub id as written."""
    text = model.replace("{root}", str(REPO_ROOT))
    local = Path(text).expanduser()
    for folder in (local, REPO_ROOT / local):
        if folder.is_dir():
            return str(folder.resolve())
    return text


def same_model(a: str, b: str) -> bool:
    return model_identity(a) == model_identity(b)


def model_record(model: str) -> str:
    """``model`` as a gate file records it: a folder inside the repository as ``{root}/…`` (true in any clone)."""
    identity = Path(model_identity(model))
    if identity.is_absolute() and identity.is_relative_to(REPO_ROOT):
        return "{root}/" + identity.relative_to(REPO_ROOT).as_posix()
    return model


@functools.lru_cache(maxsize=16)
def _check_hub_model(model: str) -> None:
    if not _HUB_ID.match(model):
        raise ModelLoadError(f"model {model!r} is neither a local folder nor a Hugging Face hub id")
    import huggingface_hub

    if isinstance(huggingface_hub.try_to_load_from_cache(model, "model_index.json"), str):
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelLoadError(f"model {model!r} is not a local folder nor in the Hugging Face cache (HF_HUB_OFFLINE)")
    try:
        huggingface_hub.model_info(model, timeout=10)
    except Exception as e:  # connection errors, unknown or gated repositories
        raise ModelLoadError(f"model {model!r} is not a local folder nor in the Hugging Face cache, and the hub "
                             f"lookup failed ({type(e).__name__}: {_first_line(e)})") from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0]


@contextmanager
def _loading(model: str, what: str) -> Iterator[None]:
    """Turn a loader's failure (damaged or missing files, bad configs) into a one-line ``ModelLoadError``."""
    try:
        yield
    except (ModelLoadError, FileNotFoundError):
        raise
    except Exception as e:
        raise ModelLoadError(f"{model}: cannot load the {what} ({type(e).__name__}: {_first_line(e)})") from None


def clip_tokenizer_from_assets(model_max_length: int = 77, pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    """The real CLIP BPE tokenizer, built from the vocabulary shipped with this package (no download).

    ``pad_token="!"`` gives the OpenCLIP flavour of SD 2.x and SDXL's second tokenizer.
    """
    return CLIPTokenizer(
        str(CLIP_TOKENIZER_ASSETS / "vocab.json"),
        str(CLIP_TOKENIZER_ASSETS / "merges.txt"),
        model_max_length=model_max_length,
        pad_token=pad_token,
    )


_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A torch dtype from one of the config's dtype names (``cpe.util.config.DTypeName``)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = typing.get_args(DTypeName)
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(names)}")
    return getattr(torch, _DTYPE_ALIASES.get(dtype, dtype))


def resolve_device(device: str | None) -> torch.device:
    """``None``/"auto" picks CUDA when present, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextmanager
def _quiet_dtype_rename() -> Iterator[None]:
    """``torch_dtype`` works on every supported release; newer ones only warn that it is renamed ``dtype``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        yield


class _UnusedImageProcessorNotice(logging.Filter):
    """Drops transformers' notice that an image processor falls back to PIL because torchvision is absent.

    diffusers' pipeline module imports ``CLIPImageProcessor`` and ``SiglipImageProcessor`` for the safety checker
    and IP-Adapter, which this project never loads; only that notice is dropped, and only during that import.
    """

    NOTICE = re.compile(r"`\w+ImageProcessor` requires torchvision \(not installed\); falling back to `\w+Pil`")

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.NOTICE.match(record.getMessage())


def stable_diffusion_pipeline_class(name: str = "StableDiffusionPipeline") -> type:
    """A diffusers pipeline class (``StableDiffusionPipeline``, ``StableDiffusionXLPipeline``), imported without the
    notices about image processors it never uses."""
    logger = logging.getLogger("transformers.utils.import_utils")
    notice = _UnusedImageProcessorNotice()
    logger.addFilter(notice)
    try:
        import diffusers

        return getattr(diffusers, name)
    finally:
        logger.removeFilter(notice)


def component_files(model: str, subfolders: Sequence[str]) -> dict:
    """What identifies the files of some pipeline components: the folder they are read from and each file's
    relative path, size and modification time (a hub id resolves to its cached snapshot, named by its commit)."""
    check_model_source(model)
    local = Path(model).expanduser()
    if local.is_dir():
        folder = local.resolve()
    else:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(model, allow_patterns=[f"{s}/*" for s in subfolders], local_files_only=True))
    files = sorted(p for s in subfolders for p in (folder / s).rglob("*") if p.is_file())
    stats = [(p.relative_to(folder).as_posix(), p.stat()) for p in files]
    return {"folder": str(folder), "files": [[name, st.st_size, st.st_mtime_ns] for name, st in stats]}


def load_unet(model: str, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32"):
    from diffusers import UNet2DConditionModel

    check_model_source(model)
    with _quiet_dtype_rename(), _loading(model, "UNet"):
        unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", torch_dtype=resolve_dtype(dtype))
    return unet.to(device).eval().requires_grad_(False)


def load_ddim_scheduler(model: str):
    """A ``DDIMScheduler`` with the pipeline's noise schedule (its ``scheduler/scheduler_config.json``)."""
    from diffusers import DDIMScheduler

    check_model_source(model)
    with _loading(model, "scheduler"):
        return DDIMScheduler.from_config(DDIMScheduler.load_config(model, subfolder="scheduler"))


# model_index.json class -> the pipeline kind CPE supports (both kinds attach to a UNet2DConditionModel).
PIPELINE_KINDS = {"StableDiffusionPipeline": "sd", "StableDiffusionXLPipeline": "sdxl"}


def model_index(model: str) -> dict:
    """The pipeline's ``model_index.json`` (from the folder, or fetched alone from the hub)."""
    check_model_source(model)
    local = Path(model).expanduser()
    if local.is_dir():
        path = local / "model_index.json"
        if not path.is_file():
            raise FileNotFoundError(f"{model}: no model_index.json (not a diffusers pipeline folder)")
    else:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(model, "model_index.json"))
    return json.loads(path.read_text(encoding="utf-8"))


def pipeline_kind(model: str) -> str:
    """"sd" (SD 1.x / 2.x, one CLIP text encoder) or "sdxl" (two text encoders), from ``model_index.json``."""
    name = model_index(model).get("_class_name")
    if name not in PIPELINE_KINDS:
        raise ValueError(f"{model} is a {name} pipeline; CPE supports {' and '.join(PIPELINE_KINDS)}")
    return PIPELINE_KINDS[name]


def load_pipeline(model: str, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32"):
    """The model's pipeline class from ``model_index.json``: ``StableDiffusionPipeline`` (safety checker off,
    as in the paper's generation) or ``StableDiffusionXLPipeline`` (invisible watermark off, so images do not
    depend on whether that optional package is installed)."""
    kind = pipeline_kind(model)
    if kind == "sdxl":
        cls, extra = stable_diffusion_pipeline_class("StableDiffusionXLPipeline"), {"add_watermarker": False}
    else:
        cls, extra = stable_diffusion_pipeline_class(), {"safety_checker": None, "requires_safety_checker": False}
    with _quiet_dtype_rename(), _loading(model, "pipeline"):
        pipe = cls.from_pretrained(model, torch_dtype=resolve_dtype(dtype), **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@dataclass(frozen=True)
class TextEmbedding:
    context: torch.Tensor  # what every cross-attention of the UNet sees: (B, T, D)
    pooled: torch.Tensor | None  # SDXL only: text_encoder_2's projected pooled output (B, P), the added conditioning


class TextSide:
    """The tokenizer(s) and text encoder(s) of a pipeline, encoding prompts exactly as its ``encode_prompt`` does.

    * "sd" (SD 1.x / 2.x): the encoder's last hidden state (after the final layer norm; SD 2.x's OpenCLIP
      encoder is stored with its last layer removed, so this is OpenCLIP's penultimate layer);
    * "sdxl": both encoders' penultimate hidden states side by side (768 + 1280 = 2048 for SDXL base), plus
      the second encoder's projected pooled output.

    Training encodes its prompts with it and generation hands its embeddings to the pipeline, so both see
    the same context.
    """

    def __init__(self, kind: str, tokenizers: list, encoders: list[torch.nn.Module]) -> None:
        pairs = 2 if kind == "sdxl" else 1
        if kind not in PIPELINE_KINDS.values() or not len(tokenizers) == len(encoders) == pairs:
            raise ValueError(f"a {kind!r} text side needs {pairs} tokenizer/encoder pair(s)")
        lengths = {t.model_max_length for t in tokenizers}
        if len(lengths) != 1:
            raise ValueError(f"the tokenizers pad to different lengths {sorted(lengths)}")
        self.kind, self.tokenizers, self.encoders = kind, tokenizers, encoders

    @classmethod
    def load(cls, model: str, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32") -> TextSide:
        """Only the tokenizer(s) and text encoder(s) of a pipeline folder or hub id (no UNet, no VAE)."""
        from transformers import CLIPTextModel, CLIPTextModelWithProjection

        kind = pipeline_kind(model)
        parts = [("tokenizer", "text_encoder", CLIPTextModel)]
        if kind == "sdxl":
            parts.append(("tokenizer_2", "text_encoder_2", CLIPTextModelWithProjection))
        tokenizers, encoders = [], []
        for tokenizer_folder, encoder_folder, encoder_cls in parts:
            with _loading(model, tokenizer_folder.replace("_", " ")):
                tokenizers.append(CLIPTokenizer.from_pretrained(model, subfolder=tokenizer_folder))
            with _quiet_dtype_rename(), _loading(model, encoder_folder.replace("_", " ")):
                encoder = encoder_cls.from_pretrained(model, subfolder=encoder_folder, torch_dtype=resolve_dtype(dtype))
            encoders.append(encoder.to(device).eval().requires_grad_(False))
        return cls(kind, tokenizers, encoders)

    @classmethod
    def from_pipeline(cls, pipe) -> TextSide:
        """The text side of a loaded pipeline (the very same modules)."""
        if getattr(pipe, "text_encoder_2", None) is not None:
            return cls("sdxl", [pipe.tokenizer, pipe.tokenizer_2], [pipe.text_encoder, pipe.text_encoder_2])
        return cls("sd", [pipe.tokenizer], [pipe.text_encoder])

    @property
    def tokenizer(self):
        """The first tokenizer (SDXL's two share one vocabulary and differ only in the padding token)."""
        return self.tokenizers[0]

    @property
    def tokens(self) -> int:
        return self.tokenizer.model_max_length

    @property
    def width(self) -> int:
        """Width D of the context."""
        return sum(encoder.config.hidden_size for encoder in self.encoders)

    def _ids(self, tokenizer, encoder, prompts: list[str]) -> dict[str, torch.Tensor]:
        inputs = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                           return_tensors="pt")
        out = {"input_ids": inputs.input_ids.to(encoder.device)}
        if self.kind == "sd" and getattr(encoder.config, "use_attention_mask", False):
            out["attention_mask"] = inputs.attention_mask.to(encoder.device)
        return out

    def embed(self, prompts: list[str], grad: bool = False) -> TextEmbedding:
        """The prompts' context (and SDXL's pooled embedding); ``grad=True`` keeps the autograd graph (the toy
        builder trains the encoders through this very function)."""
        with torch.enable_grad() if grad else torch.no_grad():
            return self._embed(prompts)

    def _embed(self, prompts: list[str]) -> TextEmbedding:
        if self.kind == "sd":
            encoder = self.encoders[0]
            return TextEmbedding(encoder(**self._ids(self.tokenizer, encoder, prompts))[0], None)
        hidden, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.encoders, strict=True):
            out = encoder(**self._ids(tokenizer, encoder, prompts), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled = out[0]
        if pooled.ndim != 2:
            raise ValueError("SDXL's second text encoder must project its pooled output (CLIPTextModelWithProjection)")
        return TextEmbedding(torch.cat(hidden, dim=-1), pooled)

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """The context the UNet's cross-attention sees: (B, T, D)."""
        return self.embed(prompts).context

    @torch.no_grad()
    def pooled(self, prompts: list[str]) -> torch.Tensor:
        """SDXL's pooled embedding alone (only the second encoder runs)."""
        if self.kind != "sdxl":
            raise ValueError("only SDXL pipelines condition on a pooled text embedding")
        tokenizer, encoder = self.tokenizers[-1], self.encoders[-1]
        return encoder(**self._ids(tokenizer, encoder, prompts))[0]


CROSS_ATTENTION_PARTS = ("to_q", "to_k", "to_v", "to_out.0")


def _unet_weight_files(model: str) -> list[Path]:
    """The UNet's safetensors file(s) in a local pipeline folder or a hub snapshot (fp32 before fp16)."""
    check_model_source(model)
    names = ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"]
    local = Path(model).expanduser()
    if local.is_dir():
        folder = local / "unet"
    else:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(model, allow_patterns=["unet/diffusion_pytorch_model.safetensors*"])) / "unet"
        if not any(folder.glob("*.safetensors")):
            snapshot_download(model, allow_patterns=["unet/diffusion_pytorch_model.fp16.safetensors*"])
    for name in names:
        index = folder / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [folder / shard for shard in shards]
        if (folder / name).is_file():
            return [folder / name]
    raise FileNotFoundError(f"no UNet safetensors file under {folder}")


def load_cross_attention_weights(
    model: str, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32"
) -> dict[str, dict[str, torch.Tensor]]:
    """Only the cross-attention weights of the UNet, without loading it: module path -> to_q/to_k/to_v/to_out.

    The UNet's architecture is built on the meta device (no memory, no weights) so that ``cpe.core.network`` finds its
    cross-attention modules as it does when attaching; then just their tensors are read from the UNet's
    safetensors file(s) (sharded or not, fp32 or fp16 variant).
    """
    from diffusers import UNet2DConditionModel
    from safetensors import safe_open

    from cpe.core.network import cross_attention_modules

    check_model_source(model)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(model, subfolder="unet"))
    modules = sorted(cross_attention_modules(unet), key=_natural_key)
    wanted = {
        f"{path}.{part}.weight": (path, part.removesuffix(".0")) for path in modules for part in CROSS_ATTENTION_PARTS
    }
    found: dict[str, dict[str, torch.Tensor]] = {}
    with _loading(model, "UNet weights"):
        files = _unet_weight_files(model)
    for file in files:
        with _loading(str(file), "UNet weights"), safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if key in wanted:
                    module, part = wanted[key]
                    found.setdefault(module, {})[part] = f.get_tensor(key).to(device=device, dtype=resolve_dtype(dtype))
    incomplete = [m for m in modules if len(found.get(m, {})) != len(CROSS_ATTENTION_PARTS)]
    if not modules or incomplete:
        raise ValueError(f"{model}: UNet cross-attention weights incomplete ({incomplete[:1] or 'none found'})")
    return {module: found[module] for module in modules}


def _natural_key(text: str) -> list:
    """Module paths in UNet order (down, mid, up; numbers compared as numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]

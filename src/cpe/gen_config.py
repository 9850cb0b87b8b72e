"""Generation configs (``configs/<domain>/gen/*.yaml``): one dataclass of defaults, validated at load.

An unknown or misspelt key, or a value of the wrong type, is a one-line error naming the key and file.
Relative ``prompt_path`` values are read from ``data_dir`` (the prompt CSVs the project cannot ship live
there; ``scripts/prepare_data.py`` builds them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

POOLED_MODES = ("keep", "neutral")  # SDXL's pooled text embedding under erasure (cpe.pooled)


@dataclass
class GenerationConfig:
    """Everything that decides which images are made and where they go (method.md §4.3-4.4)."""

    prompt_path: str = "???"  # CSV with prompt, evaluation_seed[, evaluation_guidance, case_number, ...]
    subset: str = ""  # output sub-folder (erased, remained, coco_30k, ...); default: the config file's stem
    data_dir: str = "data/generation_prompts"  # where relative prompt_path values are looked up
    negative_prompt: str = ""
    unconditional_prompt: str = ""  # appended to every prompt (reference behaviour; empty in all configs)
    width: int = 512
    height: int = 512
    num_inference_steps: int = 50
    guidance_scale: float = 7.5  # used for rows without an evaluation_guidance value
    generate_num: int = 1  # images per prompt row
    scheduler: str | None = None  # a diffusers scheduler class name; None = the model's own (PNDM for SD v1.4)
    batch_size: int = 1  # prompt rows per pipeline call (images do not depend on it)
    save_root: str = "generated_images"
    gate_rank: int | None = None  # when set, loaded erasers must have this gate rank
    first_row: int | None = None  # inclusive range of CSV data rows (0-based); None = from the start
    last_row: int | None = None  # None = to the end
    dtype: str = "float32"
    pooled: str = "keep"  # SDXL's pooled text embedding: keep | neutral (cpe.pooled)
    pooled_threshold: float = 0.5  # neutral: a gate above this on any token replaces the concept in the pooled text

    def resolved_prompt_path(self) -> Path:
        path = Path(self.prompt_path).expanduser()
        return path if path.is_absolute() else Path(self.data_dir).expanduser() / path

    def image_settings(self) -> dict[str, Any]:
        """The values that shape every image; recorded in each manifest record."""
        keep = ("negative_prompt", "unconditional_prompt", "width", "height", "num_inference_steps",
                "guidance_scale", "generate_num", "scheduler", "dtype", "pooled", "pooled_threshold")
        return {k: v for k, v in asdict(self).items() if k in keep}


GEN_CONFIG_KEYS = tuple(f.name for f in fields(GenerationConfig))


def _validated(values: dict[str, Any], source: str) -> GenerationConfig:
    for key in values:
        if key not in GEN_CONFIG_KEYS:
            raise ValueError(f"{source}: unknown generation config key {key!r} (known: {', '.join(GEN_CONFIG_KEYS)})")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(GenerationConfig), values)
        cfg: GenerationConfig = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        first_line = str(e).splitlines()[0]
        raise ValueError(f"{source}: bad value for generation config key {key!r}: {first_line}") from None
    _check_values(cfg, source)
    return cfg


def _check_values(cfg: GenerationConfig, source: str) -> None:
    if cfg.prompt_path in ("", "???"):
        raise ValueError(f"{source}: generation config key 'prompt_path' is required")
    positive = {"width": cfg.width, "height": cfg.height, "num_inference_steps": cfg.num_inference_steps,
                "generate_num": cfg.generate_num, "batch_size": cfg.batch_size}
    for key, value in positive.items():
        if value < 1:
            raise ValueError(f"{source}: generation config key {key!r} must be >= 1, got {value}")
    if cfg.pooled not in POOLED_MODES:
        raise ValueError(f"{source}: generation config key 'pooled' must be one of {POOLED_MODES}, got {cfg.pooled!r}")
    if not 0 <= cfg.pooled_threshold < 1:
        threshold = cfg.pooled_threshold
        raise ValueError(f"{source}: generation config key 'pooled_threshold' must be in [0, 1), got {threshold}")
    for key in ("first_row", "last_row"):
        value = getattr(cfg, key)
        if value is not None and value < 0:
            raise ValueError(f"{source}: generation config key {key!r} must be >= 0, got {value}")
    if cfg.first_row is not None and cfg.last_row is not None and cfg.last_row < cfg.first_row:
        raise ValueError(f"{source}: last_row {cfg.last_row} is before first_row {cfg.first_row}")


def load_gen_config(path: str | Path, overrides: dict[str, Any] | None = None) -> GenerationConfig:
    """Read a generation YAML, apply CLI ``overrides`` (``None`` values ignored) and validate both."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"generation config (GEN_CONFIG) does not exist: {path}")
    try:
        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:  # yaml scanner/parser errors carry several lines
        raise ValueError(f"{path}: not a readable YAML generation config ({str(e).splitlines()[0]})") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: a generation config must be a mapping of keys to values")
    values = dict(loaded)
    if not values.get("subset"):
        values["subset"] = path.stem
    cfg = _validated(values, str(path))
    extra = {k: v for k, v in (overrides or {}).items() if v is not None}
    if extra:
        cfg = _validated({**asdict(cfg), **extra}, f"{path} (command-line overrides)")
    return cfg

"""Generation configs (``configs/<domain>/gen/*.yaml``): one dataclass of defaults, validated like training's.

The mechanism is ``cpe.util.config``'s (OmegaConf structured configs): ``GenerationConfig`` checks itself in
``__post_init__`` (also when built in code); loading merges the file, then the command-line overrides, onto its
schema, so an unknown or misspelt key, or a value of the wrong type, is a one-line error naming the key and file.
Relative ``prompt_path`` values are read from ``data_dir`` (the prompt CSVs the project cannot ship live there;
``scripts/prepare_data.py`` builds them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from cpe.util.config import ConfigError, DTypeName, Section, at_least, build_config, read_yaml
from cpe.util.names import check_relative_folder

POOLED_MODES = ("keep", "neutral")  # SDXL's pooled text embedding under erasure (cpe.generation.pooled)


@dataclass
class GenerationConfig(Section):
    """Everything that decides which images are made and where they go (method.md §4.3-4.4)."""

    prompt_path: str = ""  # required: CSV with prompt, evaluation_seed[, evaluation_guidance, case_number, ...]
    subset: str = ""  # output sub-folder (erased, remained, coco_30k, ...); default: the config file's stem
    data_dir: str = "data/generation_prompts"  # where relative prompt_path values are looked up
    negative_prompt: str = ""
    unconditional_prompt: str = ""  # appended to every prompt (reference behaviour; empty in all configs)
    width: int = at_least(1, 512)
    height: int = at_least(1, 512)
    num_inference_steps: int = at_least(1, 50)
    guidance_scale: float = 7.5  # used for rows without an evaluation_guidance value
    generate_num: int = at_least(1, 1)  # images per prompt row
    scheduler: str | None = None  # a diffusers scheduler class name; None = the model's own (PNDM for SD v1.4)
    batch_size: int = at_least(1, 1)  # prompt rows per pipeline call (images do not depend on it)
    save_root: str = "generated_images"
    gate_rank: int | None = None  # when set, loaded erasers must have this gate rank
    first_row: int | None = at_least(0, None)  # CSV data rows [first_row, last_row), 0-based; None = from the start
    last_row: int | None = at_least(0, None)  # exclusive end; None = to the end
    dtype: DTypeName = "float32"
    pooled: Literal[POOLED_MODES] = "keep"  # SDXL's pooled text embedding: keep | neutral (cpe.generation.pooled)
    pooled_threshold: float = 0.5  # neutral: a gate above this on any token replaces the concept in the pooled text

    def check(self) -> None:
        if not self.prompt_path:
            raise self.error("prompt_path", "is required (the prompt CSV)")
        if self.last_row is not None and self.last_row <= (self.first_row or 0):
            raise self.error("last_row", f"must be after first_row: rows [{self.first_row or 0}, {self.last_row}) "
                                         "are none (the end is exclusive)")
        if not 0 <= self.pooled_threshold < 1:
            raise self.error("pooled_threshold", f"must be in [0, 1), got {self.pooled_threshold}")
        try:  # images must stay inside save_root
            check_relative_folder(self.subset, "subset")
        except ValueError as e:
            raise self.error("subset", str(e)) from None

    def resolved_prompt_path(self) -> Path:
        path = Path(self.prompt_path).expanduser()
        return path if path.is_absolute() else Path(self.data_dir).expanduser() / path

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field's default value (a config built without arguments is invalid: it names no prompt CSV)."""
        return {f.name: f.default for f in fields(cls)}

    def image_settings(self) -> dict[str, Any]:
        """The values that shape every image; recorded in each manifest record."""
        keep = ("negative_prompt", "unconditional_prompt", "width", "height", "num_inference_steps",
                "guidance_scale", "generate_num", "scheduler", "dtype", "pooled", "pooled_threshold")
        return {k: v for k, v in asdict(self).items() if k in keep}


KEY_NAME = "generation config key"


def load_gen_config(path: str | Path, overrides: dict[str, Any] | None = None) -> GenerationConfig:
    """Read a generation YAML, apply CLI ``overrides`` (``None`` values ignored) and validate both."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"generation config (GEN_CONFIG) does not exist: {path}")
    values = read_yaml(path)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a generation config must be a mapping of keys to values")
    if not values.get("subset"):
        values["subset"] = path.stem
    extra = {k: v for k, v in (overrides or {}).items() if v is not None}
    layers = [(str(path), values), (f"{path} (command-line overrides)", extra)]
    return build_config(GenerationConfig, layers if extra else layers[:1], what=KEY_NAME)

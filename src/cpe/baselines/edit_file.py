"""The file side both baselines share: an edit is a safetensors file with a ``format`` and ``format_version`` in its
metadata, written atomically and never over a trained one unless asked, read back with one-line errors."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from safetensors.torch import save_file
from torch import Tensor

from cpe.util.io import atomic_write, read_safetensors


def write_edit_file(path: str | Path, tensors: Mapping[str, Tensor], metadata: dict[str, str], what: str,
                    overwrite: bool = False) -> Path:
    """Write ``tensors`` (fp32, contiguous, on the CPU) and ``metadata`` atomically; an existing file is kept
    unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; refusing to overwrite a trained {what} edit (pass overwrite=True)")
    data = {name: t.float().contiguous().cpu() for name, t in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(data, str(tmp), metadata=metadata))


def read_edit_file(path: str | Path, error: type[Exception], what: str, format_name: str,
                   format_version: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and metadata of a ``what`` file of this format and version; anything else is ``error``."""
    path = Path(path)
    tensors, meta = read_safetensors(path, error, f"{what} file")
    if meta.get("format") != format_name:
        article = "an" if what[:1] in "AEFHILMNORSX" else "a"  # an initialism: "an ESD", "a UCE"
        raise error(f"{path}: not {article} {what} file (format {meta.get('format')!r}, expected {format_name!r})")
    if meta.get("format_version") != format_version:
        raise error(f"{path}: {what} format version {meta.get('format_version')} is not {format_version}")
    return tensors, meta

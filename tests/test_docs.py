"""The documentation names what the code has: docs/core_api.md signatures and the README's library example."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p.strip() for p in [*parts, current] if p.strip()]


def _parameters(arguments: str) -> list[str]:
    names = [re.split(r"[:=]", part)[0].strip() for part in _split_top_level(arguments)]
    return [n for n in names if n not in ("self", "*")]


def _documented() -> list[tuple[str, str | None, str, list[str]]]:
    """(module, class or None, function, documented parameter names) for every def in core_api.md's code block."""
    text = (REPO / "docs" / "core_api.md").read_text(encoding="utf-8").split("```python")[1].split("```")[0]
    found, module, cls, pending = [], None, None, ""
    for line in text.splitlines():
        if match := re.match(r"# cpe/(\w+)\.py", line):
            module, cls = f"cpe.{match[1]}", None
            continue
        if match := re.match(r"class (\w+)", line):
            cls = match[1]
            found.append((module, cls, "", []))
            continue
        if line and not line.startswith((" ", "#", "@")):
            cls = None
        if cls and (match := re.match(r" {4}(\w+): ", line)):
            found.append((module, cls, f"field {match[1]}", []))
            continue
        pending += line
        if pending.count("(") > pending.count(")"):
            continue
        for match in re.finditer(r"(?:def |/ )(\w+)\(([^()]*(?:\([^()]*\)[^()]*)*)\)", pending):
            found.append((module, cls, match[1], _parameters(match[2])))
        pending = ""
    return found


@pytest.mark.parametrize(("module", "cls", "name", "params"), _documented(), ids=lambda v: str(v))
def test_every_name_in_core_api_exists_with_its_documented_parameters(module, cls, name, params):
    owner = importlib.import_module(module)
    if cls is not None:
        owner = getattr(owner, cls)
    if not name:
        return
    if name.startswith("field "):
        field = name.removeprefix("field ")
        assert not dataclasses.is_dataclass(owner) or field in {f.name for f in dataclasses.fields(owner)}, field
        return
    function = getattr(owner, name)
    actual = [p for p in inspect.signature(function).parameters if p != "self"]
    assert actual == params, f"{module}.{cls or ''}.{name}: documented {params}, code {actual}"


def test_core_api_lists_something_from_every_module():
    modules = {module for module, *_ in _documented()}
    assert modules == {"cpe.resag", "cpe.network", "cpe.weights"} and len(_documented()) > 25


def test_the_readme_library_example_runs_on_the_toy_model(tmp_path):
    import torch

    from cpe.models import load_unet
    from cpe.network import spec_for_unet
    from cpe.resag import ResAG
    from cpe.toy import TOY_MODEL_DIR
    from cpe.weights import save_gate_file

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    code = readme.split("## The library in five lines")[1].split("```python")[1].split("```")[0]
    resag = ResAG(spec_for_unet(load_unet(str(TOY_MODEL_DIR))))
    for concept, folder in (("adam driver", "celebs/exp/adam_driver"), ("claude monet", "artists/exp/claude_monet")):
        save_gate_file(resag, tmp_path / folder / "cpe_last.safetensors", concept=concept)
    code = (code.replace('"CompVis/stable-diffusion-v1-4", device="cuda"', f'"{TOY_MODEL_DIR}", device="cpu"')
                .replace('"output/celebs/<experiment>"', f'"{tmp_path / "celebs" / "exp"}"')
                .replace('"output/artists/<experiment>/claude_monet"', f'"{tmp_path / "artists/exp/claude_monet"}"')
                .replace('pipe("A portrait of Adam Driver")', 'pipe("a red circle", num_inference_steps=2)'))
    assert "<experiment>" not in code and "cuda" not in code
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 (the README's own example)
    assert [info.concept for info in namespace["infos"]] == ["adam driver", "claude monet"]
    assert namespace["network"].concept_active.tolist() == [False, True]
    assert namespace["image"].size == (32, 32) and not namespace["network"].attached_layers
    assert torch.equal(namespace["resag"].w_query[0], resag.w_query[0])


def test_output_folder_ships_only_its_readme_which_says_what_lands_where():
    readme = (REPO / "output" / "README.md").read_text(encoding="utf-8")
    assert "output/<domain>/<experiment>/<concept>/" in readme and "CPE_Celeb" in readme
    ignore = (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "/output/*" in ignore and "!/output/README.md" in ignore

"""The documentation names what the code has: docs/core_api.md signatures and the README's library example."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import re
import shlex
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
        if match := re.match(r"# cpe/([\w/]+)\.py", line):
            module, cls = "cpe." + match[1].replace("/", "."), None
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
    assert modules == {"cpe.core.resag", "cpe.core.network", "cpe.core.weights"} and len(_documented()) > 25


def test_the_readme_library_example_runs_on_the_toy_model(tmp_path):
    import torch

    from cpe.core.network import spec_for_unet
    from cpe.core.resag import ResAG
    from cpe.core.weights import save_gate_file
    from cpe.models.loading import load_unet
    from cpe.toy import TOY_MODEL_DIR

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


# --- The front door and docs/: every link, file path and command they name exists -------------------------------

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
OUTPUT_ROOTS = ("output", "generated_images", "results")  # what the commands write, not what the repository holds
PLACEHOLDER = re.compile(r"[<>{}*|$]|\.\.\.|…")
CHECKED_SUFFIXES = (".py", ".sh", ".yaml", ".yml", ".toml", ".csv")
LAUNCHERS = {"python", "python3", "torchrun", "accelerate"}


def _outputs(repo: Path) -> tuple[str, ...]:
    """Folders the tools write (and the repository's .gitignore names from its root): never repository paths."""
    ignore = repo / ".gitignore"
    lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.is_file() else []
    anchored = [line.strip("/").removesuffix("/*") for line in lines if line.startswith("/") and "*" not in line[:-2]]
    return (*OUTPUT_ROOTS, *anchored)


def _top_level(repo: Path) -> set[str]:
    return {p.name for p in repo.iterdir() if not p.name.startswith(".")} | {".ci"}


def broken_links(doc: Path) -> list[str]:
    """Relative markdown links (``[text](target)``, images too) in ``doc`` to no existing file; anchors ignored."""
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
        path = target.split("#")[0]
        if not path or re.match(r"[a-z]+:", path):
            continue
        if not (doc.parent / path).exists():
            broken.append(target)
    return broken


def repo_path(token: str, repo: Path) -> Path | None:
    """The repository file a backtick-quoted ``token`` names, or None when it names none: a path whose first folder
    is one of the repository's top-level entries (``cpe/...`` means ``src/cpe/...``), or a bare file name with a
    source suffix (found anywhere in the repository); placeholders (``<x>``, ``{a,b}``, ``*``, ``|``, ``...``),
    outputs (``output/``, ``generated_images/``, ``results/``, what .gitignore names from the root), options and URLs
    are no repository paths."""
    token = token.strip().rstrip(".,:;")
    if not token or " " in token or PLACEHOLDER.search(token) or token.startswith(("-", "/", "~")) or "://" in token:
        return None
    if "=" in token:
        return None
    first = token.split("/")[0]
    if "/" in token:
        if any(token == root or token.startswith(f"{root}/") for root in _outputs(repo)):
            return None
        if first == "cpe":
            return repo / "src" / token
        return repo / token if first in _top_level(repo) else None
    if token.endswith(CHECKED_SUFFIXES) and re.fullmatch(r"[\w.-]+", token):
        found = next(repo.glob(f"**/{token}"), None)
        return found or repo / token
    return None


def missing_paths(doc: Path, repo: Path = REPO) -> list[str]:
    """Backtick-quoted repository paths in ``doc`` (outside code blocks) that do not exist."""
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    missing = []
    for token in re.findall(r"`([^`]+)`", text):
        path = repo_path(token, repo)
        if path is not None and not path.exists():
            missing.append(token)
    return missing


def _module_exists(module: str, repo: Path) -> bool:
    if module.split(".")[0] == "cpe":  # this checkout's source, not whichever copy is installed
        base = repo / "src" / Path(*module.split("."))
        return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()
    return importlib.util.find_spec(module) is not None


def shell_commands(doc: Path) -> list[str]:
    """Every command of the ```bash blocks in ``doc`` (continuation lines joined, comments dropped, ``&&``/``;``
    chains split) and every inline code span (``VAR=value`` prefixes aside) that starts with a launcher or ``bash``
    and names a script or module."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*", "", line).strip()
            commands += [" ".join(part.split()) for part in re.split(r"&&|;", line) if part.strip()]
    prose = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    for span in (" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)):
        program = next((word for word in span.split() if not re.fullmatch(r"\w+=\S*", word)), "")
        if program in LAUNCHERS | {"bash"} and re.search(r"\.py\b|\.sh\b| -m ", span):
            commands.append(span)
    return commands


def missing_entry_points(doc: Path, repo: Path = REPO) -> list[str]:
    """Commands in ``doc`` whose script (``bash x.sh``, ``python x.py``, ``torchrun``/``accelerate launch x.py``,
    relative to the repository root; absolute paths are the reader's) or module (``python -m m``) is not in ``repo``."""
    missing = []
    for command in shell_commands(doc):
        words = shlex.split(command)
        while words and re.fullmatch(r"\w+=.*", words[0]):  # VAR=value prefixes
            words.pop(0)
        if not words or words[0] not in LAUNCHERS | {"bash"}:
            continue
        if words[0] in ("python", "python3") and "-m" in words:
            module = words[words.index("-m") + 1]
            if not _module_exists(module, repo):
                missing.append(command)
            continue
        scripts = [w for w in words[1:] if w.endswith((".py", ".sh"))]
        if scripts and scripts[0].startswith("/"):  # a path on the reader's machine (/path/to/cpe/...)
            continue
        if not scripts or not (repo / scripts[0]).is_file():
            missing.append(command)
    return missing


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc):
    assert broken_links(doc) == []


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_every_repository_path_named_exists(doc):
    assert missing_paths(doc) == []


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_every_shell_command_names_a_script_or_module_that_exists(doc):
    assert shell_commands(doc) or doc.parent.name == "docs"
    assert missing_entry_points(doc) == []


def test_the_checks_catch_a_broken_link_path_and_command(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "configs").mkdir()
    (tmp_path / "run.sh").write_text("")
    doc = tmp_path / "docs" / "page.md"
    doc.write_text(
        "[ok](../run.sh) [gone](../nowhere.md#part) [web](https://example.org) [here](#top)\n"
        "`run.sh` `configs/` `configs/missing.yaml` `configs/<domain>/x.yaml` `output/x/y.png` `method.md`\n"
        "```bash\nbash run.sh && bash gone.sh  # bash comment.sh\nX=1 python missing.py \\\n  --flag\n"
        "python -m cpe_no_such_module\npython -m pytest -q\ncat output/anything\n```\n"
        "`python -m cpe.nowhere\n--help` and `bash /path/to/run.sh` and `A=b bash run.sh`\n",
        encoding="utf-8",
    )
    assert broken_links(doc) == ["../nowhere.md#part"]
    assert missing_paths(doc, tmp_path) == ["configs/missing.yaml"]
    assert missing_entry_points(doc, tmp_path) == ["bash gone.sh", "X=1 python missing.py --flag",
                                                   "python -m cpe_no_such_module", "python -m cpe.nowhere --help"]




def test_readme_is_a_front_door_of_at_most_250_lines():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, len(lines)


def test_readme_keeps_the_two_set_up_commands_and_ci_runs_the_second():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    install = 'python3 -m pip install torch==2.13.0 && python3 -m pip install -e ".[test,eval]"'
    assert f"{install} && bash shell_scripts/toy/quickstart.sh\n" in readme
    assert f"{install} && python3 -m pytest -q\n" in readme
    assert f"{install} && python3 -m pytest -q" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_readme_maps_every_page_of_docs():
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)", (REPO / "README.md").read_text(encoding="utf-8")))
    assert linked == {page.name for page in (REPO / "docs").glob("*.md")}


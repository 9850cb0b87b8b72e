"""The README's layout table is the tree: one package per stage, and no import runs back up a stage."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "cpe"


def _stages() -> list[str]:
    """The packages of the README's layout table, in its order (the stage order)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `cpe\.(\w+)` \|", section, re.M)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``cpe`` import in a file, at any depth (lazy imports inside functions too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "cpe":
                found += [(node.lineno, f"cpe.{alias.name}") for alias in node.names]
            elif node.module.startswith("cpe."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("cpe.")]
    return found


def test_the_layout_table_lists_every_package_once():
    stages = _stages()
    packages = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").is_file())
    assert len(stages) == len(set(stages)), stages
    assert sorted(stages) == packages


def test_no_module_sits_directly_in_the_package_root():
    loose = sorted(p.name for p in SRC.glob("*.py") if p.name != "__init__.py")
    assert loose == []


def test_no_import_runs_back_up_a_stage():
    rank = {name: i for i, name in enumerate(_stages())}
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        own = path.relative_to(SRC).parts[0]
        if own == "__init__.py":
            continue
        for line, module in _imports(path):
            target = module.split(".")[1]
            assert target in rank, f"{path}:{line} imports {module}, a package the layout table does not list"
            if rank[target] > rank[own]:
                problems.append(f"{path.relative_to(REPO)}:{line}: cpe.{own} imports {module}")
    assert problems == []


def test_the_stage_rule_catches_an_import_back_up(tmp_path):
    """The checker itself: a lazy import inside a function is found, and its stage compared."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from cpe.attacks.runner import x\n    import cpe.core.resag\n")
    assert _imports(module) == [(2, "cpe.attacks.runner"), (3, "cpe.core.resag")]
    rank = {name: i for i, name in enumerate(_stages())}
    assert rank["attacks"] > rank["core"] > rank["util"]

"""The tree matches docs/architecture.md, and no module outgrows one screenful of
concerns (400 lines)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "mechreason"
MAX_LINES = 400


def _documented() -> tuple[set[str], set[str]]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    tree = re.search(r"```\nmechreason/\n(.*?)```", text, re.S)
    assert tree, "docs/architecture.md has no tree block"
    packages = set(re.findall(r"^  (\w+)/", tree.group(1), re.M))
    modules = set(re.findall(r"^  (\w+)\.py", tree.group(1), re.M))
    return packages, modules


def test_the_tree_is_the_documented_one():
    packages, modules = _documented()
    actual_packages = {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()}
    actual_modules = {p.stem for p in PKG.glob("*.py")} - {"__init__", "__main__", "_lazy"}
    assert actual_packages == packages, (sorted(actual_packages ^ packages),
                                         "update docs/architecture.md or the tree")
    assert actual_modules == modules, sorted(actual_modules ^ modules)


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_artifact_file_names_are_spelled_only_in_artifacts():
    """Every artifact file name lives in mechreason/artifacts.py (KINDS); elsewhere code
    goes through its constants or artifact_path, so renaming a file is one edit."""
    from mechreason.artifacts import KINDS, SHARD_PATTERN

    names = [*KINDS.values(), SHARD_PATTERN]
    spelled = {f"{p.relative_to(ROOT)}: {name}" for p in PKG.rglob("*.py")
               if p.name != "artifacts.py" for name in names
               if f'"{name}"' in p.read_text() or f"'{name}'" in p.read_text()}
    assert not spelled, sorted(spelled)


def test_the_shipped_sae_cards_scripts_import():
    """The scripts that made the shipped SAE (data, held-out FVU, random control) still
    import against today's tree (ruff's undefined-name check covers their bodies)."""
    import importlib.util

    scripts = sorted((ROOT / "sae_checkpoints").glob("*/*.py"))
    assert scripts
    for path in scripts:
        spec = importlib.util.spec_from_file_location(f"_card_{path.stem}", path)
        assert spec and spec.loader
        spec.loader.exec_module(importlib.util.module_from_spec(spec))

"""The docs list every CLI subcommand and link every stage page that exists."""

from __future__ import annotations

import re
from pathlib import Path

from mechreason.cli import build_parser
from mechreason.cli._docs import render, subcommands

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_cli_md_lists_every_subcommand():
    text = (DOCS / "cli.md").read_text()
    names = list(subcommands(build_parser()))
    assert {"demo", "report", "capture"} <= set(names)
    missing = [n for n in names if f"## mechreason {n}\n" not in text]
    assert not missing, f"docs/cli.md lacks {missing}; run: python -m mechreason.cli._docs > docs/cli.md"


def test_render_has_each_subcommand_usage():
    text = render()
    for name in subcommands(build_parser()):
        assert f"usage: mechreason {name}" in text


def test_index_links_resolve():
    text = (DOCS / "index.md").read_text()
    links = re.findall(r"\]\(([\w./-]+\.md)(?:#[\w-]+)?\)", text)
    mine = {"report.md", "cli.md", "gpu.md", "capture.md"}
    assert mine <= set(links)
    assert all((DOCS / p).is_file() for p in mine)
    # The stage pages are written by each stage; every one is linked.
    assert {"traces.md", "directions.md", "sae.md", "steering.md", "anchors.md"} <= set(links)


def _doc_imports() -> list[tuple[str, str]]:
    """Every ``from mechreason... import ...`` / ``import mechreason...`` statement in the
    README's and the docs' code blocks (parenthesised ones whole), with where it is."""
    found = []
    for path in [DOCS.parent / "README.md", *sorted(DOCS.glob("*.md"))]:
        for block in re.findall(r"```[^\n]*\n(.*?)```", path.read_text(), re.S):
            for m in re.finditer(r"^[ \t]*(from mechreason[\w.]* import (?:\([^)]*\)|[^\n]+)"
                                 r"|import mechreason[\w.]*)", block, re.M):
                found.append((path.name, " ".join(m.group(1).split())))
    return found


def test_every_import_in_the_readme_and_docs_works():
    """The public imports the docs show resolve, in one fresh interpreter (so a moved or
    renamed module cannot leave a stale example behind)."""
    import subprocess
    import sys

    imports = _doc_imports()
    assert len(imports) >= 10  # the parser finds the examples at all
    code = "\n".join(f"try:\n    {stmt}\nexcept Exception as e:\n    print({where!r}, {stmt!r}, e)"
                     for where, stmt in imports)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert out == "", out

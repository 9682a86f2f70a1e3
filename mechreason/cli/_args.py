"""Argument types for the CLI: numbers are refused at parse time when they are not
finite or out of range, with the flag, the value and the valid range in one line."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn

ALPHA_MAX = 1e4
"""Largest steering coefficient accepted; past it a float16 residual overflows. Above
:data:`ALPHA_WARN` the steering stage warns with the expected residual norm."""
ALPHA_WARN = 100.0


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _number(kind: type, lo: float | None, hi: float | None, lo_open: bool = False,
            hi_open: bool = False) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            x = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if isinstance(x, float) and not math.isfinite(x):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        low_bad = lo is not None and (x <= lo if lo_open else x < lo)
        high_bad = hi is not None and (x >= hi if hi_open else x > hi)
        if low_bad or high_bad:
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; valid: {_range(lo, hi, lo_open, hi_open)}")
        return x
    parse.__name__ = kind.__name__
    return parse


def _range(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if lo is None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


positive_int = _number(int, 1, None)
"""An integer >= 1."""
nonneg_int = _number(int, 0, None)
"""An integer >= 0."""
finite_float = _number(float, None, None)
"""Any finite number."""
positive_float = _number(float, 0, None, lo_open=True)
"""A finite number > 0."""
nonneg_float = _number(float, 0, None)
"""A finite number >= 0."""
fraction = _number(float, 0, 1, hi_open=True)
"""A fraction in [0, 1)."""
unit_interval = _number(float, 0, 1)
"""A number in [0, 1]."""
open_fraction = _number(float, 0, 1, lo_open=True, hi_open=True)
"""A fraction in (0, 1)."""
probability = _number(float, 0, 1, lo_open=True)
"""A probability in (0, 1] (top-p)."""
difficulty = _number(int, 1, 5)
"""A problem difficulty (arithmetic steps) in [1, 5]."""
temperature = _number(float, 0, 100)
"""A sampling temperature in [0, 100] (0: greedy)."""


def alphas(text: str) -> tuple[float, ...]:
    """A steering coefficient or a comma list of them, each finite with |a| <= ALPHA_MAX."""
    out = []
    for part in (x.strip() for x in text.split(",")):
        if not part:
            continue
        try:
            a = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a number; use a number or a comma "
                                             "list like 0,2,4") from None
        if not math.isfinite(a) or abs(a) > ALPHA_MAX:
            raise argparse.ArgumentTypeError(f"{part!r} is out of range; valid: finite with "
                                             f"|alpha| <= {ALPHA_MAX:g}")
        out.append(a)
    if not out:
        raise argparse.ArgumentTypeError(f"{text!r} holds no coefficient")
    return tuple(out)


def add_model_arg(p: argparse.ArgumentParser) -> None:
    """``--model``, defaulting to the one default model name
    (:data:`mechreason.model.weights.DEFAULT_MODEL`)."""
    from mechreason.model.weights import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="bundled short name, HF hub id or local HF directory (default: %(default)s)")


def add_store_args(p: argparse.ArgumentParser, *, acts: str, input_file: str) -> None:
    """The options of a command that reads a capture store (``--acts``, and ``--input``
    for a store that keeps no token ids) and writes a directory (``--out``) on a device."""
    p.add_argument("--acts", required=True, help=acts)
    p.add_argument("--input", default=None, help=input_file)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--out", required=True, help="output directory")

"""The CLI generated from the stage configs: each frozen config dataclass becomes a group
of options, its field docstrings the ``--help`` text and its defaults the only defaults.

``add_config(parser, TrainConfig, types={"lr": positive_float})`` adds ``--lr`` and its
siblings; ``from_args(TrainConfig, args)`` builds the config back from the parsed
namespace. A field's option type follows its annotation (``bool``: ``--x/--no-x``;
``Literal``: choices; ``tuple[str, ...]``: a comma list; ``X | None``: ``X``, default
None) unless ``types`` names a stricter parser (the range checks of
:mod:`mechreason.cli._args`, whose errors name the flag, the value and the range).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import re
import textwrap
import types as pytypes
import typing
from collections.abc import Callable, Collection, Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

C = TypeVar("C")


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal right after it), over the class and its
    dataclass bases, whitespace folded to one line."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # no source (e.g. a frozen build): help stays bare
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in itertools.pairwise(body):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                text = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"\1", nxt.value.value)
                docs[node.target.id] = " ".join(text.replace("``", "").split())
    return docs


def _comma_list(text: str) -> tuple[str, ...]:
    out = tuple(x.strip() for x in text.split(",") if x.strip())
    if not out:
        raise argparse.ArgumentTypeError(f"{text!r} holds no item; use a comma list")
    return out


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in _comma_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers") from None


def _with_message(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` with its own one-line error kept (argparse would replace a ValueError's
    message by "invalid <name> value")."""
    from mechreason.errors import MechReasonError

    def wrapped(text: str) -> Any:
        try:
            return parse(text)
        except MechReasonError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    wrapped.__name__ = getattr(parse, "__name__", "value")
    return wrapped


def _option(tp: Any, default: Any) -> dict[str, Any]:
    """argparse keywords for a field annotated ``tp``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, pytypes.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return _option(rest[0], default) if len(rest) == 1 else {"type": str}
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(tp) is typing.Literal:
        return {"choices": list(args)}
    if typing.get_origin(tp) is tuple and args[-1:] == (Ellipsis,) and args[0] in (str, int):
        return {"type": _comma_list if args[0] is str else _int_list, "metavar": "A,B,..."}
    if tp in (int, float, str, Path):
        return {"type": tp}
    return {"type": str}


def add_config(parser: argparse.ArgumentParser | Any, cls: type, *,
               types: Mapping[str, Callable[[str], Any]] | None = None,
               skip: Collection[str] = (), title: str | None = None, prefix: str = "") -> None:
    """Add one option per field of the dataclass ``cls`` (``skip`` leaves some to the
    command), in a group titled ``title`` (default: the config's first docstring line).

    ``prefix`` names a nested config's options (``prefix="receivers"``: field ``top_k``
    becomes ``--receivers-top-k``, read back by ``from_args(..., prefix="receivers")``),
    so two configs of one command may share a field name."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    head = (inspect.getdoc(cls) or cls.__name__).splitlines()[0]
    group = parser.add_argument_group(title or f"{cls.__name__}: {head.rstrip('.')}")
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in skip or not f.init:
            continue
        default = (f.default if f.default is not dataclasses.MISSING
                   else f.default_factory() if f.default_factory is not dataclasses.MISSING
                   else None)
        kw = _option(hints[f.name], default)
        if types and f.name in types:
            kw = {"type": _with_message(types[f.name])}
        if kw.get("action") is not argparse.BooleanOptionalAction and "choices" not in kw:
            kw.setdefault("metavar", f.name.upper())
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = docs.get(f.name, "")
        if not required and default not in (None, ()) and \
                kw.get("action") is not argparse.BooleanOptionalAction:
            help_text += f" (default: {shown})"
        group.add_argument("--" + _dest(prefix, f.name).replace("_", "-"),
                           dest=_dest(prefix, f.name), default=default,
                           required=required, help=help_text.replace("%", "%%"), **kw)


def _dest(prefix: str, name: str) -> str:
    return f"{prefix.replace('-', '_')}_{name}" if prefix else name


def from_args(cls: type[C], args: argparse.Namespace, *, prefix: str = "",
              **override: Any) -> C:
    """The config ``cls`` from the parsed options (fields the parser lacks keep their
    defaults; ``override`` sets fields the command computes itself; ``prefix`` as given
    to :func:`add_config`)."""
    kw = {f.name: getattr(args, _dest(prefix, f.name))
          for f in dataclasses.fields(cls)  # type: ignore[arg-type]
          if f.init and hasattr(args, _dest(prefix, f.name))}
    return cls(**{**kw, **override})

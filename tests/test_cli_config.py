"""The CLI generated from the stage configs: one option per field, its help the field's
docstring, its default the config's own (so defaults live once)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from mechreason.activations.config import CaptureConfig
from mechreason.cli import build_parser
from mechreason.cli._config import add_config, field_docs, from_args
from mechreason.directions.config import DirectionsConfig
from mechreason.model.engine import SamplingConfig
from mechreason.report.demo_config import DemoConfig
from mechreason.steering.experiment import SteerConfig

# (subcommand argv that satisfies its required options, the config, fields the command
# sets itself rather than through a generated option)
CASES = [
    (["capture", "--input", "x.txt", "--out", "o"], CaptureConfig, set()),
    (["directions", "--acts", "a", "--contrast", "style=cot:direct", "--out", "o"],
     DirectionsConfig, {"acts"}),
    (["demo", "--out", "o"], DemoConfig, {"custom_sizes", "model"}),
    (["steer", "--vector", "v", "--out", "o"], SteerConfig, {"model", "vector", "sae", "alphas"}),
    (["traces", "--task", "arithmetic", "--out", "o.jsonl"], SamplingConfig, {"stop"}),
]


@pytest.mark.parametrize(("argv", "cls", "own"), CASES, ids=[c[1].__name__ for c in CASES])
def test_defaults_come_from_the_config(argv, cls, own):
    args = build_parser().parse_args(argv)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
             if f.name not in own and f.default is dataclasses.MISSING}
    extra = {"acts": ("a",)} if "acts" in own else {"vector": "v"} if "vector" in own else {}
    assert from_args(cls, args, **extra) == cls(**given, **extra)


@pytest.mark.parametrize(("argv", "cls", "own"), CASES, ids=[c[1].__name__ for c in CASES])
def test_every_field_is_an_option_documented_by_its_docstring(argv, cls, own):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[argv[0]]
    by_dest = {a.dest: a for a in parser._actions}
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in own:
            continue
        assert f.name in by_dest, f"{cls.__name__}.{f.name} has no option"
        first_words = " ".join(docs[f.name].split()[:3])
        assert first_words in " ".join(by_dest[f.name].help.split()), f.name


def test_types_follow_annotations_and_overrides_keep_their_message():
    @dataclasses.dataclass(frozen=True)
    class Cfg:
        """A test config."""

        n: int = 3
        """How many."""
        names: tuple[str, ...] = ("a",)
        """Which."""
        fast: bool = False
        """Go fast."""
        mode: str | None = None
        """A mode."""

    def odd(text: str) -> int:
        from mechreason.errors import MechReasonError

        if int(text) % 2 == 0:
            raise MechReasonError(f"{text} is even")
        return int(text)

    p = argparse.ArgumentParser(exit_on_error=False)
    add_config(p, Cfg, types={"n": odd})
    cfg = from_args(Cfg, p.parse_args(["--n", "5", "--names", "x, y", "--fast"]))
    assert cfg == Cfg(n=5, names=("x", "y"), fast=True, mode=None)
    assert from_args(Cfg, p.parse_args([])) == Cfg()
    with pytest.raises(argparse.ArgumentError, match="4 is even"):
        p.parse_args(["--n", "4"])

"""The CLI generated from the stage configs: one option per field, its help the field's
docstring, its default the config's own (so defaults live once)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from mechreason.activations.config import CaptureConfig
from mechreason.anchors.adaptive import AdaptiveConfig
from mechreason.anchors.analysis import AnchorsConfig
from mechreason.anchors.receivers import ReceiverConfig
from mechreason.anchors.resampling import ResampleConfig
from mechreason.anchors.suppression import SuppressionConfig
from mechreason.cli import build_parser
from mechreason.cli._config import add_config, field_docs, from_args
from mechreason.directions.config import DirectionsConfig
from mechreason.model.engine import SamplingConfig
from mechreason.report.demo_config import DemoConfig
from mechreason.report.html import ReportConfig
from mechreason.sae.config import BehaviourConfig, EvalConfig, FeaturesConfig, TrainConfig
from mechreason.steering.experiment import SteerConfig
from mechreason.traces.config import TracesConfig

ANC = ["anchors", "--traces", "t.jsonl", "--out", "o"]
TRACES = ["traces", "--task", "arithmetic", "--out", "o.jsonl"]
NESTED = {"methods", "resample", "receivers", "suppression", "adaptive"}
# (subcommand argv that satisfies its required options, the config, fields the command
# sets itself rather than through a generated option, the options' prefix)
CASES = [
    (["capture", "--input", "x.txt", "--out", "o"], CaptureConfig, set(), ""),
    (["directions", "--acts", "a", "--contrast", "style=cot:direct", "--out", "o"],
     DirectionsConfig, {"acts"}, ""),
    (["demo", "--out", "o"], DemoConfig, {"custom_sizes", "model"}, ""),
    (["steer", "--vector", "v", "--out", "o"], SteerConfig,
     {"model", "vector", "sae", "alphas"}, ""),
    (TRACES, SamplingConfig, {"stop"}, ""),
    (TRACES, TracesConfig, set(), ""),
    (ANC, AnchorsConfig, NESTED, ""),
    (ANC, ResampleConfig, set(), ""),
    (ANC, ReceiverConfig, {"seed"}, "receivers"),
    (ANC, SuppressionConfig, set(), "suppression"),
    (ANC, AdaptiveConfig, set(), "adaptive"),
    (["sae", "train", "--acts", "a", "--hook", "h", "--out", "o"], TrainConfig, set(), ""),
    (["sae", "eval", "--sae", "s", "--acts", "a"], EvalConfig, set(), ""),
    (["features", "--sae", "s", "--acts", "a", "--score", "reason", "--out", "o"],
     FeaturesConfig, set(), ""),
    (["behaviours", "--acts", "a", "--out", "o"], BehaviourConfig, set(), ""),
    (["report", "run"], ReportConfig, {"run_dir"}, ""),
]
IDS = [f"{c[0][0]}-{c[1].__name__}" for c in CASES]
OWN = {"acts": ("a",), "vector": "v", "run_dir": ".", "methods": ("resample",)}
"""Values for the fields a command sets itself (a real directory for ReportConfig)."""


def _dest(prefix: str, name: str) -> str:
    return f"{prefix}_{name}" if prefix else name


@pytest.mark.parametrize(("argv", "cls", "own", "prefix"), CASES, ids=IDS)
def test_defaults_come_from_the_config(argv, cls, own, prefix):
    args = build_parser().parse_args(argv)
    given = {f.name: getattr(args, _dest(prefix, f.name)) for f in dataclasses.fields(cls)
             if f.name not in own and f.default is dataclasses.MISSING
             and f.default_factory is dataclasses.MISSING}
    extra = {k: v for k, v in OWN.items() if k in own}
    assert from_args(cls, args, prefix=prefix, **extra) == cls(**given, **extra)


@pytest.mark.parametrize(("argv", "cls", "own", "prefix"), CASES, ids=IDS)
def test_every_field_is_an_option_documented_by_its_docstring(argv, cls, own, prefix):
    parser = build_parser()
    for word in (w for w in argv if not w.startswith("-")):  # descend into sub-commands
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)),
                   None)
        if sub is None or word not in sub.choices:
            break
        parser = sub.choices[word]
    by_dest = {a.dest: a for a in parser._actions}
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in own:
            continue
        dest = _dest(prefix, f.name)
        assert dest in by_dest, f"{cls.__name__}.{f.name} has no option"
        assert by_dest[dest].option_strings[0] == "--" + dest.replace("_", "-")
        first_words = " ".join(docs[f.name].split()[:3])
        assert first_words in " ".join(by_dest[dest].help.split()), f.name


def test_anchors_options_build_the_nested_config():
    args = build_parser().parse_args([
        *ANC, "--rollouts", "5", "--seed", "3", "--receivers-top-k", "7",
        "--receivers-skip-layers", "0,1", "--suppression-batch-size", "2", "--adaptive",
        "--adaptive-batch", "3", "--adaptive-min-rollouts", "6", "--methods", "resample"])
    from mechreason.cli.anchors import config_from_args

    cfg = config_from_args(args)
    assert cfg == AnchorsConfig(
        methods=("resample",), resample=ResampleConfig(rollouts=5, seed=3),
        receivers=ReceiverConfig(top_k=7, skip_layers=(0, 1), seed=3),
        suppression=SuppressionConfig(batch_size=2),
        adaptive=AdaptiveConfig(batch=3, min_rollouts=6))
    assert config_from_args(build_parser().parse_args(ANC)).adaptive is None
    assert config_from_args(build_parser().parse_args(
        ["--backend", "vllm", *ANC])).methods == ("resample",)


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

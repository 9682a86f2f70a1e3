"""``mechreason demo``: the whole chain, offline, from procedural tasks to the report."""

from __future__ import annotations

import argparse

from mechreason.cli._args import add_model_arg, nonneg_int
from mechreason.cli._config import add_config, from_args
from mechreason.report.demo_config import DemoConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run the whole pipeline offline and write an HTML report",
        description="Procedural arithmetic tasks -> cot and direct traces -> activation "
                    "capture -> layer sweep of a label's sentences against the other sentences "
                    "of the same cot traces, beside the cot-vs-direct sweep -> shipped SAE "
                    "features -> first-token steering with a random control -> thought "
                    "anchors for one trace -> RUN_DIR/report.html. Each stage is resumable: "
                    "re-running skips stages whose output exists.")
    add_config(p, DemoConfig, types={"seed": nonneg_int}, skip={"model", "custom_sizes"})
    add_model_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mechreason.artifacts import artifact_path
    from mechreason.report.demo import run_demo

    cfg = from_args(DemoConfig, args)
    summary = run_demo(cfg)
    for name, rec in summary["stages"].items():
        secs = f"{rec['seconds']:.1f}s" if "seconds" in rec else ""
        print(f"  {name:<11} {rec['status']:<14} {secs:>8}  {rec.get('reason', '')}")
    print(f"summary: {artifact_path(args.out, 'summary')}")
    print(f"report:  {artifact_path(args.out, 'report')}")
    failed = [n for n, r in summary["stages"].items() if r["status"] == "failed"]
    return 1 if failed else 0

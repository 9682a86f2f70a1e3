"""``mechreason report``: one self-contained offline HTML page from a run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from mechreason.cli._config import add_config, from_args
from mechreason.report.html import ReportConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="build an offline HTML report from a run directory",
        description="Read the stage artifacts a run directory holds (traces/, acts/, "
                    "directions/, sae/ or features/, steering/, anchors/, summary.json; see "
                    "docs/report.md) and write one self-contained HTML page (plotly.js inline, "
                    "no network needed) with the figures, key numbers with 95%% intervals, "
                    "links to the raw artifacts, and a 'not run / missing' note for each "
                    "absent stage.")
    p.add_argument("run_dir", help="run directory (e.g. the --out of `mechreason demo`)")
    add_config(p, ReportConfig, skip={"run_dir"})
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mechreason.outputs import check_out_file
    from mechreason.report.html import build_report

    if args.out:
        check_out_file(args.out)
    cfg = from_args(ReportConfig, args, run_dir=Path(args.run_dir))
    out, sections = build_report(cfg)
    for s in sections:
        print(f"  {s.key:<11} {s.status:<14} {s.reason}")
    print(f"report: {out}")
    bad = [s for s in sections if s.status == "error"]
    if bad:
        from mechreason.errors import MechReasonError

        raise MechReasonError(f"{len(bad)} section(s) of {str(args.run_dir)!r} could not be read "
                              f"(the report marks them): {bad[0].key}: {bad[0].reason}")
    return 0

"""``mechreason demo``: the whole chain, offline, from procedural tasks to the report."""

from __future__ import annotations

import argparse
from pathlib import Path

from mechreason.cli._args import nonneg_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run the whole pipeline offline and write an HTML report",
        description="Procedural arithmetic tasks -> cot and direct traces -> activation "
                    "capture -> layer sweep of a label's sentences against the other sentences "
                    "of the same cot traces, beside the cot-vs-direct sweep -> shipped SAE "
                    "features -> first-token steering with a random control -> thought "
                    "anchors for one trace -> RUN_DIR/report.html. Each stage is resumable: "
                    "re-running skips stages whose output exists.")
    p.add_argument("--out", required=True, help="run directory (resumed if it exists)")
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="bundled short name, hub id or local HF directory (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="less data everywhere (a few minutes on CPU)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--sae", default=None,
                   help="SAE folder (SAELens format) to rank features with (default: a shipped "
                        "SAE in sae_checkpoints/ trained on the model), or a SAELens release "
                        "name together with --sae-id")
    p.add_argument("--sae-id", default=None, help="SAE id within the SAELens release --sae")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="model weights' dtype (bfloat16 for large models on a GPU; default: %(default)s)")
    p.add_argument("--only", default="",
                   help="comma-separated stages to run (default: all of traces, acts, directions, "
                        "sae, steering, anchors, report)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mechreason.demo import DemoConfig, run_demo

    cfg = DemoConfig(out=Path(args.out), model=args.model, quick=args.quick, seed=args.seed,
                     sae=args.sae, sae_id=args.sae_id, device=args.device, dtype=args.dtype,
                     progress=not args.no_progress,
                     only=tuple(x.strip() for x in args.only.split(",") if x.strip()))
    summary = run_demo(cfg)
    for name, rec in summary["stages"].items():
        secs = f"{rec['seconds']:.1f}s" if "seconds" in rec else ""
        print(f"  {name:<11} {rec['status']:<14} {secs:>8}  {rec.get('reason', '')}")
    print(f"summary: {Path(args.out) / 'summary.json'}")
    print(f"report:  {Path(args.out) / 'report.html'}")
    failed = [n for n, r in summary["stages"].items() if r["status"] == "failed"]
    return 1 if failed else 0

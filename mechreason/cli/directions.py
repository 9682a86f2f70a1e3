"""``mechreason directions``: difference-of-means directions with a held-out layer sweep."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mechreason.cli._args import nonneg_int, open_fraction, positive_int
from mechreason.cli._config import add_config, from_args
from mechreason.directions.config import DirectionsConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "directions", help="contrast directions from captured activations, swept over layers",
        description="Build two groups of vectors from a capture (--contrast key=A:B, or key=A "
                    "for A vs the rest; keys: any item field such as style, correct, task, "
                    "plus label, phase, length), fit a direction per captured hook, score it "
                    "on held-out problems (split by problem id), print the sweep table, and "
                    "write a direction directory; optionally export a llama.cpp control "
                    "vector GGUF.")
    p.add_argument("--acts", required=True, nargs="+", help="capture directories")
    add_config(p, DirectionsConfig, skip={"acts"},
               types={"test_frac": open_fraction, "seed": nonneg_int, "min_problems": positive_int})
    p.add_argument("--out", required=True, help="output direction directory")
    p.add_argument("--export-gguf", default=None, metavar="FILE",
                   help="also write a llama.cpp control-vector GGUF (direction.L per layer; "
                        "repeng and llama.cpp --control-vector read it)")
    # --export-layers: the flag's earlier name, kept as an alias
    p.add_argument("--gguf-layers", "--export-layers", dest="gguf_layers", default="all",
                   help="layers to export: all (every swept layer >= 1) | best | a range "
                        "10-15 | a list 3,5,7 (default: %(default)s)")
    p.add_argument("--model-hint", default=None,
                   help="controlvector.model_hint (default: the model's architecture family, "
                        "e.g. llama)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mechreason.directions.io import gguf_layer, parse_gguf_layers
    from mechreason.directions.pipeline import compute_directions
    from mechreason.outputs import check_out_dir, check_out_file, output_lock

    check_out_dir(args.out)
    if args.export_gguf:
        check_out_file(args.export_gguf, flag="--export-gguf")
    cfg = from_args(DirectionsConfig, args, acts=tuple(args.acts))
    layers = parse_gguf_layers(args.gguf_layers)
    if args.export_gguf and isinstance(layers, list):  # fail before the sweep, not after
        for layer in layers:
            gguf_layer(f"blocks.{layer}.hook_resid_post")
    with output_lock(args.out):
        return _run(args, cfg, layers, compute_directions(cfg))


def _run(args: argparse.Namespace, cfg: Any, layers: str | list[int], res: Any) -> int:
    from mechreason.directions.pipeline import export_result, save_result
    from mechreason.directions.sweep import format_table

    ds = res.directions
    c = ds.counts
    print(f"contrast {ds.contrast} ({ds.groups['A']} vs {ds.groups['B']}), aggregate "
          f"{ds.aggregate}, method {ds.method}")
    print(f"A: {c['A']} vectors from {c['A_problems']} problems; B: {c['B']} vectors from "
          f"{c['B_problems']} problems; split by {res.contrast.split_key!r}")
    if res.too_small:
        print(f"warning: a group has fewer than {cfg.min_problems} problems; the metrics "
              "below are too noisy to trust", file=sys.stderr)
    print(format_table(res.sweep))
    print(f"best: {ds.best_hook} ({ds.best_rule})")
    save_result(args.out, cfg, res)
    print(f"wrote {args.out}")
    if args.export_gguf:
        written = export_result(args.export_gguf, ds, layers, args.model_hint)
        print(f"exported control vector for layers {written} to {args.export_gguf}")
    return 0

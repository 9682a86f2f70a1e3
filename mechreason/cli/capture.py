"""``mechreason capture``: hooked activations of texts or traces, written to disk."""

from __future__ import annotations

import argparse

from mechreason.activations.config import CaptureConfig, parse_positions
from mechreason.cli._args import add_model_arg, positive_int
from mechreason.cli._config import add_config, from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "capture", help="capture activations to a sharded, resumable store",
        description="Run the model over texts (.txt, one per line), JSONL records with "
                    "'text' or 'question', or trace records from `mechreason traces`, and "
                    "write the chosen hooks' activations as sharded safetensors with an "
                    "index keyed by item, position, sentence and phase. Re-running the same "
                    "command resumes an interrupted capture.")
    add_model_arg(p)
    p.add_argument("--input", required=True, help=".txt or .jsonl file")
    add_config(p, CaptureConfig, types={"positions": parse_positions, "batch_size": positive_int,
                                        "shard_rows": positive_int, "max_length": positive_int})
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--out", required=True, help="output directory (resumed if it exists)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mechreason.activations import capture
    from mechreason.model.loading import load_model
    from mechreason.outputs import check_out_dir, output_lock
    from mechreason.validate import check_device, check_input_file, check_model_name

    check_model_name(args.model)
    check_device(args.device)
    check_input_file(args.input, "--input", (".txt", ".jsonl"))
    check_out_dir(args.out)
    cfg = from_args(CaptureConfig, args)
    with output_lock(args.out):
        model = load_model(args.model, device=args.device)
        store = capture(model, args.input, cfg, args.out)  # reports through mechreason.progress
    print(f"captured {len(store)} rows x {len(store.hooks)} hooks (d_model {store.d_model}) "
          f"from {len(store.items)} items into {args.out}")
    return 0

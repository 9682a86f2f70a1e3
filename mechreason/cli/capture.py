"""``mechreason capture``: hooked activations of texts or traces, written to disk."""

from __future__ import annotations

import argparse

from mechreason.cli._args import add_model_arg, positive_int


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
    p.add_argument("--hooks", default="blocks.*.hook_resid_post",
                   help="comma-separated hook names; 'blocks.*.' expands to every layer "
                        "(default: %(default)s)")
    p.add_argument("--positions", default="all",
                   help="all | last | prompt | generated | first-generated | indices like "
                        "0,5,-1 (default: %(default)s)")
    p.add_argument("--aggregate", default="token", choices=["token", "mean"],
                   help="one row per token, or the mean per sentence (traces) / item")
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"],
                   help="storage dtype (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--shard-rows", type=positive_int, default=4096)
    p.add_argument("--max-length", type=positive_int, default=None,
                   help="truncate items to N tokens (recorded in the store's config; without "
                        "it, an item longer than the model's context is refused)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--out", required=True, help="output directory (resumed if it exists)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mechreason.activations import CaptureConfig, capture, parse_positions
    from mechreason.model.loading import load_model
    from mechreason.outputs import check_out_dir, output_lock
    from mechreason.validate import check_device, check_input_file, check_model_name

    check_model_name(args.model)
    check_device(args.device)
    check_input_file(args.input, "--input", (".txt", ".jsonl"))
    check_out_dir(args.out)
    cfg = CaptureConfig(hooks=tuple(h.strip() for h in args.hooks.split(",") if h.strip()),
                        positions=parse_positions(args.positions), aggregate=args.aggregate,
                        dtype=args.dtype, batch_size=args.batch_size,
                        shard_rows=args.shard_rows, max_length=args.max_length)
    with output_lock(args.out):
        model = load_model(args.model, device=args.device)
        store = capture(model, args.input, cfg, args.out)  # reports through mechreason.progress
    print(f"captured {len(store)} rows x {len(store.hooks)} hooks (d_model {store.d_model}) "
          f"from {len(store.items)} items into {args.out}")
    return 0

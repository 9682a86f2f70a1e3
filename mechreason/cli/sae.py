"""``mechreason sae train|eval``: train an SAE on captured activations; evaluate one."""

from __future__ import annotations

import argparse
import json

from mechreason.cli._args import (
    fraction,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    unit_interval,
)
from mechreason.cli._config import add_config, from_args
from mechreason.sae.config import EvalConfig, TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sae", help="train or evaluate a sparse autoencoder",
                       description="Train a TopK or ReLU SAE on a capture store (streamed, "
                                   "resumable), or evaluate one (FVU, L0, dead/dense latents, "
                                   "loss recovered). SAEs are SAELens folders.")
    ss = p.add_subparsers(dest="sae_command", metavar="{train,eval}", required=True)
    t = ss.add_parser("train", help="train an SAE on a capture store")
    t.add_argument("--acts", required=True, nargs="+",
                   help="capture directory (mechreason capture); several are interleaved")
    t.add_argument("--hook", required=True, help="hook in the store, e.g. blocks.15.hook_resid_post")
    add_config(t, TrainConfig, types={
        "expansion": positive_int, "d_sae": positive_int, "k": positive_int,
        "l1_coeff": nonneg_float, "lr": positive_float, "batch_size": positive_int,
        "n_tokens": positive_int, "epochs": positive_int, "warmup_steps": nonneg_int,
        "decay_frac": unit_interval, "aux_coeff": nonneg_float, "k_aux": positive_int,
        "dead_tokens": positive_int, "grad_clip": positive_float, "init_rows": positive_int,
        "seed": nonneg_int, "checkpoint_every": positive_int})
    t.add_argument("--holdout", type=fraction, default=0.05,
                   help="fraction of items held out for evaluation, in [0, 1) (default 0.05)")
    t.add_argument("--store-dtype", default="float32", choices=["float32", "float16"],
                   help="weight storage dtype in the saved file")
    t.add_argument("--out", required=True, help="SAE folder (a killed run resumes from it)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=run_train)
    e = ss.add_parser("eval", help="evaluate an SAE on a capture store")
    e.add_argument("--sae", required=True, help="SAELens folder")
    e.add_argument("--acts", required=True, help="capture directory")
    e.add_argument("--input", default=None, help="the capture's input file (texts or traces), "
                                                 "for loss recovered when the store keeps no "
                                                 "token ids (older stores)")
    add_config(e, EvalConfig, types={"max_items": positive_int, "max_length": positive_int})
    e.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    e.add_argument("--out", default=None, help="where to write eval.json (default: --sae)")
    e.set_defaults(func=run_eval)


def run_train(args: argparse.Namespace) -> int:
    from mechreason.activations import ActivationStore
    from mechreason.outputs import check_fingerprint, check_out_dir, output_lock
    from mechreason.sae.pipeline import check_train_stores, train_fingerprint, train_from_stores

    cfg = from_args(TrainConfig, args)
    stores = [ActivationStore(a) for a in args.acts]
    check_train_stores(stores, args.hook, args.holdout)
    check_out_dir(args.out)
    with output_lock(args.out):
        check_fingerprint(args.out, train_fingerprint(stores, args.hook, cfg, holdout=args.holdout,
                                                      store_dtype=args.store_dtype), what="SAE")
        extra = train_from_stores(stores, args.hook, cfg, args.out, holdout=args.holdout,
                                  store_dtype=args.store_dtype, progress=not args.no_progress)
    print(json.dumps({k: extra[k] for k in ("tokens_trained", "steps", "final", "heldout")},
                     indent=1))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from mechreason.activations import ActivationStore
    from mechreason.sae.io import load_sae
    from mechreason.sae.pipeline import evaluate_on_store

    res = evaluate_on_store(load_sae(args.sae), ActivationStore(args.acts),
                            from_args(EvalConfig, args), sae_dir=args.sae, out=args.out,
                            input_file=args.input, device=args.device)
    print(json.dumps(res, indent=1))
    return 0

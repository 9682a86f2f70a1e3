"""``mechreason behaviours``: cluster sentence activations into behaviours (Venhoff 2025b)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mechreason.cli._args import add_store_args, nonneg_int, positive_int
from mechreason.cli._config import add_config, from_args
from mechreason.sae.config import BehaviourConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("behaviours", help="discover reasoning behaviours by clustering sentences",
                       description="Cluster sentence activations (mean over each sentence, "
                                   "centred, L2-normalised) with a small top-k SAE or k-means "
                                   "(Venhoff et al. 2025b); report example sentences, overlap "
                                   "with the rule-based labels, and one steerable direction per "
                                   "cluster.")
    add_store_args(p, acts="capture directory of trace records",
                   input_file="the capture's input file, to print sentences (only for a store "
                              "that keeps no token ids)")
    p.add_argument("--hook", default=None, help="hook in the store (default: its only one)")
    add_config(p, BehaviourConfig, types={
        "n_clusters": positive_int, "k": positive_int, "epochs": positive_int,
        "seed": nonneg_int, "n_examples": positive_int,
        "phase": lambda text: None if text == "all" else text})
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mechreason.activations import ActivationStore
    from mechreason.errors import MechReasonError, unknown
    from mechreason.outputs import check_out_dir, output_lock

    cfg = from_args(BehaviourConfig, args)

    check_out_dir(args.out)
    store = ActivationStore(args.acts)
    hook = args.hook or (store.hooks[0] if len(store.hooks) == 1 else None)
    if hook is None:
        raise MechReasonError(f"the store has several hooks; pick one with --hook: {store.hooks}")
    if hook not in store.hooks:
        raise unknown("hook in this store", hook, store.hooks)
    with output_lock(args.out):
        return _discover(args, cfg, store, hook)


def _discover(args: argparse.Namespace, cfg: Any, store: Any, hook: str) -> int:
    from mechreason.sae.behaviours import discover_behaviours, save_behaviours

    res = discover_behaviours(store, hook, cfg)
    model = None
    if args.input or store.token_ids():  # the sentences' text needs the tokenizer
        from mechreason.model.loading import load_model

        model = load_model(store.cfg["model"], device=args.device)
    save_behaviours(Path(args.out), res, cfg, store, hook, model, args.input)
    print(json.dumps({"n_sentences": res["n_sentences"], "nmi_first_label": res["nmi_first_label"],
                      "sizes": [c["size"] for c in res["clusters"]],
                      "best_labels": [c["best_label"] for c in res["clusters"]]}, indent=1))
    return 0

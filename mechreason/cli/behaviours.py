"""``mechreason behaviours``: cluster sentence activations into behaviours (Venhoff 2025b)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mechreason.cli._args import nonneg_int, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("behaviours", help="discover reasoning behaviours by clustering sentences",
                       description="Cluster sentence activations (mean over each sentence, "
                                   "centred, L2-normalised) with a small top-k SAE or k-means "
                                   "(Venhoff et al. 2025b); report example sentences, overlap "
                                   "with the rule-based labels, and one steerable direction per "
                                   "cluster.")
    p.add_argument("--acts", required=True, help="capture directory of trace records")
    p.add_argument("--n-clusters", type=positive_int, required=True)
    p.add_argument("--hook", default=None, help="hook in the store (default: its only one)")
    p.add_argument("--method", default="sae", choices=["sae", "kmeans"])
    p.add_argument("--k", type=positive_int, default=3,
                   help="active latents per sentence (sae method)")
    p.add_argument("--phase", default="reasoning", help="sentence phase to use, or 'all'")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--input", default=None, help="the capture's input file, to print sentences "
                                                 "(only for a store that keeps no token ids)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mechreason.activations import ActivationStore
    from mechreason.errors import MechReasonError, unknown
    from mechreason.sae.behaviours import BehaviourConfig

    cfg = BehaviourConfig(n_clusters=args.n_clusters, method=args.method, k=args.k,
                          phase=None if args.phase == "all" else args.phase, seed=args.seed)
    from mechreason.outputs import check_out_dir, output_lock

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

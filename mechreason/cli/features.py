"""``mechreason features``: rank SAE latents as reasoning features (contrast or ReasonScore)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mechreason.cli._args import add_store_args, positive_int
from mechreason.cli._config import add_config, from_args
from mechreason.sae.config import FeaturesConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="rank SAE latents as reasoning features",
                       description="Rank an SAE's latents on a capture store: 'contrast' "
                                   "(cot minus direct at the first generated token or the "
                                   "generated span, with a held-out half; He et al. 2026) or "
                                   "'reason' (ReasonScore on reasoning words; Galichin et al. "
                                   "2025). Reports top activations and the logit lens.")
    p.add_argument("--sae", required=True, help="SAELens folder")
    add_store_args(p, acts="capture directory (token rows)",
                   input_file="the capture's input file, for a store written before stores "
                              "kept token ids")
    add_config(p, FeaturesConfig, types={"top": positive_int})
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mechreason.activations import ActivationStore
    from mechreason.model.loading import load_model
    from mechreason.outputs import check_out_dir, output_lock
    from mechreason.sae.features import rank_features_to
    from mechreason.sae.io import check_sae_fits, load_sae

    cfg = from_args(FeaturesConfig, args)
    check_out_dir(args.out)
    sae, store = load_sae(args.sae), ActivationStore(args.acts)
    hook = check_sae_fits(sae, store)
    with output_lock(args.out):
        model = load_model(store.cfg["model"], device=args.device)
        res = rank_features_to(Path(args.out), sae, store, hook, model, cfg,
                               input_file=args.input, sae_path=str(args.sae))
    print(json.dumps({"score": args.score, **res["extra"],
                      "top": [(e["latent"], f"{e['score']:.5f}") for e in res["top"][:10]]},
                     indent=1))
    return 0

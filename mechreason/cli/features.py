"""``mechreason features``: rank SAE latents as reasoning features (contrast or ReasonScore)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mechreason.cli._args import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="rank SAE latents as reasoning features",
                       description="Rank an SAE's latents on a capture store: 'contrast' "
                                   "(cot minus direct at the first generated token or the "
                                   "generated span, with a held-out half; He et al. 2026) or "
                                   "'reason' (ReasonScore on reasoning words; Galichin et al. "
                                   "2025). Reports top activations and the logit lens.")
    p.add_argument("--sae", required=True, help="SAELens folder")
    p.add_argument("--acts", required=True, help="capture directory (token rows)")
    p.add_argument("--score", required=True, choices=["contrast", "reason"])
    p.add_argument("--input", default=None, help="the capture's input file, for a store "
                                                 "written before stores kept token ids")
    p.add_argument("--span", default="first-generated", choices=["first-generated", "generated"],
                   help="contrast positions (default: %(default)s)")
    p.add_argument("--top", type=positive_int, default=20, help="latents to report")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mechreason.activations import ActivationStore
    from mechreason.model.loading import load_model
    from mechreason.outputs import check_out_dir, output_lock
    from mechreason.sae.io import check_sae_fits, load_sae

    check_out_dir(args.out)
    sae, store = load_sae(args.sae), ActivationStore(args.acts)
    hook = check_sae_fits(sae, store)
    with output_lock(args.out):
        return _rank(args, sae, store, hook, load_model(store.cfg["model"], device="cpu"))


def _rank(args: argparse.Namespace, sae: Any, store: Any, hook: Any, model: Any) -> int:
    from mechreason.artifacts import save_tensors, write_json, write_meta
    from mechreason.errors import MechReasonError
    from mechreason.sae import features as F

    tokens = store.token_ids(model, args.input)
    if args.score == "reason" and not tokens:
        raise MechReasonError("--score reason needs the tokens: this store keeps no token ids "
                              "(written by an older mechreason); pass --input, the capture's input file")
    extra: dict[str, Any] = {}
    if args.score == "contrast":
        res = F.contrast_scores(sae, store, hook, span=args.span, n_top=args.top)
        scores, top = res.scores, res.top
        tensors = {"scores": res.scores, "discovery": res.discovery, "heldout": res.heldout}
        extra = {"heldout_rank_corr": res.heldout_rank_corr,
                 "heldout_sign_agreement_top": res.heldout_sign_agreement}
        rows = None
    else:
        gen = [n for n, r in enumerate(store.rows) if r["pos"] >= 0 and r["item"] in tokens
               and r.get("phase") in (None, "reasoning", "answer")]
        rs = F.reason_scores(sae, store, hook, tokens, model.tokenizer, rows=gen)
        scores, rows = rs.scores, gen
        top = scores.argsort(descending=True)[:args.top].tolist()
        tensors = {"scores": rs.scores, "entropy": rs.entropy, "mean_in": rs.mean_in,
                   "mean_out": rs.mean_out}
        extra = {"group_counts": rs.group_counts}
    acts = F.top_activations(sae, store, hook, top, rows=rows, n=5)
    lens = F.logit_lens(sae, model, top)
    ranking = []
    for li in top:
        entry = {"latent": li, "score": float(scores[li]), "logit_lens": lens[li],
                 "top": [{"act": v, **F.describe_row(store, r, tokens, model.tokenizer)}
                         for v, r in acts[li]]}
        if args.score == "contrast":
            entry["heldout"] = float(tensors["heldout"][li])
        ranking.append(entry)
    out = Path(args.out)
    save_tensors(out / "scores.safetensors", {k: v.float() for k, v in tensors.items()})
    write_json(out / "cfg.json", {"sae": str(args.sae), "acts": str(args.acts),
                                  "score": args.score, "span": args.span, "hook": hook})
    write_json(out / "ranking.json", {"score": args.score, **extra, "top": ranking})
    write_meta(out, model, stage="features", hook=hook)
    print(json.dumps({"score": args.score, **extra,
                      "top": [(e["latent"], f"{e['score']:.5f}") for e in ranking[:10]]},
                     indent=1))
    return 0

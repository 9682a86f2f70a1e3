"""``mechreason sae train|eval``: train an SAE on captured activations; evaluate one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mechreason.cli._args import fraction, nonneg_float, nonneg_int, positive_float, positive_int


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
    t.add_argument("--arch", default="topk", choices=["topk", "relu"])
    t.add_argument("--expansion", type=positive_int, default=8, help="d_sae / d_in (default 8)")
    t.add_argument("--k", type=positive_int, default=32, help="active latents per token (topk)")
    t.add_argument("--l1-coeff", type=nonneg_float, default=5.0, help="L1 weight (relu)")
    t.add_argument("--lr", type=positive_float, default=4e-4)
    t.add_argument("--batch-size", type=positive_int, default=1024)
    t.add_argument("--epochs", type=positive_int, default=1)
    t.add_argument("--n-tokens", type=positive_int, default=None,
                   help="training rows in all (overrides --epochs)")
    t.add_argument("--dead-tokens", type=positive_int, default=100_000,
                   help="rows without firing after which a latent counts as dead")
    t.add_argument("--holdout", type=fraction, default=0.05,
                   help="fraction of items held out for evaluation, in [0, 1) (default 0.05)")
    t.add_argument("--seed", type=nonneg_int, default=0)
    t.add_argument("--checkpoint-every", type=positive_int, default=100,
                   help="steps between checkpoints")
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
    e.add_argument("--max-items", type=positive_int, default=64, help="items for loss recovered")
    e.add_argument("--max-length", type=positive_int, default=256, help="tokens per item for loss")
    e.add_argument("--all-rows", action="store_true",
                   help="use every row, not only the items held out from training")
    e.add_argument("--out", default=None, help="where to write eval.json (default: --sae)")
    e.set_defaults(func=run_eval)


def run_train(args: argparse.Namespace) -> int:
    from mechreason.activations import ActivationStore
    from mechreason.outputs import check_fingerprint, check_out_dir, output_lock
    from mechreason.sae.train import TrainConfig

    cfg = TrainConfig(arch=args.arch, expansion=args.expansion, k=args.k,
                      l1_coeff=args.l1_coeff, lr=args.lr, batch_size=args.batch_size,
                      epochs=args.epochs, n_tokens=args.n_tokens, dead_tokens=args.dead_tokens,
                      seed=args.seed, checkpoint_every=args.checkpoint_every)
    stores = [ActivationStore(a) for a in args.acts]
    for store in stores:
        if args.hook not in store.hooks:
            from mechreason.errors import unknown

            raise unknown(f"hook in the store {str(store.root)!r}", args.hook, store.hooks)
        store.check_shards()
    _check_train_rows(stores, args.holdout)
    check_out_dir(args.out)
    with output_lock(args.out):
        check_fingerprint(args.out, _train_fingerprint(args, cfg, stores), what="SAE")
        return _train(args, cfg, stores)


def _check_train_rows(stores: list[Any], holdout: float) -> None:
    from mechreason.errors import MechReasonError
    from mechreason.sae.evaluate import split_items, store_rows

    n = sum(len(store_rows(s, split_items([it["item"] for it in s.items], holdout)[0]))
            for s in stores)
    if n == 0:
        raise MechReasonError(f"no training rows: --holdout {holdout} leaves none of the "
                              f"{sum(len(s) for s in stores)} rows of --acts to train on")


def _train_fingerprint(args: argparse.Namespace, cfg: Any, stores: list[Any]) -> dict[str, Any]:
    """What the SAE in --out is a function of: each store's inputs, model and capture
    settings, the hook, the hold-out fraction and every training setting."""
    acts = [{k: s.cfg.get(k) for k in ("capture", "weights_sha256", "inputs_sha256")}
            | {"rows": len(s)} for s in stores]
    return {"stage": "sae train", "acts": acts, "hook": args.hook, "holdout": args.holdout,
            "store_dtype": args.store_dtype, "train": cfg}


def _train(args: argparse.Namespace, cfg: Any, stores: list[Any]) -> int:
    from mechreason.sae.evaluate import reconstruction_metrics, split_items, store_rows
    from mechreason.sae.io import save_sae
    from mechreason.sae.train import mixed_source, store_source, train_sae, write_summary

    sources, held_parts, n_rows = [], [], 0
    for k, store in enumerate(stores):
        train_items, held = split_items([it["item"] for it in store.items], args.holdout)
        rows = store_rows(store, train_items)
        n_rows += len(rows)
        sources.append(store_source(store, args.hook, cfg.batch_size, seed=cfg.seed + 1000 * k,
                                    rows=rows))
        held_parts.append((store, store_rows(store, held)))
    source = sources[0] if len(sources) == 1 else mixed_source(sources, seed=cfg.seed)
    sae, summary = train_sae(source, cfg, args.out, hook=args.hook,
                             model_name=stores[0].cfg.get("model"), progress=not args.no_progress)
    batches = [b for st, hr in held_parts if hr
               for b in st.iter_batches(args.hook, 4096, shuffle=False, rows=hr)]
    if batches:
        summary["heldout"] = reconstruction_metrics(sae, batches)
    extra = {"tokens_trained": summary["tokens"], "steps": summary["steps"],
             "norm_scale": summary["norm_scale"], "holdout": args.holdout,
             "acts": [str(Path(a).resolve()) for a in args.acts], "train_rows": n_rows,
             "train_cfg": summary["cfg"], "final": summary["final"],
             "heldout": summary.get("heldout")}
    save_sae(sae, args.out, store_dtype=args.store_dtype, extra=extra)
    write_summary(args.out, summary)
    print(json.dumps({k: extra[k] for k in ("tokens_trained", "steps", "final", "heldout")},
                     indent=1))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from mechreason.activations import ActivationStore
    from mechreason.artifacts import read_json, write_json
    from mechreason.sae.evaluate import (
        loss_recovered,
        reconstruction_metrics,
        split_items,
        store_rows,
    )
    from mechreason.sae.io import check_sae_fits, load_sae

    sae = load_sae(args.sae)
    store = ActivationStore(args.acts)
    hook = check_sae_fits(sae, store)
    mr = (read_json(Path(args.sae) / "cfg.json")["metadata"].get("mechreason") or {})
    trained_on = mr.get("acts") or []
    same = str(Path(args.acts).resolve()) in (trained_on if isinstance(trained_on, list)
                                              else [trained_on])
    items = None
    if same and not args.all_rows and mr.get("holdout"):
        items = split_items([it["item"] for it in store.items], mr["holdout"])[1]
    rows = store_rows(store, items)
    res: dict = {"rows_from": "held-out items" if items is not None else "all items",
                 **reconstruction_metrics(sae, store.iter_batches(hook, 4096, shuffle=False,
                                                                  rows=rows))}
    if args.input or store.token_ids():
        from mechreason.model.loading import load_model

        model = load_model(store.cfg["model"])
        ids = store.token_ids(model, args.input)
        seqs = [t[:args.max_length] for i, t in ids.items()
                if items is None or i in items][:args.max_items]
        res.update(loss_recovered(model, sae, hook, seqs))
    write_json(Path(args.out or args.sae) / "eval.json", res)
    print(json.dumps(res, indent=1))
    return 0

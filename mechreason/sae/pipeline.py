"""SAE stage, end to end: train on one or more capture stores with a held-out split of
their items, evaluate on the held-out rows, and write the SAELens folder with its
provenance (what ``mechreason sae train`` runs)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mechreason.errors import MechReasonError, unknown
from mechreason.sae.config import EvalConfig, TrainConfig


def check_train_stores(stores: Sequence[Any], hook: str, holdout: float) -> None:
    """Refuse a hook some store lacks, an incomplete store, and a hold-out fraction that
    leaves no training rows (before anything is written)."""
    from mechreason.sae.evaluate import split_items, store_rows

    for store in stores:
        if hook not in store.hooks:
            raise unknown(f"hook in the store {str(store.root)!r}", hook, store.hooks)
        store.check_shards()
    n = sum(len(store_rows(s, split_items([it["item"] for it in s.items], holdout)[0]))
            for s in stores)
    if n == 0:
        raise MechReasonError(f"no training rows: --holdout {holdout} leaves none of the "
                              f"{sum(len(s) for s in stores)} rows of --acts to train on")


def train_fingerprint(stores: Sequence[Any], hook: str, cfg: TrainConfig, *, holdout: float,
                      store_dtype: str) -> dict[str, Any]:
    """What an SAE folder is a function of: each store's inputs, model and capture
    settings, the hook, the hold-out fraction and every training setting."""
    acts = [{k: s.cfg.get(k) for k in ("capture", "weights_sha256", "inputs_sha256")}
            | {"rows": len(s)} for s in stores]
    return {"stage": "sae train", "acts": acts, "hook": hook, "holdout": holdout,
            "store_dtype": store_dtype, "train": cfg}


def train_from_stores(stores: Sequence[Any], hook: str, cfg: TrainConfig, out: str | Path, *,
                      holdout: float = 0.05, store_dtype: str = "float32",
                      progress: bool = True) -> dict[str, Any]:
    """Train on the stores' training items (interleaved when several), measure
    reconstruction on the held-out items, save the SAELens folder and the summary in
    ``out``; returns what the folder's metadata records."""
    from mechreason.sae.evaluate import reconstruction_metrics, split_items, store_rows
    from mechreason.sae.io import save_sae
    from mechreason.sae.train import mixed_source, store_source, train_sae, write_summary

    sources, held_parts, n_rows = [], [], 0
    for k, store in enumerate(stores):
        train_items, held = split_items([it["item"] for it in store.items], holdout)
        rows = store_rows(store, train_items)
        n_rows += len(rows)
        sources.append(store_source(store, hook, cfg.batch_size, seed=cfg.seed + 1000 * k,
                                    rows=rows))
        held_parts.append((store, store_rows(store, held)))
    source = sources[0] if len(sources) == 1 else mixed_source(sources, seed=cfg.seed)
    sae, summary = train_sae(source, cfg, out, hook=hook,
                             model_name=stores[0].cfg.get("model"), progress=progress)
    batches = [b for st, hr in held_parts if hr
               for b in st.iter_batches(hook, 4096, shuffle=False, rows=hr)]
    if batches:
        summary["heldout"] = reconstruction_metrics(sae, batches)
    extra = {"tokens_trained": summary["tokens"], "steps": summary["steps"],
             "norm_scale": summary["norm_scale"], "holdout": holdout,
             "acts": [str(Path(s.root).resolve()) for s in stores], "train_rows": n_rows,
             "train_cfg": summary["cfg"], "final": summary["final"],
             "heldout": summary.get("heldout")}
    save_sae(sae, out, store_dtype=store_dtype, extra=extra)
    write_summary(out, summary)
    return extra


def evaluate_on_store(sae: Any, store: Any, cfg: EvalConfig | None = None, *,
                      sae_dir: str | Path, out: str | Path | None = None,
                      input_file: Any = None, device: str | None = None) -> dict[str, Any]:
    """``mechreason sae eval``: reconstruction metrics on the store's rows (only the items
    held out from training when the SAE was trained on this store, unless
    ``cfg.all_rows``) and, where the token ids are known, loss recovered on up to
    ``cfg.max_items`` of those items; writes ``eval.json`` into ``out`` (default: the SAE
    folder)."""
    cfg = cfg or EvalConfig()
    all_rows, max_items, max_length = cfg.all_rows, cfg.max_items, cfg.max_length
    from mechreason.artifacts import artifact_path, read_json, write_json
    from mechreason.sae.evaluate import (
        loss_recovered,
        reconstruction_metrics,
        split_items,
        store_rows,
    )
    from mechreason.sae.io import check_sae_fits

    hook = check_sae_fits(sae, store)
    meta = read_json(artifact_path(sae_dir, "cfg"), "SAE config").get("metadata", {})
    mr = meta.get("mechreason") or {}
    trained_on = mr.get("acts") or []
    same = str(Path(store.root).resolve()) in (trained_on if isinstance(trained_on, list)
                                               else [trained_on])
    items = None
    if same and not all_rows and mr.get("holdout"):
        items = split_items([it["item"] for it in store.items], mr["holdout"])[1]
    rows = store_rows(store, items)
    res: dict[str, Any] = {
        "rows_from": "held-out items" if items is not None else "all items",
        **reconstruction_metrics(sae, store.iter_batches(hook, 4096, shuffle=False, rows=rows))}
    if input_file or store.token_ids():
        from mechreason.model.loading import load_model

        model = load_model(store.cfg["model"], device=device)
        ids = store.token_ids(model, input_file)
        seqs = [t[:max_length] for i, t in ids.items() if items is None or i in items][:max_items]
        res.update(loss_recovered(model, sae, hook, seqs))
    write_json(artifact_path(out or sae_dir, "sae_eval"), res)
    return res

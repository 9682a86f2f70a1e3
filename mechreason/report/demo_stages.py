"""Demo stages built on the stage modules.

Directions: a contrast whose two groups share their prompts, so its layer sweep can
locate something: sentences of one behaviour label against the other sentences of the
same cot traces (Venhoff et al. 2025a's label-vs-rest at sentence starts), split by
problem. The cot-vs-direct contrast at the last prompt token is kept as a second sweep
(the steering stage steers with it), with :data:`COT_VS_DIRECT_CAVEAT` beside it.

SAE: ranking latents by CoT-minus-direct activation with per-trace intervals and
token-level examples (He et al. 2026, "reasoning as a latent mode"; cf. ReasonScore,
Galichin et al. 2025), checked on a held-out half by
:func:`mechreason.sae.features.contrast_scores`. Writes ``sae/features.json``, which
:mod:`mechreason.report.stages` reads (schema in docs/report.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mechreason.artifacts import artifact_path, write_json, write_meta
from mechreason.errors import MechReasonError

log = logging.getLogger(__name__)


# --- directions: a contrast whose groups share their prompts ---------------------

COT_VS_DIRECT_CAVEAT = (
    "cot and direct prompts differ in their text, so at the last prompt token the two "
    "groups separate at every layer from layer 0 on (AUROC 1 by construction): this sweep "
    "reads the instruction and locates nothing; the steering stage tests what its "
    "direction does")


def label_counts(items: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Per sentence tag: how many problems' cot traces have sentences both with and
    without it (the problems a within-trace contrast of that tag can use)."""
    out: dict[str, int] = {}
    for it in items:
        if it.get("style") != "cot":
            continue
        tags = [set(a) | set(b) for a, b in zip(it.get("sentence_labels") or [],
                                                 it.get("sentence_behaviours") or [])]
        for t in set().union(*tags) if tags else ():
            if any(t not in s for s in tags):
                out[t] = out.get(t, 0) + 1
    return out


def within_cot_contrast(store: Any, label: str | None = None) -> Any:
    """Sentences carrying ``label`` against the other sentences of the same cot traces
    (sentence-start windows), keeping only problems whose trace has both, so every
    problem contributes to both groups and the groups share their prompts. ``label``
    None: the tag usable on the most problems (:func:`label_counts`; ties to the name),
    chosen from label counts only, never from activations."""
    import dataclasses

    from mechreason.directions.contrast import build_contrast

    counts = label_counts(store.items)
    if label is None:
        if not counts:
            raise MechReasonError("no cot trace has sentences both with and without a label "
                                  "(traces of one sentence, or one label throughout)")
        label = min(counts, key=lambda t: (-counts[t], t))
    cs = build_contrast([store], f"label={label}", "sentence-start")
    a = [u for u in cs.a if u.keys.get("style") == "cot"]
    b = [u for u in cs.b if u.keys.get("style") == "cot"]
    both = {u.problem for u in a} & {u.problem for u in b}
    if len(both) < 2:
        raise MechReasonError(f"label {label!r}: {len(both)} problem(s) have cot sentences "
                              "with and without it; a held-out split needs at least 2")
    return dataclasses.replace(cs, a=[u for u in a if u.problem in both],
                               b=[u for u in b if u.problem in both])


# --- SAE features ---------------------------------------------------------------


def shipped_sae(model: Any, root: Path) -> tuple[Path | None, str]:
    """The first SAE folder under ``root`` trained on ``model``, and why (or why none)."""
    import json

    from mechreason.model.weights import BUNDLED

    names = {model.name}
    if model.name in BUNDLED:
        names.add(BUNDLED[model.name].hf_id)
    if not root.is_dir():
        return None, f"no shipped SAEs: {root} does not exist"
    seen = []
    for cfg_path in sorted(root.glob("*/cfg.json")):
        meta = json.loads(cfg_path.read_text()).get("metadata", {})
        seen.append(f"{cfg_path.parent.name} ({meta.get('model_name')})")
        if meta.get("model_name") in names:
            return cfg_path.parent, f"shipped SAE {cfg_path.parent.name}"
    return None, (f"no shipped SAE in {root} matches model {model.name!r}"
                  + (f" (found: {', '.join(seen)})" if seen else " (none found)"))


def _token_strings(model: Any, ids: Sequence[int]) -> list[str]:
    return [model.tokenizer.decode([i]) for i in ids]


def rank_features(model: Any, sae: Any, store: Any, records: dict[str, dict[str, Any]], out: Path,
                  *, hook: str, top: int = 20, examples: int = 3, source: str = "") -> dict[str, Any]:
    """Rank latents by mean activation on cot minus direct generated tokens (per-trace
    means, so a long trace does not dominate; :func:`mechreason.sae.features.latent_contrast`,
    with its Student-t interval); write ``features.json``."""
    from mechreason.sae.features import latent_contrast, trace_codes

    gen = [r for r, row in enumerate(store.rows) if row.get("phase") in ("reasoning", "answer")]
    cot = sorted(set(gen) & set(store.select(style="cot")))
    direct = sorted(set(gen) & set(store.select(style="direct")))
    if not cot or not direct:
        raise MechReasonError("the capture store needs both cot and direct traces")
    a, b = trace_codes(sae, store, hook, cot), trace_codes(sae, store, hook, direct)
    res = latent_contrast(a, b)
    dead = int(((a.sum(0) + b.sum(0)) == 0).sum())
    feats: list[dict[str, Any]] = []
    for k in res.order(top):
        lo, hi = res.interval(k)
        feats.append({"latent": int(k), "score": float(res.diff[k]), "lo": lo, "hi": hi,
                      "cot_mean": float(a[:, k].mean()), "direct_mean": float(b[:, k].mean())})
    for f in feats[:examples]:
        f["examples"] = top_sentences(model, sae, store, records, hook, f["latent"], cot)
    summary = {"sae": source, "hook": hook, "score_name": "cot-minus-direct mean activation",
               "n_latents": int(res.diff.numel()), "n_dead": dead, "n_cot_traces": a.shape[0],
               "n_direct_traces": b.shape[0], "show_examples": examples, "features": feats}
    summary |= heldout_check(sae, store, hook, feats)
    out.mkdir(parents=True, exist_ok=True)
    write_json(artifact_path(out, "features"), summary)
    write_meta(out, model, stage="sae-features", sae=source, hook=hook)
    return summary


def heldout_check(sae: Any, store: Any, hook: str, feats: list[dict[str, Any]]) -> dict[str, Any]:
    """With the SAE stage's contrast ranking (mechreason.sae.features, when in this build):
    each latent's score on a held-out half of the problems, and the rank agreement of the
    two halves over all latents, so a ranking that is noise shows as such."""
    import importlib.util

    if importlib.util.find_spec("mechreason.sae.features") is None:
        return {"heldout": "not available in this build (mechreason.sae.features)"}
    from mechreason.sae.features import contrast_scores

    try:
        res = contrast_scores(sae, store, hook, span="generated")
    except MechReasonError as e:  # e.g. too few problems for two halves
        return {"heldout": f"not computed: {e}"}
    for f in feats:
        f["heldout"] = float(res.heldout[f["latent"]])
    return {"heldout_rank_corr": res.heldout_rank_corr,
            "heldout_sign_agreement_top": res.heldout_sign_agreement}


def top_sentences(model: Any, sae: Any, store: Any, records: dict[str, dict[str, Any]], hook: str,
                  latent: int, rows_sel: list[int], n: int = 4) -> list[dict[str, Any]]:
    """The ``n`` sentences whose tokens reach the latent's highest activation."""
    with torch.no_grad():
        acts = sae.encode(store.load(hook, rows=rows_sel))[:, latent]
    by_sentence: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for r, v in zip(rows_sel, acts.tolist()):
        row = store.rows[r]
        if row.get("sentence") is not None:
            by_sentence.setdefault((row["item"], row["sentence"]), []).append((row["pos"], v))
    best = sorted(by_sentence.items(), key=lambda kv: -max(v for _, v in kv[1]))[:n]
    out = []
    for (item, sent), toks in best:
        rec = records.get(item)
        if rec is None:
            continue
        ids = list(rec["prompt_ids"]) + list(rec["generated_ids"])
        toks.sort()
        labels = rec["sentences"][sent].get("labels") if sent < len(rec["sentences"]) else None
        out.append({"tokens": _token_strings(model, [ids[p] for p, _ in toks]),
                    "acts": [v for _, v in toks], "label": ", ".join(labels or []), "item": item})
    return out

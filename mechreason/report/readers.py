"""The report's readers, one per stage: each fills its Section with the stage's key numbers (with their intervals) and figures from the files :data:`mechreason.report.stages.STAGES` names."""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mechreason import artifacts as A
from mechreason.errors import MechReasonError
from mechreason.report import plots
from mechreason.report.stages import (
    IMPORTANCE_COLUMNS,
    Number,
    Section,
    read_json_file,
    read_jsonl,
)
from mechreason.stats import wilson


def _layer(hook: str, fallback: int) -> int:
    m = re.match(r"blocks\.(\d+)\.", hook)
    return int(m.group(1)) if m else fallback


def read_traces(sec: Section, root: Path) -> None:
    recs = read_jsonl(root / A.TRACES_JSONL)
    if not recs:
        raise MechReasonError(f"{str(root / A.TRACES_JSONL)!r} holds no traces")
    by_style: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        by_style[str(r.get("style"))].append(r)
    fractions: dict[str, dict[str, float]] = {}
    for style, rs in sorted(by_style.items()):
        k = sum(r.get("correct") is True for r in rs)
        lo, hi = wilson(k, len(rs))
        sec.numbers.append(Number(name=f"accuracy ({style}, n={len(rs)})", value=k / len(rs),
                                  lo=lo, hi=hi, note="Wilson 95%"))
        toks = [r.get("n_generated_tokens", 0) for r in rs]
        sec.numbers.append(Number(name=f"mean generated tokens ({style})", value=sum(toks) / len(toks)))
        tags = Counter(t for r in rs for s in r.get("sentences", []) for t in (s.get("labels") or ["none"]))
        n_sent = sum(len(r.get("sentences", [])) for r in rs) or 1
        fractions[style] = {t: c / n_sent for t, c in tags.items()}
    sec.figures.append(plots.label_fractions(fractions))
    sec.config = {"model": recs[0].get("model"), "sampling": recs[0].get("sampling"),
                  "labeller": recs[0].get("labeller"), "tasks": sorted({str(r.get("task")) for r in recs})}


def read_acts(sec: Section, root: Path) -> None:
    from mechreason.activations import ActivationStore

    store = ActivationStore(root)
    sec.numbers += [Number(name="items", value=len(store.items)),
                    Number(name="stored vectors", value=len(store)),
                    Number(name="hooks", value=len(store.hooks)),
                    Number(name="d_model", value=store.d_model)]
    sec.config = {"capture": store.cfg.get("capture", store.cfg)}


def read_directions(sec: Section, root: Path) -> None:
    """The primary sweep (``direction.json``), then the demo's cot-vs-direct sweep
    (``cot_vs_direct/``) with the caveat from ``sweeps.json`` printed beside it."""
    sweeps = read_json_file(root / A.SWEEPS_JSON) if (root / A.SWEEPS_JSON).is_file() else {}
    primary = sweeps.get("primary") or {}
    if (root / A.DIRECTION_JSON).is_file():
        _read_sweep(sec, root, note=str(primary.get("contrast", "")))
    else:
        sec.numbers.append(Number(name="primary sweep", value=primary.get("status", "missing"),
                                  note=str(primary.get("reason", ""))))
    second = root / "cot_vs_direct"
    if (second / A.DIRECTION_JSON).is_file():
        caveat = str((sweeps.get("cot_vs_direct") or {}).get("caveat", ""))
        _read_sweep(sec, second, prefix="cot vs direct (second sweep): ", note=caveat)
        sec.numbers.append(Number(name="cot vs direct: caveat", value="by construction",
                                  note=caveat))


def _read_sweep(sec: Section, root: Path, *, prefix: str = "", note: str = "") -> None:
    d = read_json_file(root / A.DIRECTION_JSON)
    rows = d.get("metrics") or []
    if not rows:
        raise MechReasonError("direction.json has no 'metrics' (the layer sweep)")
    layers = [_layer(r["hook"], i) for i, r in enumerate(rows)]
    series = {k: [float(r[k]) for r in rows] for k in ("auroc", "accuracy", "random_auroc")
              if all(r.get(k) is not None for r in rows)}
    best = d.get("best_hook")
    best_row = next((r for r in rows if r["hook"] == best), None)
    sec.figures.append(plots.layer_sweep(
        layers, series, best_layer=_layer(best, 0) if best_row else None,
        title=f"{prefix}{d.get('method', '')} direction {d.get('contrast', '')}: held-out separation by layer"))
    if best_row:
        ci = best_row.get("auroc_ci95") or [None, None]
        sec.numbers += [Number(name=f"{prefix}best hook ({d.get('best_rule', '')})", value=best, note=note),
                        Number(name=f"{prefix}held-out AUROC at best hook", value=best_row["auroc"],
                               lo=ci[0], hi=ci[1], note="95%"),
                        Number(name=f"{prefix}random-direction AUROC at best hook (control)",
                               value=best_row.get("random_auroc")),
                        Number(name=f"{prefix}held-out accuracy at best hook", value=best_row.get("accuracy")),
                        Number(name=f"{prefix}Cohen's d at best hook", value=best_row.get("cohens_d"))]
    sec.numbers.append(Number(name=f"{prefix}vectors / problems per group",
                              value=json.dumps(d.get("counts", {}))))
    if not sec.config:
        sec.config = {k: d.get(k) for k in ("method", "contrast", "aggregate", "groups", "model")}


def ranking_as_features(r: dict[str, Any]) -> dict[str, Any]:
    """``ranking.json`` of ``mechreason features`` in the ``features.json`` schema: each
    top row's context becomes (before, token, after) with the token shaded."""
    feats = []
    for e in r.get("top", []):
        examples = []
        for row in e.get("top", []):
            before, _, rest = str(row.get("context", "")).partition("[[")
            tok, _, after = rest.partition("]]")
            examples.append({"tokens": [before, tok, after], "acts": [0.0, float(row.get("act", 0.0)), 0.0],
                             "label": row.get("sentence_text", "")[:80]})
        feats.append({"latent": e["latent"], "score": e["score"], "heldout": e.get("heldout"),
                      "examples": examples})
    return {"score_name": f"{r.get('score', 'score')} score", "features": feats,
            **{k: r[k] for k in ("heldout_rank_corr", "heldout_sign_agreement_top") if k in r}}


def read_sae(sec: Section, root: Path) -> None:
    if (root / A.FEATURES_JSON).is_file():
        f = read_json_file(root / A.FEATURES_JSON)
    else:
        f = ranking_as_features(read_json_file(root / A.RANKING_JSON))
    feats = f.get("features") or []
    if feats:
        sec.figures.append(plots.feature_ranking(
            [x["latent"] for x in feats], [x["score"] for x in feats],
            score_name=f.get("score_name", "score"), title=f"Top latents by {f.get('score_name', 'score')}"))
    for x in feats[: f.get("show_examples", 3)]:
        if x.get("examples"):
            sec.snippets.append(plots.latent_examples_html(x["examples"], latent=x["latent"]))
    for k in ("n_latents", "n_dead", "heldout_rank_corr", "heldout_sign_agreement_top", "heldout"):
        if k in f:
            sec.numbers.append(Number(name=k, value=f[k]))
    for x in feats[:5]:
        sec.numbers.append(Number(name=f"latent {x['latent']} {f.get('score_name', 'score')}",
                                  value=x["score"], lo=x.get("lo"), hi=x.get("hi")))
    train = root / A.SAE_TRAINING_JSON
    if train.is_file():
        trained = read_json_file(train)
        hist = trained.get("history") or []
        held = trained.get("heldout") or {}
        for k in ("fvu", "l0", "dead_fraction"):
            if k in held:
                sec.numbers.append(Number(name=f"SAE training: held-out {k}", value=held[k]))
        names = [k for k in ("loss", "fvu", "l0", "dead") if hist and k in hist[0]]
        if names:
            sec.figures.append(plots.sae_training_curves([h["step"] for h in hist],
                                                         {k: [h[k] for h in hist] for k in names}))
    sec.config = {k: f.get(k) for k in ("sae", "hook", "score_name", "source", "note") if k in f}


_ARM_METRICS = {  # metric name -> (mean key, interval key or (lo, hi) keys) in an arm row
    "accuracy": ("accuracy", "accuracy_ci"),
    "generated tokens": ("length_mean", "length_ci"),
    "share reasoning in steps": ("steps_share", "steps_ci"),
    "KL vs unsteered": ("kl", ("kl_low", "kl_high")),
}


def arms_as_dose_response(s: dict[str, Any]) -> dict[str, Any]:
    """``summary.json`` of ``mechreason.steering.experiment.run_experiment`` (one row per
    arm: ``unsteered``, ``steered[_a{A}]``, ``control[_a{A}]``) as coefficients and
    per-metric steered/control series; the unsteered arm is coefficient 0 of both."""
    rows = s["arms"]
    base = next(r for r in rows if r["arm"] == "unsteered")
    coefs = [0.0, *sorted({float(r["alpha"]) for r in rows if r["arm"].startswith("steered")})]

    def arm(kind: str, a: float) -> dict[str, Any] | None:
        if a == 0.0:
            return base
        return next((r for r in rows if r["arm"].startswith(kind) and float(r["alpha"]) == a), None)

    metrics: dict[str, Any] = {}
    for name, (mkey, ikey) in _ARM_METRICS.items():
        if mkey not in base and name != "KL vs unsteered":
            continue
        out = {}
        for kind in ("steered", "control"):
            got = [arm(kind, a) for a in coefs]
            if any(g is None for g in got):
                continue
            ms, los, his = [], [], []
            for g in got:
                assert g is not None
                if g is base and name == "KL vs unsteered":
                    m, lo, hi = 0.0, 0.0, 0.0
                else:
                    m = g.get(mkey, math.nan)
                    lo, hi = (g.get(ikey) or [math.nan, math.nan]) if isinstance(ikey, str) else (
                        g.get(ikey[0], math.nan), g.get(ikey[1], math.nan))
                ms.append(m)
                los.append(lo)
                his.append(hi)
            out[kind] = {"mean": ms, "lo": los, "hi": his}
        if "steered" in out:
            metrics[name] = out
    return {**s.get("steering", {}), "coefs": coefs, "metrics": metrics,
            "n_prompts": base.get("n"), "source": "mechreason.steering.experiment"}


def read_steering(sec: Section, root: Path) -> None:
    s = read_json_file(root / A.SUMMARY_JSON)
    if "arms" in s:
        s = arms_as_dose_response(s)
    coefs = s["coefs"]
    for metric, arms in s["metrics"].items():
        st, ctrl = arms["steered"], arms.get("control")
        control = {"coefs": coefs, **ctrl} if ctrl else None
        sec.figures.append(plots.dose_response(coefs, st["mean"], st["lo"], st["hi"], control=control,
                                               metric=metric, title=f"Steering dose-response: {metric}"))
        for i, c in enumerate(coefs):
            sec.numbers.append(Number(name=f"{metric} at coef {c:g} (steered)", value=st["mean"][i],
                                      lo=st["lo"][i], hi=st["hi"][i]))
            if ctrl:
                sec.numbers.append(Number(name=f"{metric} at coef {c:g} (random control)",
                                          value=ctrl["mean"][i], lo=ctrl["lo"][i], hi=ctrl["hi"][i]))
    sec.config = {k: v for k, v in s.items() if k not in ("metrics", "coefs", "examples")}
    if s.get("examples"):
        from html import escape

        items = "".join(f"<li><b>coef {escape(str(e.get('coef')))}</b>: <code>{escape(str(e.get('text'))[:400])}</code></li>"
                        for e in s["examples"])
        sec.snippets.append(f"<h4>Example generations</h4><ul>{items}</ul>")


def read_anchors(sec: Section, root: Path) -> None:
    t = read_json_file(root / A.ANCHORS_TABLE_JSON)
    rows = t.get("rows") or []
    sec.snippets.append(_trace_view(root))
    col = next((c for c in IMPORTANCE_COLUMNS if rows and c in rows[0]), None)
    if col:
        sec.figures.append(_importance_figure(rows, col))
    if col == "counterfactual_kl_laplace":  # and the scripts' eps = 1e-9 form beside it
        sec.figures.append(_importance_figure(rows, "counterfactual_kl"))
    for c in ("counterfactual_kl", "resampling_kl", "forced_importance_kl"):
        flags = [r.get(f"{c}_saturated") for r in rows]
        if rows and all(f is not None for f in flags):
            sec.numbers.append(Number(name=f"{c}: sentences at the eps = 1e-9 ceiling",
                                      value=sum(map(bool, flags)),
                                      note=f"of {len(rows)}: disjoint answer sets"))
    for c in t.get("rank_correlations") or []:
        sec.numbers.append(Number(name=f"Spearman {c.get('a')} vs {c.get('b')}", value=c.get("rho"),
                                  lo=c.get("ci_lo"), hi=c.get("ci_hi"), note=f"n={c.get('n')}"))
    sec.numbers.append(Number(name="sentences", value=len(rows)))
    rec = root / A.RECEIVERS_JSON
    if rec.is_file():
        r = read_json_file(rec)
        if r.get("kurtosis") is not None:
            sec.figures.append(plots.receiver_kurtosis(r["kurtosis"], top_heads=r.get("heads") or []))
        rel = r.get("reliability") or {}
        if rel:
            sec.numbers.append(Number(name="receiver kurtosis split-half r", value=rel.get("r_mean"),
                                      lo=rel.get("r_lo"), hi=rel.get("r_hi")))
    sup = root / A.SUPPRESSION_FILE
    if sup.is_file():
        from safetensors.torch import load_file

        sec.figures.append(plots.suppression_matrix(load_file(str(sup))["matrix"],
                                                    title="Attention suppression (mean log-KL)"))
    cfg = root / A.CFG_JSON
    sec.config = read_json_file(cfg) if cfg.is_file() else {}


_GRADED = {"counterfactual_kl_laplace": "Laplace-smoothed (graded)",
           "counterfactual_kl": "eps = 1e-9 as in the Thought Anchors scripts; hatched: at "
                                "the ceiling (disjoint answer sets)"}


def _importance_figure(rows: list[dict[str, Any]], col: str):
    """Per-sentence bars of ``col`` with its 95% interval and ceiling flags, if present."""
    ivs = [r.get(f"{col}_ci") for r in rows]
    sat = [r.get(f"{col}_saturated") for r in rows]
    note = _GRADED.get(col)
    return plots.sentence_importance(
        [float(r[col]) if r.get(col) is not None else math.nan for r in rows],
        [r.get("labels") or [] for r in rows], texts=[r.get("text", "") for r in rows],
        metric=col, intervals=ivs if all(v is not None for v in ivs) else None,
        saturated=[bool(v) for v in sat] if all(v is not None for v in sat) else None,
        title="Sentence importance along the trace, with 95% bootstrap intervals"
              + (f" ({col}: {note})" if note else ""))


def _trace_view(root: Path) -> str:
    """The trace view (:mod:`mechreason.anchors.view`) inline, in an iframe of its own so
    its script and style cannot touch the report's."""
    from html import escape

    from mechreason.anchors.view import render_view, view_data

    page = render_view(view_data(root))
    return ("<h4>Trace view: sentences coloured by importance; hover or click one for the "
            "sentences it most affects</h4>"
            f'<iframe class="trace-view" title="thought-anchors trace view" srcdoc="{escape(page)}" '
            'style="width:100%;height:640px;border:1px solid #ddd"></iframe>')


READERS: dict[str, Callable[[Section, Path], None]] = {
    "traces": read_traces, "acts": read_acts, "directions": read_directions, "sae": read_sae,
    "steering": read_steering, "anchors": read_anchors,
}

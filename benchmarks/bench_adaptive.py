"""B8 (DESIGN section 10): adaptive / full resampling, rollouts spent, at a Spearman
correlation >= 0.95 of the importances (target <= 0.6).

Inputs: ``benchmarks/data/long_traces.jsonl``, four greedy SmolLM2-135M-Instruct CoT
traces of 321 to 480 tokens (13 to 26 sentences), made by ``mechreason traces`` (task
arithmetic difficulty 5 and the bundled MATH sample, ``--max-new-tokens 480``, seed 0).
Per trace, every rollout of the full procedure is run once (R = 8 per sentence, cap 96
new tokens, early stop at the answer, temperature 0.6, top-p 0.95, no forced answers) for
the trace's last K = 4 sentences. These sizes are the CPU budget of this shared 2-core
machine, not a choice: at the session's load this process got about a fifth of a core,
and a 32-row batch of 128-token rollouts took 8 minutes; the last sentences are chosen
because their rollouts reach an answer within the cap (earlier prefixes would not). The rollouts are cached in
``benchmarks/work/b8`` (resumable). The adaptive rule
(:mod:`mechreason.anchors.adaptive`) is replayed on them; rollout r of a prefix has the
same seed either way, so this is exactly what an adaptive run draws.

Pre-registered: the rule's setting is chosen on the TUNE trace only (the lowest rollout
ratio with Spearman >= 0.95 of the primary importance there, over a fixed grid) and
reported on the three EVAL traces, pooled (12 sentences). Grid: tolerance 0.05, 0.1,
0.15, 0.2, 0.3 x batch 1, 2 (min_rollouts = 2 x batch). The primary importance is
counterfactual importance (KL, the scripts' eps = 1e-9: what the viewer calls
"importance"); the others are reported beside it.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import CountFigure

FIGURES = ["B8"]
DATA = Path(__file__).parent / "data" / "long_traces.jsonl"
WORK = Path(os.environ.get("MECHREASON_B8_WORK", Path(__file__).parent / "work" / "b8"))
TUNE = ["arithmetic-s0-d5-4:cot"]
EVAL = ["math-math_sample-7:cot", "math-math_sample-3:cot", "arithmetic-s0-d5-3:cot"]
K, R, CAP = 4, 8, 96
PRIMARY = "counterfactual_kl"
METRICS = ("counterfactual_kl", "resampling_kl", "counterfactual_kl_laplace",
           "resampling_kl_laplace", "resampling_accuracy")
GRID = [dict(tolerance=t, batch=b, min_rollouts=2 * b)
        for t, b in itertools.product((0.05, 0.1, 0.15, 0.2, 0.3), (1, 2))]


def _cfg():
    from mechreason.anchors.resampling import ResampleConfig

    return ResampleConfig(rollouts=R, max_new_tokens=CAP, forced=False, batch_size=32)


def full_records(model, trace) -> dict[str, dict[str, Any]]:
    """Every rollout of the last K sentences (run once, then read from the cache)."""
    from mechreason.anchors.embed import default_answer_fns
    from mechreason.anchors.resampling import make_jobs, run_rollouts

    extract, grade = default_answer_fns()
    first = trace.n - K
    jobs = [j for j in make_jobs(model, trace, _cfg()) if int(j.key.split("/")[1]) >= first]
    out = WORK / trace.id.replace(":", "_")
    return run_rollouts(model, trace, _cfg(), out, extract=extract, grade=grade, jobs=jobs,
                        progress=True)


def importances(trace, records, embedder) -> dict[str, list[float]]:
    """The importances of the last K sentences from ``records``."""
    from mechreason.anchors.embed import default_answer_fns
    from mechreason.anchors.importance import compute_importance
    from mechreason.anchors.resampling import group

    extract, grade = default_answer_fns()
    answer = trace.answer if trace.answer is not None else extract(trace.generated_text)
    correct = trace.correct if trace.correct is not None else grade(answer, trace.gold)
    rolls = group(records, "resample", trace.n, R)[trace.n - K:]
    imp = compute_importance(trace.texts[trace.n - K:], rolls, None, answer, correct, embedder,
                             n_boot=0)
    return {m: list(getattr(imp, m)) for m in METRICS}


def spearman(x, y) -> float:
    from mechreason.anchors.join import _spearman

    return _spearman(np.asarray(x, float), np.asarray(y, float))


def compare(traces, full, embedder, setting) -> dict[str, Any]:
    """Adaptive vs full on ``traces``, pooled: rollouts spent and Spearman per metric."""
    from mechreason.anchors.adaptive import AdaptiveConfig, simulate

    acfg = AdaptiveConfig(**setting)
    spent = total = 0
    a_imp: dict[str, list[float]] = {m: [] for m in METRICS}
    f_imp: dict[str, list[float]] = {m: [] for m in METRICS}
    for tr in traces:
        recs = full[tr.id]
        sub = simulate(recs, acfg, R)
        spent, total = spent + len(sub), total + len(recs)
        fa, fi = importances(tr, sub, embedder), importances(tr, recs, embedder)
        for m in METRICS:
            a_imp[m] += fa[m]
            f_imp[m] += fi[m]
    return {"ratio": spent / total, "spent": spent, "total": total,
            "spearman": {m: spearman(a_imp[m], f_imp[m]) for m in METRICS},
            "full_importance": f_imp, "adaptive_importance": a_imp}


def b8(model) -> CountFigure:
    from mechreason.anchors.analysis import load_traces
    from mechreason.anchors.embed import default_embedder

    by_id = {t.id: t for t in load_traces(model, DATA)}
    embedder = default_embedder()
    full = {i: full_records(model, by_id[i]) for i in TUNE + EVAL}
    tune = [compare([by_id[i] for i in TUNE], full, embedder, s) | {"setting": s} for s in GRID]
    ok = [t for t in tune if t["spearman"][PRIMARY] >= 0.95]
    chosen = (min(ok, key=lambda t: (t["ratio"], t["setting"]["tolerance"])) if ok
              else max(tune, key=lambda t: (np.nan_to_num(t["spearman"][PRIMARY]), -t["ratio"])))
    ev = compare([by_id[i] for i in EVAL], full, embedder, chosen["setting"])
    rho = ev["spearman"][PRIMARY]
    return CountFigure(
        id="B8", title="adaptive / full resampling: rollouts spent (pooled eval traces)",
        ours="adaptive", theirs="full", counts={"adaptive": ev["spent"], "full": ev["total"]},
        target=0.6, condition=f"Spearman of {PRIMARY} >= 0.95", condition_value=rho,
        condition_met=bool(rho >= 0.95), unit="rollouts",
        sizes={"tune_traces": TUNE, "eval_traces": EVAL, "last_sentences": K,
               "rollouts_per_sentence": R, "cap_new_tokens": CAP, "temperature": 0.6,
               "top_p": 0.95, "chosen_setting": chosen["setting"],
               "tune": [{k: t[k] for k in ("setting", "ratio", "spearman")} for t in tune],
               "eval_spearman": ev["spearman"],
               "eval_importance_full": ev["full_importance"],
               "eval_importance_adaptive": ev["adaptive_importance"],
               "resample_config": dataclasses.asdict(_cfg())})


def run(ids: list[str]) -> list[Any]:
    from mechreason.model.loading import load_model

    model = load_model("smollm2-135m-instruct", device="cpu")
    return [b8(model)] if "B8" in ids else []

"""Thought anchors, stage 1b: importance metrics from graded rollouts
(Bogdan, Macar, Nanda, Conmy 2025, "Thought Anchors", sections 3.1 to 3.3).

For sentence i of N, ``R_i`` are the rollouts resampled from the prefix before
sentence i (sentence i removed and regenerated), ``R_{i+1}`` those that keep it.
``R_N`` does not exist: keeping every sentence gives the trace itself, so its answer
stands in (a point mass, accuracy = the trace's correctness).

- resampling importance: ``acc(R_{i+1}) - acc(R_i)`` and ``KL(P(R_i) || P(R_{i+1}))``
  over final-answer distributions;
- counterfactual importance: the same against ``D_i``, the rollouts of ``R_i`` whose
  first new sentence has cosine < 0.8 to sentence i; 0 when ``D_i`` is empty;
- forced-answer importance: the same over answers forced right after each prefix;
- different trajectories: ``|D_i| / |R_i|``; overdeterminedness: ``1 - distinct
  first sentences / |R_i|``;
- sentence-to-sentence matrix ``M[i, j]`` (j > i): the rate at which sentence j
  reappears (some rollout sentence with cosine >= 0.8) in ``R_{i+1}`` minus in ``D_i``.

Answer distributions are smoothed: ``p(a) = (count(a) + eps) / (n + eps * K)`` over the
K answers seen in either set (an unparsed answer is its own outcome). ``eps = 1e-9`` is
the Thought Anchors scripts' choice; with it, two samples whose answer sets are disjoint
give a KL of about ``log(n / eps)`` (about 20.7 at n = 1): such a value says "disjoint",
not "how important". Each KL is therefore also reported Laplace-smoothed (``eps = 1``,
the scripts' other option: ``*_kl_laplace``), which grades, and :class:`Importance`
flags which sentences sit at the ``eps`` ceiling (``saturated``) and carries a 95%
bootstrap interval per sentence for every importance (``intervals``: rollouts of both
compared sets resampled with replacement, 200 draws, percentile interval).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from mechreason.errors import MechReasonError

UNPARSED = "<unparsed>"


class Rollout(NamedTuple):
    """What the metrics need from one graded rollout."""

    answer: str | None
    correct: bool | None
    first_sentence: str
    sentences: tuple[str, ...]


def kl_divergence(p: Sequence[str | None], q: Sequence[str | None], eps: float = 1e-9) -> float:
    """KL(P || Q) of two samples of answers, epsilon-smoothed over their joint support;
    0 when either sample is empty."""
    if not p or not q:
        return 0.0
    cp = Counter(UNPARSED if a is None else a for a in p)
    cq = Counter(UNPARSED if a is None else a for a in q)
    support = set(cp) | set(cq)
    k = len(support)
    out = 0.0
    for a in support:
        pa = (cp[a] + eps) / (len(p) + eps * k)
        qa = (cq[a] + eps) / (len(q) + eps * k)
        out += pa * math.log(pa / qa)
    return max(out, 0.0)


def disjoint(p: Sequence[str | None], q: Sequence[str | None]) -> bool:
    """The two samples share no answer (their eps-smoothed KL is the ceiling)."""
    return bool(p) and bool(q) and not ({UNPARSED if a is None else a for a in p}
                                        & {UNPARSED if a is None else a for a in q})


def accuracy(rolls: Sequence[Rollout]) -> float:
    """Fraction graded correct (unparsed or ungradable counts as wrong); nan if empty."""
    return float(np.mean([bool(r.correct) for r in rolls])) if rolls else math.nan


class Importance(NamedTuple):
    """Per-sentence resampling metrics (lists of length N; forced_accuracy has N + 1)."""

    accuracy: list[float]
    resampling_accuracy: list[float]
    resampling_kl: list[float]
    counterfactual_accuracy: list[float]
    counterfactual_kl: list[float]
    forced_accuracy: list[float]
    forced_importance_accuracy: list[float]
    forced_importance_kl: list[float]
    different_trajectories: list[float]
    overdeterminedness: list[float]
    n_rollouts: list[int]
    n_dissimilar: list[int]
    matrix: list[list[float]]
    resampling_kl_laplace: list[float]
    counterfactual_kl_laplace: list[float]
    forced_importance_kl_laplace: list[float]
    saturated: dict[str, list[bool]]
    """Per KL metric, per sentence: the two answer sets were disjoint (the KL is the
    smoothing ceiling, about log(n / eps), not a graded value)."""
    intervals: dict[str, list[tuple[float, float]]]
    """Per importance metric, per sentence: a 95% bootstrap interval."""


def _dissimilar(rolls: Sequence[Rollout], removed: np.ndarray, firsts: dict[str, np.ndarray],
                thr: float) -> list[Rollout]:
    return [r for r in rolls if float(firsts[r.first_sentence] @ removed) < thr]


KL_METRICS = ("resampling_kl", "counterfactual_kl", "forced_importance_kl")
INTERVAL_METRICS = ("resampling_accuracy", "resampling_kl", "resampling_kl_laplace",
                    "counterfactual_accuracy", "counterfactual_kl", "counterfactual_kl_laplace",
                    "forced_importance_accuracy", "forced_importance_kl",
                    "forced_importance_kl_laplace")


class _Obs(NamedTuple):
    """One rollout as the metrics see it."""

    answer: str | None
    correct: bool
    dissimilar: bool


def _acc(obs: Sequence[_Obs]) -> float:
    return float(np.mean([o.correct for o in obs])) if obs else math.nan


def _pair_metrics(rs: Sequence[_Obs], ks: Sequence[_Obs], eps: float,
                  prefix: str = "") -> dict[str, float]:
    """Accuracy difference and both KLs of one (removed, kept) pair of samples."""
    a, b = [o.answer for o in rs], [o.answer for o in ks]
    return {f"{prefix}accuracy": _diff(_acc(ks), _acc(rs)) if rs else 0.0,
            f"{prefix}kl": kl_divergence(a, b, eps) if rs else 0.0,
            f"{prefix}kl_laplace": kl_divergence(a, b, 1.0) if rs else 0.0}


def _sentence_metrics(rs: Sequence[_Obs], ks: Sequence[_Obs], eps: float) -> dict[str, float]:
    """Resampling (R_i vs R_{i+1}) and counterfactual (D_i vs R_{i+1}) importance."""
    ds = [o for o in rs if o.dissimilar]
    return (_pair_metrics(rs, ks, eps, "resampling_")
            | _pair_metrics(ds, ks, eps, "counterfactual_"))


def compute_importance(sentences: Sequence[str], resampled: Sequence[Sequence[Rollout]],
                       forced: Sequence[Sequence[Rollout]] | None, trace_answer: str | None,
                       trace_correct: bool | None, embed, *, threshold: float = 0.8,
                       eps: float = 1e-9, n_boot: int = 200, seed: int = 0) -> Importance:
    """All metrics of the module docstring.

    Args:
        sentences: the trace's N sentences.
        resampled: per sentence i, the rollouts from the prefix before it.
        forced: per prefix 0..N, forced-answer rollouts (or None to skip).
        trace_answer, trace_correct: the trace's own outcome (stands in for ``R_N``).
        embed: an ``Embedder`` (texts -> L2-normalised rows).
        n_boot: bootstrap draws per interval (0: no intervals).
    """
    n = len(sentences)
    if len(resampled) != n:
        raise MechReasonError(f"importance needs the rollouts of every sentence: got "
                              f"{len(resampled)} groups for {n} sentences")
    texts = sorted({s for rs in resampled for r in rs for s in (r.first_sentence, *r.sentences)}
                   | set(sentences))
    vecs = embed(texts).cpu().numpy() if texts else np.zeros((0, 1))
    emb = {t: vecs[k] for k, t in enumerate(texts)}
    orig = np.stack([emb[s] for s in sentences])  # (N, d)
    point = [Rollout(trace_answer, trace_correct, "", ())]
    keep = [list(resampled[i + 1]) if i + 1 < n else point for i in range(n)]
    diss = [_dissimilar(resampled[i], orig[i], emb, threshold) for i in range(n)]
    obs = [[_Obs(r.answer, bool(r.correct), float(emb[r.first_sentence] @ orig[i]) < threshold)
            for r in resampled[i]] for i in range(n)]
    kept = [obs[i + 1] if i + 1 < n else [_Obs(trace_answer, bool(trace_correct), False)]
            for i in range(n)]
    out: dict[str, Any] = {k: [] for k in Importance._fields}
    for i in range(n):
        rs, ds = resampled[i], diss[i]
        for k, v in _sentence_metrics(obs[i], kept[i], eps).items():
            out[k].append(v)
        out["accuracy"].append(accuracy(rs))
        out["different_trajectories"].append(len(ds) / len(rs) if rs else 0.0)
        firsts = [r.first_sentence.strip() for r in rs]
        out["overdeterminedness"].append(1 - len(set(firsts)) / len(rs) if rs else 0.0)
        out["n_rollouts"].append(len(rs))
        out["n_dissimilar"].append(len(ds))
    fobs = None if forced is None else [[_Obs(r.answer, bool(r.correct), False) for r in f]
                                        for f in forced]
    _forced_metrics(out, fobs, n, eps)
    out["matrix"] = _matrix(orig, keep, diss, emb, threshold).tolist()
    out["saturated"] = _saturation(obs, kept, fobs, n)
    out["intervals"] = _intervals(obs, kept, fobs, eps, n_boot, seed) if n_boot else {}
    return Importance(**out)


def _diff(a: float, b: float) -> float:
    return 0.0 if math.isnan(a) or math.isnan(b) else a - b


def _forced_metrics(out: dict[str, list], forced: Sequence[Sequence[_Obs]] | None, n: int,
                    eps: float) -> None:
    if forced is None:
        out["forced_accuracy"] = [math.nan] * (n + 1)
        for k in ("accuracy", "kl", "kl_laplace"):
            out[f"forced_importance_{k}"] = [0.0] * n
        return
    if len(forced) != n + 1:
        raise MechReasonError(f"forced-answer importance needs one group per prefix 0..{n}: "
                              f"got {len(forced)} for {n} sentences")
    out["forced_accuracy"] = [_acc(f) for f in forced]
    for i in range(n):
        for k, v in _pair_metrics(forced[i], forced[i + 1], eps, "forced_importance_").items():
            out[k].append(v)


def _saturation(obs, kept, forced, n: int) -> dict[str, list[bool]]:
    ans = lambda xs: [o.answer for o in xs]  # noqa: E731
    out = {"resampling_kl": [disjoint(ans(obs[i]), ans(kept[i])) for i in range(n)],
           "counterfactual_kl": [disjoint(ans([o for o in obs[i] if o.dissimilar]),
                                          ans(kept[i])) for i in range(n)]}
    if forced is not None:
        out["forced_importance_kl"] = [disjoint(ans(forced[i]), ans(forced[i + 1]))
                                       for i in range(n)]
    return out


def _intervals(obs, kept, forced, eps: float, n_boot: int,
               seed: int) -> dict[str, list[tuple[float, float]]]:
    """95% percentile bootstrap interval of every importance, per sentence: both compared
    samples are redrawn with replacement (a point-mass R_N stays fixed)."""
    rng = np.random.default_rng(seed)

    def redraw(xs):
        return [xs[j] for j in rng.integers(0, len(xs), len(xs))] if len(xs) > 1 else xs

    out: dict[str, list[tuple[float, float]]] = {k: [] for k in INTERVAL_METRICS}
    for i in range(len(obs)):
        draws: dict[str, list[float]] = {k: [] for k in INTERVAL_METRICS}
        for _ in range(n_boot):
            m = _sentence_metrics(redraw(obs[i]), redraw(kept[i]), eps)
            if forced is not None:
                m |= _pair_metrics(redraw(forced[i]), redraw(forced[i + 1]), eps,
                                   "forced_importance_")
            for k, v in m.items():
                draws[k].append(v)
        for k in INTERVAL_METRICS:
            vals = [v for v in draws[k] if not math.isnan(v)]
            lo, hi = np.quantile(vals, [0.025, 0.975]) if vals else (0.0, 0.0)
            out[k].append((float(lo), float(hi)))
    return out


def _reappear_rate(rolls: Sequence[Rollout], target: np.ndarray, emb: dict[str, np.ndarray],
                   thr: float) -> float:
    hits = [any(float(emb[s] @ target) >= thr for s in r.sentences) for r in rolls]
    return float(np.mean(hits)) if hits else math.nan


def _matrix(orig: np.ndarray, keep, diss, emb, thr: float) -> np.ndarray:
    n = len(orig)
    m = np.zeros((n, n))
    for i in range(n - 1):  # R_N has no sentences, so the last row stays 0
        if not diss[i]:
            continue
        for j in range(i + 1, n):
            m[i, j] = _diff(_reappear_rate(keep[i], orig[j], emb, thr),
                            _reappear_rate(diss[i], orig[j], emb, thr))
    return m

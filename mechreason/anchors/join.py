"""Thought anchors, stage 4: one table per trace joining the three views of sentence
importance (Bogdan, Macar, Nanda, Conmy 2025, "Thought Anchors", section 6 compares
them) with each sentence's labels, direction projections and top SAE latents.

:func:`sentence_table` builds the rows; :func:`rank_correlations` gives Spearman's rho
between any two numeric columns with a bootstrap confidence interval over sentences
and a permutation p-value (the random control: the same statistic with one column
shuffled). :func:`direction_projections` and :func:`top_sae_latents` compute the
optional columns from the model's residual stream.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from mechreason.anchors.importance import Importance
from mechreason.anchors.suppression import Suppression
from mechreason.anchors.trace import AnchorTrace
from mechreason.errors import MechReasonError
from mechreason.model.hooks import hooks_context

if TYPE_CHECKING:
    import torch

    from mechreason.model.loading import Model

IMPORTANCE_COLUMNS = ("accuracy", "resampling_accuracy", "resampling_kl", "counterfactual_accuracy",
                      "counterfactual_kl", "forced_importance_accuracy", "forced_importance_kl",
                      "different_trajectories", "overdeterminedness", "resampling_kl_laplace",
                      "counterfactual_kl_laplace", "forced_importance_kl_laplace")


def suppression_outgoing(sup: Suppression) -> np.ndarray:
    """(N,) each sentence's mean suppression effect on the later sentences (mean over
    j > i of the log-KL matrix; NaN for the last sentence)."""
    m = sup.matrix.double().numpy()
    out = np.full(m.shape[0], np.nan)
    for i in range(m.shape[0] - 1):
        out[i] = np.nanmean(m[i, i + 1:])
    return out


def sentence_table(trace: AnchorTrace, *, importance: Importance | None = None,
                   receiver_scores: Sequence[float] | None = None,
                   suppression: Suppression | None = None,
                   projections: Mapping[str, Sequence[float]] | None = None,
                   latents: Sequence[Sequence[tuple[int, float]]] | None = None) -> list[dict[str, Any]]:
    """One row per sentence: text, labels, span, and every measure that is given."""
    n = trace.n
    cols: dict[str, Sequence[Any]] = {}
    if importance is not None:
        cols |= {c: getattr(importance, c) for c in IMPORTANCE_COLUMNS}
        # [low, high] 95% bootstrap interval, and whether a KL sits at the eps ceiling
        cols |= {f"{c}_ci": [list(v) for v in iv] for c, iv in importance.intervals.items()}
        cols |= {f"{c}_saturated": flags for c, flags in importance.saturated.items()}
    if receiver_scores is not None:
        cols["receiver_score"] = list(receiver_scores)
    if suppression is not None:
        cols["suppression_out"] = suppression_outgoing(suppression).tolist()
    for name, vals in (projections or {}).items():
        cols[f"proj_{name}"] = list(vals)
    if latents is not None:
        cols["top_latents"] = [[[int(k), float(v)] for k, v in row] for row in latents]
    bad = {c: len(v) for c, v in cols.items() if len(v) != n}
    if bad:
        raise MechReasonError(f"per-sentence columns must have {n} values (the trace's "
                              f"sentences); got {bad}")
    rows = []
    for i in range(n):
        row: dict[str, Any] = {"idx": i, "text": trace.texts[i], "labels": list(trace.labels[i]),
                               "tok_start": trace.spans[i][0], "tok_end": trace.spans[i][1]}
        row |= {c: _clean(v[i]) for c, v in cols.items()}
        rows.append(row)
    return rows


def _clean(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(float(v)) else float(v)
    return v


class RankCorrelation(NamedTuple):
    """Spearman's rho between two columns over sentences where both are defined."""

    a: str
    b: str
    rho: float
    ci_lo: float
    ci_hi: float
    """95% percentile bootstrap interval over sentences."""
    p_perm: float
    """Two-sided permutation p-value (one column shuffled)."""
    n: int


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def rank_correlations(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *,
                      n_boot: int = 2000, n_perm: int = 2000, seed: int = 0) -> list[RankCorrelation]:
    """Spearman's rho for every pair of ``columns`` (see :class:`RankCorrelation`)."""
    missing = [c for c in columns if rows and c not in rows[0]]
    if missing:
        raise MechReasonError(f"unknown columns {missing}; the table has {sorted(rows[0])}")
    rng = np.random.default_rng(seed)
    out = []
    for k, a in enumerate(columns):
        for b in columns[k + 1:]:
            pairs = np.array([(r[a], r[b]) for r in rows if r[a] is not None and r[b] is not None],
                             dtype=float).reshape(-1, 2)
            out.append(_one_corr(a, b, pairs, rng, n_boot, n_perm))
    return out


def _one_corr(a: str, b: str, xy: np.ndarray, rng, n_boot: int, n_perm: int) -> RankCorrelation:
    n = len(xy)
    if n < 3:
        return RankCorrelation(a, b, math.nan, math.nan, math.nan, math.nan, n)
    rho = _spearman(xy[:, 0], xy[:, 1])
    draws = [_spearman(*xy[rng.integers(0, n, n)].T) for _ in range(n_boot)]
    boots = np.array([v for v in draws if not math.isnan(v)])
    perms = np.array([_spearman(rng.permutation(xy[:, 0]), xy[:, 1]) for _ in range(n_perm)])
    lo, hi = (np.quantile(boots, [0.025, 0.975]) if len(boots) else (math.nan, math.nan))
    p = float((np.sum(np.abs(perms) >= abs(rho) - 1e-12) + 1) / (n_perm + 1)) \
        if not math.isnan(rho) else math.nan
    return RankCorrelation(a, b, rho, float(lo), float(hi), p, n)


def _sentence_means(model: Model, trace: AnchorTrace, hook: str,
                    fn: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    """(N, k): ``fn`` of the residual at ``hook`` averaged over each sentence's tokens."""
    import torch

    got: dict[str, torch.Tensor] = {}

    def grab(x: torch.Tensor) -> None:
        got["x"] = x[0].detach().float()

    ids = torch.tensor([list(trace.ids)], device=model.device)
    with hooks_context(model, {hook: grab}), torch.inference_mode():
        model.hf(input_ids=ids, use_cache=False)
    feats = fn(got["x"])  # (T, k)
    return torch.stack([feats[a:b].mean(0) for a, b in trace.spans]).cpu().numpy()


def direction_projections(model: Model, trace: AnchorTrace,
                          directions: Mapping[str, tuple[str, torch.Tensor]]) -> dict[str, list[float]]:
    """Per named ``(hook, vector)``: each sentence's mean projection onto the unit vector."""
    out = {}
    for name, (hook, vec) in directions.items():
        v = vec.detach().float().to(model.device).flatten()
        if v.shape[0] != model.d_model or not bool(v.isfinite().all()):
            raise MechReasonError(f"direction {name!r} must be {model.d_model} finite values, "
                                  f"got shape {tuple(vec.shape)}")
        unit = v / v.norm().clamp_min(1e-12)

        def project(x: torch.Tensor, u: torch.Tensor = unit) -> torch.Tensor:
            return (x @ u)[:, None]

        out[name] = _sentence_means(model, trace, hook, project)[:, 0].tolist()
    return out


def top_sae_latents(model: Model, trace: AnchorTrace, sae: Any, hook: str,
                    k: int = 5) -> list[list[tuple[int, float]]]:
    """Per sentence, the ``k`` SAE latents of highest mean activation over its tokens
    (``sae.encode``: (T, d_model) -> (T, d_sae), e.g. a SAELens SAE)."""
    def encode(x: torch.Tensor) -> torch.Tensor:
        return sae.encode(x.to(sae.W_enc.dtype)).float()

    means = _sentence_means(model, trace, hook, encode)
    rows = []
    for m in means:
        idx = np.argsort(-m, kind="stable")[:k]
        rows.append([(int(i), float(m[i])) for i in idx])
    return rows

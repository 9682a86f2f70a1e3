"""Directions, stage 3: the layer sweep, held-out separation of two groups per layer.

For every captured hook, a direction is fitted on the training problems and the held-out
problems' vectors are projected onto it. Separation is reported as AUROC (with a 95%
interval: a stratified bootstrap of 1,000 resamples while either group has fewer than 30
vectors, Hanley-McNeil 1982 from 30 up, and at AUROC 0 or 1 the exact bound under
Hanley and McNeil's model), balanced accuracy at the midpoint of the training
groups' mean projections, and Cohen's d (pooled SD). The chance control in the same
table: the median and 95th percentile of the held-out AUROC of 100 seeded random
directions (a residual stream is anisotropic, so a random direction can separate groups
well above 0.5; a direction is only informative above this band).

The split is by problem id, never by row: every vector of one problem (its sentences,
its cot and direct variants) lands on the same side, so a direction cannot be scored on
the problems it was fitted on (the leakage that token-level splits suffer).

Best layer rule: the highest held-out AUROC; ties (within 1e-9) go to the earlier layer.
"""


from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from mechreason.directions.methods import Group, Method, check_groups
from mechreason.errors import MechReasonError
from mechreason.stats import NORMAL_MIN_N, Z95

TIE_TOL = 1e-9
N_RANDOM = 100


class Split(NamedTuple):
    """Which rows of A and B are held out (True) for testing."""

    test_a: Tensor
    test_b: Tensor
    train_ids: frozenset[str]
    test_ids: frozenset[str]


def split_by_problem(ids_a: Sequence[str], ids_b: Sequence[str], *, test_frac: float = 0.3,
                     seed: int = 0) -> Split:
    """Hold out a seeded ``test_frac`` of problem ids; rows follow their problem."""
    if not 0 < test_frac < 1:
        raise MechReasonError(f"test_frac must be in (0, 1), got {test_frac!r}")
    problems = sorted(set(map(str, ids_a)) | set(map(str, ids_b)))
    if len(problems) < 2:
        raise MechReasonError(f"a split by problem needs at least 2 problems, got "
                              f"{len(problems)}")
    random.Random(seed).shuffle(problems)
    n_test = min(len(problems) - 1, max(1, round(test_frac * len(problems))))
    test = frozenset(problems[:n_test])
    split = Split(test_a=torch.tensor([str(i) in test for i in ids_a], dtype=torch.bool),
                  test_b=torch.tensor([str(i) in test for i in ids_b], dtype=torch.bool),
                  train_ids=frozenset(problems[n_test:]), test_ids=test)
    for name, mask in (("A", split.test_a), ("B", split.test_b)):
        if bool(mask.all()) or not bool(mask.any()):
            side = "training" if bool(mask.all()) else "test"
            raise MechReasonError(
                f"group {name} has no problems on the {side} side of the split "
                f"({len(problems)} problems, test_frac={test_frac}); use more problems")
    return split


class Separation(NamedTuple):
    """How well a projection separates held-out A from held-out B."""

    auroc: float
    auroc_lo: float
    auroc_hi: float
    accuracy: float
    """Balanced accuracy at the threshold fitted on the training projections."""
    cohens_d: float


def auroc(pos: Tensor, neg: Tensor) -> float:
    """P(score_A > score_B) + 0.5 P(tie), the Mann-Whitney form (exact, with ties)."""
    from scipy.stats import rankdata

    ranks = rankdata(torch.cat([pos, neg]).double().numpy())  # average ranks for ties
    n_p, n_n = len(pos), len(neg)
    return float((ranks[:n_p].sum() - n_p * (n_p + 1) / 2) / (n_p * n_n))


def perfect_separation_prob(theta: float, n_pos: int, n_neg: int) -> float:
    """P(every positive scores above every negative) when the true AUROC is ``theta``,
    under Hanley and McNeil's exponential model (positives ~ Exp(mu), negatives ~
    Exp(nu), theta = nu / (mu + nu)): n_neg! Gamma(m r + 1) / Gamma(n_neg + m r + 1)
    with m = n_pos, r = mu / nu. At theta = 0.5 it is 1 / C(n_pos + n_neg, n_pos)."""
    if theta >= 1.0:
        return 1.0
    if theta <= 0.0:
        return 0.0
    mr = n_pos * (1 - theta) / theta
    return math.exp(math.lgamma(n_neg + 1) + math.lgamma(mr + 1) - math.lgamma(n_neg + mr + 1))


def _perfect_lower_bound(n_pos: int, n_neg: int, tail: float = 0.025) -> float:
    """The AUROC at which perfect separation has probability ``tail`` (bisection)."""
    lo, hi = 1e-9, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if perfect_separation_prob(mid, n_pos, n_neg) < tail else (lo, mid)
    return lo


def auroc_interval(a: float, n_pos: int, n_neg: int) -> tuple[float, float]:
    """95% interval for an AUROC from n_pos and n_neg samples: Hanley and McNeil (1982).

    Their standard error is 0 at AUROC 1 (or 0), which would claim certainty from a few
    samples; there the bound is exact under the same exponential model instead: the
    lower end is the true AUROC at which perfect separation happens with probability
    2.5% (:func:`perfect_separation_prob`), e.g. 0.66 for 5 against 5, 0.94 for 20 against 20."""
    if a >= 1.0:
        return _perfect_lower_bound(n_pos, n_neg), 1.0
    if a <= 0.0:
        return 0.0, 1.0 - _perfect_lower_bound(n_neg, n_pos)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    se = math.sqrt(max(var, 0.0))
    return max(0.0, a - Z95 * se), min(1.0, a + Z95 * se)


def auroc_bootstrap(pos: Tensor, neg: Tensor, *, n_boot: int = 1000, seed: int = 0
                    ) -> tuple[float, float]:
    """95% percentile interval of the AUROC over ``n_boot`` stratified resamples (each
    group resampled with replacement within itself), pairwise in one batch."""
    g = torch.Generator().manual_seed(seed)
    p = pos.double()[torch.randint(len(pos), (n_boot, len(pos)), generator=g)]  # (B, n_pos)
    q = neg.double()[torch.randint(len(neg), (n_boot, len(neg)), generator=g)]  # (B, n_neg)
    diff = p[:, :, None] - q[:, None, :]
    stats = ((diff > 0).double() + 0.5 * (diff == 0).double()).mean((1, 2))
    lo, hi = torch.quantile(stats, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return lo, hi


def auroc_ci(pos: Tensor, neg: Tensor, *, seed: int = 0) -> tuple[float, float]:
    """The AUROC's 95% interval valid at the sample size: at AUROC 0 or 1 the exact bound
    (:func:`auroc_interval`; a bootstrap would give a zero-width interval there), below
    :data:`~mechreason.stats.NORMAL_MIN_N` vectors in either group a stratified bootstrap
    (the normal interval is too narrow there), else Hanley-McNeil."""
    a = auroc(pos, neg)
    if a in (0.0, 1.0) or min(len(pos), len(neg)) >= NORMAL_MIN_N:
        return auroc_interval(a, len(pos), len(neg))
    return auroc_bootstrap(pos, neg, seed=seed)


def cohens_d(pos: Tensor, neg: Tensor) -> float:
    """(mean_A - mean_B) / pooled SD; nan when either group has one sample."""
    n_p, n_n = len(pos), len(neg)
    if n_p < 2 or n_n < 2:
        return float("nan")
    pooled = ((n_p - 1) * pos.double().var() + (n_n - 1) * neg.double().var()) / (n_p + n_n - 2)
    return float((pos.double().mean() - neg.double().mean()) / pooled.sqrt().clamp_min(1e-30))


def separation(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor]) -> Separation:
    """Score held-out projections ``test`` = (A, B); the threshold comes from ``train``."""
    thr = (train[0].double().mean() + train[1].double().mean()) / 2
    pos, neg = test
    acc = 0.5 * (float((pos.double() > thr).double().mean())
                 + float((neg.double() <= thr).double().mean()))
    a = auroc(pos, neg)
    lo, hi = auroc_ci(pos, neg)
    return Separation(a, lo, hi, acc, cohens_d(pos, neg))


@dataclasses.dataclass(frozen=True, kw_only=True)
class LayerResult:
    """One row of the sweep table."""

    hook: str
    n_train: tuple[int, int]
    """(A, B) training vectors."""
    n_test: tuple[int, int]
    """(A, B) held-out vectors."""
    sep: Separation
    random_auroc: float
    """Median held-out AUROC of :data:`N_RANDOM` seeded random directions (control)."""
    random_p95: float
    """Their 95th percentile: the chance band a direction must beat."""
    norm: float
    """Norm of the direction fitted on all problems."""


def evaluate_layer(method: Method, a: Group, b: Group, split: Split,
                   controls: Float[Tensor, "k d"]) -> tuple[Separation, float, float]:
    """Fit ``method`` on the training rows, score the held-out rows along it; also the
    median and 95th percentile of held-out AUROC along the unit rows of ``controls``."""
    tr_a, tr_b = _take(a, ~split.test_a), _take(b, ~split.test_b)
    te_a, te_b = a.x[split.test_a], b.x[split.test_b]
    v = method(tr_a, tr_b)
    u = v / v.norm().clamp_min(1e-30)
    sep = separation((tr_a.x @ u, tr_b.x @ u), (te_a @ u, te_b @ u))
    pa, pb = te_a @ controls.T, te_b @ controls.T  # (n_test, k)
    rand = torch.tensor([auroc(pa[:, j], pb[:, j]) for j in range(controls.shape[0])])
    q = torch.quantile(rand.double(), torch.tensor([0.5, 0.95], dtype=torch.float64))
    return sep, float(q[0]), float(q[1])


def _take(g: Group, mask: Tensor) -> Group:
    idx = mask.nonzero().flatten().tolist()
    return Group(g.x[mask], [g.ids[i] for i in idx])


class SweepResult(NamedTuple):
    """Per-layer held-out metrics, the chosen layer, and the full-data directions."""

    layers: list[LayerResult]
    best: int
    """Index into ``layers`` (max held-out AUROC; ties to the earlier layer)."""
    directions: Float[Tensor, "hook d"]
    """Each hook's direction fitted on all problems (training and held-out)."""
    split: Split


def best_index(aurocs: Sequence[float]) -> int:
    """The index of the highest AUROC; ties (within 1e-9) go to the earlier index."""
    best = 0
    for i, a in enumerate(aurocs):
        if a > aurocs[best] + TIE_TOL:
            best = i
    return best


def layer_sweep(method: Method, groups: Sequence[tuple[str, Group, Group]], *, test_frac: float = 0.3,
          seed: int = 0) -> SweepResult:
    """Run the sweep over ``groups``: (hook, A, B) per layer, rows aligned across layers."""
    if not groups:
        raise MechReasonError("nothing to sweep: no hooks given")
    _, a0, b0 = groups[0]
    split = split_by_problem(a0.ids, b0.ids, test_frac=test_frac, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    rows, dirs = [], []
    for hook, a, b in groups:
        check_groups(a, b)
        if list(a.ids) != list(a0.ids) or list(b.ids) != list(b0.ids):
            raise MechReasonError(f"hook {hook!r} has different rows from {groups[0][0]!r}")
        controls = torch.randn(N_RANDOM, a.x.shape[1], generator=gen)
        controls /= controls.norm(dim=1, keepdim=True)
        sep, rand, rand95 = evaluate_layer(method, a, b, split, controls)
        full = method(a, b)
        dirs.append(full)
        rows.append(LayerResult(
            hook=hook, n_train=(int((~split.test_a).sum()), int((~split.test_b).sum())),
            n_test=(int(split.test_a.sum()), int(split.test_b.sum())), sep=sep,
            random_auroc=rand, random_p95=rand95, norm=float(full.norm())))
    best = best_index([r.sep.auroc for r in rows])
    return SweepResult(layers=rows, best=best, directions=torch.stack(dirs), split=split)


def format_table(result: SweepResult) -> str:
    """The sweep as a fixed-width text table (the CLI prints it)."""
    head = (f"{'hook':<28} {'n_tr A/B':>10} {'n_te A/B':>10} {'AUROC':>6} {'95% CI':>13} "
            f"{'acc':>5} {'d':>6} {'rnd50':>5} {'rnd95':>5} {'norm':>8}")
    lines = [head, "-" * len(head)]
    for i, r in enumerate(result.layers):
        s = r.sep
        mark = "  <- best" if i == result.best else ""
        lines.append(
            f"{r.hook:<28} {f'{r.n_train[0]}/{r.n_train[1]}':>10} "
            f"{f'{r.n_test[0]}/{r.n_test[1]}':>10} {s.auroc:6.3f} "
            f"{f'[{s.auroc_lo:.2f},{s.auroc_hi:.2f}]':>13} {s.accuracy:5.2f} {s.cohens_d:6.2f} "
            f"{r.random_auroc:5.2f} {r.random_p95:5.2f} {r.norm:8.3g}{mark}")
    return "\n".join(lines)

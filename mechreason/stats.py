"""Small statistics shared by every stage: intervals for proportions and means, and
Fisher's exact test for two proportions.

Effects on small models are small and samples are few, so every reported rate or mean
carries an interval that holds at small n: Wilson for proportions, Student t for means
(a normal, z, interval is never used below n = 30), and an exact test beside the
interval where two proportions are compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054
"""The normal 97.5% quantile: only inside Wilson's score interval, which is built for
small n, and for statistics whose samples are at least :data:`NORMAL_MIN_N`."""
NORMAL_MIN_N = 30
"""Below this many samples an interval uses t, a bootstrap or an exact bound, never z."""


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n (95% by default); (0, 1) when n is 0."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    # the bound at 0 (or n) successes is exactly 0 (or 1): no floating-point residue
    return (0.0 if k == 0 else max(0.0, mid - half), 1.0 if k == n else min(1.0, mid + half))


def t_quantile(df: float, level: float = 0.95) -> float:
    """The two-sided Student t multiplier: 12.71 at df 1, 4.30 at df 2, 2.04 at df 30."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def mean_ci(xs: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and its Student-t interval (valid at small n, where a normal interval is too
    narrow: at n = 3 the 95% t multiplier is 4.30, not 1.96): (mean, low, high); NaNs
    for no data, a zero-width interval for one value."""
    n = len(xs)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    m = sum(xs) / n
    if n == 1:
        return (m, m, m)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    half = t_quantile(n - 1, level) * sd / math.sqrt(n)
    return (m, m - half, m + half)


def welch_df(var_a: float, n_a: int, var_b: float, n_b: int) -> float:
    """Welch-Satterthwaite degrees of freedom of a difference of two means (unequal
    variances); ``min(n_a, n_b) - 1`` when both variances are 0."""
    sa, sb = var_a / n_a, var_b / n_b
    den = sa * sa / (n_a - 1) + sb * sb / (n_b - 1)
    return (sa + sb) ** 2 / den if den > 0 else float(min(n_a, n_b) - 1)


def fisher_exact(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p of Fisher's exact test that k1/n1 and k2/n2 share one proportion.

    The 2x2 table ``[[k1, n1 - k1], [k2, n2 - k2]]`` with its margins fixed: p is the
    hypergeometric probability of every table with those margins that is no more likely
    than the observed one (the convention of R's fisher.test and scipy), with a relative
    tolerance of 1e-7 for ties in floating point.
    """
    if not (0 <= k1 <= n1 and 0 <= k2 <= n2):
        raise ValueError(f"need 0 <= k <= n, got {k1}/{n1} and {k2}/{n2}")
    total, hits = n1 + n2, k1 + k2
    if n1 == 0 or n2 == 0 or hits in (0, total):
        return 1.0
    lo, hi = max(0, hits - n2), min(hits, n1)

    def logp(x: int) -> float:  # log P(first row has x hits | margins)
        return (math.lgamma(hits + 1) - math.lgamma(x + 1) - math.lgamma(hits - x + 1)
                + math.lgamma(total - hits + 1) - math.lgamma(n1 - x + 1)
                - math.lgamma(total - hits - n1 + x + 1)
                - (math.lgamma(total + 1) - math.lgamma(n1 + 1) - math.lgamma(n2 + 1)))

    obs = logp(k1)
    p = sum(math.exp(lp) for lp in map(logp, range(lo, hi + 1)) if lp <= obs + 1e-7)
    return min(1.0, p)

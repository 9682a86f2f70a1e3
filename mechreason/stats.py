"""Small statistics shared by every stage: confidence intervals for proportions and means.

Effects on small models are small, so every reported rate or mean carries an interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n (95% by default); (0, 1) when n is 0."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def mean_ci(xs: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and its Student-t interval (valid at small n, where a normal interval is too
    narrow: at n = 3 the 95% t multiplier is 4.30, not 1.96): (mean, low, high); NaNs
    for no data, a zero-width interval for one value."""
    from scipy.stats import t

    n = len(xs)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    m = sum(xs) / n
    if n == 1:
        return (m, m, m)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return (m, m - half, m + half)

"""mechreason.stats against hand-computed values and scipy's own implementations."""

from __future__ import annotations

import math

import pytest

from mechreason.stats import fisher_exact, mean_ci, t_quantile, welch_df, wilson


def _hyper(x: int, n1: int, n2: int, hits: int) -> float:
    return math.comb(n1, x) * math.comb(n2, hits - x) / math.comb(n1 + n2, hits)


def test_fisher_exact_hand_tables():
    # [[3, 0], [0, 3]]: margins 3/3, 3 hits; tables x = 0..3 have probabilities
    # 1/20, 9/20, 9/20, 1/20; the observed (x = 3) and its mirror (x = 0) are the tails.
    assert fisher_exact(3, 3, 0, 3) == pytest.approx(2 / 20)
    # Fisher's tea tasting: 4 of 4 cups right out of 8 -> 1/70 one-sided, 2/70 two-sided.
    assert fisher_exact(4, 4, 0, 4) == pytest.approx(2 / 70)
    # Balanced tables give p = 1; degenerate margins give 1.
    assert fisher_exact(2, 4, 2, 4) == pytest.approx(1.0)
    assert fisher_exact(0, 5, 0, 7) == 1.0 and fisher_exact(5, 5, 7, 7) == 1.0


@pytest.mark.parametrize(("k1", "n1", "k2", "n2"),
                         [(16, 30, 11, 30), (1, 7, 5, 11), (0, 3, 2, 5), (10, 13, 2, 2),
                          (7, 30, 0, 30)])
def test_fisher_exact_matches_sum_of_hypergeometric_and_scipy(k1, n1, k2, n2):
    from scipy.stats import fisher_exact as scipy_fisher

    hits = k1 + k2
    probs = [_hyper(x, n1, n2, hits) for x in range(max(0, hits - n2), min(hits, n1) + 1)]
    obs = _hyper(k1, n1, n2, hits)
    want = sum(p for p in probs if p <= obs * (1 + 1e-7))
    got = fisher_exact(k1, n1, k2, n2)
    assert got == pytest.approx(want, rel=1e-9)
    assert got == pytest.approx(scipy_fisher([[k1, n1 - k1], [k2, n2 - k2]])[1], rel=1e-9)
    assert got == pytest.approx(fisher_exact(k2, n2, k1, n1), rel=1e-12)  # symmetric


def test_fisher_exact_he_et_al_figure():
    # The figure: 16/30 vs 11/30 is not significant (p about 0.3).
    assert 0.2 < fisher_exact(16, 30, 11, 30) < 0.4


def test_fisher_exact_rejects_bad_counts():
    with pytest.raises(ValueError, match="0 <= k <= n"):
        fisher_exact(4, 3, 0, 3)


# t quantiles from the standard table: df 1, 2, 4, 29
@pytest.mark.parametrize(("df", "want"), [(1, 12.7062), (2, 4.3027), (4, 2.7764), (29, 2.0452)])
def test_t_quantile_table(df, want):
    assert t_quantile(df) == pytest.approx(want, abs=1e-4)


def test_mean_ci_is_t_not_z_at_small_n():
    # n = 3, values 1, 2, 3: sd 1, se 1/sqrt(3), t(0.975, 2) = 4.3027
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert (m, hi - m) == pytest.approx((2.0, 4.3027 / math.sqrt(3)), abs=1e-4)
    assert m - lo == pytest.approx(hi - m)


def test_welch_df_equal_variances_and_sizes():
    # equal variances and sizes: df = 2 (n - 1)
    assert welch_df(1.0, 5, 1.0, 5) == pytest.approx(8.0)
    assert welch_df(0.0, 5, 0.0, 3) == 2.0


def test_wilson_hand_value():
    # k = 0, n = 3: upper bound z^2 / (n + z^2) = 3.8415 / 6.8415
    lo, hi = wilson(0, 3)
    assert wilson(3, 3) == pytest.approx((1 - hi, 1.0)) and wilson(3, 3)[1] == 1.0
    assert lo == 0.0 and hi == pytest.approx(3.8415 / 6.8415, abs=1e-4)


def test_auroc_bootstrap_covers_a_planted_auroc_at_small_n():
    # Planted truth: A ~ N(delta, 1), B ~ N(0, 1) has AUROC Phi(delta / sqrt 2). Over
    # repeated samples of 8 vs 6 the 95% interval must cover it about 95% of the time
    # (a percentile bootstrap undercovers a little at this n; z would undercover more).
    import torch
    from scipy.stats import norm

    from mechreason.directions.sweep import auroc_ci

    delta, trials = 1.0, 200
    truth = float(norm.cdf(delta / math.sqrt(2)))
    g = torch.Generator().manual_seed(0)
    hits = 0
    for i in range(trials):
        pos = torch.randn(8, generator=g) + delta
        neg = torch.randn(6, generator=g)
        lo, hi = auroc_ci(pos, neg, seed=i)
        hits += lo <= truth <= hi
    assert hits / trials >= 0.85


def test_auroc_ci_dispatch():
    import torch

    from mechreason.directions.sweep import auroc, auroc_bootstrap, auroc_ci, auroc_interval

    g = torch.Generator().manual_seed(1)
    small = (torch.randn(7, generator=g) + 0.5, torch.randn(5, generator=g))
    assert auroc_ci(*small) == auroc_bootstrap(*small)  # below 30: bootstrap
    big = (torch.randn(40, generator=g) + 0.5, torch.randn(35, generator=g))
    assert auroc_ci(*big) == auroc_interval(auroc(*big), 40, 35)  # from 30: Hanley-McNeil
    perfect = (torch.tensor([5.0, 6.0, 7.0]), torch.tensor([0.0, 1.0]))
    assert auroc_ci(*perfect) == auroc_interval(1.0, 3, 2)  # exact bound, not [1, 1]

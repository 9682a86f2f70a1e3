"""Direction methods and the layer sweep on synthetic activations with a planted truth."""

from __future__ import annotations

import math

import pytest
import torch

from mechreason.directions.methods import METHODS, Group, get_method, label_vs_all, mean_diff
from mechreason.directions.sweep import (
    auroc,
    auroc_interval,
    best_index,
    cohens_d,
    layer_sweep,
    perfect_separation_prob,
    split_by_problem,
)
from mechreason.errors import MechReasonError

D = 11  # widths differ from every count below, so a swapped axis cannot pass
N_A, N_B = 53, 37


def planted(seed: int = 0, *, shift: float = 8.0, offset: float = 0.0, paired: bool = True,
            n_a: int = N_A, n_b: int = N_B):
    """Two groups that differ by ``shift`` along a random unit vector ``v``.

    Every problem has a shared random offset (a nuisance that pairing removes) and
    contributes one A row and, if ``paired``, one B row.
    """
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(D, generator=g)
    v /= v.norm()
    per_problem = 1.5 * torch.randn(n_a, D, generator=g)
    a = per_problem + shift * v + torch.randn(n_a, D, generator=g) + offset
    b_idx = torch.arange(n_b) if paired else torch.arange(n_b) + n_a
    base_b = per_problem[:n_b] if paired else 1.5 * torch.randn(n_b, D, generator=g)
    b = base_b + torch.randn(n_b, D, generator=g) + offset
    return v, Group(a, [f"p{i}" for i in range(n_a)]), Group(b, [f"p{i}" for i in b_idx.tolist()])


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_direction_is_recovered(name, seed):
    if name == "logistic":  # a probe is meaningful where the classes overlap; separable
        # data drive it towards the max-margin direction of the sample instead
        v, a, b = planted(seed, shift=3.0, n_a=30 * N_A, n_b=30 * N_B)
    else:
        v, a, b = planted(seed)
    got = get_method(name)(a, b)
    assert got.shape == (D,)
    assert torch.nn.functional.cosine_similarity(got, v, dim=0) > 0.99


@pytest.mark.parametrize("name", sorted(set(METHODS) - {"label-vs-all"}))
def test_shift_invariance(name):
    """Adding one constant vector to both groups leaves the direction unchanged."""
    _, a, b = planted(3)
    c = 40.0 * torch.randn(D, generator=torch.Generator().manual_seed(9))
    v0 = get_method(name)(a, b)
    v1 = get_method(name)(Group(a.x + c, a.ids), Group(b.x + c, b.ids))
    torch.testing.assert_close(v1, v0, rtol=1e-3, atol=1e-3)


def test_label_vs_all_matches_its_definition():
    """Venhoff 2025a: direction = label mean - overall mean, at the overall mean's norm;
    a shift moves the overall mean, so only the unit direction is invariant."""
    _, a, b = planted(4, offset=2.0)
    overall = torch.cat([a.x, b.x]).double().mean(0)
    want = a.x.double().mean(0) - overall
    got = label_vs_all(a, b).double()
    torch.testing.assert_close(got.norm(), overall.norm())
    assert torch.nn.functional.cosine_similarity(got, want, dim=0) > 1 - 1e-9
    c = torch.full((D,), 5.0)
    shifted = label_vs_all(Group(a.x + c, a.ids), Group(b.x + c, b.ids)).double()
    assert torch.nn.functional.cosine_similarity(shifted, got, dim=0) > 1 - 1e-6


def test_mean_diff_is_exact():
    _, a, b = planted(5)
    torch.testing.assert_close(mean_diff(a, b), a.x.mean(0) - b.x.mean(0))


def _bad_inputs():
    _, a, b = planted(6)
    nan = a.x.clone()
    nan[3, 4] = float("nan")
    return {
        "empty A": (Group(a.x[:0], []), b, "empty"),
        "empty B": (a, Group(b.x[:0], []), "empty"),
        "widths": (a, Group(b.x[:, :7], b.ids), "different widths"),
        "nan": (Group(nan, a.ids), b, "NaN"),
        "ids": (Group(a.x, a.ids[:-1]), b, "problem ids"),
    }


@pytest.mark.parametrize("case", sorted(_bad_inputs()))
@pytest.mark.parametrize("name", sorted(METHODS))
def test_bad_groups_raise(case, name):
    a, b, msg = _bad_inputs()[case]
    with pytest.raises(MechReasonError, match=msg):
        get_method(name)(a, b)


def test_unknown_method():
    with pytest.raises(MechReasonError, match="mean-diff"):
        get_method("mean_dif")


def test_pca_needs_pairs():
    _, a, b = planted(7, paired=False)
    with pytest.raises(MechReasonError, match="paired"):
        get_method("pca")(a, b)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("frac", [0.2, 0.5])
def test_split_by_problem_never_straddles(seed, frac):
    # problems repeat within and across groups (several sentences per problem)
    ids_a = [f"q{i % 17}" for i in range(61)]
    ids_b = [f"q{(i * 5) % 23}" for i in range(43)]
    s = split_by_problem(ids_a, ids_b, test_frac=frac, seed=seed)
    assert not (s.train_ids & s.test_ids)
    for ids, mask in ((ids_a, s.test_a), (ids_b, s.test_b)):
        test = {p for p, m in zip(ids, mask.tolist()) if m}
        train = {p for p, m in zip(ids, mask.tolist()) if not m}
        assert not (test & train)
        assert test <= s.test_ids and train <= s.train_ids
    all_ids = set(ids_a) | set(ids_b)
    assert len(s.test_ids) == round(frac * len(all_ids))


def test_split_errors():
    with pytest.raises(MechReasonError, match="at least 2 problems"):
        split_by_problem(["p"], ["p"])
    with pytest.raises(MechReasonError, match="test_frac"):
        split_by_problem(["p", "q"], ["p", "q"], test_frac=1.0)


def test_auroc_matches_pairwise_oracle():
    g = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 5, (13,), generator=g).float()  # many ties
    neg = torch.randint(0, 5, (7,), generator=g).float()
    wins = (pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()
    assert auroc(pos, neg) == pytest.approx(float(wins.mean()))
    lo, hi = auroc_interval(0.8, 13, 7)
    assert 0 <= lo < 0.8 < hi <= 1


@pytest.mark.parametrize(("n_pos", "n_neg"), [(5, 5), (8, 3)])
def test_auroc_interval_at_perfect_separation(n_pos, n_neg):
    # Exchangeable scores (true AUROC 0.5): perfect separation is one ordering in C(n, k).
    assert perfect_separation_prob(0.5, n_pos, n_neg) == pytest.approx(1 / math.comb(n_pos + n_neg, n_pos))
    lo, hi = auroc_interval(1.0, n_pos, n_neg)
    assert hi == 1.0 and 0.5 < lo < 1.0  # not the zero-width [1, 1]
    # Monte Carlo under the model: at true AUROC lo, perfect separation happens 2.5% of the time.
    g = torch.Generator().manual_seed(0)
    trials = 100_000
    pos = torch.empty(trials, n_pos).exponential_(1.0, generator=g) / ((1 - lo) / lo)
    neg = torch.empty(trials, n_neg).exponential_(1.0, generator=g)
    frac = float((pos.min(1).values > neg.max(1).values).double().mean())
    assert frac == pytest.approx(0.025, abs=0.003)
    # Mirror image at AUROC 0, and more samples give a tighter bound.
    assert auroc_interval(0.0, n_neg, n_pos) == pytest.approx((0.0, 1.0 - lo))
    assert auroc_interval(1.0, 4 * n_pos, 4 * n_neg)[0] > lo


def test_cohens_d_oracle():
    pos, neg = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 4.0, 5.0, 6.0])
    pooled = math.sqrt((2 * 1.0 + 3 * (5 / 3)) / 5)
    assert cohens_d(pos, neg) == pytest.approx((2.0 - 4.5) / pooled)


def test_best_index_ties_go_early():
    assert best_index([0.5, 0.9, 0.9, 0.7]) == 1
    assert best_index([0.5, 0.7, 0.9 + 1e-12, 0.9]) == 2


def test_sweep_picks_the_planted_layer():
    """Three 'layers': noise, weak signal, strong signal; the sweep must rank them."""
    layers = []
    for i, shift in enumerate([0.0, 1.5, 6.0]):
        _, a, b = planted(10 + i, shift=shift)
        layers.append((f"blocks.{i}.hook_resid_post", a, b))
    # rows must align across layers: give every layer the same ids
    res = layer_sweep(get_method("mean-diff"), layers, test_frac=0.4, seed=0)
    au = [r.sep.auroc for r in res.layers]
    assert res.best == 2 and au[2] > 0.95 > au[0]
    assert res.directions.shape == (3, D)
    n_test = res.layers[0].n_test
    assert n_test[0] + res.layers[0].n_train[0] == N_A
    assert all(0.0 <= r.random_auroc <= r.random_p95 <= 1.0 for r in res.layers)

"""Adaptive resampling (mechreason.anchors.adaptive) and the graded importances:
planted answer sequences for the stopping rule, the live adaptive run against a full
run's records replayed through the rule, and exact Laplace KL / saturation flags."""

from __future__ import annotations

import math

import pytest
from _anchors_fixtures import make_trace

from mechreason.anchors.adaptive import (
    AdaptiveConfig,
    run_adaptive,
    settled,
    simulate,
    stop_count,
    total_variation,
)
from mechreason.anchors.importance import Rollout, compute_importance, disjoint, kl_divergence
from mechreason.errors import MechReasonError


def test_total_variation_exact():
    assert total_variation(["a", "a"], ["a"]) == 0
    assert total_variation(["a", "b"], ["a"]) == pytest.approx(0.5)
    assert total_variation(["a", None, None], ["b"]) == pytest.approx(1.0)
    assert total_variation(["a", "a", "b"], ["a", "b", "b"]) == pytest.approx(1 / 3)


@pytest.mark.parametrize(("answers", "batch", "tol", "want"), [
    (["5"] * 16, 4, 0.0, 8),                       # one answer: settled at the first check
    (["5", "7"] * 8, 2, 0.0, 4),                    # alternating: every batch keeps 50/50
    (["5"] * 4 + ["7"] * 12, 4, 0.1, 16),           # the last batches keep moving it
    (["5"] * 8 + ["7"] * 4 + ["5"] * 4, 4, 0.15, 8),  # settled before the 7s arrive
    (["5", "7"] + ["5"] * 14, 2, 0.1, 6),          # TV 0.25 at 4, then 1/12 at 6
])
def test_stop_count_planted(answers, batch, tol, want):
    cfg = AdaptiveConfig(tolerance=tol, batch=batch, min_rollouts=2 * batch)
    assert stop_count(answers, cfg, 16) == want
    assert settled(answers[:want], cfg) or want == 16


def test_adaptive_config_rejects():
    with pytest.raises(MechReasonError, match="tolerance"):
        AdaptiveConfig(tolerance=1.5)
    with pytest.raises(MechReasonError, match="min_rollouts"):
        AdaptiveConfig(batch=4, min_rollouts=6)


def test_adaptive_run_is_the_full_run_replayed(tiny, tmp_path):
    """The live adaptive run draws exactly the rollouts (same keys, same tokens) that the
    rule replayed on a full run's records keeps, and fewer than the full run."""
    from mechreason.anchors.embed import fallback_extract, fallback_grade
    from mechreason.anchors.resampling import ResampleConfig, run_rollouts

    trace = make_trace(tiny)
    cfg = ResampleConfig(rollouts=6, max_new_tokens=6, forced_max_tokens=2, batch_size=16)
    acfg = AdaptiveConfig(tolerance=0.34, batch=2, min_rollouts=4)
    kw = dict(extract=fallback_extract, grade=fallback_grade)
    live = run_adaptive(tiny, trace, cfg, acfg, tmp_path / "a", **kw)
    full = run_rollouts(tiny, trace, cfg, tmp_path / "f", **kw)
    replay = simulate(full, acfg, cfg.rollouts)
    assert {k: r["tokens"] for k, r in live.items()} == {k: r["tokens"] for k, r in replay.items()}
    assert len(live) < len(full)
    again = run_adaptive(tiny, trace, cfg, acfg, tmp_path / "a", **kw)  # resumes: nothing new
    assert again == live


def _roll(answer, correct, first="x"):
    return Rollout(answer, correct, first, (first,))


class _Embed:
    """Every text the same unit vector except those in ``far``: cosine 1 or 0."""

    def __init__(self, far=()):
        self.far = set(far)

    def __call__(self, texts):
        import torch

        return torch.tensor([[0.0, 1.0] if t in self.far else [1.0, 0.0] for t in texts])


def test_laplace_kl_and_saturation_planted():
    sents = ["s0", "s1"]
    r0 = [_roll("7", False, "far")] * 3 + [_roll("5", True)]  # 3 of 4 resampled away
    r1 = [_roll("5", True)] * 4
    imp = compute_importance(sents, [r0, r1], None, "5", True, _Embed({"far"}), n_boot=50)
    # D_0 = three "7" answers; R_1 = four "5": disjoint, the eps KL sits at its ceiling
    assert imp.saturated["counterfactual_kl"] == [True, False]
    assert imp.counterfactual_kl[0] == pytest.approx(kl_divergence(["7"] * 3, ["5"] * 4))
    assert imp.counterfactual_kl[0] > 19
    # Laplace (alpha = 1) over K = 2 answers: p = (4/5, 1/5), q = (1/6, 5/6)
    p, q = (4 / 5, 1 / 5), (1 / 6, 5 / 6)
    assert imp.counterfactual_kl_laplace[0] == pytest.approx(
        sum(a * math.log(a / b) for a, b in zip(p, q)))
    assert not imp.saturated["resampling_kl"][0]  # R_0 shares "5" with R_1
    assert disjoint(["a"], ["b"]) and not disjoint(["a", "b"], ["b"]) and not disjoint([], ["b"])


def test_intervals_bracket_and_collapse():
    sents = ["s0", "s1", "s2"]
    r0 = [_roll("7", False)] * 6 + [_roll("5", True)] * 6
    r1 = [_roll("5", True)] * 12
    r2 = [_roll("5", True)] * 12
    imp = compute_importance(sents, [r0, r1, r2], None, "5", True, _Embed(), n_boot=200)
    lo, hi = imp.intervals["resampling_accuracy"][0]
    assert lo <= imp.resampling_accuracy[0] == 0.5 <= hi and hi - lo > 0.2
    # identical samples on both sides: every redraw agrees, the interval is a point
    assert imp.intervals["resampling_accuracy"][1] == (0.0, 0.0)
    assert imp.intervals["resampling_kl_laplace"][1] == (0.0, 0.0)

"""Resampling metrics, the joined table and the viewer export, on planted rollouts."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import scipy.stats

from mechreason.anchors.embed import MiniLMEmbedder
from mechreason.anchors.export import read_viewer, validate, viewer_json, write_viewer
from mechreason.anchors.importance import Rollout, compute_importance, kl_divergence
from mechreason.anchors.join import rank_correlations
from mechreason.errors import MechReasonError

SENTS = ["We need to add the two numbers.", "Two plus three equals five.",
         "So the final answer is five."]
OTHER = ["The weather today is sunny and warm.", "My cat likes to sleep on the sofa.",
         "Paris is the capital city of France."]


@pytest.fixture(scope="module")
def embed():
    return MiniLMEmbedder()


def _roll(answer, correct, first, rest=()):
    return Rollout(answer, correct, first, (first, *rest))


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 5])
def test_kl_nonnegative_and_zero_on_equal(seed):
    rng = random.Random(seed)
    p = [rng.choice("abc") for _ in range(rng.randint(1, 11))]
    q = [rng.choice("abd") for _ in range(rng.randint(1, 7))]
    assert kl_divergence(p, q) >= 0
    assert kl_divergence(p, list(reversed(p))) == pytest.approx(0, abs=1e-12)


def test_kl_smoothing_formula():
    eps = 0.5
    p, q = ["a", "a", "b"], ["a", None]  # support {a, b, <unparsed>}
    pa, pb, pu = (2 + eps) / (3 + 3 * eps), (1 + eps) / (3 + 3 * eps), eps / (3 + 3 * eps)
    qa, qb, qu = (1 + eps) / (2 + 3 * eps), eps / (2 + 3 * eps), (1 + eps) / (2 + 3 * eps)
    want = pa * math.log(pa / qa) + pb * math.log(pb / qb) + pu * math.log(pu / qu)
    assert kl_divergence(p, q, eps) == pytest.approx(want)
    assert kl_divergence([], q) == 0.0


def test_planted_anchor(embed):
    """Sentence 1 decides the answer: resampled away (different sentences) the answer is
    wrong; kept, it is right. Sentence 0 is regenerated verbatim every time."""
    r0 = [_roll("5", True, SENTS[0], (SENTS[1],)) for _ in range(4)]
    r1 = [_roll("7", False, OTHER[k % 3]) for k in range(4)]
    r2 = [_roll("5", True, SENTS[2]) for _ in range(4)]
    forced = [[_roll("7", False, "")] * 2, [_roll("7", False, "")] * 2,
              [_roll("5", True, "")] * 2, [_roll("5", True, "")] * 2]
    imp = compute_importance(SENTS, [r0, r1, r2], forced, "5", True, embed)
    assert imp.accuracy == [1.0, 0.0, 1.0]
    assert imp.resampling_accuracy == [-1.0, 1.0, 0.0]
    assert imp.counterfactual_accuracy[1] == 1.0 and imp.counterfactual_kl[1] > 1
    # no dissimilar rollouts: counterfactual importance is exactly 0
    assert imp.n_dissimilar[0] == 0 and imp.counterfactual_kl[0] == imp.counterfactual_accuracy[0] == 0
    assert imp.different_trajectories == [0.0, 1.0, 0.0]
    assert imp.overdeterminedness == [0.75, 0.25, 0.75]
    assert imp.forced_importance_accuracy == [0.0, 1.0, 0.0]
    for vals in (imp.accuracy, imp.forced_accuracy):
        assert all(0 <= v <= 1 for v in vals)
    for vals in (imp.resampling_kl, imp.counterfactual_kl, imp.forced_importance_kl):
        assert all(v >= 0 for v in vals)
    m = np.array(imp.matrix)
    assert m[1, 2] == 1.0  # R_2 (keeps 1) says sentence 2; the dissimilar R_1 never do
    assert m[0].tolist() == [0, 0, 0]  # sentence 0 has no dissimilar rollouts
    assert np.all(np.tril(m) == 0)


def test_rank_correlation_against_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=23), rng.normal(size=23)
    y[:5] = None  # undefined values are dropped pairwise
    rows = [{"a": float(a), "b": None if np.isnan(b) else float(b), "c": float(a) ** 3}
            for a, b in zip(x, y)]
    got = {(c.a, c.b): c for c in rank_correlations(rows, ["a", "b", "c"], n_boot=300, n_perm=300)}
    want = scipy.stats.spearmanr(x[5:], y[5:]).statistic
    assert got["a", "b"].rho == pytest.approx(want) and got["a", "b"].n == 18
    mono = got["a", "c"]
    assert mono.rho == pytest.approx(1.0) and mono.ci_lo == pytest.approx(1.0)
    assert mono.p_perm < 0.01 < got["a", "b"].p_perm
    with pytest.raises(MechReasonError, match="unknown columns"):
        rank_correlations(rows, ["a", "zz"])


def _rows(n=4):
    return [{"text": f"Sentence {i}.", "labels": ["plan"] if i == 0 else [], "accuracy": 0.5,
             "counterfactual_kl": float(i), "resampling_kl": 0.1, "receiver_score": None}
            for i in range(n)]


def test_export_roundtrip(tmp_path):
    step = np.triu(np.full((4, 4), 0.3), 1)
    chunks, steps = viewer_json(_rows(), step.tolist())
    write_viewer(tmp_path, chunks, steps)
    assert read_viewer(tmp_path) == (chunks, steps)
    assert chunks[3]["depends_on"] == ["0", "1", "2"] and chunks[0]["function_tags"] == ["plan"]
    assert chunks[2]["importance"] == 2.0 and chunks[1]["counterfactual_importance_kl"] == 1.0
    assert [t["target_chunk_idx"] for t in steps[1]["target_impacts"]] == [2, 3]


@pytest.mark.parametrize("breaker,match", [
    (lambda c, s: c[1].pop("importance"), "lacks 'importance'"),
    (lambda c, s: c[0].__setitem__("chunk_idx", 5), "chunk_idx"),
    (lambda c, s: c[2].__setitem__("depends_on", ["3"]), "later chunk"),
    (lambda c, s: c[0].__setitem__("function_tags", "plan"), "function_tags"),
    (lambda c, s: s[0]["target_impacts"].append({"target_chunk_idx": 0, "importance_score": 1.0}),
     "targets chunk"),
    (lambda c, s: s[1].pop("source_chunk_text"), "fields"),
])
def test_export_schema_rejects(breaker, match):
    chunks, steps = viewer_json(_rows(), None)
    validate(chunks, steps)
    breaker(chunks, steps)
    with pytest.raises(MechReasonError, match=match):
        validate(chunks, steps)


def test_importance_refuses_rollout_groups_that_do_not_match_the_sentences():
    """Caller input is checked with an error, not an assert (which ``python -O`` drops)."""
    import pytest

    from mechreason.anchors.importance import compute_importance
    from mechreason.errors import MechReasonError

    with pytest.raises(MechReasonError, match="2 groups for 3 sentences"):
        compute_importance(["a.", "b.", "c."], [[], []], None, "1", True, embed=None)

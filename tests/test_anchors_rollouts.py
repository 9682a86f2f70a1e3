"""Rollout engine and resampling driver: the batched prefix-reusing path equals the naive
one under fixed seeds; the sampler draws from the right distribution; runs resume."""

from __future__ import annotations

import json

import pytest
import torch
from _anchors_fixtures import make_trace

from mechreason.anchors.embed import fallback_extract, fallback_grade
from mechreason.anchors.resampling import ROLLOUTS_JSONL, ResampleConfig, make_jobs, run_rollouts
from mechreason.anchors.rollouts import (
    Job,
    batched_rollouts,
    naive_rollouts,
    rollout_seed,
)
from mechreason.errors import MechReasonError
from mechreason.model.engine import SamplingConfig, sample
from mechreason.model.generation import nucleus_drop


def _jobs(trace):
    starts = [a for a, _ in trace.spans[:3]]
    jobs = [Job(f"r/{i}/{r}", s, rollout_seed(1, i, r)) for i, s in enumerate(starts) for r in range(2)]
    jobs.append(Job("f/0", trace.spans[2][1], rollout_seed(1, "f"), forced=(40, 41, 42),
                    max_new_tokens=7))
    return jobs


@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_batched_equals_naive(tiny, batch_size):
    trace = make_trace(tiny)
    cfg = SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=11)
    stop_tok = 101

    def stop(job, toks):
        return toks[-1] == stop_tok

    got = dict(batched_rollouts(tiny, trace.ids, _jobs(trace), cfg, batch_size=batch_size, stop=stop))
    ref = dict(naive_rollouts(tiny, trace.ids, _jobs(trace), cfg, stop=stop))
    assert {j.key: t for j, t in got.items()} == {j.key: t for j, t in ref.items()}
    for job, toks in got.items():
        assert len(toks) <= (job.max_new_tokens or cfg.max_new_tokens)
        assert tuple(toks[:len(job.forced)]) == job.forced
        assert stop_tok not in toks[len(job.forced):-1]  # stopped at the first stop token


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.6, 1.0), (1.0, 0.7)])
def test_sampler_matches_distribution(temperature, top_p):
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    probs = (logits / temperature).softmax(-1)
    sorted_p, order = probs.sort(descending=True)
    keep = (sorted_p.cumsum(0) - sorted_p) < top_p
    target = torch.zeros(5)
    target[order[keep]] = sorted_p[keep] / sorted_p[keep].sum()
    n = 3000
    gens = [torch.Generator().manual_seed(s) for s in range(n)]
    draws = sample(logits.expand(n, -1), SamplingConfig(temperature=temperature, top_p=top_p), gens)
    freq = torch.bincount(draws, minlength=5).float() / n
    sigma = (target * (1 - target) / n).sqrt()
    assert ((freq - target).abs() <= 4 * sigma + 1e-9).all(), (freq, target)
    assert (freq[target == 0] == 0).all()


@pytest.mark.parametrize("top_p", [0.5, 0.95, 0.999])
def test_nucleus_mask_equals_full_sort(top_p):
    g = torch.Generator().manual_seed(0)
    peaked = torch.randn(6, 3000, generator=g) * 4  # nucleus inside the top 512
    flat = torch.randn(4, 3000, generator=g) * 0.1  # nucleus wider than 512: full sort
    probs = torch.cat([peaked, flat]).softmax(-1)
    values, order = probs.sort(-1, descending=True)
    want = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, values.cumsum(-1) - values >= top_p)
    got = nucleus_drop(probs, top_p)
    assert torch.equal(got, want)
    kept = (~got).sum(-1)
    assert (kept[6:] > 512).all() and (kept >= 1).all()  # both paths ran


@pytest.mark.parametrize("kw", [{"temperature": -1}, {"temperature": float("nan")}, {"top_p": 0}, {"top_p": 1.5},
                                {"max_new_tokens": 0}])
def test_bad_sampling_rejected(kw):
    with pytest.raises(MechReasonError):
        SamplingConfig(**kw)


def test_bad_jobs_rejected(tiny):
    trace = make_trace(tiny)
    with pytest.raises(MechReasonError, match="prefix lengths"):
        list(batched_rollouts(tiny, trace.ids, [Job("a", 0, 1)], SamplingConfig()))
    with pytest.raises(MechReasonError, match="unique"):
        list(batched_rollouts(tiny, trace.ids, [Job("a", 3, 1), Job("a", 4, 2)], SamplingConfig()))


def test_jobs_slice_by_token_span(tiny):
    trace = make_trace(tiny)
    cfg = ResampleConfig(rollouts=2)
    jobs = make_jobs(tiny, trace, cfg)
    resample = [j for j in jobs if j.key.startswith("resample/")]
    forced = [j for j in jobs if j.key.startswith("forced/")]
    assert len(resample) == 2 * trace.n and len(forced) == 2 * (trace.n + 1)
    assert {j.prefix_len for j in resample} == {a for a, _ in trace.spans}
    assert max(j.prefix_len for j in forced) == trace.spans[-1][1]
    assert tiny.tokenizer.decode(list(forced[0].forced)) == cfg.force_text


def test_rollouts_resume(tiny, tmp_path):
    trace = make_trace(tiny)
    cfg = ResampleConfig(rollouts=2, max_new_tokens=6, forced_max_tokens=3, batch_size=5)
    kw = dict(extract=fallback_extract, grade=fallback_grade)
    full = run_rollouts(tiny, trace, cfg, tmp_path / "a", **kw)
    assert len(full) == 2 * trace.n + 2 * (trace.n + 1)
    path = tmp_path / "a" / ROLLOUTS_JSONL
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[: len(lines) // 2]) + '\n{"key": "torn')  # a crash mid-write
    again = run_rollouts(tiny, trace, cfg, tmp_path / "a", **kw)
    assert {k: r["tokens"] for k, r in again.items()} == {k: r["tokens"] for k, r in full.items()}
    for rec in again.values():
        assert rec["correct"] in (True, False, None)
    now = [json.loads(x) for x in path.read_text().splitlines()]  # every line parses again
    assert len(now) == len(lines)  # the torn line is gone; only the missing ones ran again
    with pytest.raises(MechReasonError, match="other settings"):
        run_rollouts(tiny, trace, ResampleConfig(rollouts=2, seed=9), tmp_path / "a", **kw)

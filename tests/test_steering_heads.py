"""Head editing (ThinkEdit) on the tiny random model: planted heads, exact identities."""

from __future__ import annotations

import warnings

import pytest
import torch

from mechreason.errors import MechReasonError
from mechreason.methods.head_edit import _head_dim, edit_heads, o_proj, rank_heads
from mechreason.model.hooks import hooks_context


@pytest.fixture(scope="module")
def prompts(tiny):
    return [tiny.encode(t) for t in ("Think step by step.", "Wait, check it again", "1+2=3")]


def _unit(d: int, seed: int) -> torch.Tensor:
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def test_head_scores_sum_to_the_attention_output_projection(tiny, prompts):
    u = _unit(tiny.d_model, 0)
    scores = rank_heads(tiny, prompts, u)
    per_layer = {L: sum(s.score for s in scores if s.layer == L) for L in range(tiny.n_layers)}
    # oracle: attn_out . u averaged over the same tokens (o_proj has no bias)
    total = {L: 0.0 for L in range(tiny.n_layers)}
    n = 0
    for ids in prompts:
        got: dict[int, torch.Tensor] = {}
        hooks = {f"blocks.{L}.hook_attn_out": _keep(got, L) for L in range(tiny.n_layers)}
        with hooks_context(tiny, hooks), torch.inference_mode():
            tiny.hf(input_ids=torch.tensor([ids]))
        for L in total:
            total[L] += float((got[L][0] @ u).sum())
        n += len(ids)
    for L in total:
        assert per_layer[L] == pytest.approx(total[L] / n, abs=1e-5)


def _keep(store, layer):
    def fn(x):
        store[layer] = x
    return fn


def test_a_planted_head_ranks_first(tiny, prompts):
    u = _unit(tiny.d_model, 1)
    w = o_proj(tiny, 2).weight
    hd = _head_dim(tiny)
    saved = w.detach().clone()
    zs = []
    with hooks_context(tiny, {"blocks.2.attn.o.hook_in": lambda x: zs.append(x[0, 1:])}), \
            torch.inference_mode():
        for ids in prompts:
            tiny.hf(input_ids=torch.tensor([ids]))
    zbar = torch.cat(zs)[:, 3 * hd:4 * hd].mean(0)
    with torch.no_grad():  # head 3 of layer 2 now writes along u in proportion to its mean z
        w[:, 3 * hd:4 * hd] += torch.outer(u, zbar) * (50 / zbar.norm() ** 2)
    try:
        with warnings.catch_warnings():  # no autograd graph behind the scores
            warnings.simplefilter("error")
            top = rank_heads(tiny, prompts, u, spans=[(1, len(p)) for p in prompts])[0]
    finally:
        with torch.no_grad():
            w.copy_(saved)
    assert (top.layer, top.head) == (2, 3)


def test_edit_zeroes_the_edited_heads_and_leaves_the_rest(tiny, prompts):
    u = _unit(tiny.d_model, 2)
    before = {L: o_proj(tiny, L).weight.detach().clone() for L in range(tiny.n_layers)}
    old = {(s.layer, s.head): s.score for s in rank_heads(tiny, prompts, u)}
    heads = [(0, 1), (2, 0), (2, 3)]
    hd = _head_dim(tiny)
    with edit_heads(tiny, heads, u):
        new = {(s.layer, s.head): s.score for s in rank_heads(tiny, prompts, u)}
        for L in range(tiny.n_layers):
            w = o_proj(tiny, L).weight
            for h in range(tiny.n_heads):
                cols = slice(h * hd, (h + 1) * hd)
                if (L, h) in heads:
                    assert (u @ w[:, cols]).abs().max() < 1e-6
                else:
                    assert torch.equal(w[:, cols], before[L][:, cols])
    for key, score in new.items():
        if key in heads:
            assert abs(score) < 1e-6 and abs(old[key]) > 1e-4
        elif key[0] == 0:  # heads before the first edit see identical inputs
            assert score == pytest.approx(old[key], abs=1e-7)
    for L in range(tiny.n_layers):  # reverting restores the weights exactly
        assert torch.equal(o_proj(tiny, L).weight, before[L])


def test_edit_is_reverted_after_an_exception(tiny):
    before = o_proj(tiny, 1).weight.detach().clone()
    with pytest.raises(RuntimeError), edit_heads(tiny, [(1, 2)], _unit(tiny.d_model, 3)):
        assert not torch.equal(o_proj(tiny, 1).weight, before)
        raise RuntimeError("boom")
    assert torch.equal(o_proj(tiny, 1).weight, before)


@pytest.mark.parametrize(("heads", "direction", "match"), [
    ([(9, 0)], torch.ones(64), "out of range"),
    ([(0, 4)], torch.ones(64), "out of range"),
    ([(0, 0)], torch.ones(63), "expected"),
    ([(0, 0)], torch.zeros(64), "zero"),
])
def test_bad_edits_are_rejected(tiny, heads, direction, match):
    with pytest.raises(MechReasonError, match=match):
        edit_heads(tiny, heads, direction)

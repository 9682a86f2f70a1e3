"""Contrast sets from a real capture of the tiny model, checked against its hidden states."""

from __future__ import annotations

import json

import pytest
import torch

from mechreason.activations import ActivationStore, CaptureConfig, capture
from mechreason.directions.contrast import WINDOW, ContrastSpec, build_contrast
from mechreason.directions.sweep import split_by_problem
from mechreason.errors import MechReasonError

N_PROBLEMS = 7
GEN = {  # style -> generated text (sentences split at '. ')
    "cot": ["First add the two numbers together. ", "Wait, check the sum again. ",
            "So the answer is {x}."],
    "direct": ["The answer is {x}."],
}


def _records(tiny):
    recs = []
    for p in range(N_PROBLEMS):
        question = f"What is {p} plus {p + 3}?"
        for style, parts in GEN.items():
            prompt = f"{question} {'Think step by step.' if style == 'cot' else 'Answer only.'}\n"
            pids = tiny.encode(prompt, special=False)
            gids, sents, pos = [], [], len(pids)
            for k, part in enumerate(parts):
                ids = tiny.encode(part.format(x=2 * p + 3), special=False)
                labels = ["backtracking"] if part.startswith("Wait") else ["computation"]
                sents.append({"tok_start": pos, "tok_end": pos + len(ids), "labels": labels,
                              "index": k})
                gids += ids
                pos += len(ids)
            recs.append({"id": f"{p}-{style}", "question": question, "style": style,
                         "correct": p % 2 == 0, "prompt_ids": pids, "generated_ids": gids,
                         "sentences": sents, "answer_tok_start": sents[-1]["tok_start"]})
    return recs


@pytest.fixture(scope="module")
def traces(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("tr") / "traces.jsonl"
    recs = _records(tiny)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path, recs


def _store(tiny, traces, tmp_path_factory, **kw):
    cfg = CaptureConfig(hooks=("blocks.*.hook_resid_post",), dtype="float32", batch_size=4,
                        shard_rows=64, **kw)
    return capture(tiny, traces[0], cfg, tmp_path_factory.mktemp("acts"), progress=False)


@pytest.fixture(scope="module")
def store(tiny, traces, tmp_path_factory):
    return _store(tiny, traces, tmp_path_factory)


@pytest.fixture(scope="module")
def hidden(tiny, traces):
    """Each record's HF hidden states (the oracle), one forward per record."""
    out = {}
    for rec in traces[1]:
        ids = torch.tensor([rec["prompt_ids"] + rec["generated_ids"]])
        with torch.no_grad():
            out[rec["id"]] = [h[0] for h in tiny.hf(ids, output_hidden_states=True).hidden_states]
    return out


def _windows(rec, aggregate):
    p, n = len(rec["prompt_ids"]), len(rec["prompt_ids"]) + len(rec["generated_ids"])
    if aggregate == "first-generated":
        return [range(p, p + 1)]
    if aggregate == "last-prompt":
        return [range(p - 1, p)]
    if aggregate == "reasoning-mean":
        return [range(p, rec["answer_tok_start"])] if rec["answer_tok_start"] > p else []
    if aggregate == "sentence-mean":
        return [range(s["tok_start"], s["tok_end"]) for s in rec["sentences"]]
    return [range(s["tok_start"] + WINDOW[0], min(n, s["tok_start"] + WINDOW[1]))
            for s in rec["sentences"]]


@pytest.mark.parametrize("aggregate", ["first-generated", "last-prompt", "reasoning-mean",
                                       "sentence-mean", "sentence-start"])
@pytest.mark.parametrize("layer", [0, 2])
def test_units_equal_hidden_state_oracle(tiny, traces, store, hidden, aggregate, layer):
    # direct traces have no reasoning tokens (one answer sentence): contrast correctness there
    key = "correct" if aggregate == "reasoning-mean" else "style"
    cs = build_contrast([store], "correct=true:false" if key == "correct" else "style=cot:direct",
                        aggregate)
    a, b = cs.groups(f"blocks.{layer}.hook_resid_post")
    recs = {r["id"]: r for r in traces[1]}
    want_a, want_b = [], []
    for rec in traces[1]:
        hs = hidden[rec["id"]][layer + 1]
        vecs = [hs[list(w)].mean(0) for w in _windows(rec, aggregate)]
        (want_a if rec[key] in ("cot", True) else want_b).extend(vecs)
    assert a.x.shape == (len(want_a), tiny.d_model) and b.x.shape == (len(want_b), tiny.d_model)
    torch.testing.assert_close(a.x, torch.stack(want_a), atol=3e-5, rtol=1e-4)
    torch.testing.assert_close(b.x, torch.stack(want_b), atol=3e-5, rtol=1e-4)
    # vectors are keyed by problem: the question, shared by a problem's cot and direct items
    assert [recs[u.item]["question"] for u in cs.a] == list(a.ids)


def test_sentence_mean_from_mean_store_equals_token_store(tiny, traces, store, tmp_path_factory):
    means = _store(tiny, traces, tmp_path_factory, aggregate="mean")
    hook = "blocks.3.hook_resid_post"
    for spec in ("style=cot:direct", "label=backtracking"):
        got = build_contrast([means], spec, "sentence-mean").groups(hook)
        want = build_contrast([store], spec, "sentence-mean").groups(hook)
        for g, w in zip(got, want):
            torch.testing.assert_close(g.x, w.x, atol=1e-5, rtol=1e-5)
            assert list(g.ids) == list(w.ids)


@pytest.mark.parametrize(("spec", "n_a", "n_b"), [
    ("label=backtracking", N_PROBLEMS, 3 * N_PROBLEMS),
    ("label=backtracking:computation", N_PROBLEMS, 3 * N_PROBLEMS),
    ("correct=true:false", 4 * 4, 3 * 4),
    ("phase=reasoning:answer", 2 * N_PROBLEMS, 2 * N_PROBLEMS),
])
def test_group_sizes(store, spec, n_a, n_b):
    cs = build_contrast([store], spec, "sentence-mean")
    assert (len(cs.a), len(cs.b)) == (n_a, n_b)


def test_length_buckets(store):
    cs = build_contrast([store], "length=long:short", "first-generated")
    assert {u.item.split("-")[1] for u in cs.a} == {"cot"}
    assert {u.item.split("-")[1] for u in cs.b} == {"direct"}


def test_two_stores_combine(tiny, traces, tmp_path_factory):
    """cot and direct captured into separate stores, one problem id across both."""
    recs = traces[1]
    stores = []
    for style in ("cot", "direct"):
        path = tmp_path_factory.mktemp("split") / f"{style}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in recs if r["style"] == style))
        stores.append(_store(tiny, (path,), tmp_path_factory))
    cs = build_contrast(stores, "style=cot:direct", "first-generated")
    one = build_contrast([ActivationStore(stores[0].root), stores[1]], "style=cot:direct",
                         "first-generated")
    assert cs.counts()["A_problems"] == N_PROBLEMS == one.counts()["B_problems"]
    # length terciles are pooled over the stores: cot traces are the long ones
    by_len = build_contrast(stores, "length=long:short", "first-generated")
    assert {u.store for u in by_len.a} == {0} and {u.store for u in by_len.b} == {1}
    a, b = cs.groups("blocks.1.hook_resid_post")
    s = split_by_problem(a.ids, b.ids, test_frac=0.3, seed=0)
    for ids, mask in ((a.ids, s.test_a), (b.ids, s.test_b)):
        assert all((p in s.test_ids) == m for p, m in zip(ids, mask.tolist()))


@pytest.mark.parametrize(("spec", "aggregate", "msg"), [
    ("style=cot:verbose", "first-generated", "group B .* is empty"),
    ("style=terse", "first-generated", "group A .* is empty"),
    ("stlye=cot:direct", "first-generated", "unknown contrast key 'stlye'.*style"),
    ("label=backtracking", "first-generated", "belongs to sentences"),
    ("style=cot:direct", "first-token", "unknown aggregation"),
    ("style", "first-generated", "cannot parse"),
    ("style=cot:cot", "first-generated", "itself"),
])
def test_bad_contrast(store, spec, aggregate, msg):
    with pytest.raises(MechReasonError, match=msg):
        build_contrast([store], spec, aggregate)


def test_store_without_the_positions(tiny, traces, tmp_path_factory):
    last = _store(tiny, traces, tmp_path_factory, positions="last")
    with pytest.raises(MechReasonError, match="first-generated"):
        build_contrast([last], "style=cot:direct", "first-generated")


def test_spec_parse_round_trip():
    for text in ("style=cot:direct", "label=backtracking", "correct=true:false"):
        assert str(ContrastSpec.parse(text)) == text

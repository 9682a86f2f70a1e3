"""Activation capture: values equal the model's own, batching and early stop change
nothing, an interrupted capture resumes with nothing lost or duplicated."""

from __future__ import annotations

import json

import pytest
import torch

from mechreason.activations import ActivationStore, CaptureConfig, capture
from mechreason.errors import MechReasonError

TEXTS = ["Tom has 3 apples.", "x", "The answer is 42. Then some more text follows here.",
         "Seven", "A longer sentence with several words in it, to pad the others."]
ALL_POST = ("blocks.*.hook_resid_post",)


def _cfg(**kw):
    base = dict(hooks=ALL_POST, dtype="float32", batch_size=2, shard_rows=16)
    base.update(kw)
    return CaptureConfig(**base)


def _reference(tiny, text, hook):
    """A hand-written torch hook on the HF block (independent of mechreason's hooks)."""
    layer = int(hook.split(".")[1])
    got = []
    handle = tiny.hf.model.layers[layer].register_forward_hook(lambda _m, _i, out: got.append(out))
    try:
        with torch.no_grad():
            tiny.hf(torch.tensor([tiny.encode(text)]))
    finally:
        handle.remove()
    return got[0][0]


@pytest.mark.parametrize("layer", [0, 2, 3])
def test_values_equal_run_with_cache_and_hf(tiny, tmp_path, layer):
    store = capture(tiny, TEXTS, _cfg(), tmp_path, progress=False)
    hook = f"blocks.{layer}.hook_resid_post"
    for i, text in enumerate(TEXTS):
        got = store.load(hook, store.select(item=str(i)))
        torch.testing.assert_close(got, _reference(tiny, text, hook), atol=2e-5, rtol=1e-4)
    # and the plain HF model's hidden states (no weight processing)
    ids = torch.tensor([tiny.encode(TEXTS[2])])
    with torch.no_grad():
        hs = tiny.hf(ids, output_hidden_states=True).hidden_states
    if layer < tiny.n_layers - 1:  # HF applies the final norm to its last hidden state
        torch.testing.assert_close(store.load(hook, store.select(item="2")), hs[layer + 1][0],
                                   atol=2e-5, rtol=1e-4)


def test_padded_batch_equals_rows_alone(tiny, tmp_path):
    batched = capture(tiny, TEXTS, _cfg(batch_size=5), tmp_path / "b", progress=False)
    for i, text in enumerate(TEXTS):
        alone = capture(tiny, [text], _cfg(batch_size=1), tmp_path / f"a{i}", progress=False)
        torch.testing.assert_close(batched.load("blocks.3.hook_resid_post", batched.select(item=str(i))),
                                   alone.load("blocks.3.hook_resid_post"), atol=1e-5, rtol=1e-5)


def test_early_stop_equals_full_forward(tiny, tmp_path):
    early = capture(tiny, TEXTS, _cfg(hooks=("blocks.1.hook_resid_post",)), tmp_path / "e",
                    progress=False)
    full = capture(tiny, TEXTS, _cfg(hooks=("blocks.1.hook_resid_post", "ln_final.hook_out")),
                   tmp_path / "f", progress=False)
    assert torch.equal(early.load("blocks.1.hook_resid_post"), full.load("blocks.1.hook_resid_post"))


def test_early_stop_skips_later_layers(tiny, tmp_path):
    from mechreason.model.hooks import hooks_context

    fired = []
    with hooks_context(tiny, {"blocks.3.hook_resid_pre": lambda x: fired.append(1)}):
        capture(tiny, TEXTS[:2], _cfg(hooks=("blocks.1.hook_resid_post",)), tmp_path, progress=False)
    assert fired == []


@pytest.mark.parametrize(("positions", "expect"), [("last", lambda n: [n - 1]),
                                                   ((0, -1), lambda n: sorted({0, n - 1}))])
def test_positions(tiny, tmp_path, positions, expect):
    store = capture(tiny, TEXTS, _cfg(positions=positions), tmp_path, progress=False)
    for i, text in enumerate(TEXTS):
        rows = [store.rows[r] for r in store.select(item=str(i))]
        assert [r["pos"] for r in rows] == expect(len(tiny.encode(text)))


def test_mean_aggregate(tiny, tmp_path):
    store = capture(tiny, TEXTS, _cfg(aggregate="mean"), tmp_path, progress=False)
    assert len(store) == len(TEXTS)
    ref = _reference(tiny, TEXTS[4], "blocks.2.hook_resid_post").mean(0)
    torch.testing.assert_close(store.load("blocks.2.hook_resid_post", [4])[0], ref, atol=2e-5, rtol=1e-4)


def _trace(tiny, rid, style):
    prompt = tiny.encode(tiny.format_prompt("What is 2+3?"))
    gen = tiny.encode("First add them. So 2+3=5. The answer is 5.", special=False)
    p = len(prompt)
    sents = [{"idx": 0, "text": "First add them.", "tok_start": p, "tok_end": p + 15, "labels": ["plan_generation"],
              "behaviours": ["adding_knowledge"]},
             {"idx": 1, "text": "So 2+3=5.", "tok_start": p + 16, "tok_end": p + 25, "labels": ["active_computation"]},
             {"idx": 2, "text": "The answer is 5.", "tok_start": p + 26, "tok_end": p + 42, "labels": ["final_answer_emission"]}]
    return {"id": rid, "style": style, "correct": True, "prompt": "...", "prompt_ids": prompt,
            "generated_ids": gen, "generated_text": "...", "sentences": sents,
            "answer_tok_start": p + 26}


def test_trace_records_keyed_by_sentence_and_phase(tiny, tmp_path):
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(_trace(tiny, f"t{i}", s)) + "\n"
                            for i, s in enumerate(["cot", "direct"])))
    store = capture(tiny, path, _cfg(), tmp_path / "acts", progress=False)
    item = store.item("t0")
    p = item["prompt_len"]
    assert item["style"] == "cot" and item["sentence_labels"][1] == ["active_computation"]
    assert item["sentence_behaviours"] == [["adding_knowledge"], [], []]
    rows = {r["pos"]: r for r in store.rows if r["item"] == "t0"}
    assert rows[p - 1]["phase"] == "prompt" and rows[p]["phase"] == "reasoning"
    assert rows[p + 26]["phase"] == "answer" and rows[p + 26]["sentence"] == 2
    assert rows[p + 15]["sentence"] is None and rows[p + 3]["sentence"] == 0
    assert len(store.select(style="direct", phase="answer")) == len(tiny.encode("The answer is 5."))
    rec = json.loads(path.read_text().splitlines()[0])
    assert store.token_ids()["t0"] == rec["prompt_ids"] + rec["generated_ids"]  # the trace's own ids
    assert store.token_ids(tiny, path) == store.token_ids()  # re-reading the input: the same
    with pytest.raises(MechReasonError, match="need the model"):
        store.token_ids(input=path)
    first = capture(tiny, path, _cfg(positions="first-generated"), tmp_path / "fg", progress=False)
    assert [r["pos"] for r in first.rows] == [p, p]
    means = capture(tiny, path, _cfg(aggregate="mean", positions="generated"), tmp_path / "m",
                    progress=False)
    assert [(r["item"], r["sentence"], r["phase"]) for r in means.rows][:3] == [
        ("t0", 0, "reasoning"), ("t0", 1, "reasoning"), ("t0", 2, "answer")]


class _Boom(Exception):
    pass


def test_interrupted_capture_resumes_identically(tiny, tmp_path, monkeypatch):
    import mechreason.activations.run as cap

    texts = [f"Item number {i} says {'la ' * (i % 4)}." for i in range(11)]
    ref = capture(tiny, texts, _cfg(shard_rows=1), tmp_path / "ref", progress=False)
    real = cap._write_shard
    calls = {"n": 0}

    def dying(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise _Boom  # killed while writing the third shard
        return real(*a, **kw)

    monkeypatch.setattr(cap, "_write_shard", dying)
    with pytest.raises(_Boom):
        capture(tiny, texts, _cfg(shard_rows=1), tmp_path / "run", progress=False)
    monkeypatch.setattr(cap, "_write_shard", real)
    assert len(list((tmp_path / "run").glob("shard-*.json"))) == 2
    resumed = capture(tiny, texts, _cfg(shard_rows=1), tmp_path / "run", progress=False)
    assert resumed.rows == ref.rows and resumed.items == ref.items
    for h in ref.hooks:
        assert torch.equal(resumed.load(h), ref.load(h))


def test_orphan_tensor_file_is_discarded(tiny, tmp_path):
    capture(tiny, TEXTS, _cfg(shard_rows=1), tmp_path, progress=False)
    (tmp_path / "shard-00002.json").unlink()
    for p in sorted(tmp_path.glob("shard-*.json"))[2:]:
        p.unlink()
    again = capture(tiny, TEXTS, _cfg(shard_rows=1), tmp_path, progress=False)
    assert [it["item"] for it in again.items] == [str(i) for i in range(len(TEXTS))]


def test_resume_refuses_other_config(tiny, tmp_path):
    capture(tiny, TEXTS, _cfg(), tmp_path, progress=False)
    with pytest.raises(MechReasonError, match=r"capture\.dtype was 'float32', now 'float16'"):
        capture(tiny, TEXTS, _cfg(dtype="float16"), tmp_path, progress=False)
    with pytest.raises(MechReasonError, match="inputs_sha256 was"):  # same ids, other texts
        capture(tiny, [t + "!" for t in TEXTS], _cfg(), tmp_path, progress=False)


def test_shuffled_reader_yields_every_row_once(tiny, tmp_path):
    store = capture(tiny, TEXTS, _cfg(shard_rows=3), tmp_path, progress=False)
    hook = "blocks.0.hook_resid_post"
    batches = list(store.iter_batches(hook, 7, seed=3))
    got = torch.cat(batches)
    assert all(len(b) == 7 for b in batches[:-1])
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(got) == key(store.load(hook))
    assert not torch.equal(got, store.load(hook))  # shuffled
    again = torch.cat(list(store.iter_batches(hook, 7, seed=3)))
    assert torch.equal(got, again)
    sub = torch.cat(list(store.iter_batches(hook, 4, rows=[1, 5, 9])))
    assert key(sub) == key(store.load(hook, [1, 5, 9]))


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(hooks=("blocks.1.hook_resid_pots",)), "did you mean 'blocks.1.hook_resid_post'"),
    (dict(hooks=("blocks.9.hook_resid_post",)), r"layers 0\.\.3"),
    (dict(positions="first-generated"), "need trace records"),
    (dict(positions=(99,)), "out of range"),
])
def test_bad_config_errors(tiny, tmp_path, kwargs, match):
    with pytest.raises(MechReasonError, match=match):
        capture(tiny, TEXTS, _cfg(**kwargs), tmp_path, progress=False)
    assert not list(tmp_path.glob("shard-*"))


def test_bad_inputs(tiny, tmp_path):
    with pytest.raises(MechReasonError, match="empty"):
        capture(tiny, [], _cfg(), tmp_path / "a", progress=False)
    with pytest.raises(MechReasonError, match="no such file"):
        capture(tiny, tmp_path / "missing.jsonl", _cfg(), tmp_path / "b", progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(MechReasonError, match=r"bad.jsonl:2"):
        capture(tiny, bad, _cfg(), tmp_path / "c", progress=False)
    with pytest.raises(MechReasonError, match="positions mode"):
        CaptureConfig(hooks=ALL_POST, positions="frist")
    with pytest.raises(MechReasonError, match="not a capture directory"):
        ActivationStore(tmp_path)


def test_cli_capture(tiny, tmp_path, capsys):
    from mechreason.cli import main

    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    rc = main(["capture", "--model", "tiny-random", "--input", str(src), "--hooks",
               "blocks.1.hook_resid_post,blocks.2.hook_mlp_out", "--positions", "last",
               "--out", str(tmp_path / "o")])
    assert rc == 0
    store = ActivationStore(tmp_path / "o")
    assert len(store) == len(TEXTS) and store.hooks == ["blocks.1.hook_resid_post", "blocks.2.hook_mlp_out"]
    assert main(["capture", "--model", "tiny-random", "--input", str(src), "--hooks",
                 "blocks.1.hook_resid_pots", "--out", str(tmp_path / "p")]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_artifacts_get_normal_permissions(tmp_path):
    import os
    import stat

    from mechreason.artifacts import write_json

    write_json(tmp_path / "x.json", {"a": 1})
    mode = stat.S_IMODE(os.stat(tmp_path / "x.json").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # as open() would make it, not mkstemp's 0600

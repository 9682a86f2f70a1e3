"""Trace records: schema, exact sentence spans and phases, append-as-finished, resume
after a crash, statistics, and the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from mechreason.cli import main
from mechreason.errors import MechReasonError
from mechreason.model.generation import Generation, SamplingConfig, iter_generate
from mechreason.traces.labels import RuleLabeller
from mechreason.traces.run import (
    append_record,
    build_record,
    read_traces,
    run_traces,
    summarize,
    wilson,
)
from mechreason.traces.tasks import Problem, make_problems

CFG = SamplingConfig(max_new_tokens=6, batch_size=2)
MATH_SAMPLE = Path(__file__).parent / "data" / "math_sample.jsonl"


class Counting:
    """A real generator that counts prompts and can crash after ``crash_after`` items."""

    def __init__(self, crash_after: int | None = None) -> None:
        self.seen = 0
        self.crash_after = crash_after

    def __call__(self, *args, **kw):
        for item in iter_generate(*args, **kw):
            if self.crash_after is not None and self.seen == self.crash_after:
                raise RuntimeError("simulated crash")
            self.seen += 1
            yield item


def test_record_schema_and_spans(tiny, tmp_path: Path) -> None:
    problems = make_problems("arithmetic", 3, seed=0)
    recs = run_traces(tiny, problems, tmp_path / "t.jsonl", style="cot", sampling=CFG)
    assert [r["problem_id"] for r in recs] == [p.id for p in problems]
    for r, p in zip(recs, problems):
        assert r["prompt_len"] == len(r["prompt_ids"]) == r["n_prompt_tokens"]
        assert r["n_generated_tokens"] == len(r["generated_ids"]) <= CFG.max_new_tokens
        assert r["gold"] == p.gold and r["difficulty"] == p.difficulty
        assert tiny.tokenizer.decode(r["generated_ids"]) == r["generated_text"]
        assert r["correct"] in (True, False, None) and (r["correct"] is None) == (r["answer"] is None)
        for s in r["sentences"]:
            assert r["generated_text"][s["char_start"]:s["char_end"]] == s["text"]
            assert s["tok_start"] >= r["prompt_len"]
    on_disk = read_traces(tmp_path / "t.jsonl")  # in finishing order
    assert sorted(on_disk, key=lambda r: r["id"]) == sorted(recs, key=lambda r: r["id"])


def test_planted_trace_answer_phase(tiny) -> None:
    text = "Sam has 5 apples. So 5 + 3 = 8 apples.\n\nThe answer is 8."
    ids = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    prompt_ids = [1, 2, 3, 4, 5]
    prob = Problem(id="p1", task="arithmetic", question="q", gold="8", difficulty=1)
    rec = build_record(tiny, prob, "cot", "prompt", prompt_ids, Generation(ids, text, "eos"), CFG,
                       seed=0, labeller=RuleLabeller())
    assert (rec["answer"], rec["correct"], rec["answer_method"]) == ("8", True, "answer_is")
    sents = rec["sentences"]
    assert [s["text"] for s in sents] == ["Sam has 5 apples.", "So 5 + 3 = 8 apples.",
                                          "The answer is 8."]
    # Byte tokenizer: token positions are character positions shifted by the prompt.
    assert [(s["tok_start"], s["tok_end"]) for s in sents] == [
        (5 + s["char_start"], 5 + s["char_end"]) for s in sents]
    assert rec["answer_tok_start"] == sents[2]["tok_start"]
    assert "final_answer_emission" in sents[2]["labels"]
    assert "active_computation" in sents[1]["labels"]
    assert sents[0]["labels"][0] == "problem_setup"
    wrong = build_record(tiny, Problem(id="p2", task="arithmetic", question="q", gold="9"),
                         "cot", "prompt", prompt_ids, Generation(ids, text, "eos"), CFG, seed=0,
                         labeller=RuleLabeller())
    assert wrong["correct"] is False
    blank = build_record(tiny, prob, "cot", "p", prompt_ids, Generation([], "", "eos"), CFG,
                         seed=0, labeller=RuleLabeller())
    assert (blank["answer"], blank["correct"], blank["answer_tok_start"], blank["sentences"]) == (
        None, None, None, [])


def test_resume_after_crash(tiny, tmp_path: Path) -> None:
    problems = make_problems("arithmetic", 5, seed=2)
    out = tmp_path / "crash.jsonl"
    crashing = Counting(crash_after=3)
    with pytest.raises(RuntimeError, match="simulated"):
        run_traces(tiny, problems, out, style="direct", sampling=CFG, generate_fn=crashing)
    assert len(read_traces(out)) == 3  # what finished before the crash is on disk
    # A half-written line from the crash must not break the resume.
    with out.open("a") as f:
        f.write('{"id": "half-writ')
    again = Counting()
    recs = run_traces(tiny, problems, out, style="direct", sampling=CFG, generate_fn=again)
    assert again.seen == 2  # only the unfinished ones ran
    assert len(read_traces(out)) == 5 and len({r["id"] for r in read_traces(out)}) == 5
    clean = run_traces(tiny, problems, tmp_path / "clean.jsonl", style="direct", sampling=CFG)
    assert [r["generated_ids"] for r in recs] == [r["generated_ids"] for r in clean]
    third = Counting()
    run_traces(tiny, problems, out, style="direct", sampling=CFG, generate_fn=third)
    assert third.seen == 0
    # Another style is another trace of the same problem.
    run_traces(tiny, problems[:2], out, style="cot", sampling=CFG)
    assert len(read_traces(out)) == 7
    # Other settings into the same file would mix two runs: refused before any work.
    longer = replace(CFG, max_new_tokens=CFG.max_new_tokens + 1)
    fourth = Counting()
    with pytest.raises(MechReasonError, match=r"max_new_tokens .* resuming would mix"):
        run_traces(tiny, problems, out, style="direct", sampling=longer, generate_fn=fourth)
    assert fourth.seen == 0 and len(read_traces(out)) == 7
    # Records from other weights are refused too.
    lines = out.read_text().splitlines()
    out.write_text("\n".join(line.replace(tiny.weights_hash, "0" * 16) for line in lines) + "\n")
    with pytest.raises(MechReasonError, match="other weights"):
        run_traces(tiny, problems, out, style="direct", sampling=CFG)


def test_read_traces_errors(tmp_path: Path) -> None:
    with pytest.raises(MechReasonError, match="does not exist"):
        read_traces(tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(MechReasonError, match=":2:"):
        read_traces(bad)
    ok = tmp_path / "ok.jsonl"
    append_record(ok, {"id": "a"})
    ok.write_text(ok.read_text() + '{"id": "tr')
    append_record(ok, {"id": "b"})
    assert [r["id"] for r in read_traces(ok)] == ["a", "b"]


@pytest.mark.parametrize(("k", "n", "lo", "hi"), [
    (0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0), (1, 50, 0.0035, 0.1050)])
def test_wilson_known_values(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_summarize_planted() -> None:
    def rec(style, d, correct, answer, beh):
        return {"style": style, "difficulty": d, "correct": correct, "answer": answer,
                "n_generated_tokens": 10, "sentences": [
                    {"labels": ["active_computation"], "behaviours": beh},
                    {"labels": [], "behaviours": []}]}

    rows = summarize([rec("cot", 1, True, "1", ["backtracking"]), rec("cot", 1, None, None, []),
                      rec("cot", 2, False, "3", []), rec("direct", 1, True, "1", [])])
    first = rows[0]
    assert (first["style"], first["difficulty"], first["n"], first["correct"]) == ("cot", 1, 2, 1)
    assert first["accuracy"] == 0.5 and first["parse_rate"] == 0.5
    assert first["beh:backtracking"] == 0.25 and first["backtracking_traces"] == 0.5
    assert first["tag:active_computation"] == 0.5 and first["mean_sentences"] == 2
    assert [(r["style"], r["difficulty"]) for r in rows] == [("cot", 1), ("cot", 2), ("direct", 1)]


@pytest.mark.parametrize(("task", "extra"), [
    ("arithmetic", ["--difficulty", "2"]), ("math", ["--data-file", str(MATH_SAMPLE)])])
def test_cli(tmp_path: Path, capsys, task: str, extra: list[str]) -> None:
    out = tmp_path / "cli.jsonl"
    argv = ["traces", "--model", "tiny-random", "--task", task, "--n", "3", "--style", "cot",
            "--out", str(out), "--max-new-tokens", "5", "--device", "cpu", *extra]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "3 traces" in printed and "acc [95% CI]" in printed
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 3 and {r["task"] for r in recs} == {task}


def test_cli_bad_input(tmp_path: Path, capsys) -> None:
    argv = ["traces", "--model", "tiny-random", "--task", "arithmetic", "--style", "cott",
            "--out", str(tmp_path / "x.jsonl")]
    assert main(argv) == 2
    assert "did you mean 'cot'" in capsys.readouterr().err


def test_traces_feed_capture(tiny, tmp_path: Path) -> None:
    from mechreason.activations import CaptureConfig, capture
    from mechreason.traces.sentences import phase_of

    text = "Sam has 5 apples. So 5 + 3 = 8 apples.\n\nThe answer is 8."
    ids = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    prob = Problem(id="p1", task="arithmetic", question="Sam has 5 apples.", gold="8")
    prompt = "Q: Sam has 5 apples and buys 3.\n"
    rec = build_record(tiny, prob, "cot", prompt, tiny.encode(prompt), Generation(ids, text, "eos"),
                       CFG, seed=0, labeller=RuleLabeller())
    path = tmp_path / "traces.jsonl"
    append_record(path, rec)
    store = capture(tiny, path, CaptureConfig(hooks=("blocks.1.hook_resid_post",)),
                    tmp_path / "cap")
    rows = store.rows
    assert len(rows) == rec["prompt_len"] + len(ids)
    for row in rows:
        assert row["phase"] == phase_of(row["pos"], rec["prompt_len"], rec["answer_tok_start"])
        owner = [s["idx"] for s in rec["sentences"] if s["tok_start"] <= row["pos"] < s["tok_end"]]
        assert row["sentence"] == (owner[0] if owner else None)
    assert {r["phase"] for r in rows} == {"prompt", "reasoning", "answer"}


def test_relabel_matches_fresh_labels(tiny) -> None:
    from mechreason.traces.run import relabel

    text = "Wait, 5 + 3 = 8. The answer is 8."
    ids = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    prob = Problem(id="p", task="arithmetic", question="q", gold="8")
    rec = build_record(tiny, prob, "cot", "p", [1, 2], Generation(ids, text, "eos"), CFG, seed=0,
                       labeller=RuleLabeller())
    stale = {**rec, "sentences": [{**s, "labels": [], "behaviours": []} for s in rec["sentences"]]}
    (fresh,) = relabel([stale], RuleLabeller())
    assert fresh == rec
    assert fresh["sentences"][0]["behaviours"] == ["backtracking"]

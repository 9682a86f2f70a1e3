"""Traces: the model's own reasoning on problems, one JSONL record per trace.

:func:`run_traces` renders each problem in a prompt style, generates through the one
black-box interface (:mod:`mechreason.model.generation`), grades the answer, splits the text
into Thought Anchors sentences (Bogdan et al. 2025) with exact token spans, labels them
(function tags, Venhoff behaviours) and appends the record to the JSONL file as soon as
its batch finishes (flushed and fsynced), so a crash loses at most the batch in flight;
a re-run skips ids already in the file. The schema is in docs/traces.md;
:func:`summarize` gives accuracy (Wilson interval), parse rate, lengths, label fractions
and backtracking rate per style and difficulty.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechreason.errors import MechReasonError
from mechreason.model.generation import Generation, SamplingConfig, iter_generate
from mechreason.progress import bar
from mechreason.stats import wilson
from mechreason.traces.grading import extract, grade
from mechreason.traces.labels import BEHAVIOURS, FUNCTION_TAGS, Labeller, RuleLabeller, behaviours
from mechreason.traces.prompts import get_style, render_prompt, stop_strings
from mechreason.traces.sentences import decode_offsets, sentence_spans

if TYPE_CHECKING:
    from mechreason.model.loading import Model
    from mechreason.traces.tasks import Problem

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
GenerateFn = Callable[..., Iterator[tuple[int, Generation]]]
"""``(model, prompt_ids, cfg, *, seeds, progress) -> iterator of (index, Generation)``."""


def trace_id(problem_id: str, style: str, cfg: SamplingConfig) -> str:
    """A record's id: unique per problem, style and (when sampling) seed."""
    tid = f"{problem_id}:{style}"
    return tid + (f":t{cfg.temperature:g}:s{cfg.seed}" if cfg.temperature > 0 else "")


def row_seed(problem_id: str, seed: int) -> int:
    """The sampling seed of one problem: fixed by its id and the base seed, so it does
    not depend on batch composition or on which items a resumed run still has."""
    return (seed * 1_000_003 + zlib.crc32(problem_id.encode())) % (2**63)


def run_traces(model: Model, problems: Sequence[Problem], out: str | os.PathLike[str], *,
               style: str, sampling: SamplingConfig, labeller: Labeller | None = None,
               keep_tail: bool = True, progress: bool = False,
               generate_fn: GenerateFn = iter_generate) -> list[dict[str, Any]]:
    """Generate, grade, split and label traces, appending each to ``out`` (JSONL).

    Problems whose trace id is already in ``out`` are skipped. Returns every record in
    ``out`` for these problems (old and new), in problem order.
    """
    from mechreason.outputs import check_out_file, output_lock

    path = check_out_file(out)
    with output_lock(path, is_dir=False):
        return _run_traces(model, problems, path, style=style, sampling=sampling,
                           labeller=labeller, keep_tail=keep_tail, progress=progress,
                           generate_fn=generate_fn)


def _run_traces(model: Model, problems: Sequence[Problem], path: Path, *, style: str,
                sampling: SamplingConfig, labeller: Labeller | None, keep_tail: bool,
                progress: bool, generate_fn: GenerateFn) -> list[dict[str, Any]]:
    st = get_style(style)
    lab: Labeller = labeller or RuleLabeller()
    done = {r["id"]: r for r in read_traces(path)} if path.exists() else {}
    ids = [trace_id(p.id, st.name, sampling) for p in problems]
    if len(set(ids)) != len(ids):
        raise MechReasonError("problem ids repeat; each trace needs a unique id")
    _check_resumable(path, [done[t] for t in ids if t in done], model, sampling)
    _check_same_problems(path, done, ids, problems)
    todo = [k for k, tid in enumerate(ids) if tid not in done]
    log.info("%d of %d traces already in %s; generating %d", len(ids) - len(todo), len(ids),
             path, len(todo))
    # the generator's own bar stays off: this one counts the same items, nested in the
    # process's display (mechreason.progress)
    with bar(f"generate {st.name}", len(todo), unit="seq", enabled=progress) as shown:
        for rec in iter_records(model, [problems[k] for k in todo], style=st.name,
                                sampling=sampling, labeller=lab, keep_tail=keep_tail,
                                generate_fn=generate_fn, on_item=shown.update):
            append_record(path, rec)
            done[rec["id"]] = rec
    return [done[t] for t in ids if t in done]


def iter_records(model: Model, problems: Sequence[Problem], *, style: str,
                 sampling: SamplingConfig, labeller: Labeller, keep_tail: bool = True,
                 generate_fn: GenerateFn = iter_generate,
                 on_item: Callable[[], object] | None = None) -> Iterator[dict[str, Any]]:
    """Generate, grade, split and label the traces of ``problems``, yielding each record
    as its batch finishes (nothing is written: :func:`run_traces` and the Ray workers of
    :mod:`mechreason.scale` write them). A record depends only on its problem, style,
    sampling and the model (its seed is :func:`row_seed`), never on which problems share
    the call."""
    st = get_style(style)
    cfg = sampling
    if not cfg.stop and stop_strings(model, st):
        from dataclasses import replace

        cfg = replace(cfg, stop=stop_strings(model, st))
    prompts = [render_prompt(model, p, st) for p in problems]
    prompt_ids = [model.encode(p) for p in prompts]
    seeds = [row_seed(p.id, cfg.seed) for p in problems]
    for j, gen in generate_fn(model, prompt_ids, cfg, seeds=seeds, progress=False):
        if on_item is not None:
            on_item()
        try:
            rec = build_record(model, problems[j], st.name, prompts[j], prompt_ids[j], gen,
                               cfg, seed=seeds[j], labeller=labeller, keep_tail=keep_tail)
        except Exception:  # one bad item must not lose the batch; a re-run retries it
            log.exception("could not build the record of %s; skipped",
                          trace_id(problems[j].id, st.name, sampling))
            continue
        yield rec


def _check_resumable(path: Path, old: Sequence[dict[str, Any]], model: Model,
                     sampling: SamplingConfig) -> None:
    """Refuse to resume from records made by other weights or another sampling setup
    (they would be returned as if they were this run's)."""
    want = {"temperature": sampling.temperature, "top_p": sampling.top_p,
            "max_new_tokens": sampling.max_new_tokens}
    for r in old:
        got = r.get("sampling") or {}
        diff = [f"{k} {got[k]!r} (now {v!r})" for k, v in want.items() if k in got and got[k] != v]
        if r.get("weights_hash") and model.weights_hash and r["weights_hash"] != model.weights_hash:
            diff.append(f"model {r.get('model')!r} with other weights (now {model.name!r})")
        if diff:
            raise MechReasonError(
                f"{str(path)!r} already holds trace {r['id']!r}, generated with {', '.join(diff)}; "
                "resuming would mix the two runs: write to another file or delete this one")


def _check_same_problems(path: Path, done: dict[str, dict[str, Any]], ids: list[str],
                         problems: Sequence[Problem]) -> None:
    """Refuse to resume when a finished trace id now names another problem (a changed
    data file or task generator): its record answers a different question."""
    for tid, p in zip(ids, problems):
        old = done.get(tid)
        if old is not None and (old.get("question"), old.get("gold")) != (p.question, p.gold):
            raise MechReasonError(
                f"{str(path)!r} already holds trace {tid!r} for another problem (question "
                f"{str(old.get('question'))[:40]!r}, now {p.question[:40]!r}); resuming would "
                "mix the two: write to another file or delete this one")


def build_record(model: Model, problem: Problem, style: str, prompt: str, prompt_ids: list[int],
                 gen: Generation, cfg: SamplingConfig, *, seed: int, labeller: Labeller,
                 keep_tail: bool = True) -> dict[str, Any]:
    """One trace record (schema in docs/traces.md)."""
    text, offsets = decode_offsets(model.tokenizer, gen.ids)
    assert text == gen.text, "generation text must be the decode of its ids"
    prompt_len = len(prompt_ids)
    spans = sentence_spans(text, offsets, prompt_len=prompt_len, keep_tail=keep_tail)
    tags = labeller.label([s.text for s in spans], question=problem.question)
    found = extract(text)
    answer = found.answer if found else None
    answer_tok_start = None
    if found is not None and gen.ids:
        holder = next((s for s in spans if s.char_end > found.start), None)
        answer_tok_start = (holder.tok_start if holder is not None else prompt_len + next(
            (k for k, (_, e) in enumerate(offsets) if e > found.start), len(offsets) - 1))
    return {
        "schema": SCHEMA_VERSION,
        "id": trace_id(problem.id, style, cfg), "problem_id": problem.id,
        "task": problem.task, "difficulty": problem.difficulty, "question": problem.question,
        "gold": problem.gold, "style": style, "model": model.name,
        "weights_hash": model.weights_hash,
        "prompt": prompt, "prompt_ids": list(prompt_ids), "prompt_len": prompt_len,
        "generated_text": text, "generated_ids": list(gen.ids),
        "n_prompt_tokens": prompt_len, "n_generated_tokens": len(gen.ids),
        "finish_reason": gen.finish_reason,
        "answer": answer, "answer_method": found.method if found else None,
        "correct": grade(answer, problem.gold),
        "answer_tok_start": answer_tok_start,
        "sentences": [{"idx": s.idx, "text": s.text, "char_start": s.char_start,
                       "char_end": s.char_end, "tok_start": s.tok_start, "tok_end": s.tok_end,
                       "labels": t, "behaviours": behaviours(s.text)}
                      for s, t in zip(spans, tags)],
        "n_sentences": len(spans), "labeller": getattr(labeller, "name", "custom"),
        "seed": seed,
        "sampling": {"temperature": cfg.temperature, "top_p": cfg.top_p,
                     "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed,
                     "stop": list(cfg.stop)},
        "meta": {k: v for k, v in problem.meta.items() if k != "solution"},
    }


def relabel(records: Iterable[dict[str, Any]], labeller: Labeller) -> list[dict[str, Any]]:
    """Copies of ``records`` with every sentence's labels and behaviours recomputed
    (labels are a function of the sentence text, so traces need not be regenerated)."""
    out = []
    for r in records:
        sents = r["sentences"]
        tags = labeller.label([s["text"] for s in sents], question=r.get("question", ""))
        new = [{**s, "labels": t, "behaviours": behaviours(s["text"])}
               for s, t in zip(sents, tags)]
        out.append({**r, "sentences": new, "labeller": getattr(labeller, "name", "custom")})
    return out


# ---------------------------------------------------------------- JSONL I/O

def append_record(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one record as a line, flushed and fsynced (a crash keeps earlier lines)."""
    from mechreason.outputs import disk_errors

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    _repair_tail(p)
    size = p.stat().st_size if p.exists() else 0
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    with disk_errors(p):
        try:
            with p.open("ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            with p.open("r+b") as f:  # no half line left behind (a full disk, Ctrl-C)
                f.truncate(size)
            raise


def _repair_tail(p: Path) -> None:
    """Drop a half-written last line (a crash mid-write) before appending."""
    if not p.exists() or p.stat().st_size == 0:
        return
    data = p.read_bytes()
    if data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    log.warning("dropping a half-written last line of %s", p)
    with p.open("r+b") as f:
        f.truncate(cut)


def write_traces(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> None:
    """Write records as a new JSONL file, atomically."""
    from mechreason.artifacts import atomic_path

    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_traces(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of a traces JSONL. A half-written last line (a crash) is skipped;
    a malformed line elsewhere, a missing file or an empty file raises."""
    from mechreason.artifacts import read_text

    p = Path(path)
    if not p.is_file():
        raise MechReasonError(f"traces file {str(p)!r} does not exist")
    lines = read_text(p, "traces file").split("\n")
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if n == len(lines):  # unterminated last line: a crash mid-write
                log.warning("skipping a half-written last line of %s", p)
                continue
            raise MechReasonError(f"{p}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict) or "id" not in rec:
            raise MechReasonError(f"{p}:{n}: not a trace record (needs an object with 'id')")
        out.append(rec)
    return out


# ---------------------------------------------------------------- statistics


def summarize(records: Iterable[dict[str, Any]],
              by: Sequence[str] = ("style", "difficulty")) -> list[dict[str, Any]]:
    """Per group: n, accuracy (unparsed count as wrong) with a Wilson 95% interval,
    parse rate, mean generated tokens and sentences, the fraction of sentences carrying
    each function tag and behaviour, and the fraction of traces that backtrack."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[tuple(r.get(k) for k in by)].append(r)
    rows = []
    for key in sorted(groups, key=lambda t: tuple(str(x) for x in t)):
        rs = groups[key]
        n, k = len(rs), sum(r["correct"] is True for r in rs)
        lo, hi = wilson(k, n)
        sents = [s for r in rs for s in r["sentences"]]
        ns = max(len(sents), 1)
        row: dict[str, Any] = dict(zip(by, key))
        row.update(n=n, correct=k, accuracy=k / n, ci_low=lo, ci_high=hi,
                   parse_rate=sum(r["answer"] is not None for r in rs) / n,
                   mean_tokens=sum(r["n_generated_tokens"] for r in rs) / n,
                   mean_sentences=len(sents) / n,
                   backtracking_traces=sum(any("backtracking" in s["behaviours"]
                                               for s in r["sentences"]) for r in rs) / n)
        row.update({f"tag:{t}": sum(t in s["labels"] for s in sents) / ns for t in FUNCTION_TAGS})
        row.update({f"beh:{b}": sum(b in s["behaviours"] for s in sents) / ns for b in BEHAVIOURS})
        rows.append(row)
    return rows

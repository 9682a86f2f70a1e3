"""Thought anchors, stage 1: black-box resampling of every sentence of a trace
(Bogdan, Macar, Nanda, Conmy 2025, "Thought Anchors", section 3).

For each sentence i, R rollouts regenerate from the prefix before it (the trace's
tokens up to the sentence's ``tok_start``: sliced by token span, never by string
replacement), and R forced-answer rollouts append a fixed answer cue to each prefix
0..N. Rollouts run through :mod:`mechreason.anchors.rollouts` (one shared prefill,
batches mixing chunks, early stop once the answer is out), are graded, and are
appended to ``rollouts.jsonl`` as each finishes; a re-run reads the file and runs only
what is missing. :mod:`mechreason.anchors.importance` turns them into the metrics.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechreason.anchors.embed import Embedder, Extractor, Grader, default_answer_fns
from mechreason.anchors.importance import Importance, Rollout, compute_importance
from mechreason.anchors.rollouts import Job, backend_rollouts, batched_rollouts, rollout_seed
from mechreason.anchors.trace import AnchorTrace
from mechreason.artifacts import RESAMPLE_CFG_JSON, RESAMPLING_JSON, ROLLOUTS_JSONL
from mechreason.errors import MechReasonError
from mechreason.model.engine import SamplingConfig
from mechreason.progress import bar
from mechreason.traces.sentences import split_sentences

if TYPE_CHECKING:
    from mechreason.anchors.adaptive import AdaptiveConfig
    from mechreason.backends.base import GenerationBackend

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResampleConfig:
    """Black-box resampling settings (Thought Anchors defaults where it has them)."""

    rollouts: int = 16
    """Rollouts per sentence (R)."""
    temperature: float = 0.6
    """Sampling temperature."""
    top_p: float = 0.95
    """Nucleus sampling mass."""
    max_new_tokens: int = 256
    """Length cap of a resampled rollout."""
    forced: bool = True
    """Also run forced-answer rollouts (R per prefix 0..N)."""
    force_text: str = "\nTherefore, the final answer is \\boxed{"
    """Appended after the prefix to force the answer."""
    forced_max_tokens: int = 12
    """Length cap of a forced answer (after ``force_text``)."""
    stop_at_answer: bool = True
    """End a rollout once its answer is out (a closing ``}`` or newline after an answer)."""
    batch_size: int = 32
    """Rollouts per batch (rows of several chunks share a batch)."""
    seed: int = 0
    """Base seed; each rollout's generator is seeded from (seed, kind, chunk, index)."""
    similarity: float = 0.8
    """Cosine threshold: a first sentence below it is a different trajectory."""
    kl_epsilon: float = 1e-9
    """Additive smoothing of answer distributions in KL."""

    def __post_init__(self) -> None:
        for name in ("rollouts", "max_new_tokens", "forced_max_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise MechReasonError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not -1 <= self.similarity <= 1:
            raise MechReasonError(f"similarity must be in [-1, 1], got {self.similarity}")
        if self.kl_epsilon <= 0:
            raise MechReasonError(f"kl_epsilon must be > 0, got {self.kl_epsilon}")
        if not self.temperature > 0:  # greedy rollouts would all be the same
            raise MechReasonError(f"resampling needs temperature > 0, got {self.temperature}")
        _ = self.sampling  # building it validates temperature, top_p and max_new_tokens

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens)


# Fields that change rollouts: a resumed run must agree on them.
_ROLLOUT_FIELDS = ("temperature", "top_p", "max_new_tokens", "force_text", "forced_max_tokens",
                   "stop_at_answer", "seed")


def make_jobs(model, trace: AnchorTrace, cfg: ResampleConfig) -> list[Job]:
    """Every rollout of a full analysis: R per sentence, R forced per prefix 0..N."""
    jobs = [Job(f"resample/{i}/{r}", trace.spans[i][0], rollout_seed(cfg.seed, "resample", i, r))
            for i in range(trace.n) for r in range(cfg.rollouts)]
    if cfg.forced:
        force = tuple(model.encode(cfg.force_text, special=False))
        ends = [a for a, _ in trace.spans] + [trace.spans[-1][1]]
        jobs += [Job(f"forced/{i}/{r}", ends[i], rollout_seed(cfg.seed, "forced", i, r), force,
                     len(force) + cfg.forced_max_tokens)
                 for i in range(trace.n + 1) for r in range(cfg.rollouts)]
    return jobs


def answer_stop(model, stated=None):
    """A stop predicate: the new text ends with ``}`` or a newline and states its final
    answer (``stated(text)``, default :func:`~mechreason.anchors.embed.final_answer_stated`)."""
    if stated is None:
        from mechreason.anchors.embed import final_answer_stated as stated
    pieces: dict[int, str] = {}

    def piece(t: int) -> str:
        if t not in pieces:
            pieces[t] = model.tokenizer.decode([t])
        return pieces[t]

    def stop(job: Job, toks: list[int]) -> bool:
        p = piece(toks[-1])
        if "}" not in p and "\n" not in p:
            return False
        if job.forced:
            return "}" in p
        return bool(stated(model.tokenizer.decode(toks, skip_special_tokens=True)))

    return stop


def read_rollouts(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Records of a rollouts file by key; a torn last line (a crash mid-write) is skipped."""
    out: dict[str, dict[str, Any]] = {}
    p = Path(path)
    if not p.is_file():
        return out
    for line in p.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        out[rec["key"]] = rec
    return out


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line left unfinished by a crash, so appending starts a fresh line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _check_resume(out_dir: Path, cfg: ResampleConfig, trace: AnchorTrace, backend: str) -> None:
    path = out_dir / RESAMPLE_CFG_JSON
    want = {k: getattr(cfg, k) for k in _ROLLOUT_FIELDS} | {"trace_ids_len": len(trace.ids),
                                                            "trace_id": trace.id}
    if backend != "engine":  # files written before backends existed are the engine's
        want["backend"] = backend
    if path.is_file():
        have = json.loads(path.read_text())
        diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
        if have.get("backend", "engine") != backend:
            diff["backend"] = (have.get("backend", "engine"), backend)
        if diff:
            raise MechReasonError(
                f"{out_dir} holds rollouts made with other settings {diff} (was, now); "
                "use another --out or delete it")
    else:
        from mechreason.artifacts import write_json

        write_json(path, want)


Emit = Callable[[dict[str, Any]], None]
Runner = Callable[[AnchorTrace, ResampleConfig, list[Job], Emit], None]
"""``runner(trace, cfg, jobs, emit)``: run ``jobs`` and pass each graded record to ``emit``
(in this process: :func:`local_runner`; over Ray workers:
:class:`mechreason.scale.rollouts.RayRunner`). A runner whose rollouts come from another
backend than our engine says so in a ``backend_name`` attribute (the resume check
records it)."""


def local_runner(model, *, extract: Extractor, grade: Grader,
                 backend: GenerationBackend | None = None) -> Runner:
    """Rollouts in this process: the prefix-cached batched sampler on ``model``, or a
    black-box generation ``backend`` (e.g. vLLM)."""
    def run(trace: AnchorTrace, cfg: ResampleConfig, jobs: list[Job], emit: Emit) -> None:
        for rec in rollout_records(model, trace, cfg, jobs, extract=extract, grade=grade,
                                   backend=backend):
            emit(rec)
    return run


def rollout_records(model, trace: AnchorTrace, cfg: ResampleConfig, jobs: Sequence[Job], *,
                    extract: Extractor, grade: Grader,
                    backend: GenerationBackend | None = None) -> Iterator[dict[str, Any]]:
    """Run ``jobs`` over ``trace`` (our engine, or ``backend``) and yield each graded
    record as it finishes."""
    stop = answer_stop(model) if cfg.stop_at_answer else None
    runs = (batched_rollouts(model, trace.ids, jobs, cfg.sampling, batch_size=cfg.batch_size,
                             stop=stop) if backend is None
            else backend_rollouts(model, backend, trace.ids, jobs, cfg.sampling, stop=stop))
    for job, toks in runs:
        yield grade_rollout(model, trace, job, toks, extract, grade)


def run_rollouts(model, trace: AnchorTrace, cfg: ResampleConfig, out_dir: str | os.PathLike[str],
                 *, extract: Extractor, grade: Grader, progress: bool = False,
                 jobs: Sequence[Job] | None = None, runner: Runner | None = None,
                 backend: GenerationBackend | None = None) -> dict[str, dict]:
    """Run every missing rollout of ``jobs`` (default: all of :func:`make_jobs`),
    appending each graded record to ``out_dir/rollouts.jsonl`` as it finishes, once per
    key; return all records of the file by key. ``runner`` runs them elsewhere (Ray
    workers); ``backend``, a black-box generation backend (e.g. vLLM) for this process.
    A directory's rollouts all come from one backend (a resume on another is refused)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = (backend.name if backend is not None
              else getattr(runner, "backend_name", "engine"))  # a Ray runner's workers' backend
    _check_resume(out, cfg, trace, source)
    path = out / ROLLOUTS_JSONL
    _drop_torn_tail(path)
    done = read_rollouts(path)
    want = make_jobs(model, trace, cfg) if jobs is None else jobs
    todo = [j for j in want if j.key not in done]
    log.info("%d rollouts done, %d to run", len(done), len(todo))
    if not todo:
        return done
    run = runner or local_runner(model, extract=extract, grade=grade, backend=backend)
    with open(path, "a") as f, bar("rollouts", len(todo), unit="rollout",
                                   enabled=progress) as shown:
        def emit(rec: dict[str, Any]) -> None:
            if rec["key"] in done:  # a shard re-run after a worker died: written once
                return
            f.write(json.dumps(rec) + "\n")
            f.flush()
            done[rec["key"]] = rec
            shown.update()

        run(trace, cfg, todo, emit)
    return done


def grade_rollout(model, trace: AnchorTrace, job: Job, toks: list[int], extract: Extractor,
                  grade: Grader) -> dict[str, Any]:
    """One rollout's record: its tokens, text, extracted answer and grade."""
    kind, chunk, r = job.key.split("/")
    text = model.tokenizer.decode(toks, skip_special_tokens=True)
    if kind == "forced":
        answer = extract(text if "}" in text else text + "}")
    else:
        answer = extract(trace.prefix_text(int(chunk)) + text)
    return {"key": job.key, "kind": kind, "chunk": int(chunk), "r": int(r), "seed": job.seed,
            "prefix_len": job.prefix_len, "tokens": toks, "text": text, "answer": answer,
            "correct": grade(answer, trace.gold) if trace.gold is not None else None}


def _as_rollout(rec: dict[str, Any]) -> Rollout:
    sents = tuple(c.text for c in split_sentences(rec["text"]))
    return Rollout(rec["answer"], rec["correct"], sents[0] if sents else "", sents)


def group(records: dict[str, dict], kind: str, n: int, r: int) -> list[list[Rollout]]:
    """Rollouts of one kind per chunk index 0..n-1, the first ``r`` of each, in order
    (a re-run asking for fewer rollouts than the file holds uses the first ones)."""
    out: list[list[tuple[int, Rollout]]] = [[] for _ in range(n)]
    for rec in records.values():
        if rec["kind"] == kind and rec["chunk"] < n and rec["r"] < r:
            out[rec["chunk"]].append((rec["r"], _as_rollout(rec)))
    return [[r for _, r in sorted(rows, key=lambda x: x[0])] for rows in out]


def resample(model, trace: AnchorTrace, cfg: ResampleConfig, out_dir: str | os.PathLike[str], *,
             extract: Extractor | None = None, grade: Grader | None = None,
             embedder: Embedder | None = None, progress: bool = False,
             adaptive: AdaptiveConfig | None = None, runner: Runner | None = None,
             backend: GenerationBackend | None = None) -> Importance:
    """Run (or resume) all rollouts of ``trace`` and compute its importance metrics;
    writes ``rollouts.jsonl`` and ``resampling.json`` under ``out_dir``.

    ``adaptive``: stop each prefix once settled (:mod:`mechreason.anchors.adaptive`),
    ``cfg.rollouts`` being the most any prefix gets. ``runner``: where rollouts run
    (default this process; :class:`mechreason.scale.rollouts.RayRunner` for workers).
    ``backend``: a black-box generation backend for this process's rollouts (e.g. vLLM).
    """
    if extract is None or grade is None:
        d_extract, d_grade = default_answer_fns()
        extract, grade = extract or d_extract, grade or d_grade
    if embedder is None:
        from mechreason.anchors.embed import default_embedder

        embedder = default_embedder()
    if adaptive is not None:
        from mechreason.anchors.adaptive import run_adaptive

        records = run_adaptive(model, trace, cfg, adaptive, out_dir, extract=extract,
                               grade=grade, progress=progress, runner=runner,
                               backend=backend)
    else:
        records = run_rollouts(model, trace, cfg, out_dir, extract=extract, grade=grade,
                               progress=progress, runner=runner, backend=backend)
    forced = group(records, "forced", trace.n + 1, cfg.rollouts) if cfg.forced else None
    answer = trace.answer if trace.answer is not None else extract(trace.generated_text)
    imp = compute_importance(trace.texts, group(records, "resample", trace.n, cfg.rollouts), forced,
                             answer, _trace_correct(trace, answer, grade), embedder,
                             threshold=cfg.similarity, eps=cfg.kl_epsilon)
    from mechreason.artifacts import write_json

    write_json(Path(out_dir) / RESAMPLING_JSON, imp._asdict())
    return imp


def _trace_correct(trace: AnchorTrace, answer: str | None, grade: Grader) -> bool | None:
    if trace.correct is not None:
        return bool(trace.correct)
    return grade(answer, trace.gold) if trace.gold is not None else None

"""Thought anchors, stage 1a: the rollout engine behind black-box resampling
(Bogdan, Macar, Nanda, Conmy 2025, "Thought Anchors", section 3).

Resampling needs R continuations from the prefix before every sentence of a trace.
The Thought Anchors scripts re-run the whole prefix for every chunk; here the trace is
prefilled ONCE and every rollout starts from that cache:

- the full trace's KV cache is cropped to the longest prefix in a batch and repeated
  per row; a row whose prefix is shorter masks the cached keys past its own prefix
  (a gap in the 2-D attention mask) and keeps its true RoPE positions via
  ``position_ids``, so rows of different chunks share one batch;
- rows leave the batch as soon as they stop (EOS, the length cap, or a caller's
  predicate such as "the answer is out"), so later steps are cheaper;
- sampling is the engine's one sampler (:func:`mechreason.model.engine.sample`: temperature,
  top-p, Gumbel-max with one seeded ``torch.Generator`` per rollout), so a rollout's tokens do not depend on which rows
  share its batch: the batched engine and the naive one-rollout-at-a-time
  :func:`naive_rollouts` give the same tokens under the same seeds.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

from mechreason.errors import MechReasonError
from mechreason.model import engine
from mechreason.model.engine import SamplingConfig

if TYPE_CHECKING:
    import torch

    from mechreason.backends.base import GenerationBackend
    from mechreason.model.loading import Model

log = logging.getLogger(__name__)


class Job(NamedTuple):
    """One rollout to run."""

    key: str
    """Unique name (the JSONL record key), e.g. ``resample/3/7``."""
    prefix_len: int
    """Tokens of the trace kept before the rollout starts (>= 1)."""
    seed: int
    """Seed of this rollout's own generator."""
    forced: tuple[int, ...] = ()
    """Tokens emitted first, before sampling starts (a forced-answer suffix)."""
    max_new_tokens: int | None = None
    """Overrides :attr:`SamplingConfig.max_new_tokens` for this rollout."""


StopFn = Callable[[Job, list[int]], bool]
"""``stop(job, new_tokens)``: True once the rollout is finished (EOS aside)."""


def rollout_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from a base seed and names (kind, chunk, rollout index)."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class _Rows:
    """The jobs of one batch and their generators (rows indexed as in the engine)."""

    def __init__(self, jobs: list[Job]):
        self.jobs = jobs
        self.gens = engine.generators([j.seed for j in jobs])

    def choose(self, logits: torch.Tensor, live: list[int], tokens: list[list[int]],
               cfg: SamplingConfig) -> list[int]:
        """The next token of every live row: forced if any are left, else sampled (only
        the sampled rows draw noise, so forced tokens never shift a generator)."""
        out = [0] * len(live)
        sampled = []
        for i, r in enumerate(live):
            job, toks = self.jobs[r], tokens[r]
            if len(toks) < len(job.forced):
                out[i] = job.forced[len(toks)]
            else:
                sampled.append(i)
        if sampled:
            picks = engine.sample(logits[sampled], cfg, [self.gens[live[i]] for i in sampled])
            for i, t in zip(sampled, picks.tolist()):
                out[i] = int(t)
        return out


def _done(job: Job, toks: list[int], cfg: SamplingConfig, eos: set[int], stop: StopFn | None) -> bool:
    if len(toks) >= (job.max_new_tokens or cfg.max_new_tokens):
        return True
    if len(toks) <= len(job.forced):  # the last token was forced: never a stop
        return False
    return toks[-1] in eos or (stop is not None and stop(job, toks))


def prefill(model: Model, ids: Sequence[int], positions: Sequence[int]):
    """One forward over the whole trace: its KV cache and the next-token logits at
    ``positions`` (logits at p predict token p+1)."""
    import torch

    x = torch.tensor([list(ids)], device=model.device)
    keep = torch.tensor(sorted(set(positions)), device=model.device)
    out = engine.forward(model.hf, x, logits_to_keep=keep)
    assert out.logits is not None
    rows = {int(p): i for i, p in enumerate(keep.tolist())}
    return out.cache, out.logits[0].float(), rows


def batched_rollouts(model: Model, ids: Sequence[int], jobs: Sequence[Job], cfg: SamplingConfig, *,
                     batch_size: int = 32, stop: StopFn | None = None) -> Iterator[tuple[Job, list[int]]]:
    """Run ``jobs`` over the trace ``ids`` from one shared prefill; yield each
    ``(job, new_tokens)`` as soon as it finishes (see the module docstring)."""
    _check_jobs(ids, jobs)
    if not jobs:
        return
    full, logits, rows = prefill(model, ids, [j.prefix_len - 1 for j in jobs])
    ordered = sorted(jobs, key=lambda j: (j.prefix_len, j.key))
    for start in range(0, len(ordered), batch_size):
        batch = ordered[start:start + batch_size]
        first = logits[[rows[j.prefix_len - 1] for j in batch]]
        yield from _run_batch(model, full, first, batch, cfg, stop)


def _run_batch(model: Model, full, first: torch.Tensor, batch: list[Job], cfg: SamplingConfig,
               stop: StopFn | None) -> Iterator[tuple[Job, list[int]]]:
    import torch

    dev, eos = model.device, set(model.eos_ids)
    width = max(j.prefix_len for j in batch)  # cached positions shared by the batch
    prefix = torch.tensor([j.prefix_len for j in batch], device=dev)
    mask = (torch.arange(width, device=dev)[None] < prefix[:, None]).long()  # (B, width)
    state = engine.Batch(engine.fork(full, width, len(batch)), mask, prefix, first)
    yield from _decode(model, state, _Rows(list(batch)), cfg, eos, stop)


def _decode(model: Model, state: engine.Batch, rows: _Rows, cfg: SamplingConfig, eos: set[int],
            stop: StopFn | None) -> Iterator[tuple[Job, list[int]]]:
    def choose(logits: torch.Tensor, live: list[int], tokens: list[list[int]]) -> list[int]:
        return rows.choose(logits, live, tokens, cfg)

    def done(r: int, toks: list[int]) -> bool:
        return _done(rows.jobs[r], toks, cfg, eos, stop)

    for r, toks in engine.decode_loop(model, state, choose, done):
        yield rows.jobs[r], toks


def naive_rollouts(model: Model, ids: Sequence[int], jobs: Sequence[Job], cfg: SamplingConfig, *,
                   stop: StopFn | None = None) -> Iterator[tuple[Job, list[int]]]:
    """The reference path: each rollout alone, its prefix run from scratch, a plain
    growing cache. Same sampler and seeds as :func:`batched_rollouts`."""
    _check_jobs(ids, jobs)
    eos = set(model.eos_ids)
    for job in jobs:
        state = engine.prefill(model, [list(ids[:job.prefix_len])])
        yield from _decode(model, state, _Rows([job]), cfg, eos, stop)


def backend_rollouts(model: Model, backend: GenerationBackend, ids: Sequence[int],
                     jobs: Sequence[Job], cfg: SamplingConfig, *,
                     stop: StopFn | None = None) -> Iterator[tuple[Job, list[int]]]:
    """The same rollouts through a black-box generation backend (e.g. vLLM): each job
    is one request, its prompt the trace's first ``prefix_len`` tokens plus its forced
    tokens, its seed the job's. ``stop`` cannot run inside the backend, so each rollout
    is cut afterwards at the first token where :func:`batched_rollouts` would have
    stopped (the tokens before it do not depend on what follows). Same seeds, another
    sampler: the tokens agree with :func:`batched_rollouts` in distribution, not one
    by one."""
    from mechreason.backends.base import Request

    _check_jobs(ids, jobs)
    eos = set(model.eos_ids)
    ordered = sorted(jobs, key=lambda j: (j.prefix_len, j.key))  # neighbours share prefixes
    step = backend.chunk or cfg.batch_size
    for start in range(0, len(ordered), step):
        batch = ordered[start:start + step]
        caps = [(j.max_new_tokens or cfg.max_new_tokens) - len(j.forced) for j in batch]
        ask = [(j, Request((*ids[:j.prefix_len], *j.forced), j.seed, c))
               for j, c in zip(batch, caps) if c >= 1]
        for j in batch:  # all forced, nothing to sample
            if (j.max_new_tokens or cfg.max_new_tokens) <= len(j.forced):
                yield j, list(j.forced[:j.max_new_tokens or cfg.max_new_tokens])
        got = backend.generate([r for _, r in ask], cfg)
        for (job, _), c in zip(ask, got):
            yield job, _cut(job, [*job.forced, *c.ids], cfg, eos, stop)


def _cut(job: Job, toks: list[int], cfg: SamplingConfig, eos: set[int],
         stop: StopFn | None) -> list[int]:
    """``toks`` up to the first token where the decode loop would have stopped."""
    for k in range(len(job.forced) + 1, len(toks) + 1):
        if _done(job, toks[:k], cfg, eos, stop):
            return toks[:k]
    return toks


def _check_jobs(ids: Sequence[int], jobs: Sequence[Job]) -> None:
    bad = [j.key for j in jobs if not 1 <= j.prefix_len <= len(ids)]
    if bad:
        raise MechReasonError(
            f"rollout prefix lengths must be in 1..{len(ids)} (the trace's tokens); bad: {bad[:5]}")
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise MechReasonError("rollout job keys must be unique")

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
- sampling is temperature + top-p by the Gumbel-max trick with one seeded
  ``torch.Generator`` per rollout, so a rollout's tokens do not depend on which rows
  share its batch: the batched engine and the naive one-rollout-at-a-time
  :func:`naive_rollouts` give the same tokens under the same seeds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

from mechreason.errors import MechReasonError
from mechreason.generation import nucleus_drop

if TYPE_CHECKING:
    import torch

    from mechreason.models import Model

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sampling:
    """How rollouts are sampled (Thought Anchors defaults)."""

    temperature: float = 0.6
    """Softmax temperature (> 0)."""
    top_p: float = 0.95
    """Nucleus: keep the smallest set of tokens whose probability reaches top_p."""
    max_new_tokens: int = 256
    """Length cap of one rollout."""

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise MechReasonError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise MechReasonError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise MechReasonError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


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
    """Overrides :attr:`Sampling.max_new_tokens` for this rollout."""


StopFn = Callable[[Job, list[int]], bool]
"""``stop(job, new_tokens)``: True once the rollout is finished (EOS aside)."""


def rollout_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from a base seed and names (kind, chunk, rollout index)."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def sample_next(logits: torch.Tensor, gens: Sequence[torch.Generator], cfg: Sampling) -> torch.Tensor:
    """Sample one token per row: temperature, top-p, then Gumbel-max with each row's
    own generator (one draw of ``vocab`` uniforms per row per step)."""
    import torch

    scaled = logits.float() / cfg.temperature  # (B, V)
    if cfg.top_p < 1:
        scaled = scaled.masked_fill(nucleus_drop(scaled.softmax(-1), cfg.top_p), -torch.inf)
    u = torch.stack([torch.rand(scaled.shape[-1], generator=g) for g in gens])
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)))
    return (scaled + gumbel).argmax(-1)


def _generator(seed: int) -> torch.Generator:
    import torch

    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    return g


class _Rows:
    """The live rows of one batch: jobs, generated tokens, generators, positions."""

    def __init__(self, jobs: list[Job]):
        self.jobs = jobs
        self.tokens: list[list[int]] = [[] for _ in jobs]
        self.gens = [_generator(j.seed) for j in jobs]

    def choose(self, logits: torch.Tensor, cfg: Sampling) -> list[int]:
        """The next token of every row: forced if any are left, else sampled (only the
        sampled rows draw noise, so forced tokens never shift a generator)."""
        out = [0] * len(self.jobs)
        sampled = []
        for r, (job, toks) in enumerate(zip(self.jobs, self.tokens)):
            if len(toks) < len(job.forced):
                out[r] = job.forced[len(toks)]
            else:
                sampled.append(r)
        if sampled:
            picks = sample_next(logits[sampled], [self.gens[r] for r in sampled], cfg)
            for r, t in zip(sampled, picks.tolist()):
                out[r] = int(t)
        return out


def _done(job: Job, toks: list[int], cfg: Sampling, eos: set[int], stop: StopFn | None) -> bool:
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
    with torch.inference_mode():
        out = model.hf(input_ids=x, use_cache=True, logits_to_keep=keep)
    rows = {int(p): i for i, p in enumerate(keep.tolist())}
    return out.past_key_values, out.logits[0].float(), rows


def _fork(full, length: int, batch: int):
    """A new cache holding the first ``length`` positions of ``full``, ``batch`` times."""
    from transformers import DynamicCache

    data = [(layer.keys[:, :, :length].expand(batch, -1, -1, -1).contiguous(),
             layer.values[:, :, :length].expand(batch, -1, -1, -1).contiguous())
            for layer in full.layers]
    return DynamicCache(data)


def batched_rollouts(model: Model, ids: Sequence[int], jobs: Sequence[Job], cfg: Sampling, *,
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


def _run_batch(model: Model, full, first: torch.Tensor, batch: list[Job], cfg: Sampling,
               stop: StopFn | None) -> Iterator[tuple[Job, list[int]]]:
    import torch

    dev, eos = model.device, set(model.eos_ids)
    width = max(j.prefix_len for j in batch)  # cached positions shared by the batch
    cache = _fork(full, width, len(batch))
    prefix = torch.tensor([j.prefix_len for j in batch], device=dev)
    mask = (torch.arange(width, device=dev)[None] < prefix[:, None]).long()  # (B, width)
    live = _Rows(list(batch))
    nxt = live.choose(first, cfg)
    step = 0
    while True:
        keep = []
        for r, t in enumerate(nxt):
            live.tokens[r].append(t)
            if _done(live.jobs[r], live.tokens[r], cfg, eos, stop):
                yield live.jobs[r], live.tokens[r]
            else:
                keep.append(r)
        if not keep:
            return
        if len(keep) < len(live.jobs):
            idx = torch.tensor(keep, device=dev)
            cache.batch_select_indices(idx)
            mask, prefix = mask[idx], prefix[idx]
            live.jobs = [live.jobs[r] for r in keep]
            live.tokens = [live.tokens[r] for r in keep]
            live.gens = [live.gens[r] for r in keep]
            nxt = [nxt[r] for r in keep]
        mask = torch.cat([mask, mask.new_ones(len(keep), 1)], 1)
        with torch.inference_mode():
            out = model.hf(input_ids=torch.tensor(nxt, device=dev)[:, None], past_key_values=cache,
                           attention_mask=mask, position_ids=(prefix + step)[:, None],
                           cache_position=torch.tensor([width + step], device=dev), use_cache=True)
        step += 1
        nxt = live.choose(out.logits[:, -1].float(), cfg)


def naive_rollouts(model: Model, ids: Sequence[int], jobs: Sequence[Job], cfg: Sampling, *,
                   stop: StopFn | None = None) -> Iterator[tuple[Job, list[int]]]:
    """The reference path: each rollout alone, its prefix run from scratch, a plain
    growing cache. Same sampler and seeds as :func:`batched_rollouts`."""
    import torch

    _check_jobs(ids, jobs)
    eos = set(model.eos_ids)
    for job in jobs:
        x = torch.tensor([list(ids[:job.prefix_len])], device=model.device)
        live = _Rows([job])
        with torch.inference_mode():
            out = model.hf(input_ids=x, use_cache=True)
        while True:
            t = live.choose(out.logits[:, -1].float(), cfg)[0]
            live.tokens[0].append(t)
            if _done(job, live.tokens[0], cfg, eos, stop):
                yield job, live.tokens[0]
                break
            with torch.inference_mode():
                out = model.hf(input_ids=torch.tensor([[t]], device=model.device),
                               past_key_values=out.past_key_values, use_cache=True)


def _check_jobs(ids: Sequence[int], jobs: Sequence[Job]) -> None:
    bad = [j.key for j in jobs if not 1 <= j.prefix_len <= len(ids)]
    if bad:
        raise MechReasonError(
            f"rollout prefix lengths must be in 1..{len(ids)} (the trace's tokens); bad: {bad[:5]}")
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise MechReasonError("rollout job keys must be unique")

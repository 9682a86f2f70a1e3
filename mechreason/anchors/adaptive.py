"""Thought anchors, stage 1 (frugal): adaptive resampling. Stop drawing rollouts from a
prefix once its answer distribution has settled (frugal-thought-anchors reports 49%
fewer rollouts at full recall of the top anchors; Bogdan et al. 2025 draw a fixed 100).

Every prefix (``resample/i`` and ``forced/i``) first gets ``min_rollouts`` rollouts,
then ``batch`` more per round while it is unsettled, up to the config's ``rollouts``.
A prefix is settled when the last batch moved its answer distribution by at most
``tolerance`` in total variation: ``TV(P_n, P_{n - batch}) <= tolerance`` (an unparsed
answer is its own outcome). A prefix whose rollouts all give one answer is settled at
once. Rollout ``r`` of a prefix has the same seed (and so the same tokens) as in a full
run, so an adaptive run is a prefix-wise subset of the full one: :func:`simulate`
replays the rule on a full run's records, which is how its saving and agreement are
measured (``benchmarks/bench_adaptive.py``, B8).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from mechreason.anchors.resampling import ResampleConfig, Runner, make_jobs, run_rollouts
from mechreason.anchors.trace import AnchorTrace
from mechreason.errors import MechReasonError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdaptiveConfig:
    """When a prefix has had enough rollouts."""

    tolerance: float = 0.1
    """Largest total-variation change of the answer distribution over the last batch
    that still counts as settled."""
    batch: int = 4
    """Rollouts added per round to an unsettled prefix."""
    min_rollouts: int = 8
    """Rollouts every prefix gets before the rule is checked (>= 2 * batch, so the first
    check compares two batches)."""

    def __post_init__(self) -> None:
        if not 0 <= self.tolerance <= 1:
            raise MechReasonError(f"adaptive tolerance must be in [0, 1], got {self.tolerance}")
        if self.batch < 1:
            raise MechReasonError(f"adaptive batch must be >= 1, got {self.batch}")
        if self.min_rollouts < 2 * self.batch:
            raise MechReasonError(f"adaptive min_rollouts must be >= 2 * batch "
                                  f"({2 * self.batch}), got {self.min_rollouts}")


def _dist(answers: Sequence[str | None]) -> dict[str, float]:
    c = Counter("<unparsed>" if a is None else a for a in answers)
    return {a: k / len(answers) for a, k in c.items()}


def total_variation(p: Sequence[str | None], q: Sequence[str | None]) -> float:
    """Total-variation distance of two samples' answer distributions."""
    dp, dq = _dist(p), _dist(q)
    return 0.5 * sum(abs(dp.get(a, 0.0) - dq.get(a, 0.0)) for a in dp.keys() | dq.keys())


def settled(answers: Sequence[str | None], cfg: AdaptiveConfig) -> bool:
    """The rule of the module docstring, on a prefix's answers in rollout order."""
    n = len(answers)
    if n < cfg.min_rollouts:
        return False
    return total_variation(answers, answers[:n - cfg.batch]) <= cfg.tolerance


def stop_count(answers: Sequence[str | None], cfg: AdaptiveConfig, cap: int) -> int:
    """How many of ``answers`` (a full run's, in rollout order) an adaptive run uses."""
    n = min(cfg.min_rollouts, cap)
    while n < cap and not settled(answers[:n], cfg):
        n = min(n + cfg.batch, cap)
    return n


def _answers_by_prefix(records: Mapping[str, dict[str, Any]]) -> dict[str, list[str | None]]:
    rows: dict[str, list[tuple[int, str | None]]] = defaultdict(list)
    for rec in records.values():
        rows[f"{rec['kind']}/{rec['chunk']}"].append((rec["r"], rec["answer"]))
    return {k: [a for _, a in sorted(v, key=lambda x: x[0])] for k, v in rows.items()}


def simulate(records: Mapping[str, dict[str, Any]], cfg: AdaptiveConfig,
             cap: int) -> dict[str, dict[str, Any]]:
    """The records an adaptive run would have made, taken from a full run's records
    (every prefix's rollouts ``0..cap-1``)."""
    by = _answers_by_prefix(records)
    keep = {k: stop_count(v, cfg, min(cap, len(v))) for k, v in by.items()}
    return {key: rec for key, rec in records.items()
            if rec["r"] < keep[f"{rec['kind']}/{rec['chunk']}"]}


def run_adaptive(model, trace: AnchorTrace, cfg: ResampleConfig, acfg: AdaptiveConfig,
                 out_dir: str | os.PathLike[str], *, extract, grade, progress: bool = False,
                 runner: Runner | None = None, backend: Any = None) -> dict[str, dict[str, Any]]:
    """Rounds of rollouts until every prefix is settled or has ``cfg.rollouts``; the
    records go to ``out_dir/rollouts.jsonl`` as in a full run (resumable). Returns the
    records of the file."""
    every = {j.key: j for j in make_jobs(model, trace, cfg)}
    prefixes = sorted({k.rsplit("/", 1)[0] for k in every})
    have = {p: min(cfg.rollouts, acfg.min_rollouts) for p in prefixes}
    records: dict[str, dict[str, Any]] = {}
    todo = prefixes
    rounds = 0
    while todo:
        jobs = [every[f"{p}/{r}"] for p in todo for r in range(have[p])
                if f"{p}/{r}" not in records]
        records = run_rollouts(model, trace, cfg, out_dir, extract=extract, grade=grade,
                               progress=progress, jobs=jobs, runner=runner, backend=backend)
        by = _answers_by_prefix({k: v for k, v in records.items() if k in every})
        todo = [p for p in todo
                if have[p] < cfg.rollouts and not settled(by.get(p, [])[:have[p]], acfg)]
        for p in todo:
            have[p] = min(have[p] + acfg.batch, cfg.rollouts)
        rounds += 1
    log.info("adaptive resampling: %d rollouts of %d in %d rounds",
             sum(have.values()), len(every), rounds)
    return records

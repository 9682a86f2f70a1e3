"""Scale: thought-anchor rollouts over Ray workers (DESIGN section 10).

:class:`RayRunner` is a :data:`mechreason.anchors.resampling.Runner`: the driver keeps
writing ``rollouts.jsonl`` (once per key, resumable) while the workers, each with its own
model, run the rollouts of one or a few sentences per shard. Rollout tokens depend only
on the rollout's seed (never on its batch), so the file holds the same records as a
single-process run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mechreason.anchors.resampling import Emit, ResampleConfig
from mechreason.anchors.rollouts import Job
from mechreason.anchors.trace import AnchorTrace
from mechreason.scale.ray_driver import Pool, connect
from mechreason.scale.shards import make_shards
from mechreason.scale.workers import ModelSpec, make_generator, rollout_work


class RayRunner:
    """Runs rollout jobs on ``workers`` Ray workers, ``shard_size`` jobs a shard
    (default: the config's batch size); the pool starts on first use and lives until
    :meth:`close` (adaptive resampling calls it once per round)."""

    def __init__(self, address: str, spec: ModelSpec, *, workers: int = 2,
                 shard_size: int | None = None, extract: Callable | None = None,
                 grade: Callable | None = None, on_dispatch: Callable | None = None,
                 pool: Pool | None = None):
        from mechreason.anchors.embed import default_answer_fns

        d_extract, d_grade = default_answer_fns()
        self.address, self.spec, self.workers, self.shard_size = address, spec, workers, shard_size
        self.extract, self.grade = extract or d_extract, grade or d_grade
        self.on_dispatch = on_dispatch
        self.pool, self._own = pool, pool is None
        self.backend_name = spec.backend
        """Where the rollouts come from (the resume check of ``run_rollouts`` reads it)."""

    def __call__(self, trace: AnchorTrace, cfg: ResampleConfig, jobs: list[Job], emit: Emit) -> None:
        if self.pool is None:
            connect(self.address)
            self.pool = Pool(make_generator, (self.spec,), workers=self.workers)
        # jobs come in sentence order, so a shard covers one or two neighbouring prefixes
        shards = make_shards(jobs, key=lambda j: j.key, size=self.shard_size or cfg.batch_size,
                             context=(trace, cfg, self.extract, self.grade))

        def on_result(_shard: Any, records: list[dict[str, Any]]) -> None:
            for rec in records:
                emit(rec)

        self.pool.run(shards, rollout_work, on_result, on_dispatch=self.on_dispatch)

    def close(self) -> None:
        """Stop the workers this runner started (a pool passed in stays open)."""
        if self.pool is not None and self._own:
            self.pool.close()
            self.pool = None

    def __enter__(self) -> RayRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
